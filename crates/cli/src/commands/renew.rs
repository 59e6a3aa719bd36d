//! `permatoken exchange`, `refresh` and `mint`: read the arguments and credentials, call
//! `permatoken-renew` (`acquire`, `refresh_all`), render its report. No policy lives here.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use permatoken_config::{Credentials, Source, Sourced};
use permatoken_graph::{Budget, Client};
use permatoken_inspect::{AppCredentials, Thresholds};
use permatoken_renew::{
    Acquire, AcquireReport, Acquired, Ctx, Destination, FailoverOutcome, Failure as RenewFailure,
    LockNotice, Promotion, RefreshOptions, RefreshReport, RenewPolicy, Target, TokenSpec,
    WriteOptions,
};
use permatoken_sandbox::Running;
use permatoken_secret::AccessToken;

use super::Failure;
use super::common;
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
            now: jiff::Timestamp::now(),
            known: None,
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

/// Where backups go, known before any call: refusing to write comes before asking Meta for a token.
fn backup_dir(write: &WriteArgs, target: &Target) -> Result<Option<PathBuf>, Failure> {
    match target {
        Target::File { .. } => permatoken_renew::backup_dir(write.no_backup).map_err(renew_failure),
        Target::Demo | Target::Nowhere => Ok(None),
    }
}

/// The write options of `--dry-run`, `--then`, `--lock-timeout`, `--no-backup`.
fn write_options(write: &WriteArgs, target: &Target) -> Result<WriteOptions, Failure> {
    let timeout = write.lock_timeout;
    let on_lock_held: LockNotice = std::sync::Arc::new(move |lock: &std::path::Path| {
        render::warning(&format!(
            "another process holds `{}`, the lock of the file to write; waiting up to {timeout:?} for it (--lock-timeout)",
            lock.display()
        ));
    });
    Ok(WriteOptions {
        reload: write.then.clone(),
        lock_timeout: timeout,
        dry_run: write.dry_run,
        backup_dir: backup_dir(write, target)?,
        on_lock_held: Some(on_lock_held),
        ..WriteOptions::default()
    })
}

fn renew_failure(failure: RenewFailure) -> Failure {
    Failure {
        code: failure.exit_code(),
        hint: Some(failure.hint()),
        error_code: matches!(failure, RenewFailure::Malformed(_)).then_some("token_malformed"),
        message: failure.to_string(),
    }
}

fn print_json(value: &serde_json::Value) {
    let _ = writeln!(anstream::stdout().lock(), "{value:#}");
}

fn unsynced_warning(what: &str, why: &str) {
    render::warning(&format!(
        "{what} was written (the new token is in place), but its folder could not be flushed to disk ({why}): a power cut in the next moments could bring back the old file"
    ));
}

/// `exchange` and `mint`: set up, [`permatoken_renew::acquire`], render.
async fn run_acquire(
    setup: &Setup,
    write: &WriteArgs,
    reveal: bool,
    what: Acquire,
) -> Result<u8, Failure> {
    // Known before any call: a token with nowhere to go, or a file that could not be backed up, stops
    // here.
    let target = setup.target(write)?;
    let options = write_options(write, &target)?;
    let report = permatoken_renew::acquire(&setup.ctx(), &what, &target, &options)
        .await
        .map_err(renew_failure)?;
    if let Acquired::New {
        written: Some(w), ..
    } = &report.outcome
        && let Some(why) = &w.unsynced
    {
        unsynced_warning(&w.destination.to_string(), why);
    }
    if write.json {
        let mut object = serde_json::to_value(&report).unwrap_or_default();
        if let (true, Acquired::New { token, .. }) = (reveal, &report.outcome) {
            object["access_token"] = token.token.expose_secret().into();
        }
        print_json(&object);
    } else {
        let _ = render_acquire(&mut anstream::stdout().lock(), &report, reveal);
    }
    Ok(report.status.exit_code())
}

fn render_acquire(
    out: &mut dyn Write,
    report: &AcquireReport,
    reveal: bool,
) -> std::io::Result<()> {
    match &report.outcome {
        Acquired::NothingNeeded { message } => render::line(out, "nothing to do", message),
        Acquired::WouldAcquire { before, would } => {
            render::line(
                out,
                "token",
                &format!(
                    "{}: {}",
                    before.token.fingerprint,
                    before.token.kind.describe()
                ),
            )?;
            render::line(out, "dry run", would)
        }
        Acquired::New { token, written } => {
            render::new_token(out, report.action, &token.report.token)?;
            match written {
                None => render::line(
                    out,
                    "not written",
                    "the sandbox writes only with --output FILE",
                )?,
                Some(w) => render::written(out, &w.destination.to_string(), w.backup.as_deref())?,
            }
            if let Some(reload) = &report.reload {
                render::reload(out, reload)?;
            }
            if reveal {
                writeln!(out, "{}", token.token.expose_secret())?;
            }
            Ok(())
        }
    }
}

pub(crate) async fn exchange(args: ExchangeArgs) -> Result<u8, Failure> {
    let scenario = args.sandbox.then_some(args.scenario.as_str());
    let setup = setup(&args.source, &args.graph, &args.windows, scenario).await?;
    let input = setup.token()?.value.clone();
    run_acquire(
        &setup,
        &args.write,
        args.reveal,
        Acquire::Exchange { input },
    )
    .await
}

pub(crate) async fn mint(args: MintArgs) -> Result<u8, Failure> {
    let setup = setup(
        &args.source,
        &args.graph,
        &args.windows,
        args.sandbox.then_some("admin"),
    )
    .await?;
    let system_user_id = match (&args.system_user, &setup.sandbox) {
        (Some(id), _) => id.clone(),
        (None, Some(sandbox)) => sandbox.system_user_id().to_owned(),
        (None, None) => unreachable!("clap requires --system-user without --sandbox"),
    };
    let admin = setup.token()?.value.clone();
    let what = Acquire::Mint {
        admin,
        system_user_id,
        sixty_days: args.expires_60_days,
    };
    run_acquire(&setup, &args.write, args.reveal, what).await
}

pub(crate) async fn refresh(args: RefreshArgs) -> Result<u8, Failure> {
    run_refresh(args).await
}

async fn run_refresh(args: RefreshArgs) -> Result<u8, Failure> {
    let scenario = args.sandbox.then_some(args.scenario.as_str());
    let setup = setup(&args.source, &args.graph, &args.windows, scenario).await?;
    let target = setup.target(&args.write)?;
    let write = write_options(&args.write, &target)?;
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
        write,
        // One command, one process: nothing to share an action with.
        gate: None,
    };
    let report = permatoken_renew::refresh_all(&setup.ctx(), &spec, &options)
        .await
        .map_err(renew_failure)?;
    for (what, why) in report.unsynced() {
        unsynced_warning(&what, why);
    }
    if let Some(failover @ FailoverOutcome::NotInEnvFile { .. }) = &report.failover {
        return Err(Failure {
            code: report.status.exit_code(),
            message: failover.message(),
            hint: failover.hint().map(str::to_owned),
            error_code: None,
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
