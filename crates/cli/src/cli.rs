//! Command-line definitions. The doc comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit codes (all commands; the monitoring-plugin convention):
  0  ok        valid, never expires or outside the warning window
  1  warning   valid, but expires within --warn-days
  2  critical  dead, expires within --crit-days, or a required permission is missing
  3  unknown   could not tell: network failure, outage, rate limit, bad configuration or usage

Try it without a Meta account:  permatoken check --sandbox";

const SCAN_AFTER_HELP: &str = "\
Exit codes (the secret-scanner convention):
  0  clean
  1  findings
  2  findings, of which --verify proved at least one live
  3  error

Examples:
  permatoken scan                       # this folder, every file
  permatoken scan --git                 # every blob in this repository's history
  git diff --cached | permatoken scan - # what is about to be committed
  permatoken scan --format sarif > permatoken.sarif";

const RENEW_AFTER_HELP: &str = "\
Exit codes:
  0  done, or nothing needed
  1  done, but the resulting token expires within --warn-days
  2  failed (nothing written), a dead token that cannot be renewed, or written but --then failed
  3  could not tell (network, Graph API outage) or bad configuration or usage; nothing written

The token is written back where it came from: the .env file (only its line changes; the old file is
kept in $XDG_STATE_HOME/permatoken/backups), or the --token-file. A token from the environment or
standard input needs --env-file or --output.";

const WATCH_AFTER_HELP: &str = "\
Exit codes:
  --once          the worst status of the round: 0 ok, 1 warning, 2 critical, 3 unknown
  --check-config  0 valid (warnings printed, a missing or unreadable file among them), 3 invalid
                  (the message names file:line:column), or any warning with --strict
  --test-alert    0 delivered, 2 refused by the receiver, 3 could not tell or no such route
  otherwise       0 after SIGTERM or SIGINT; 3 when it cannot start (bad configuration, the state
                  file in use by another watch, the address taken)

Examples:
  permatoken watch --check-config
  permatoken watch --test-alert ops
  permatoken watch --once              # one round, for cron and CI
  permatoken watch --once --no-alerts  # one round that sends and records no alert: a look
  permatoken watch                     # the daemon, status page on http://127.0.0.1:9464/";

/// Keeps WhatsApp Business Platform access tokens alive: tells the truth about a token, and what to do.
#[derive(Debug, Parser)]
#[command(name = "permatoken", version, after_help = AFTER_HELP, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    #[command(flatten)]
    pub(crate) global: Global,
}

#[derive(Debug, Args)]
pub(crate) struct Global {
    /// More detail on standard error (-v: debug, -vv: trace). `RUST_LOG` works too.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// When to colour the output.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, global = true, value_name = "WHEN")]
    pub(crate) color: ColorWhen,
    /// How log lines on standard error are written: `text` for people, `json` (one object a line:
    /// `timestamp`, `level`, `message`, `target` and the line's fields) for a log collector.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "PERMATOKEN_LOG_FORMAT", value_name = "FORMAT")]
    pub(crate) log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ColorWhen {
    /// Colour on a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Refuses, before clap reads them, environment variables that back options (`PERMATOKEN_GRAPH_URL`, …)
/// and are not UTF-8: clap would say only "invalid UTF-8 was detected", naming nothing. Returns the
/// message and hint on refusal.
pub(crate) fn check_environment() -> Result<(), (String, String)> {
    fn walk(cmd: &clap::Command, bad: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(name) = arg.get_env()
                && std::env::var_os(name).is_some_and(|v| v.to_str().is_none())
            {
                bad.push(name.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, bad);
        }
    }
    let mut bad = Vec::new();
    walk(&<Cli as clap::CommandFactory>::command(), &mut bad);
    bad.sort();
    bad.dedup();
    match bad.first() {
        None => Ok(()),
        Some(name) => Err((
            format!("`{name}` from the environment is not UTF-8 text"),
            format!("set `{name}` again as plain text, or unset it to use the default"),
        )),
    }
}

impl Cli {
    /// The relations between arguments that clap cannot express, as clap's own usage errors (so
    /// they are rendered, and exit, like any other): the critical window lies inside the warning
    /// window, as `crit_days` ≤ `warn_days` in permatoken.toml.
    pub(crate) fn validate(&self) -> Result<(), clap::Error> {
        let (name, windows) = match &self.command {
            Command::Check(args) => ("check", &args.windows),
            Command::Exchange(args) => ("exchange", &args.windows),
            Command::Refresh(args) => ("refresh", &args.windows),
            Command::Mint(args) => ("mint", &args.windows),
            _ => return Ok(()),
        };
        if windows.crit_days <= windows.warn_days {
            return Ok(());
        }
        let mut cmd = <Self as clap::CommandFactory>::command();
        cmd.build();
        let sub = cmd.find_subcommand_mut(name).expect("a subcommand of ours");
        Err(sub.error(
            clap::error::ErrorKind::ArgumentConflict,
            format!(
                "`--crit-days` ({}) is more than `--warn-days` ({}), and the critical window lies inside the warning window: lower `--crit-days` or raise `--warn-days` (defaults 3 and 14)",
                windows.crit_days, windows.warn_days
            ),
        ))
    }
}

/// Whether the raw command line asks for JSON (`--json`, before any `--`), read when clap could not
/// parse it, so that a usage error is one JSON object too; with the `action` the renewal commands
/// name there. `None`: no JSON asked.
pub(crate) fn json_requested(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Option<Option<&'static str>> {
    let command = <Cli as clap::CommandFactory>::command();
    let mut json = false;
    // The first word naming a command is the command (a later one is some option's value).
    let mut named = None;
    for arg in args {
        let Some(arg) = arg.to_str() else { continue };
        match arg {
            "--" => break,
            "--json" => json = true,
            _ if arg.starts_with("--json=") => json = true,
            _ if named.is_none() && command.find_subcommand(arg).is_some() => {
                named = Some(arg.to_owned())
            }
            _ => {}
        }
    }
    let action = match named.as_deref() {
        Some("exchange") => Some("exchange"),
        Some("refresh") => Some("refresh"),
        Some("mint") => Some("mint"),
        _ => None,
    };
    json.then_some(action)
}

impl Global {
    /// Sets colour and logging for the whole process. A daemon (`watch`) logs what it does at info
    /// level by default; the other commands only warnings.
    pub(crate) fn apply(&self, daemon: bool) {
        match self.color {
            ColorWhen::Auto => {}
            ColorWhen::Always => anstream::ColorChoice::Always.write_global(),
            ColorWhen::Never => anstream::ColorChoice::Never.write_global(),
        }
        let default = match self.verbose {
            0 if daemon => "permatoken=info,permatoken_watch=info,warn",
            0 => "warn",
            1 => "permatoken=debug,permatoken_graph=debug,permatoken_inspect=debug,warn",
            _ => "trace",
        };
        let filter = match std::env::var("RUST_LOG") {
            Ok(value) if !value.is_empty() => tracing_subscriber::EnvFilter::new(value),
            _ => tracing_subscriber::EnvFilter::new(default),
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(true);
        match self.log_format {
            LogFormat::Text => builder.with_ansi(crate::render::stderr_has_colour()).init(),
            // `message` and the fields at the top level, as collectors (Loki, Elasticsearch) expect
            // them; never colour codes inside a JSON string.
            LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Tell what a token is, whether it works, when it dies and whether it holds the WhatsApp permissions.
    ///
    /// Calls `/me` and `/debug_token` concurrently and prints a report with a verdict: ok, warning,
    /// critical or unknown, which is also the exit code (0, 1, 2, 3). The token is read, in this
    /// order, from --token-file / --token-stdin, --env-file, the environment (`WHATSAPP_ACCESS_TOKEN`),
    /// then `./.env`; never from the command line. With `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET`
    /// known, `/debug_token` is asked with the app token and every call carries `appsecret_proof`.
    #[command(after_help = AFTER_HELP)]
    Check(CheckArgs),
    /// Run the local Graph API emulator, to try permatoken (or your own code) without a Meta account.
    ///
    /// Listens on 127.0.0.1 only, makes a fake app and one token per scenario at start, and prints them.
    /// Point permatoken at it with `PERMATOKEN_GRAPH_URL`. Admin endpoints: `POST /_sandbox/faults`
    /// (JSON: latency_ms, server_errors, rate_limits, regain_minutes, truncate, throttle_secs,
    /// throttle_grow_ms, user_rate_limits, batch_nulls, batch_headers_omitted), `GET /_sandbox/throttle`,
    /// `POST /_sandbox/clock` (`{"advance_seconds": N}` ages every token), `GET /_sandbox/requests`,
    /// `GET /_sandbox/scenarios`,
    /// each only with the header `x-sandbox-admin` and the admin secret printed at start.
    Sandbox(SandboxArgs),
    /// Turn a short-lived user token into a long-lived (60-day) one, verify it, and write it back.
    ///
    /// The guide's Method 2, done safely: the app secret goes in a POST body (never a URL), the new token
    /// is checked with `/me` and `/debug_token` (valid, same app, same or more permissions) before
    /// anything is written, the `.env` file is edited in place (every other byte kept, the old content
    /// backed up outside the project, its mode and owner kept), and the token is never printed unless --reveal.
    /// Needs `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET`.
    #[command(after_help = RENEW_AFTER_HELP)]
    Exchange(ExchangeArgs),
    /// Renew what can be renewed inside its renewal window; say plainly what cannot, and how to fix it.
    ///
    /// Looks at `WHATSAPP_ACCESS_TOKEN` and every `WHATSAPP_ACCESS_TOKEN_BACKUP*`. A 60-day system-user
    /// token is renewed by API within its 60 days; a long-lived user token only with --try-user-token
    /// (renewal is not documented for it, so only a later expiry on `/debug_token` counts); a
    /// never-expiring system-user token is never touched. With --failover, a dead primary token is
    /// replaced by the first healthy backup.
    #[command(after_help = RENEW_AFTER_HELP)]
    Refresh(RefreshArgs),
    /// Make a permanent system-user token by API (the guide's Method 3), verify it, and write it.
    ///
    /// With a business admin's token (read like any token), the app id and secret, and the system
    /// user's id (Business Settings → Users → System users), installs the app for the system user, asks
    /// for a token with whatsapp_business_messaging, whatsapp_business_management and
    /// business_management, checks it never expires, and writes it like `exchange` does.
    #[command(after_help = RENEW_AFTER_HELP)]
    Mint(MintArgs),
    /// The production checklist: token, business verification, phone number, app subscription,
    /// webhook URL and rate limits, each proven against the API and the live webhook.
    ///
    /// Reads what `check` reads plus `WHATSAPP_BUSINESS_ACCOUNT_ID`, `WHATSAPP_PHONE_NUMBER_ID`,
    /// `WHATSAPP_WEBHOOK_URL` and `WHATSAPP_WEBHOOK_VERIFY_TOKEN`; an item whose input is not set is
    /// `skipped`, not failed. Every item not ✓ comes with the exact fix. The exit code is the worst
    /// item's (critical 2 > unknown 3 > warning 1 > ok 0).
    #[command(after_help = AFTER_HELP)]
    Doctor(DoctorArgs),
    /// Send the `hello_world` template to a number: the end-to-end proof that messages go out.
    ///
    /// Uses `WHATSAPP_PHONE_NUMBER_ID` and the token. The number may be written as people do
    /// (`+1 650-555-0100`). Exit 0 accepted (not yet delivered: delivery reports arrive on the
    /// webhook), 2 refused (with Meta's reason explained), 3 could not tell.
    SendTest(SendTestArgs),
    /// Find leaked Meta access tokens, app tokens and app secrets in files, standard input or git
    /// history, each with the app it belongs to; --verify says whether they still work.
    ///
    /// Walks every file, hidden ones included (`.env` is where tokens live), skipping `.git` internals,
    /// binary and huge files. Secrets are shown only as fingerprints. Silence a known one with a
    /// `permatoken:allow` comment on its line, or with a baseline (--write-baseline, --baseline).
    #[command(after_help = SCAN_AFTER_HELP)]
    Scan(ScanArgs),
    /// Keep every configured token alive: check on a schedule, renew in time, fail over to a backup,
    /// and alert a person once when something needs them; serve /metrics and a status page.
    ///
    /// Reads `permatoken.toml` (--config, else `$XDG_CONFIG_HOME/permatoken/permatoken.toml`, else
    /// `~/.config/permatoken/permatoken.toml`); with no configuration file it watches `./.env` with the
    /// defaults. Each token is checked at its `interval` (with jitter, sooner as expiry nears, again
    /// within minutes after a check that could not tell), renewed inside its renewal window, and
    /// replaced by a healthy backup when the API says it is dead. What it saw and said is kept in the
    /// state file, so a restart never repeats an alert. SIGHUP reloads the configuration (an invalid
    /// one is logged and the old one kept); SIGTERM or SIGINT stops it after the current writes.
    /// Logs go to standard error, one line per state change, renewal, failover and alert.
    #[command(after_help = WATCH_AFTER_HELP)]
    Watch(WatchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// bash: `permatoken completions bash > ~/.local/share/bash-completion/completions/permatoken`;
    /// zsh: `permatoken completions zsh > ~/.zfunc/_permatoken`;
    /// fish: `permatoken completions fish > ~/.config/fish/completions/permatoken.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages, `permatoken.1` and one `permatoken-COMMAND.1` for each command, into a
    /// folder (the Debian package is built with them: `contrib/deb/build`).
    #[command(hide = true)]
    ManPages {
        /// The folder to write them into (made if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Where the token and app credentials come from.
#[derive(Debug, Args)]
pub(crate) struct SourceArgs {
    /// Read the token (only the token) from this file.
    #[arg(long, value_name = "PATH", conflicts_with = "token_stdin")]
    pub(crate) token_file: Option<PathBuf>,
    /// Read the token (only the token) from standard input.
    #[arg(long)]
    pub(crate) token_stdin: bool,
    /// Read variables from this .env file instead of `./.env`.
    #[arg(long, value_name = "PATH")]
    pub(crate) env_file: Option<PathBuf>,
}

/// How to reach the Graph API.
#[derive(Debug, Args)]
pub(crate) struct GraphArgs {
    /// Graph API base URL (plain http:// only to loopback).
    #[arg(long, env = "PERMATOKEN_GRAPH_URL", value_name = "URL", default_value = permatoken_graph::DEFAULT_GRAPH_URL)]
    pub(crate) graph_url: String,
    /// Graph API version.
    #[arg(long, env = "PERMATOKEN_GRAPH_VERSION", value_name = "VERSION", default_value = permatoken_graph::DEFAULT_GRAPH_VERSION)]
    pub(crate) graph_version: String,
    /// Also trust the CA certificates in this PEM file (beside the system's roots).
    #[arg(long, value_name = "PATH")]
    pub(crate) ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) graph: GraphArgs,
    /// Check the primary token and every backup (`WHATSAPP_ACCESS_TOKEN_BACKUP`, `_BACKUP_2`, …).
    /// With --sandbox: every scenario.
    #[arg(long)]
    pub(crate) all: bool,
    /// Print one JSON object on standard output (fields documented in the README).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) windows: WindowArgs,
    /// Start the built-in sandbox and check one of its tokens: no Meta account needed.
    #[arg(long, conflicts_with_all = ["token_file", "token_stdin", "env_file", "ca_file"])]
    pub(crate) sandbox: bool,
    /// With --sandbox: which scenario token to check (see `permatoken sandbox`).
    #[arg(long, value_name = "NAME", requires = "sandbox", default_value = "system-user", value_parser = scenario_names())]
    pub(crate) scenario: String,
}

fn scenario_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        permatoken_sandbox::SCENARIOS
            .iter()
            .map(|s| clap::builder::PossibleValue::new(s.name).help(s.about)),
    )
}

#[derive(Debug, Args)]
pub(crate) struct SandboxArgs {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub(crate) port: u16,
    /// Refuse user-token calls without `appsecret_proof`, like an app with "Require App Secret" on.
    #[arg(long)]
    pub(crate) require_proof: bool,
    /// Delay every answer by this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub(crate) latency_ms: u64,
    /// Answer the next N requests with HTTP 503 and no body.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) server_errors: u32,
    /// Answer the next N requests with rate-limit code 4.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) rate_limits: u32,
    /// `estimated_time_to_regain_access` sent with those rate limits, in minutes.
    #[arg(long, value_name = "MINUTES")]
    pub(crate) regain_minutes: Option<u32>,
    /// Cut the next N answers in the middle of their JSON.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) truncate: u32,
    /// Serve HTTPS, with a certificate signed by a CA made at start; clients trust it with --ca-file.
    #[arg(long)]
    pub(crate) tls: bool,
    /// With --tls: a new file to write the CA certificate to (default: a private folder made for the
    /// run in the temporary folder).
    #[arg(long, value_name = "PATH", requires = "tls")]
    pub(crate) ca_out: Option<PathBuf>,
    /// Also make N extra valid tokens, for tests and benchmarks of many tokens: never-expiring
    /// system-user tokens of the sandbox's app with every WhatsApp permission. Not printed: see
    /// --extra-tokens-json.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub(crate) extra_tokens: u32,
    /// With --extra-tokens: write them as JSON (`app_id`, `system_user_id`, `tokens`) to PATH, a new
    /// file made with mode 0600.
    #[arg(long, value_name = "PATH", requires = "extra_tokens")]
    pub(crate) extra_tokens_json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The configuration file (default: `$XDG_CONFIG_HOME/permatoken/permatoken.toml`, else
    /// `~/.config/permatoken/permatoken.toml`; if that does not exist, `./.env` with the defaults).
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// The state file (SQLite), over the configuration's `state` (default:
    /// `$XDG_STATE_HOME/permatoken/state.db`, else `~/.local/state/permatoken/state.db`). Only one
    /// watch may use a state file at a time. Or a PostgreSQL URL, `postgres://USER@HOST:PORT/DB`
    /// (`?sslmode=disable|prefer|require|verify-full`, `sslrootcert=PATH`), never with a password:
    /// it comes from `state_password_file`, PGPASSWORD or ~/.pgpass.
    #[arg(long, value_name = "PATH")]
    pub(crate) state: Option<PathBuf>,
    /// Start with this empty file as a new state. An existing state file of zero bytes is otherwise
    /// refused: it is more likely a state lost (truncated, restored empty) than a new one, and
    /// starting from nothing sends every alert again under new ids. A missing file is created
    /// without it; a file holding a state is used as it is.
    #[arg(long)]
    pub(crate) state_new: bool,
    /// Serve /metrics, /healthz, /api/tokens and the status page on this address, over the
    /// configuration's `listen` (default 127.0.0.1:9464; port 0 takes any free port, logged at
    /// start): an address and port (`127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464`), `:9464` for
    /// every interface of both families (`[::]`, and `0.0.0.0` where it does not take IPv4 too),
    /// or `localhost:9464` for 127.0.0.1 and ::1 (never a resolver's answer). A non-loopback
    /// address needs --http-token-file.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<permatoken_watch::listen::Listen>,
    /// A file holding the bearer token that guards / and /api/* (at least 16 visible characters,
    /// e.g. from `openssl rand -hex 32`); /metrics and /healthz stay open.
    #[arg(long, value_name = "FILE")]
    pub(crate) http_token_file: Option<PathBuf>,
    /// Run one round (every token checked, renewed or failed over if due, alerts delivered) and exit
    /// with the worst status.
    #[arg(long, conflicts_with_all = ["check_config", "test_alert"])]
    pub(crate) once: bool,
    /// With --once: look without alerting. The round checks, renews and fails over as usual and
    /// exits with its worst status, but the alerts it decides are only logged: none is sent and
    /// none recorded in the state, so a later round (or the daemon) still alerts them. Only with
    /// --once: a daemon that never alerts would be a silent one.
    #[arg(long, requires = "once")]
    pub(crate) no_alerts: bool,
    /// Validate the configuration, look at the files it names (a missing or unreadable env_file,
    /// token_file, app_secret_file, url_file, secret_file or state_password_file, a `backups`
    /// variable its env file lacks), print the warnings, and exit (0 valid, 3 invalid).
    #[arg(long, conflicts_with = "test_alert")]
    pub(crate) check_config: bool,
    /// With --check-config: any warning fails it (exit 3), for CI and deploy scripts.
    #[arg(long, requires = "check_config")]
    pub(crate) strict: bool,
    /// Send a test alert along the route named ROUTE and print what the receiver answered.
    #[arg(long, value_name = "ROUTE")]
    pub(crate) test_alert: Option<String>,
    /// With --once, --check-config or --test-alert: print one JSON object on standard output.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) graph: GraphArgs,
}

/// The warning and critical windows.
#[derive(Debug, Args)]
pub(crate) struct WindowArgs {
    /// Warn when a token expires within this many days.
    #[arg(long, value_name = "DAYS", default_value_t = 14, value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub(crate) warn_days: u32,
    /// Critical when a token expires within this many days (at most --warn-days: a usage error otherwise).
    #[arg(long, value_name = "DAYS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub(crate) crit_days: u32,
}

/// Where a new token goes, and what happens after.
#[derive(Debug, Args)]
pub(crate) struct WriteArgs {
    /// Write the new token to this file (mode 0600 when new; an existing one keeps its mode) instead of the .env file.
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Check the current token and show what would change, secrets masked: Meta is asked for no new
    /// token and nothing is written.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// How long to wait for another process writing the same file (holding its `<file>.lock`) before
    /// giving up with exit 3: `30s`, `2m`, `1m 30s`, or a number of seconds.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_lock_timeout)]
    pub(crate) lock_timeout: std::time::Duration,
    /// Write without keeping a backup of the previous file (only way to write when neither
    /// `XDG_STATE_HOME` nor `HOME` is set).
    #[arg(long)]
    pub(crate) no_backup: bool,
    /// After a successful write, run this command with `sh -c` (e.g. restart the service); its
    /// environment holds no token or secret.
    #[arg(long, value_name = "CMD")]
    pub(crate) then: Option<String>,
    /// Print one JSON object on standard output.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `--lock-timeout`: a humane duration (`30s`, `2m`, `1m 30s`, `500ms`) or a number of seconds.
fn parse_lock_timeout(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    let duration: jiff::SignedDuration = text.parse().map_err(|_| {
        format!("`{text}` is not a duration: write `30s`, `2m`, `1m 30s` or seconds")
    })?;
    std::time::Duration::try_from(duration).map_err(|_| "a timeout cannot be negative".to_owned())
}

#[derive(Debug, Args)]
pub(crate) struct ExchangeArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) graph: GraphArgs,
    #[command(flatten)]
    pub(crate) write: WriteArgs,
    #[command(flatten)]
    pub(crate) windows: WindowArgs,
    /// Also print the new token on standard output (it is otherwise never shown).
    #[arg(long)]
    pub(crate) reveal: bool,
    /// Use the built-in sandbox's `short-lived` token (or --scenario); writes only with --output.
    #[arg(long, conflicts_with_all = ["token_file", "token_stdin", "env_file", "ca_file"])]
    pub(crate) sandbox: bool,
    /// With --sandbox: which scenario token to exchange.
    #[arg(long, value_name = "NAME", requires = "sandbox", default_value = "short-lived", value_parser = scenario_names())]
    pub(crate) scenario: String,
}

#[derive(Debug, Args)]
pub(crate) struct RefreshArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) graph: GraphArgs,
    #[command(flatten)]
    pub(crate) write: WriteArgs,
    #[command(flatten)]
    pub(crate) windows: WindowArgs,
    /// Renew a token once it expires within this many days (default: --warn-days).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub(crate) renew_days: Option<u32>,
    /// Also try the exchange on a long-lived user token (not documented by Meta; kept only if
    /// `/debug_token` shows a later expiry).
    #[arg(long)]
    pub(crate) try_user_token: bool,
    /// When the primary token is dead (by the API's word, never on an outage), promote the first
    /// healthy backup into `WHATSAPP_ACCESS_TOKEN`; the dead one stays in the backup copy of the file.
    #[arg(long)]
    pub(crate) failover: bool,
    /// Use the built-in sandbox's `system-user-60d` token (or --scenario); writes only with --output.
    /// Add `--renew-days 60` to see a renewal.
    #[arg(long, conflicts_with_all = ["token_file", "token_stdin", "env_file", "ca_file", "failover"])]
    pub(crate) sandbox: bool,
    /// With --sandbox: which scenario token to refresh.
    #[arg(long, value_name = "NAME", requires = "sandbox", default_value = "system-user-60d", value_parser = scenario_names())]
    pub(crate) scenario: String,
}

#[derive(Debug, Args)]
pub(crate) struct MintArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) graph: GraphArgs,
    #[command(flatten)]
    pub(crate) write: WriteArgs,
    #[command(flatten)]
    pub(crate) windows: WindowArgs,
    /// The system user's id (Business Settings → Users → System users → the user).
    #[arg(long, value_name = "ID", required_unless_present = "sandbox")]
    pub(crate) system_user: Option<String>,
    /// Ask for a token that expires after 60 days, for businesses that must use expiring tokens.
    #[arg(long)]
    pub(crate) expires_60_days: bool,
    /// Also print the new token on standard output (it is otherwise never shown).
    #[arg(long)]
    pub(crate) reveal: bool,
    /// Use the built-in sandbox's business admin token and system user; writes only with --output.
    #[arg(long, conflicts_with_all = ["token_file", "token_stdin", "env_file", "ca_file"])]
    pub(crate) sandbox: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) graph: GraphArgs,
    /// Print one JSON object: `{"status", "items": [{"id", "title", "status", "evidence", "fix"}]}`.
    #[arg(long)]
    pub(crate) json: bool,
    /// Fix what can be fixed by API: subscribe this app to the account's webhooks (asks first).
    #[arg(long)]
    pub(crate) fix: bool,
    /// With --fix: do not ask (for scripts).
    #[arg(long, requires = "fix")]
    pub(crate) yes: bool,
    /// Let a webhook on a private address pass (tests and labs; Meta cannot reach it).
    #[arg(long)]
    pub(crate) allow_private_webhook: bool,
    /// Do not send the inert test notifications to the webhook.
    #[arg(long)]
    pub(crate) no_webhook_post: bool,
    /// Run against the built-in sandbox and a local webhook receiver: no Meta account needed.
    #[arg(long, conflicts_with_all = ["token_file", "token_stdin", "env_file", "ca_file"])]
    pub(crate) sandbox: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SendTestArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) graph: GraphArgs,
    /// The recipient, with its country code: `+1 650-555-0100`.
    #[arg(long, value_name = "NUMBER")]
    pub(crate) to: String,
    /// The template to send.
    #[arg(long, default_value = "hello_world")]
    pub(crate) template: String,
    /// The template's language.
    #[arg(long, default_value = "en_US")]
    pub(crate) language: String,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
    /// Send through the built-in sandbox (its test number and allowed list).
    #[arg(long, conflicts_with_all = ["token_file", "token_stdin", "env_file", "ca_file"])]
    pub(crate) sandbox: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ScanFormat {
    /// For people: file:line, the fingerprint, the app, and how to rotate.
    Human,
    /// One JSON object (documented in the README).
    Json,
    /// SARIF 2.1.0, for code-scanning dashboards.
    Sarif,
}

#[derive(Debug, Args)]
pub(crate) struct ScanArgs {
    /// Files and folders to scan (`-` for standard input); with --git, repositories.
    #[arg(value_name = "PATH", default_value = ".")]
    pub(crate) paths: Vec<PathBuf>,
    /// Scan every blob in the history of the repository (each distinct blob once).
    #[arg(long)]
    pub(crate) git: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ScanFormat::Human)]
    pub(crate) format: ScanFormat,
    /// Ask the Graph API whether each token and app secret still works (never printing one).
    #[arg(long)]
    pub(crate) verify: bool,
    /// Leave out the secrets listed in this baseline file.
    #[arg(long, value_name = "FILE")]
    pub(crate) baseline: Option<PathBuf>,
    /// Write the secrets found to this baseline file (by kind and SHA-256, never the secret).
    #[arg(long, value_name = "FILE")]
    pub(crate) write_baseline: Option<PathBuf>,
    /// Honour .gitignore and .ignore files (by default every file is read).
    #[arg(long)]
    pub(crate) respect_gitignore: bool,
    /// Skip files larger than this many MiB.
    #[arg(long, value_name = "MIB", default_value_t = 50)]
    pub(crate) max_file_size: u64,
    #[command(flatten)]
    pub(crate) graph: GraphArgs,
}
