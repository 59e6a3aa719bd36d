//! `permatoken exchange`, `refresh` and `mint`: read, call `permatoken-renew`, write, reload, render.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use permatoken_config::{Credentials, Source, Sourced};
use permatoken_graph::{Budget, Client};
use permatoken_inspect::{AppCredentials, Status, Thresholds};
use permatoken_renew::{
    Claims, Ctx, Destination, FailoverOutcome, Failure as RenewFailure, LockNotice, Promotion,
    RefreshOptions, RefreshReport, Reload, RenewPolicy, Target, TokenSpec, Verified,
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

/// Says at once when another process holds the lock of a file to write.
fn lock_notice(timeout: Duration) -> LockNotice {
    std::sync::Arc::new(move |lock: &std::path::Path| {
        render::warning(&format!(
            "another process holds `{}`, the lock of the file to write; waiting up to {timeout:?} for it (--lock-timeout)",
            lock.display()
        ));
    })
}

/// The locks of this command's files, each taken once, saying at once when another process holds one.
fn claims(write: &WriteArgs, backup_dir: Option<PathBuf>) -> Claims<'static> {
    let notice = lock_notice(write.lock_timeout);
    Claims::new(write.lock_timeout, backup_dir, move |lock| notice(lock))
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

pub(crate) async fn refresh(args: RefreshArgs) -> Result<u8, Failure> {
    run_refresh(args).await
}

async fn run_refresh(args: RefreshArgs) -> Result<u8, Failure> {
    let scenario = args.sandbox.then_some(args.scenario.as_str());
    let setup = setup(&args.source, &args.graph, &args.windows, scenario).await?;
    let target = setup.target(&args.write)?;
    let backup_dir = match target {
        Target::File { .. } => backup_dir(&args.write)?,
        Target::Demo | Target::Nowhere => None,
    };
    let spec = TokenSpec {
        primary: setup.token()?.clone(),
        target,
        backups: setup.credentials.backups.clone(),
    };
    let options = RefreshOptions {
        policy: RenewPolicy {
            renew_window: jiff::SignedDuration::from_hours(
                i64::from(args.renew_days.unwrap_or(args.windows.warn_days)) * 24,
            ),
            try_user_token: args.try_user_token,
        },
        failover: args.failover,
        reload: args.write.then.clone(),
        lock_timeout: args.write.lock_timeout,
        dry_run: args.write.dry_run,
        backup_dir,
        on_lock_held: Some(lock_notice(args.write.lock_timeout)),
    };
    let report = permatoken_renew::refresh_all(&setup.ctx(), &spec, &options)
        .await
        .map_err(renew_failure)?;
    for (what, why) in report.unsynced() {
        render::warning(&format!(
            "{what} was written, but its folder could not be flushed to disk ({why}): a power cut in the next moments could bring back the old file"
        ));
    }
    if let Some(failover @ FailoverOutcome::NotInEnvFile { .. }) = &report.failover {
        return Err(Failure {
            code: report.status.exit_code(),
            message: failover.message(),
            hint: failover.hint().map(str::to_owned),
        });
    }
    if args.write.json {
        print_json(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        let _ = render_refresh(&mut anstream::stdout().lock(), &report);
    }
    Ok(report.status.exit_code())
}

fn render_refresh(out: &mut dyn Write, report: &RefreshReport) -> std::io::Result<()> {
    for t in &report.tokens {
        render::refresh_outcome(
            out,
            t.variable.as_deref(),
            &t.source,
            &t.decision,
            &t.message,
            t.steps.as_deref(),
        )?;
        if let Some(w) = &t.written {
            render::written(out, &w.destination.to_string(), w.backup.as_deref())?;
        }
    }
    if let Some(failover) = &report.failover {
        render::line(out, "failover", &failover.message())?;
        if let FailoverOutcome::Promoted {
            written: Some(Promotion {
                backup: Some(path), ..
            }),
            ..
        } = failover
        {
            render::line(
                out,
                "backup",
                &format!("{} (holds the dead token)", path.display()),
            )?;
        }
    }
    if let Some(reload) = &report.reload {
        render::reload(out, reload)?;
    }
    render::overall(out, report.tokens.len(), report.status)
}
