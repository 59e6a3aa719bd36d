//! `permatoken watch`: set up the daemon of `permatoken_watch` (configuration, state file, Graph
//! client settings, alert sender, HTTP endpoint, signals) and render what it says. The scheduling,
//! alerting and storing are the library's.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use permatoken_fs::ReadError;
use permatoken_inspect::Status;
use permatoken_state::{PgOptions, Store};
use permatoken_watch::alert::Sender;
use permatoken_watch::config::{self, Config, Loaded, StateLocation};
use permatoken_watch::daemon::{Daemon, Options, SystemClock};
use permatoken_watch::http::{self, AppState, BearerToken};
use permatoken_watch::listen::Listen;
use permatoken_watch::metrics::Counters;
use permatoken_watch::notify::Notifier;
use permatoken_watch::snapshot::{self, Snapshot};
use permatoken_watch::sources;
use permatoken_watch::startup::wait_for_state;

use super::{Failure, common};
use crate::cli::WatchArgs;

pub(crate) async fn run(args: WatchArgs) -> Result<u8, Failure> {
    let loaded = load(&args)?;
    if args.check_config {
        return Ok(check_config(&args, &loaded));
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let config = loaded.config;
    let graph = common::graph_config(&args.graph)?;
    let sender = Sender::new(graph.proxy.clone(), graph.extra_roots_pem.clone());
    if let Some(name) = &args.test_alert {
        return test_alert(&args, &config, &sender, name).await;
    }
    sender.warn_plain_http(&config.routes);
    let from_args = args.state.as_ref().map(|p| match p.to_str() {
        Some(text) => StateLocation::parse(text, Path::new("")),
        None => StateLocation::File(p.clone()),
    });
    let state = match from_args.or_else(|| config.state.clone()) {
        Some(state) => state,
        None => {
            let hint = "pass --state PATH (or set `state` in the configuration)";
            let path = sources::default_state_path(std::env::vars_os())
                .map_err(|e| Failure::new(e.to_string(), hint))?
                .ok_or_else(|| {
                    Failure::new(
                        "nowhere to keep the state file: neither `XDG_STATE_HOME` nor `HOME` is set",
                        hint,
                    )
                })?;
            StateLocation::File(path)
        }
    };
    let postgres = matches!(state, StateLocation::Postgres(_));
    if postgres && args.state_new {
        return Err(Failure::new(
            "`--state-new` is for a state file, and the state is a PostgreSQL database",
            "leave out --state-new: a PostgreSQL state is never taken for new",
        ));
    }
    let (publisher, subscriber) = snapshot::channel(Snapshot::default());
    let counters = Counters::default();
    // A daemon takes SIGHUP from the start: while it waits for its database, a reload must not
    // kill it (the signal's default), and the configuration it reads is taken in once it runs.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let hup = (!args.once).then(|| {
        tokio::spawn(reload_on_hangup(
            args.config.clone(),
            (config.routes.clone(), sender.clone()),
            reload_tx,
        ))
    });
    // Before any wait: a bad lease is bad configuration, refused at once.
    let lease = match postgres && !args.once {
        true => Some(leader_lease()?),
        false => None,
    };
    let mut endpoint = None;
    // systemd's `Type=notify`: nothing is sent unless `NOTIFY_SOCKET` is set, and only the daemon
    // sends (a `--once` run is no service's main process).
    let notifier = match args.once {
        true => Notifier::none(),
        false => Notifier::from_env(std::env::vars_os()),
    };
    let store = match state {
        StateLocation::File(path) => open_file(&path, args.state_new).await?,
        StateLocation::Postgres(url) => {
            let options = PgOptions {
                password_file: config.state_password_file.clone(),
                ..PgOptions::from_env()
            };
            match Store::open_postgres(&url, options.clone()).await {
                Ok(store) => store,
                // A daemon waits for its database (issue 15, item 9); `--once` says so and exits.
                Err(e) if e.is_unreachable() && !args.once => {
                    let started =
                        Endpoint::start(&args, config.listen, &subscriber, &counters).await?;
                    // Each try extends systemd's start timeout: the wait is by design, and a try
                    // that hangs stops extending it.
                    let open = || {
                        notifier.extend_start(
                            2 * permatoken_watch::startup::MAX_BACKOFF,
                            "waiting for the state database",
                        );
                        Store::open_postgres(&url, options.clone())
                    };
                    let shutdown = super::sandbox::shutdown_signal();
                    let waited = wait_for_state(open, Some(e), &publisher, shutdown).await;
                    let Some(store) = waited.map_err(pg_failure)? else {
                        started.stop().await;
                        tracing::info!("stopped");
                        return Ok(0);
                    };
                    started.state.set_store(store.clone());
                    endpoint = Some(started);
                    store
                }
                Err(e) => return Err(pg_failure(e)),
            }
        }
    };
    let backup_dir = backup_dir()?;
    // The daemon keeps the one copy of the configuration: at 10,000 tokens a second one costs
    // megabytes for the one field the endpoint needs from it.
    let listen = config.listen;
    let mut daemon = Daemon::new(Options {
        config,
        store,
        publisher,
        counters: counters.clone(),
        sender,
        graph,
        clock: Arc::new(SystemClock),
        backup_dir,
    });
    daemon.set_notifier(notifier);
    if postgres && args.once {
        // No part in the election, but no renewal or failover a replica has claimed either.
        let claims = daemon.store().claims_only(&replica_name());
        daemon.set_election(claims);
    } else if let Some(lease) = lease {
        let election = daemon.store().election(&replica_name(), lease);
        daemon.set_election(election);
    }
    if args.once {
        if args.no_alerts {
            daemon.without_alerts();
        }
        let summary = daemon.run_all(jiff::Timestamp::now()).await.map_err(|e| {
            Failure::new(e.to_string(), "see the message; nothing else was changed")
        })?;
        let snap = subscriber.borrow().clone();
        render_round(&args, &snap);
        return Ok(summary.worst.unwrap_or(Status::Ok).exit_code());
    }
    let endpoint = match endpoint {
        Some(endpoint) => endpoint,
        None => {
            let started = Endpoint::start(&args, listen, &subscriber, &counters).await?;
            started.state.set_store(daemon.store().clone());
            started
        }
    };
    daemon.set_health(endpoint.state.health());
    let result = serve(daemon, endpoint, reload_rx).await;
    if let Some(hup) = hup {
        hup.abort();
    }
    result
}

/// Opens the state file; with `state_new`, an empty one is taken as a new state.
async fn open_file(path: &Path, state_new: bool) -> Result<Store, Failure> {
    let opened = match state_new {
        true => Store::open_as_new(path).await,
        false => Store::open(path).await,
    };
    opened.map_err(|e| {
        let hint = match e {
            permatoken_state::Error::EmptyState { .. } => {
                "restore the file from a backup, or pass --state-new to start a new state in it"
            }
            _ => "a state file belongs to one `permatoken watch`: give each its own --state",
        };
        Failure::new(e.to_string(), hint)
    })
}

fn pg_failure(e: permatoken_state::Error) -> Failure {
    Failure::new(
        e.to_string(),
        "see the message; the database is left as it was unless migrations completed",
    )
}

/// The lease of the election among the replicas sharing a PostgreSQL state, from
/// `PERMATOKEN_LEADER_LEASE` (seconds; default 15).
fn leader_lease() -> Result<std::time::Duration, Failure> {
    let lease = match std::env::var_os("PERMATOKEN_LEADER_LEASE") {
        None => DEFAULT_LEASE,
        Some(value) => value
            .to_str()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&secs| (2..=3600).contains(&secs))
            .ok_or_else(|| {
                Failure::new(
                    "`PERMATOKEN_LEADER_LEASE` is not a whole number of seconds from 2 to 3600",
                    "set `PERMATOKEN_LEADER_LEASE` to the lease in seconds (default 15), or unset it",
                )
            })?,
    };
    Ok(std::time::Duration::from_secs(lease))
}

/// How this process is known to the others sharing the state: its host and pid.
fn replica_name() -> String {
    // A host name is at most 64 bytes; without one, the pid still tells the replicas apart.
    let host = permatoken_fs::read_capped(Path::new("/proc/sys/kernel/hostname"), 256)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_default();
    format!("{host} pid {}", std::process::id())
}

/// Where the daemon keeps the previous content of the files it renews.
fn backup_dir() -> Result<Option<PathBuf>, Failure> {
    match permatoken_renew::backup_dir(false) {
        Ok(dir) => Ok(dir),
        // With neither variable set the daemon renews without backups, as it always has.
        Err(permatoken_renew::Failure::NoBackupFolder) => Ok(None),
        Err(permatoken_renew::Failure::BackupFolderNotUtf8(var)) => Err(Failure::new(
            format!(
                "`{var}` is not valid UTF-8, so there is no telling where to keep the backups of the files `watch` renews"
            ),
            format!("set `{var}` to a folder path written in UTF-8, or unset it"),
        )),
        Err(e) => Err(Failure::new(e.to_string(), e.hint())),
    }
}

/// How long a leader's heartbeat may be silent before a standby ends its session.
const DEFAULT_LEASE: u64 = 15;

fn load(args: &WatchArgs) -> Result<Loaded, Failure> {
    let cwd = std::env::current_dir().map_err(|e| {
        Failure::new(
            format!("cannot read the current folder: {e}"),
            "run from a folder that exists, or pass --config",
        )
    })?;
    config::load_or_default(args.config.as_deref(), std::env::vars_os(), &cwd).map_err(|e| {
        let hint = match e {
            config::ConfigError::NothingToWatch { .. } => {
                "run `permatoken watch` in the folder of your service's `.env`, or write a permatoken.toml that names each token (README: \"Watching tokens\") and pass it with --config"
            }
            _ => {
                "fix the configuration (`permatoken watch --check-config` checks it); every key is described in the README"
            }
        };
        Failure::new(e.to_string(), hint)
    })
}

fn check_config(args: &WatchArgs, loaded: &Loaded) -> u8 {
    let c = &loaded.config;
    let file = c.path.as_ref().map_or_else(
        || "no configuration file: `./.env` with the defaults".to_owned(),
        |p| format!("`{}`", p.display()),
    );
    let mut warnings = loaded.warnings.clone();
    warnings.extend(config::unreadable_files(c));
    let failed = args.strict && !warnings.is_empty();
    let (message, hint) = (
        format!(
            "{} warning(s), and --strict makes a warning fail the check",
            warnings.len()
        ),
        "fix what the warnings say, or leave out --strict to accept them",
    );
    if args.json {
        let mut object = serde_json::json!({
            "status": if failed { Status::Unknown } else { Status::Ok },
            "config": c.path,
            "tokens": c.tokens.iter().map(|t| &t.name).collect::<Vec<_>>(),
            "token_sets": c.token_sets.iter().map(|s| serde_json::json!({"name": s.name, "pattern": s.pattern})).collect::<Vec<_>>(),
            "routes": c.routes.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "warnings": warnings,
        });
        if failed {
            object["error"] = serde_json::json!({"message": message, "hint": hint});
        }
        crate::render::stdout_json(&object);
    } else {
        let mut out = anstream::stdout().lock();
        let _ = writeln!(
            out,
            "{file} is valid: {} token(s), {} token set(s), {} alert route(s)",
            c.tokens.len(),
            c.token_sets.len(),
            c.routes.len()
        );
        // A set's files are looked for at each round; say what they match now.
        for set in &c.token_sets {
            let found = permatoken_watch::sets::expand(set, &c.routes).tokens.len();
            let _ = writeln!(
                out,
                "  set `{}`: `{}` matches {found} file(s) now",
                set.name,
                set.pattern.display()
            );
        }
    }
    for warning in &warnings {
        crate::render::warning(warning);
    }
    if failed {
        crate::render::error(&message, Some(hint));
        return 3;
    }
    0
}

async fn test_alert(
    args: &WatchArgs,
    config: &Config,
    sender: &Sender,
    name: &str,
) -> Result<u8, Failure> {
    let Some(route) = config.route(name) else {
        let known: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        return Err(Failure::new(
            format!(
                "no alert route is named `{}`",
                crate::render::sanitise(name)
            ),
            if known.is_empty() {
                "the configuration has no [[alert]] route; add one".to_owned()
            } else {
                format!("the routes are: {}", known.join(", "))
            },
        ));
    };
    let (code, json) = match sender.test_alert(route, jiff::Timestamp::now()).await {
        Ok(done) => {
            let answer = done.status.map_or_else(
                || "the command succeeded".to_owned(),
                |s| format!("HTTP {s}"),
            );
            if !args.json {
                let mut out = anstream::stdout().lock();
                let _ = writeln!(out, "delivered to `{}`: {answer}", route.name);
                if !done.reply.is_empty() {
                    let _ = writeln!(out, "the receiver answered: {}", done.reply);
                }
            }
            let json = serde_json::json!({"status": "ok", "route": route.name,
                "delivered": true, "http_status": done.status, "reply": done.reply});
            (0, json)
        }
        Err(e) => {
            // A receiver that answered and refused is a "no" (2); no answer is "could not tell" (3).
            let code = if e.status.is_some() { 2 } else { 3 };
            crate::render::error(
                &format!(
                    "the test alert was not delivered to `{}`: {}",
                    route.name, e.reason
                ),
                Some("check the route's URL (or command) and the receiver's logs"),
            );
            let json = serde_json::json!({"status": super::status_of(code), "route": route.name,
                "delivered": false, "http_status": e.status, "reason": e.reason});
            (code, json)
        }
    };
    if args.json {
        crate::render::stdout_json(&json);
    }
    Ok(code)
}

fn render_round(args: &WatchArgs, snap: &Snapshot) {
    if args.json {
        let tokens: Vec<_> = snap
            .tokens
            .iter()
            .map(|t| {
                serde_json::json!({"name": t.name, "state": t.state, "status": t.status,
                    "valid": t.valid, "expires_at": t.expires_at, "fingerprint": t.fingerprint})
            })
            .collect();
        let worst = snap
            .tokens
            .iter()
            .map(|t| t.status)
            .fold(Status::Ok, Status::worst);
        crate::render::stdout_json(&serde_json::json!({"status": worst, "tokens": tokens}));
        return;
    }
    let mut out = anstream::stdout().lock();
    for t in &snap.tokens {
        let _ = writeln!(
            out,
            "{}: {} (check: {})",
            crate::render::sanitise(&t.name),
            t.state.label(),
            serde_json::to_value(t.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        );
    }
}

/// The HTTP endpoint, serving from its start: before the state is open while `watch` waits for
/// its database, then for the daemon. On one socket, or two (`:PORT`, `localhost:PORT`).
struct Endpoint {
    state: AppState,
    stop: tokio::sync::watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<Result<(), http::HttpError>>>,
}

impl Endpoint {
    async fn start(
        args: &WatchArgs,
        configured: Option<Listen>,
        subscriber: &snapshot::Subscriber,
        counters: &Counters,
    ) -> Result<Self, Failure> {
        let listen = args
            .listen
            .or(configured)
            .unwrap_or(Listen::Addr(http::DEFAULT_LISTEN));
        let bearer = match &args.http_token_file {
            Some(path) => Some(read_bearer(path)?),
            None => None,
        };
        let listeners = listen.bind().await.map_err(|e| {
            Failure::new(
                format!("cannot listen on {listen}: {e}"),
                "pick another --listen address, or stop what holds this one",
            )
        })?;
        let bound: Vec<_> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let first = bound.first().copied().unwrap_or(http::DEFAULT_LISTEN);
        let state = AppState::waiting(first, bearer, subscriber.clone(), counters.clone())
            .map_err(|e| {
                Failure::new(
                    e.to_string(),
                    "see --listen and --http-token-file in `permatoken watch --help`",
                )
            })?;
        // One line per address, each a URL a person (or a test) can open as it is.
        for addr in &bound {
            tracing::info!("serving the status page and /metrics on http://{addr}/");
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let servers = listeners
            .into_iter()
            .map(|listener| {
                let mut stopped = stopped.clone();
                tokio::spawn(http::serve(listener, state.clone(), async move {
                    let _ = stopped.wait_for(|&stop| stop).await;
                }))
            })
            .collect();
        Ok(Self {
            state,
            stop,
            servers,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = server.await;
        }
    }
}

async fn serve(
    mut daemon: Daemon,
    endpoint: Endpoint,
    reload_rx: tokio::sync::mpsc::UnboundedReceiver<Config>,
) -> Result<u8, Failure> {
    let (count, sets) = (
        daemon.config().tokens.len(),
        daemon.config().token_sets.len(),
    );
    match sets {
        0 => tracing::info!("watching {count} token(s)"),
        _ => tracing::info!("watching {count} token(s) and the files of {sets} token set(s)"),
    }
    let result = daemon
        .run(super::sandbox::shutdown_signal(), reload_rx)
        .await;
    endpoint.stop().await;
    result.map_err(|e| {
        Failure::new(
            e.to_string(),
            "see the message; restart watch when it is fixed",
        )
    })?;
    tracing::info!("stopped");
    Ok(0)
}

/// On each SIGHUP, reads the configuration again and hands it over; an invalid one is logged and
/// the old one kept. A route's plain-http warning is said again only when the route is new or
/// changed (`routes`: those of the configuration in use; `sender`'s, for `url_file` routes).
async fn reload_on_hangup(
    explicit: Option<PathBuf>,
    (mut routes, sender): (Vec<config::Route>, Sender),
    tx: tokio::sync::mpsc::UnboundedSender<Config>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let cwd = std::env::current_dir().unwrap_or_default();
            match config::load_or_default(explicit.as_deref(), std::env::vars_os(), &cwd) {
                Ok(loaded) => {
                    for warning in config::reload_warnings(&routes, &loaded) {
                        tracing::warn!("{warning}");
                    }
                    sender.warn_plain_http(&loaded.config.routes);
                    routes.clone_from(&loaded.config.routes);
                    if tx.send(loaded.config).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!(
                    "the configuration was not reloaded, the one in use is kept: {e}"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (explicit, routes, sender, tx);
        std::future::pending::<()>().await;
    }
}

/// The most bytes of an `--http-token-file`: a token of a few dozen characters and a newline.
const MAX_HTTP_TOKEN_FILE: u64 = 4096;

fn read_bearer(path: &Path) -> Result<BearerToken, Failure> {
    let hint = "--http-token-file takes a file holding one long random token";
    let fail = |why: String| {
        Failure::new(
            format!(
                "cannot read the HTTP token file `{}`: {why}",
                path.display()
            ),
            hint,
        )
    };
    let bytes = permatoken_fs::read_secret(path, MAX_HTTP_TOKEN_FILE).map_err(|e| match e {
        ReadError::Io(e) => fail(e.to_string()),
        // "it is larger than 4 KiB"
        e => fail(format!("{e}, so it is not a token file")),
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("it is not UTF-8 text".into()))?;
    BearerToken::new(text).map_err(|e| Failure::new(e.to_string(), hint))
}
