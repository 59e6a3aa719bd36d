//! `permatoken exchange`, `refresh` and `mint`: read, call `permatoken-renew`, write, reload, render.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use permatoken_config::{Credentials, Source, Sourced};
use permatoken_graph::{Budget, Client};
use permatoken_inspect::{AppCredentials, Status, Thresholds, TokenFacts};
use permatoken_renew::{
    Assessment, Claims, Ctx, Decision, Destination, Failure as RenewFailure, Reload, Verified,
};
use permatoken_sandbox::Running;
use permatoken_secret::AccessToken;
use serde::Serialize;
use serde_json::json;

use super::common;
use super::{Failure, status_of};
use crate::cli::{
    ExchangeArgs, GraphArgs, MintArgs, RefreshArgs, SourceArgs, WindowArgs, WriteArgs,
};
use crate::render;

/// Exchanges, renewals and mints make several calls: they share a longer budget than a check.
const BUDGET: Duration = Duration::from_secs(60);

/// Everything a command reads before it acts.
struct Setup {
    client: Client,
    app: AppCredentials,
    thresholds: Thresholds,
    budget: Budget,
    credentials: Credentials,
    env_file: Option<PathBuf>,
    /// Kept alive for the command's run.
    sandbox: Option<Running>,
}

impl Setup {
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            client: &self.client,
            app: &self.app,
            thresholds: self.thresholds,
            budget: &self.budget,
        }
    }

    fn token(&self) -> Result<&Sourced<AccessToken>, Failure> {
        self.credentials.token.as_ref().ok_or_else(|| {
            Failure::new(
                "no access token found: `WHATSAPP_ACCESS_TOKEN` is set neither in the environment nor in `./.env`",
                "put it in `./.env`, or use --env-file, --token-file or --token-stdin",
            )
        })
    }

    /// Where the new token goes (DESIGN §3): `--output`, else back where the token came from; a token
    /// from the environment or standard input needs `--env-file` or `--output`. The sandbox without
    /// `--output` writes nothing.
    fn target(&self, write: &WriteArgs) -> Result<Target, Failure> {
        if let Some(path) = &write.output {
            return Ok(Target::File {
                destination: Destination::TokenFile { path: path.clone() },
                holds_input: false,
            });
        }
        if self.sandbox.is_some() {
            return Ok(Target::Demo);
        }
        let token = self.token()?;
        let variable = token
            .var
            .clone()
            .unwrap_or_else(|| permatoken_config::TOKEN_VAR.to_owned());
        let (destination, holds_input) = match (&token.source, &self.env_file) {
            (Source::EnvFile(path), _) => (
                Destination::EnvFile {
                    path: path.clone(),
                    variable,
                },
                true,
            ),
            (Source::TokenFile(path), _) => (Destination::TokenFile { path: path.clone() }, true),
            (_, Some(env_file)) => (
                Destination::EnvFile {
                    path: env_file.clone(),
                    variable,
                },
                false,
            ),
            (source, None) => {
                return Err(Failure::new(
                    format!(
                        "the token came from {source}, so there is no file to write the new one to"
                    ),
                    "say where: --env-file FILE (edits its `WHATSAPP_ACCESS_TOKEN`) or --output FILE (a 0600 file of its own)",
                ));
            }
        };
        Ok(Target::File {
            destination,
            holds_input,
        })
    }
}

/// Where a new token would go.
#[derive(Clone)]
enum Target {
    /// A file. `holds_input`: the token worked from was read there, so under the lock the file must
    /// still hold it.
    File {
        destination: Destination,
        holds_input: bool,
    },
    /// The sandbox without `--output`: shown, never written.
    Demo,
    /// A backup token from somewhere permatoken cannot write (the environment): never renewed.
    Nowhere,
}

impl Target {
    fn destination(&self) -> Option<&Destination> {
        match self {
            Self::File { destination, .. } => Some(destination),
            Self::Demo | Self::Nowhere => None,
        }
    }
}

async fn setup(
    source: &SourceArgs,
    graph: &GraphArgs,
    windows: &WindowArgs,
    sandbox_scenario: Option<&str>,
) -> Result<Setup, Failure> {
    let mut config = common::graph_config(graph)?;
    let (credentials, sandbox) = match sandbox_scenario {
        Some(scenario) => {
            let running = common::start_sandbox().await?;
            config.base_url = running.url();
            let sourced = |value| Sourced {
                value,
                source: Source::Sandbox,
                var: Some(permatoken_config::TOKEN_VAR.to_owned()),
            };
            let credentials = Credentials {
                token: running.token(scenario).map(sourced),
                app_id: Some(Sourced {
                    value: running.app().id.to_string(),
                    source: Source::Sandbox,
                    var: None,
                }),
                app_secret: Some(Sourced {
                    value: running.app_secret().clone(),
                    source: Source::Sandbox,
                    var: None,
                }),
                ..Credentials::default()
            };
            (credentials, Some(running))
        }
        None => (common::read_credentials(source)?, None),
    };
    let app = common::app_of(&credentials);
    config.app_secret = app.app_secret.clone();
    Ok(Setup {
        client: common::client(config)?,
        app,
        thresholds: common::thresholds(windows),
        budget: Budget::new(BUDGET),
        credentials,
        env_file: source.env_file.clone(),
        sandbox,
    })
}

/// What a write did, for the report.
#[derive(Serialize)]
struct WriteReport {
    destination: Destination,
    path: PathBuf,
    backup: Option<PathBuf>,
    /// The file is written, but its folder could not be flushed to disk: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    unsynced: Option<String>,
}

/// Where backups go, known before any call: refusing to write comes before asking Meta for a token.
fn backup_dir(write: &WriteArgs) -> Result<Option<PathBuf>, Failure> {
    permatoken_renew::backup_dir(write.no_backup).map_err(renew_failure)
}

/// The locks of this command's files, each taken once, saying at once when another process holds one.
fn claims(write: &WriteArgs, backup_dir: Option<PathBuf>) -> Claims<'static> {
    let timeout = write.lock_timeout;
    Claims::new(timeout, backup_dir, move |lock| {
        render::warning(&format!(
            "another process holds `{}`, the lock of the file to write; waiting up to {timeout:?} for it (--lock-timeout)",
            lock.display()
        ));
    })
}

fn store(
    claims: &mut Claims<'_>,
    destination: &Destination,
    token: &AccessToken,
) -> Result<WriteReport, Failure> {
    let written = claims
        .write_token(destination, token)
        .map_err(|e| renew_failure(RenewFailure::Store(e)))?;
    if let Some(why) = &written.unsynced {
        render::warning(&format!(
            "{destination} was written (the new token is in place), but its folder could not be flushed to disk ({why}): a power cut in the next moments could bring back the old file"
        ));
    }
    Ok(WriteReport {
        destination: destination.clone(),
        path: written.path,
        backup: written.backup,
        unsynced: written.unsynced,
    })
}

/// Takes the lock of `target`'s file before Meta is asked for the token that goes there.
fn claim(claims: &mut Claims<'_>, target: &Target, read: &AccessToken) -> Result<(), Failure> {
    match target {
        Target::File {
            destination,
            holds_input,
        } => claims
            .claim(destination, holds_input.then_some(read))
            .map_err(|e| renew_failure(RenewFailure::Store(e))),
        Target::Demo | Target::Nowhere => Ok(()),
    }
}

fn renew_failure(failure: RenewFailure) -> Failure {
    Failure {
        code: failure.exit_code(),
        hint: Some(failure.hint()),
        message: failure.to_string(),
    }
}

/// 0, or 1 when the token expires within the warning window.
fn code_for(report: &permatoken_inspect::Report, thresholds: Thresholds) -> u8 {
    match report.expires_at() {
        Some(at) if at.duration_since(jiff::Timestamp::now()) <= thresholds.warn => 1,
        _ => 0,
    }
}

fn print_json(value: &serde_json::Value) {
    let _ = writeln!(anstream::stdout().lock(), "{value:#}");
}

/// Runs `then` after a write: a failed reload is exit 2, the token stays written.
fn run_then(then: Option<&str>, wrote: bool) -> Option<Reload> {
    then.filter(|_| wrote).map(permatoken_renew::reload)
}

/// The shared ending of `exchange` and `mint`: write (under the lock taken before), reload, render,
/// exit code.
fn finish(
    action: &str,
    target: &Target,
    mut claims: Claims<'_>,
    setup: &Setup,
    write: &WriteArgs,
    reveal: bool,
    verified: Verified,
) -> Result<u8, Failure> {
    let destination = target.destination();
    let written = match destination {
        Some(d) => Some(store(&mut claims, d, &verified.token)?),
        None => None,
    };
    // The reload may start something that writes the same file: the locks go first.
    drop(claims);
    let reload = run_then(write.then.as_deref(), written.is_some());
    let mut code = code_for(&verified.report, setup.thresholds);
    if reload.as_ref().is_some_and(|r| !r.ok) {
        code = 2;
    }
    if write.json {
        let mut object = json!({
            "status": status_of(code),
            "action": action,
            "dry_run": false,
            "destination": destination,
            "written": written,
            "token": verified.report.token,
            "reload": reload,
        });
        if reveal {
            object["access_token"] = json!(verified.token.expose_secret());
        }
        print_json(&object);
    } else {
        let mut out = anstream::stdout().lock();
        let _ = render::new_token(&mut out, action, &verified.report.token);
        let _ = match &written {
            None => render::line(
                &mut out,
                "not written",
                "the sandbox writes only with --output FILE",
            ),
            Some(w) => render::written(&mut out, &w.destination.to_string(), w.backup.as_deref()),
        };
        if let Some(reload) = &reload {
            let _ = render::reload(&mut out, reload);
        }
        if reveal {
            let _ = writeln!(out, "{}", verified.token.expose_secret());
        }
    }
    Ok(code)
}

/// The ending of a dry run of `exchange` or `mint`: the token as it is, and what would change. Meta
/// was asked for nothing new.
fn dry_run(
    action: &str,
    target: &Target,
    write: &WriteArgs,
    current: &AccessToken,
    before: &permatoken_inspect::Report,
    would_give: &str,
    backup_dir: Option<&std::path::Path>,
) -> u8 {
    let change = match target {
        Target::File {
            destination,
            holds_input,
        } => permatoken_renew::describe_change(
            destination,
            holds_input.then_some(current),
            would_give,
            backup_dir,
        ),
        Target::Demo | Target::Nowhere => {
            format!("would get {would_give}; the sandbox writes only with --output FILE")
        }
    };
    let would = format!("{change}; nothing was asked of Meta and nothing written (--dry-run)");
    if write.json {
        print_json(&json!({
            "status": Status::Ok,
            "action": action,
            "dry_run": true,
            "destination": target.destination(),
            "written": null,
            "would": would,
            "token": before.token,
            "reload": null,
        }));
    } else {
        let mut out = anstream::stdout().lock();
        let _ = render::line(
            &mut out,
            "token",
            &format!(
                "{}: {}",
                before.token.fingerprint,
                before.token.kind.describe()
            ),
        );
        let _ = render::line(&mut out, "dry run", &would);
    }
    0
}

pub(crate) async fn exchange(args: ExchangeArgs) -> Result<u8, Failure> {
    run_exchange(args).await
}

async fn run_exchange(args: ExchangeArgs) -> Result<u8, Failure> {
    let scenario = args.sandbox.then_some(args.scenario.as_str());
    let setup = setup(&args.source, &args.graph, &args.windows, scenario).await?;
    // Known before any call: a token with nowhere to go, or a file that could not be backed up, stops
    // here.
    let target = setup.target(&args.write)?;
    let backup_dir = match target {
        Target::File { .. } => backup_dir(&args.write)?,
        Target::Demo | Target::Nowhere => None,
    };
    let input = setup.token()?.value.clone();
    let ctx = setup.ctx();
    let plan = match permatoken_renew::plan_exchange(&ctx, &input).await {
        Ok(plan) => plan,
        Err(RenewFailure::NeedsNoExchange) => {
            let failure = RenewFailure::NeedsNoExchange;
            if args.write.json {
                print_json(
                    &json!({"status": Status::Ok, "action": "exchange", "message": failure.to_string(), "written": null}),
                );
            } else {
                let _ = render::line(
                    &mut anstream::stdout().lock(),
                    "nothing to do",
                    &failure.to_string(),
                );
            }
            return Ok(0);
        }
        Err(failure) => return Err(renew_failure(failure)),
    };
    if args.write.dry_run {
        return Ok(dry_run(
            "exchange",
            &target,
            &args.write,
            &input,
            plan.before(),
            plan.would_give(),
            backup_dir.as_deref(),
        ));
    }
    let mut claims = claims(&args.write, backup_dir);
    claim(&mut claims, &target, &input)?;
    let verified = plan.run(&ctx).await.map_err(renew_failure)?;
    finish(
        "exchange",
        &target,
        claims,
        &setup,
        &args.write,
        args.reveal,
        verified,
    )
}

pub(crate) async fn mint(args: MintArgs) -> Result<u8, Failure> {
    run_mint(args).await
}

async fn run_mint(args: MintArgs) -> Result<u8, Failure> {
    let scenario = args.sandbox.then_some("admin");
    let setup = setup(&args.source, &args.graph, &args.windows, scenario).await?;
    let target = setup.target(&args.write)?;
    let backup_dir = match target {
        Target::File { .. } => backup_dir(&args.write)?,
        Target::Demo | Target::Nowhere => None,
    };
    let system_user = match (&args.system_user, &setup.sandbox) {
        (Some(id), _) => id.clone(),
        (None, Some(sandbox)) => sandbox.system_user_id().to_owned(),
        (None, None) => unreachable!("clap requires --system-user without --sandbox"),
    };
    let admin = setup.token()?.value.clone();
    let ctx = setup.ctx();
    let plan = permatoken_renew::plan_mint(&ctx, &admin, &system_user, args.expires_60_days)
        .await
        .map_err(renew_failure)?;
    if args.write.dry_run {
        return Ok(dry_run(
            "mint",
            &target,
            &args.write,
            &admin,
            plan.before(),
            &plan.would_give(),
            backup_dir.as_deref(),
        ));
    }
    let mut claims = claims(&args.write, backup_dir);
    claim(&mut claims, &target, &admin)?;
    let verified = plan.run(&ctx).await.map_err(renew_failure)?;
    finish(
        "mint",
        &target,
        claims,
        &setup,
        &args.write,
        args.reveal,
        verified,
    )
}

/// One token's line in `refresh`'s report.
#[derive(Serialize)]
struct TokenOutcome {
    variable: Option<String>,
    source: String,
    decision: Decision,
    message: String,
    steps: Option<String>,
    token: TokenFacts,
    renewed: Option<TokenFacts>,
    written: Option<WriteReport>,
}

pub(crate) async fn refresh(args: RefreshArgs) -> Result<u8, Failure> {
    run_refresh(args).await
}

async fn run_refresh(args: RefreshArgs) -> Result<u8, Failure> {
    let scenario = args.sandbox.then_some(args.scenario.as_str());
    let setup = setup(&args.source, &args.graph, &args.windows, scenario).await?;
    let primary_target = setup.target(&args.write)?;
    let backup_dir = match primary_target {
        Target::File { .. } => backup_dir(&args.write)?,
        Target::Demo | Target::Nowhere => None,
    };
    let options = permatoken_renew::RefreshOptions {
        renew_window: jiff::SignedDuration::from_hours(
            i64::from(args.renew_days.unwrap_or(args.windows.warn_days)) * 24,
        ),
        try_user_token: args.try_user_token,
    };
    let ctx = setup.ctx();
    let primary = setup.token()?;
    let mut tokens: Vec<&Sourced<AccessToken>> = vec![primary];
    tokens.extend(setup.credentials.backups.iter());

    let mut claims = claims(&args.write, backup_dir.clone());
    let mut outcomes = Vec::new();
    let mut code = 0u8;
    let mut wrote = false;
    for (i, sourced) in tokens.iter().enumerate() {
        let source = sourced.source.to_string();
        let target = if i == 0 {
            primary_target.clone()
        } else {
            match &sourced.source {
                Source::EnvFile(path) => Target::File {
                    destination: Destination::EnvFile {
                        path: path.clone(),
                        variable: sourced.var.clone().unwrap_or_default(),
                    },
                    holds_input: true,
                },
                _ => Target::Nowhere,
            }
        };
        let assessment = permatoken_renew::assess(
            &ctx,
            &sourced.value,
            &source,
            sourced.var.as_deref(),
            options,
        )
        .await;
        let refreshed = match assessment {
            Assessment::Settled(refreshed) => refreshed,
            Assessment::Renewable(plan) if args.write.dry_run => {
                let would = match &target {
                    Target::File {
                        destination,
                        holds_input,
                    } => permatoken_renew::describe_change(
                        destination,
                        holds_input.then_some(&sourced.value),
                        plan.would_give(),
                        backup_dir.as_deref(),
                    ),
                    _ => format!("would get {}", plan.would_give()),
                };
                plan.stop(
                    Decision::WouldRenew,
                    format!("{would}; nothing was asked of Meta (--dry-run)"),
                )
            }
            Assessment::Renewable(plan) if matches!(target, Target::Nowhere) => {
                // Only a file can take a renewed token back: one that cannot be written is not minted.
                let message = format!(
                    "not renewed: it came from {}, which permatoken cannot write (put it in the .env file, or use --env-file)",
                    sourced.source
                );
                plan.stop(Decision::CannotRenew, message)
            }
            Assessment::Renewable(plan) => {
                claim(&mut claims, &target, &sourced.value)?;
                plan.renew(&ctx).await
            }
        };
        let mut written = None;
        if let (Some(renewed), Some(destination)) = (&refreshed.renewed, target.destination()) {
            written = Some(store(&mut claims, destination, &renewed.token)?);
            wrote = true;
        }
        let token_code = match refreshed.decision {
            Decision::NothingNeeded => code_for(&refreshed.before, setup.thresholds),
            Decision::Renewed => refreshed
                .renewed
                .as_ref()
                .map_or(0, |r| code_for(&r.report, setup.thresholds)),
            Decision::WouldRenew => 0,
            Decision::CannotRenew => 1,
            Decision::Dead => 2,
            Decision::Unknown => 3,
        };
        code = worst(code, token_code);
        outcomes.push(TokenOutcome {
            variable: sourced.var.clone(),
            source,
            decision: refreshed.decision,
            message: refreshed.message,
            steps: refreshed.steps,
            token: refreshed.before.token.clone(),
            renewed: refreshed.renewed.as_ref().map(|r| r.report.token.clone()),
            written,
        });
        if i == 0 && args.failover && outcomes[0].decision == Decision::Dead {
            // Failover decides the primary's fate; the backups are looked at there.
            break;
        }
    }

    let mut failover = None;
    if args.failover && outcomes[0].decision == Decision::Dead {
        let (result, failover_code) =
            run_failover(&setup, &args.write, primary, &mut claims).await?;
        wrote |= result.get("written").is_some_and(|w| !w.is_null());
        failover = Some(result);
        code = failover_code;
    }
    // The reload may start something that writes the same files: the locks go first.
    drop(claims);
    let reload = run_then(args.write.then.as_deref(), wrote);
    if reload.as_ref().is_some_and(|r| !r.ok) {
        code = 2;
    }
    if args.write.json {
        print_json(&json!({
            "status": status_of(code),
            "action": "refresh",
            "dry_run": args.write.dry_run,
            "tokens": outcomes,
            "failover": failover,
            "reload": reload,
        }));
    } else {
        let mut out = anstream::stdout().lock();
        for o in &outcomes {
            let _ = render::refresh_outcome(
                &mut out,
                o.variable.as_deref(),
                &o.source,
                &o.decision,
                &o.message,
                o.steps.as_deref(),
            );
            if let Some(w) = &o.written {
                let _ = render::written(&mut out, &w.destination.to_string(), w.backup.as_deref());
            }
        }
        if let Some(f) = &failover {
            let _ = render::line(&mut out, "failover", f["message"].as_str().unwrap_or(""));
            if let Some(path) = f["written"]["backup"].as_str() {
                let _ = render::line(
                    &mut out,
                    "backup",
                    &format!("{path} (holds the dead token)"),
                );
            }
        }
        if let Some(reload) = &reload {
            let _ = render::reload(&mut out, reload);
        }
        let _ = render::overall(&mut out, outcomes.len(), status_of(code));
    }
    Ok(code)
}

/// The worse of two exit codes, ordered critical (2) > unknown (3) > warning (1) > ok (0).
fn worst(a: u8, b: u8) -> u8 {
    let rank = |c| match c {
        2 => 3,
        3 => 2,
        c => c,
    };
    if rank(b) > rank(a) { b } else { a }
}

async fn run_failover(
    setup: &Setup,
    write: &WriteArgs,
    primary: &Sourced<AccessToken>,
    claims: &mut Claims<'_>,
) -> Result<(serde_json::Value, u8), Failure> {
    let Source::EnvFile(path) = &primary.source else {
        return Err(Failure {
            code: 2,
            message: format!("the primary token is dead, but it came from {}, where a backup cannot be promoted", primary.source),
            hint: Some("failover edits the .env file that holds `WHATSAPP_ACCESS_TOKEN` and its backups: use --env-file".into()),
        });
    };
    // Only backups of the same file can move up within it.
    let backups: Vec<(String, AccessToken)> = setup
        .credentials
        .backups
        .iter()
        .filter(|b| b.source == primary.source)
        .filter_map(|b| Some((b.var.clone()?, b.value.clone())))
        .collect();
    let primary_report = setup
        .ctx()
        .inspect(
            &primary.value,
            &primary.source.to_string(),
            primary.var.as_deref(),
        )
        .await;
    let Some(choice) = permatoken_renew::failover(&setup.ctx(), &primary_report, &backups).await
    else {
        let message = if backups.is_empty() {
            "the primary token is dead and there is no backup (`WHATSAPP_ACCESS_TOKEN_BACKUP`) to promote; nothing was changed"
        } else {
            "the primary token is dead and no backup checks healthy; nothing was changed"
        };
        return Ok((
            json!({"promoted": null, "message": message, "written": null}),
            2,
        ));
    };
    let variable = &backups[choice.index].0;
    let names: Vec<String> = backups.iter().map(|(v, _)| v.clone()).collect();
    let message = format!(
        "promoted `{variable}` into `{}`; later backups moved up",
        permatoken_config::TOKEN_VAR
    );
    if write.dry_run {
        let message = format!("would have {message}");
        return Ok((
            json!({"promoted": variable, "message": message, "written": null, "token": choice.report.token}),
            code_for(&choice.report, setup.thresholds),
        ));
    }
    let primary_var = primary
        .var
        .as_deref()
        .unwrap_or(permatoken_config::TOKEN_VAR);
    // What goes in is the value checked above: under the lock the file must still hold it.
    let written = claims
        .promote_backup(
            path,
            primary_var,
            &names,
            choice.index,
            &backups[choice.index].1,
        )
        .map_err(|e| renew_failure(RenewFailure::Store(e)))?;
    if let Some(why) = &written.unsynced {
        render::warning(&format!(
            "{} was written (the backup is promoted), but its folder could not be flushed to disk ({why}): a power cut in the next moments could bring back the old file",
            path.display()
        ));
    }
    let report = json!({
        "promoted": variable,
        "message": message,
        "written": {"path": written.path, "backup": written.backup, "unsynced": written.unsynced},
        "token": choice.report.token,
    });
    Ok((report, code_for(&choice.report, setup.thresholds)))
}
