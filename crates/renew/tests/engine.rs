//! `refresh_all` called as `watch` calls it, against the sandbox: a spec read from a configured
//! source, a typed report, the files as written, and no secret in the report.

use std::path::Path;
use std::time::Duration;

use permatoken_config::{Source, Sourced};
use permatoken_graph::{Budget, Client, Config};
use permatoken_inspect::{AppCredentials, Status, Thresholds};
use permatoken_renew::{
    Acquire, Acquired, Ctx, Decision, Destination, FailoverOutcome, LoadError, RefreshOptions,
    RefreshReport, Target, TokenSource, TokenSpec, WriteOptions, app_credentials,
};
use permatoken_sandbox::{Options, Running, Sandbox};
use permatoken_secret::{AccessToken, AppToken};

fn sandbox() -> Running {
    Sandbox::start_background(&Options::default()).expect("the sandbox starts on loopback")
}

fn token_of(sandbox: &Running, scenario: &str) -> String {
    sandbox
        .token(scenario)
        .expect("a known scenario")
        .expose_secret()
        .to_owned()
}

/// The client and app of `sandbox`, the app given explicitly, as the daemon gives it.
fn parts(sandbox: &Running) -> (Client, AppCredentials, Budget) {
    let app = AppToken::new(sandbox.app().id.to_string(), sandbox.app_secret().clone());
    let app = app_credentials(&app);
    let mut config = Config::new(sandbox.url());
    config.app_secret = app.app_secret.clone();
    let client = Client::new(config).expect("a client for the sandbox");
    (client, app, Budget::new(Duration::from_secs(60)))
}

/// Runs one round.
async fn round(sandbox: &Running, spec: &TokenSpec, options: &RefreshOptions) -> RefreshReport {
    let (client, app, budget) = parts(sandbox);
    let ctx = Ctx {
        client: &client,
        app: &app,
        thresholds: Thresholds::default(),
        budget: &budget,
        now: jiff::Timestamp::now(),
        known: None,
    };
    permatoken_renew::refresh_all(&ctx, spec, options)
        .await
        .expect("the round runs")
}

fn options(dir: &Path) -> RefreshOptions {
    let mut options = RefreshOptions::default();
    options.write.backup_dir = Some(dir.join("backups"));
    options
}

/// Neither the report's JSON nor its `Debug` holds any of `secrets`.
fn assert_no_secret(report: &RefreshReport, secrets: &[&str]) {
    let json = serde_json::to_string(report).unwrap();
    let debug = format!("{report:?}");
    for secret in secrets {
        assert!(!json.contains(secret), "a token in the JSON: {json}");
        assert!(!debug.contains(secret), "a token in the Debug: {debug}");
    }
}

#[tokio::test]
async fn a_60_day_system_user_token_is_renewed_in_its_env_file_key_and_nothing_else_changes() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let old = token_of(&sandbox, "system-user-60d");
    let env = dir.path().join("orders.env");
    let before = format!(
        "# orders service PERMATOKENTEST\nPORT=8080\nORDERS_WA_TOKEN='{old}' # kept quoted\n\nOTHER=x\n"
    );
    std::fs::write(&env, &before).unwrap();
    let source = TokenSource::EnvFile {
        path: env.clone(),
        key: "ORDERS_WA_TOKEN".into(),
    };
    let spec = TokenSpec::load(&source, None).unwrap();
    assert!(spec.backups.is_empty());

    // Fifty days left: outside the window, nothing asked, nothing written.
    let report = round(&sandbox, &spec, &options(dir.path())).await;
    assert_eq!(report.tokens[0].decision, Decision::NothingNeeded);
    assert_eq!(report.status, Status::Ok);
    assert!(!report.wrote());
    assert_eq!(std::fs::read_to_string(&env).unwrap(), before);

    sandbox.advance_clock(Duration::from_secs(40 * 86_400));
    let report = round(&sandbox, &spec, &options(dir.path())).await;
    let outcome = &report.tokens[0];
    assert_eq!(outcome.decision, Decision::Renewed, "{}", outcome.message);
    assert_eq!(report.status, Status::Ok);
    assert_eq!(report.status.exit_code(), 0);
    assert_eq!(outcome.variable.as_deref(), Some("ORDERS_WA_TOKEN"));
    let written = outcome.written.as_ref().expect("written");
    assert_eq!(
        written.destination,
        Destination::EnvFile {
            path: env.clone(),
            variable: "ORDERS_WA_TOKEN".into()
        }
    );
    assert!(
        written
            .backup
            .as_ref()
            .is_some_and(|b| b.starts_with(dir.path().join("backups")))
    );
    let renewed = outcome.renewed.as_ref().expect("the new token's facts");
    let new = renewed.token.expose_secret().to_owned();
    assert_ne!(new, old);
    // Only the value changed: its quotes, its comment and every other line are as they were.
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        before.replace(&old, &new)
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["action"], "refresh");
    assert_eq!(json["tokens"][0]["decision"], "renewed");
    assert_eq!(json["tokens"][0]["renewed"]["kind"], "system_user_60d");
    assert_eq!(
        json["tokens"][0]["written"]["destination"]["variable"],
        "ORDERS_WA_TOKEN"
    );
    assert_no_secret(&report, &[&old, &new]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_dead_primary_is_replaced_by_its_healthy_backup_and_the_reload_runs() {
    // current_thread: the lock and the reload must not need a second worker.
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let (dead, dead_backup, healthy) = (
        token_of(&sandbox, "expired"),
        token_of(&sandbox, "password-changed"),
        token_of(&sandbox, "system-user"),
    );
    let env = dir.path().join(".env");
    std::fs::write(
        &env,
        format!(
            "WHATSAPP_ACCESS_TOKEN={dead}\nWHATSAPP_ACCESS_TOKEN_BACKUP={dead_backup}\nWHATSAPP_ACCESS_TOKEN_BACKUP_2={healthy}\n"
        ),
    )
    .unwrap();
    let spec = TokenSpec::load(
        &TokenSource::EnvFile {
            path: env.clone(),
            key: "WHATSAPP_ACCESS_TOKEN".into(),
        },
        None,
    )
    .unwrap();
    let names: Vec<_> = spec
        .backups
        .iter()
        .map(|b| b.var.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "WHATSAPP_ACCESS_TOKEN_BACKUP",
            "WHATSAPP_ACCESS_TOKEN_BACKUP_2"
        ]
    );
    let marker = dir.path().join("reloaded");
    let mut options = options(dir.path());
    options.failover = true;
    options.write.reload = Some(format!("echo reloaded > '{}'", marker.display()));
    let report = round(&sandbox, &spec, &options).await;
    assert_eq!(report.tokens.len(), 1);
    assert_eq!(report.tokens[0].decision, Decision::Dead);
    match &report.failover {
        Some(FailoverOutcome::Promoted {
            variable,
            into,
            written: Some(promotion),
            dry_run: false,
            ..
        }) => {
            assert_eq!(variable, "WHATSAPP_ACCESS_TOKEN_BACKUP_2");
            assert_eq!(into, "WHATSAPP_ACCESS_TOKEN");
            assert!(promotion.backup.is_some());
        }
        other => panic!("promoted expected: {other:?}"),
    }
    assert_eq!(report.status, Status::Ok);
    assert!(report.reload.as_ref().is_some_and(|r| r.ok));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "reloaded\n");
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        format!("WHATSAPP_ACCESS_TOKEN={healthy}\nWHATSAPP_ACCESS_TOKEN_BACKUP={dead_backup}\n")
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["failover"]["promoted"],
        "WHATSAPP_ACCESS_TOKEN_BACKUP_2"
    );
    assert_eq!(json["status"], "ok");
    assert_no_secret(&report, &[&dead, &dead_backup, &healthy]);
}

#[tokio::test]
async fn a_token_from_the_environment_is_checked_and_reported_as_not_writable() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let token = token_of(&sandbox, "system-user-60d");
    sandbox.advance_clock(Duration::from_secs(40 * 86_400));
    // As `TokenSpec::load` builds it from `TokenSource::Environment` (the test cannot set a variable
    // of its own process without `unsafe`).
    let spec = TokenSpec::new(
        Sourced {
            value: AccessToken::new(token.as_str()),
            source: Source::Environment,
            var: Some("ORDERS_WA_TOKEN".into()),
        },
        Vec::new(),
    );
    let report = round(&sandbox, &spec, &options(dir.path())).await;
    let outcome = &report.tokens[0];
    assert_eq!(outcome.decision, Decision::CannotRenew);
    assert!(
        outcome.message.contains("which permatoken cannot write"),
        "{}",
        outcome.message
    );
    assert!(outcome.written.is_none() && outcome.renewed.is_none());
    assert_eq!(report.status, Status::Warning);
    assert_eq!(report.status.exit_code(), 1);
    // Nothing was minted that could not be written.
    assert!(sandbox.requests().iter().all(|r| r.method == "GET"));
    assert_no_secret(&report, &[&token]);

    let missing = TokenSpec::load(
        &TokenSource::Environment {
            variable: "PERMATOKENTEST_NEVER_SET".into(),
        },
        None,
    );
    assert!(matches!(missing, Err(LoadError::Missing { .. })));
}

#[tokio::test]
async fn exchange_by_acquire_plans_then_writes_a_verified_token_to_its_file() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let short = token_of(&sandbox, "short-lived");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{short}\n")).unwrap();
    let spec = TokenSpec::load(&TokenSource::TokenFile { path: file.clone() }, None).unwrap();
    let (client, app, budget) = parts(&sandbox);
    let ctx = Ctx {
        client: &client,
        app: &app,
        thresholds: Thresholds::default(),
        budget: &budget,
        now: jiff::Timestamp::now(),
        known: None,
    };
    let what = Acquire::Exchange {
        input: spec.primary.value.clone(),
    };
    let mut options = WriteOptions {
        dry_run: true,
        backup_dir: Some(dir.path().join("backups")),
        ..WriteOptions::default()
    };
    let report = permatoken_renew::acquire(&ctx, &what, &spec.target, &options)
        .await
        .unwrap();
    assert!(matches!(report.outcome, Acquired::WouldAcquire { .. }));
    assert!(sandbox.requests().iter().all(|r| r.method == "GET"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("{short}\n")
    );

    options.dry_run = false;
    let report = permatoken_renew::acquire(&ctx, &what, &spec.target, &options)
        .await
        .unwrap();
    let Acquired::New {
        token,
        written: Some(written),
    } = &report.outcome
    else {
        panic!("a new token, written: {report:?}");
    };
    let new = token.token.expose_secret().to_owned();
    assert_eq!(written.path, file);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{new}\n"));
    assert_eq!(report.status, Status::Ok);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["action"], "exchange");
    assert_eq!(json["token"]["kind"], "long_lived_user");
    let text = format!("{json} {report:?}");
    assert!(!text.contains(&new) && !text.contains(&short), "{text}");
    assert_eq!(
        spec.target,
        Target::File {
            destination: Destination::TokenFile { path: file },
            holds_input: true
        }
    );
}

/// The daemon spawns rounds on its runtime: the futures must be `Send`.
#[allow(dead_code)]
fn rounds_can_be_spawned(ctx: &Ctx<'_>, spec: &TokenSpec, options: &RefreshOptions) {
    fn send<T: Send>(_: T) {}
    send(permatoken_renew::refresh_all(ctx, spec, options));
    let what = Acquire::Exchange {
        input: spec.primary.value.clone(),
    };
    send(permatoken_renew::acquire(
        ctx,
        &what,
        &spec.target,
        &options.write,
    ));
}
