//! `permatoken check`: find the token(s), ask the Graph API, print the report, exit with the verdict.

use std::io::Write;
use std::time::Duration;

use jiff::Timestamp;
use permatoken_config::{Credentials, Source, Sourced};
use permatoken_graph::Budget;
use permatoken_inspect::{AppCredentials, Report, Status, Subject};
use permatoken_secret::AccessToken;

use super::Failure;
use crate::cli::CheckArgs;
use crate::render;

/// A check ends within this, retries and waits included (a longer wait is reported, not waited).
const BUDGET: Duration = Duration::from_secs(30);

struct Target {
    token: AccessToken,
    source: String,
    variable: Option<String>,
}

pub(crate) async fn run(args: CheckArgs) -> Result<u8, Failure> {
    check(args).await
}

async fn check(args: CheckArgs) -> Result<u8, Failure> {
    let thresholds = super::common::thresholds(&args.windows);
    let mut config = super::common::graph_config(&args.graph)?;

    // Kept alive until the end: dropping it stops the in-process sandbox.
    let mut _sandbox = None;
    let (targets, app) = if args.sandbox {
        let running = super::common::start_sandbox().await?;
        config.base_url = running.url();
        let names: Vec<&str> = if args.all {
            permatoken_sandbox::SCENARIOS
                .iter()
                .map(|s| s.name)
                .collect()
        } else {
            vec![args.scenario.as_str()]
        };
        let targets = names
            .iter()
            .filter_map(|name| {
                Some(Target {
                    token: running.token(name)?,
                    source: format!("{} (scenario `{name}`)", Source::Sandbox),
                    variable: None,
                })
            })
            .collect();
        let app = AppCredentials {
            app_id: Some(running.app().id.to_string()),
            app_secret: Some(running.app_secret().clone()),
        };
        _sandbox = Some(running);
        (targets, app)
    } else {
        let credentials = super::common::read_credentials(&args.source)?;
        let app = super::common::app_of(&credentials);
        config.app_secret = app.app_secret.clone();
        (targets_of(credentials, args.all)?, app)
    };
    if args.sandbox {
        config.app_secret = app.app_secret.clone();
    }

    let client = super::common::client(config)?;
    let budget = Budget::new(BUDGET);
    let now = Timestamp::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, target) in targets.into_iter().enumerate() {
        let (client, app) = (client.clone(), app.clone());
        tasks.spawn(async move {
            let subject = Subject {
                token: &target.token,
                source: &target.source,
                variable: target.variable.as_deref(),
            };
            (
                i,
                permatoken_inspect::check(&client, subject, &app, thresholds, now, &budget).await,
            )
        });
    }
    let mut reports: Vec<(usize, Report)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        // A JoinError's text carries the panic's message, which could quote a secret: not shown.
        reports.push(done.map_err(|_| {
            Failure::new(
                "a check stopped on an internal error",
                "this is a bug in permatoken: please report it with the command you ran",
            )
        })?);
    }
    reports.sort_by_key(|(i, _)| *i);
    let reports: Vec<Report> = reports.into_iter().map(|(_, r)| r).collect();
    let status = reports
        .iter()
        .map(|r| r.status)
        .fold(Status::Ok, Status::worst);

    let mut out = anstream::stdout().lock();
    let written = if args.json {
        #[derive(serde::Serialize)]
        struct All<'a> {
            status: Status,
            tokens: &'a [Report],
        }
        // Serialised from the structs, so fields keep the documented order (status first).
        let text = if args.all {
            serde_json::to_string_pretty(&All {
                status,
                tokens: &reports,
            })
        } else {
            serde_json::to_string_pretty(&reports[0])
        };
        writeln!(out, "{}", text.unwrap_or_default())
    } else {
        reports
            .iter()
            .enumerate()
            .try_for_each(|(i, r)| {
                if i > 0 {
                    writeln!(out)?;
                }
                render::report(&mut out, r, now)
            })
            .and_then(|()| {
                if reports.len() > 1 {
                    render::overall(&mut out, reports.len(), status)
                } else {
                    Ok(())
                }
            })
    };
    // A closed pipe (`| head`) is not the token's fault; the exit code still tells the verdict.
    let _ = written;
    Ok(status.exit_code())
}

fn targets_of(credentials: Credentials, all: bool) -> Result<Vec<Target>, Failure> {
    let target = |s: Sourced<AccessToken>| Target {
        token: s.value,
        source: s.source.to_string(),
        variable: s.var,
    };
    let mut targets: Vec<Target> = credentials.token.into_iter().map(target).collect();
    if all {
        targets.extend(credentials.backups.into_iter().map(target));
    }
    if targets.is_empty() {
        return Err(Failure::new(
            "no access token found: `WHATSAPP_ACCESS_TOKEN` is set neither in the environment nor in `./.env`",
            "put `WHATSAPP_ACCESS_TOKEN=…` in `./.env` (and `chmod 600 .env`), or use --env-file, --token-file or --token-stdin; with `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET` set too, the check says more. To try permatoken without a Meta account: `permatoken check --sandbox`",
        ));
    }
    Ok(targets)
}
