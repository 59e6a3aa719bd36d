//! `permatoken.toml`: which tokens `watch` keeps alive, how, and whom it tells.
//!
//! [`load`] reads a file (at most [`MAX_CONFIG_BYTES`]), [`parse`] checks text, and both return a
//! [`Loaded`]: the typed [`Config`] and the warnings to show at start (plain `http://` alert URLs).
//! Errors name the file, the line and column, and what is allowed there. [`config_path`] finds the
//! file (`--config`, else `$XDG_CONFIG_HOME/permatoken/permatoken.toml`, else
//! `~/.config/permatoken/permatoken.toml`); [`default_config`] is what `watch` runs with when there is
//! none: `./.env` with the defaults.
//!
//! ```toml
//! listen = "127.0.0.1:9464"          # optional: the HTTP endpoint
//! state = "/var/lib/permatoken/state.db"   # optional: the state file, or a PostgreSQL URL
//! #   "postgres://permatoken@db.internal/permatoken?sslmode=verify-full" (never with a password)
//! state_password_file = "/etc/permatoken/pg-password"  # optional: the PostgreSQL password
//!
//! [defaults]                 # every key optional; a [[token]] may override each one
//! interval = "1h"            # between checks: "1s", "5m", "1h", "2d", "1h 30m"
//! jitter = "6m"              # random spread of each check (default: a tenth of `interval`)
//! warn_days = 14             # `expiring` within this many days
//! crit_days = 3              # `critical` within this many days (≤ warn_days)
//! renew_days = 14            # renew within this many days (default: warn_days)
//! unknown_after = "6h"       # unknown this long is alerted as `cannot_be_checked`
//! remind_every = "24h"       # reminder while critical or dead ("0s": never)
//! doctor = false             # also run the doctor checklist
//! doctor_interval = "6h"
//! failover = true            # promote a healthy backup when the token is dead
//! try_user_token = false     # also try renewing a long-lived user token
//! retention = "90d"          # history kept in the state file (only here, not per token; ≥ 1 day)
//! batch_checks = true        # inspect tokens in Graph batches, per app (only here; false: one
//!                            # `/me` and one `/debug_token` call per token)
//!
//! [[token]]
//! name = "orders"                       # unique
//! env_file = "/srv/orders/.env"         # one source: env_file (+ key), token_file, or env
//! key = "WHATSAPP_ACCESS_TOKEN"         # the default
//! # app credentials: FACEBOOK_APP_ID / FACEBOOK_APP_SECRET of the env file (of the process
//! # environment for token_file / env), or app_id + app_secret_file, or app_id + app_secret_env
//! backups = ["WHATSAPP_ACCESS_TOKEN_BACKUP"]   # default: the <key>_BACKUP* series of the file
//! reload = "systemctl restart orders"
//! alerts = ["ops"]
//!
//! [[token_set]]                       # one token per matching file
//! name = "clients"                      # tokens are named clients/<what `*` matched>
//! env_files = "/srv/clients/*/.env"     # or token_files = "…"; `*` within one path segment
//! alert_route_key = "PERMATOKEN_ALERT_ROUTE"  # optional: a variable of each file naming its route
//! max_concurrent_reloads = 4            # optional, also in [defaults]
//! # and the keys of a [[token]] (key, app_id, backups, reload, alerts, interval, …) but `env`;
//! # `reload` gets the file as $1 and its folder as $2
//!
//! [[alert]]
//! name = "ops"
//! kind = "webhook"                      # or "slack", or "command"
//! url = "https://alerts.example.com/hook"   # or url_file (a URL is a secret); command = "…" for kind "command"
//! secret_file = "/etc/permatoken/hook.key"  # optional: sign bodies (X-Permatoken-Signature-256)
//! headers = { "X-Team" = "ops" }        # optional
//! timeout = "10s"                       # per attempt
//! ```
//!
//! Relative paths are resolved against the folder of the configuration file; files are not read
//! here, since they may appear later. A token's `env` variable is checked, never written.
//!
//! Must never: accept an app secret or any secret value written in the configuration (the app secret
//! comes from a file or the environment), or show a route's URL or a header's value.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Where a token is read: `env_file` (+ `key`), `token_file` or `env`. The renewal engine's own type,
/// so that what the configuration says is what the engine reads, with no mapping between two enums.
pub use permatoken_renew::TokenSource;

/// The file's name in its folder.
pub const CONFIG_FILE_NAME: &str = "permatoken.toml";
/// The largest configuration file read: a fleet of 10,000 tokens fits in well under this.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// How many reload commands of one set (or of the `[[token]]`s) run at once unless said otherwise.
pub const DEFAULT_MAX_CONCURRENT_RELOADS: usize = 4;
/// How long history is kept unless `[defaults] retention` says otherwise: 90 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// The token variable read from an env file unless `key` says otherwise.
pub const DEFAULT_KEY: &str = permatoken_config::TOKEN_VAR;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No configuration file, and no `.env` in the working folder for the default configuration.
    #[error("nothing to watch: there is no `{}` and no `.env` in `{}`", looked_at.display(), cwd.display())]
    NothingToWatch {
        /// Where the configuration file was looked for.
        looked_at: PathBuf,
        /// The working folder.
        cwd: PathBuf,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("`{}` is larger than {}: it is not a permatoken configuration", path.display(), permatoken_graph::human_bytes(MAX_CONFIG_BYTES as usize))]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not UTF-8.
    #[error("`{}` is not UTF-8 text (line {line}): save it as UTF-8", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// The first line with a byte that is not, from 1.
        line: usize,
    },
    /// The file is read but wrong somewhere.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// From 1.
        line: usize,
        /// From 1, in characters.
        column: usize,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// An environment variable needed to find the file is not UTF-8.
    #[error("`{var}` is not valid UTF-8; set it to a folder path, or unset it")]
    NotUtf8Var {
        /// The variable.
        var: String,
    },
    /// Neither `XDG_CONFIG_HOME` nor `HOME` is set, and no `--config` was given.
    #[error(
        "cannot find the configuration: neither `XDG_CONFIG_HOME` nor `HOME` is set; pass `--config PATH`"
    )]
    NoHome,
}

/// A configuration and what is worth a warning at start.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Things that do not stop `watch` but a person should know (plain `http://` alert URLs).
    pub warnings: Vec<String>,
}

/// Where watch keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// An SQLite file, for one watch.
    File(PathBuf),
    /// A PostgreSQL URL (`postgres://` or `postgresql://`), shared by replicas. Never holds a
    /// password: the state refuses one at open.
    Postgres(String),
}

impl StateLocation {
    /// A `postgres://` or `postgresql://` URL as such, anything else as a file (relative to
    /// `base`).
    pub fn parse(text: &str, base: &Path) -> Self {
        let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Self::Postgres(text.to_owned())
        } else {
            Self::File(base.join(text))
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from; `None` for [`default_config`].
    pub path: Option<PathBuf>,
    /// `listen`: the HTTP endpoint's address, if set here.
    pub listen: Option<SocketAddr>,
    /// `state`: the state file or PostgreSQL URL, if set here.
    pub state: Option<StateLocation>,
    /// `state_password_file`: the file holding the PostgreSQL state's password, if set here.
    pub state_password_file: Option<PathBuf>,
    /// `[defaults]`, with the built-in defaults filled in.
    pub defaults: Policy,
    /// `[[token]]`, in file order.
    pub tokens: Vec<TokenConfig>,
    /// `[[alert]]`, in file order.
    pub routes: Vec<Route>,
    /// `[[token_set]]`, in file order: expanded into tokens by [`crate::sets::expand`] at each step.
    pub token_sets: Vec<TokenSet>,
    /// `[defaults] max_concurrent_reloads`: reload commands of the `[[token]]`s run at once at
    /// most ([`DEFAULT_MAX_CONCURRENT_RELOADS`] unless set); each set has its own.
    pub max_concurrent_reloads: usize,
    /// `[defaults] retention`: how long checks, events and settled alerts are kept in the state
    /// file ([`DEFAULT_RETENTION`] unless set). For the whole process, never per token.
    pub retention: Duration,
    /// `[defaults] batch_checks` (default true): a round inspects the tokens whose app credentials
    /// are known in Graph batches, per app, within the app's usage budget; false asks `/me` and
    /// `/debug_token` for each token alone (to compare, or as an escape hatch).
    pub batch_checks: bool,
}

impl Config {
    /// The route named `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// The routes `token`'s alerts go to, in its order.
    pub fn routes_for<'a>(&'a self, token: &'a TokenConfig) -> impl Iterator<Item = &'a Route> {
        token.alerts.iter().filter_map(|name| self.route(name))
    }

    /// The token named `name`.
    pub fn token(&self, name: &str) -> Option<&TokenConfig> {
        self.tokens.iter().find(|t| t.name == name)
    }
}

/// How a token is watched: `[defaults]`, or a token's own values over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Between two checks.
    pub interval: Duration,
    /// The random spread added to each wait.
    pub jitter: Duration,
    /// `expiring` within this many days.
    pub warn_days: u32,
    /// `critical` within this many days.
    pub crit_days: u32,
    /// Renew within this many days.
    pub renew_days: u32,
    /// Unknown this long is alerted as `cannot_be_checked`.
    pub unknown_after: Duration,
    /// Reminder interval while critical or dead; zero: no reminders.
    pub remind_every: Duration,
    /// Also run the doctor checklist.
    pub doctor: bool,
    /// How often the checklist runs.
    pub doctor_interval: Duration,
    /// Promote a healthy backup when the token is dead.
    pub failover: bool,
    /// Also try renewing a long-lived user token.
    pub try_user_token: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            jitter: Duration::from_secs(360),
            warn_days: 14,
            crit_days: 3,
            renew_days: 14,
            unknown_after: Duration::from_secs(6 * 3600),
            remind_every: Duration::from_secs(24 * 3600),
            doctor: false,
            doctor_interval: Duration::from_secs(6 * 3600),
            failover: true,
            try_user_token: false,
        }
    }
}

impl Policy {
    /// The warning and critical windows, as `check` takes them.
    pub fn thresholds(&self) -> permatoken_inspect::Thresholds {
        permatoken_inspect::Thresholds {
            warn: jiff::SignedDuration::from_hours(i64::from(self.warn_days) * 24),
            crit: jiff::SignedDuration::from_hours(i64::from(self.crit_days) * 24),
        }
    }

    /// The time rules of alerts.
    pub fn timing(&self) -> crate::states::Timing {
        crate::states::Timing {
            unknown_after: self.unknown_after,
            remind_every: self.remind_every,
        }
    }
}

/// One `[[token]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// Its name, unique.
    pub name: String,
    /// Where the token is.
    pub source: TokenSource,
    /// Where its app's id and secret are.
    pub app: AppSource,
    /// The defaults with its own values over them.
    pub policy: Policy,
    /// Which backups may take its place.
    pub backups: Backups,
    /// `reload`: run with `sh -c` after the token was written.
    pub reload: Option<String>,
    /// The routes its alerts go to, by name (all exist).
    pub alerts: Vec<String>,
    /// The reload command's positional parameters: for a set's token, its file and folder (`$1`,
    /// `$2`); empty for a `[[token]]`.
    pub reload_args: Vec<PathBuf>,
    /// The `[[token_set]]` it came from, if any.
    pub set: Option<String>,
}

/// One `[[token_set]]`: every file matching `pattern` is a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    /// Its name, unique among tokens and sets, without `/`.
    pub name: String,
    /// `env_files` or `token_files`, absolute; `*` matches within one path segment.
    pub pattern: PathBuf,
    /// What each token takes: its source's and app's path are the pattern, replaced by the file.
    pub template: TokenConfig,
    /// `alert_route_key`: a variable of each env file naming the route of that token's alerts.
    pub alert_route_key: Option<String>,
    /// Reload commands of this set run at once at most.
    pub max_concurrent_reloads: usize,
}

/// Where a token's app id and app secret are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET` of this env file (the token's, by default).
    EnvFile(PathBuf),
    /// `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET` of the process environment (the default for
    /// `token_file` and `env` sources).
    Environment,
    /// `app_id`, and the secret from `app_secret_file` or `app_secret_env` (or none).
    Given {
        /// The app id.
        app_id: String,
        /// Where the secret is.
        secret: Option<SecretFrom>,
    },
}

/// Where a secret value is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    /// A file (absolute) holding the value only.
    File(PathBuf),
    /// A variable of the process environment.
    Env(String),
}

/// The backups of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backups {
    /// The `<key>_BACKUP`, `<key>_BACKUP_2`, … series found in the env file (the default).
    Series,
    /// These variables of the env file, in this order.
    Keys(Vec<String>),
}

/// One `[[alert]]`: where alerts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its name, unique.
    pub name: String,
    /// How alerts are sent.
    pub kind: RouteKind,
    /// Where they are sent.
    pub target: Target,
    /// `secret_file` (absolute): the key that signs bodies, if any.
    pub secret_file: Option<PathBuf>,
    /// Extra headers of webhook and slack requests; values may be secrets and are never shown.
    pub headers: Vec<(String, SecretText)>,
    /// The limit on one attempt.
    pub timeout: Duration,
}

/// How a route sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// POST of the alert JSON.
    Webhook,
    /// POST of a Slack incoming-webhook body.
    Slack,
    /// `sh -c COMMAND` with the alert JSON on standard input.
    Command,
}

impl RouteKind {
    /// `webhook`, `slack`, `command`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Command => "command",
        }
    }
}

/// Where a route sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `url`, checked.
    Url(SecretUrl),
    /// `url_file` (absolute): read at each delivery.
    UrlFile(PathBuf),
    /// `command`.
    Command(String),
}

/// A text that is a secret (a header's value): `Debug` shows no part of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(zeroize::Zeroizing<String>);

impl SecretText {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(zeroize::Zeroizing::new(value.into()))
    }

    /// The value.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(…)")
    }
}

/// An alert route's URL: a secret (Slack's holds its key), so `Debug` and `Display` show the host
/// only.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(reqwest::Url);

impl SecretUrl {
    /// Checks `text`: an `http://` or `https://` URL with a host. The error shows no part of it.
    /// `http://` is allowed (an internal receiver); [`SecretUrl::is_plain_http`] says so.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(text.trim()).map_err(|e| {
            format!("it is not a URL ({e}); write it whole, like https://alerts.example.com/hook")
        })?;
        match url.scheme() {
            "https" | "http" if url.host().is_some() => Ok(Self(url)),
            "https" | "http" => Err("it names no host".into()),
            other => Err(format!(
                "its scheme is `{other}`; alerts go to http:// or https:// URLs"
            )),
        }
    }

    /// The host, which may be shown.
    pub fn host(&self) -> String {
        self.0.host_str().unwrap_or_default().to_owned()
    }

    /// Whether alerts would travel in clear text.
    pub fn is_plain_http(&self) -> bool {
        self.0.scheme() == "http"
    }

    /// The URL itself.
    pub fn expose_secret(&self) -> &reqwest::Url {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({}://{}/…)", self.0.scheme(), self.host())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}/…", self.0.scheme(), self.host())
    }
}

/// The configuration file: `explicit` (`--config`) if given, else
/// `$XDG_CONFIG_HOME/permatoken/permatoken.toml`, else `$HOME/.config/permatoken/permatoken.toml`.
/// `environment` is the process environment (`std::env::vars_os()`); a variable read that is not
/// UTF-8 is an error naming it. A relative `XDG_CONFIG_HOME` is ignored, as the XDG spec says.
pub fn config_path(
    explicit: Option<&Path>,
    environment: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    match permatoken_fs::permatoken_dir(permatoken_fs::Xdg::Config, environment) {
        Ok(Some(folder)) => Ok(folder.join(CONFIG_FILE_NAME)),
        Ok(None) => Err(ConfigError::NoHome),
        Err(e) => Err(ConfigError::NotUtf8Var {
            var: e.var.to_owned(),
        }),
    }
}

/// What `watch` runs with when there is no configuration file: `cwd/.env` with the defaults, under
/// the name `default`, and no alert route.
pub fn default_config(cwd: &Path) -> Config {
    let env_file = cwd.join(".env");
    let policy = Policy::default();
    Config {
        path: None,
        listen: None,
        state: None,
        state_password_file: None,
        defaults: policy,
        tokens: vec![TokenConfig {
            name: "default".into(),
            source: TokenSource::EnvFile {
                path: env_file.clone(),
                key: DEFAULT_KEY.into(),
            },
            app: AppSource::EnvFile(env_file),
            policy,
            backups: Backups::Series,
            reload: None,
            alerts: Vec::new(),
            reload_args: Vec::new(),
            set: None,
        }],
        routes: Vec::new(),
        token_sets: Vec::new(),
        max_concurrent_reloads: DEFAULT_MAX_CONCURRENT_RELOADS,
        retention: DEFAULT_RETENTION,
        batch_checks: true,
    }
}

/// `explicit` if given (it must exist), else the file [`config_path`] finds if it exists, else
/// [`default_config`] for `cwd`.
pub fn load_or_default(
    explicit: Option<&Path>,
    environment: impl IntoIterator<Item = (OsString, OsString)>,
    cwd: &Path,
) -> Result<Loaded, ConfigError> {
    let path = config_path(explicit, environment)?;
    if explicit.is_none() && !path.exists() {
        if !cwd.join(".env").exists() {
            return Err(ConfigError::NothingToWatch {
                looked_at: path,
                cwd: cwd.to_owned(),
            });
        }
        return Ok(Loaded {
            config: default_config(cwd),
            warnings: Vec::new(),
        });
    }
    load(&path)
}

/// Reads and checks the file at `path` (at most [`MAX_CONFIG_BYTES`]).
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let bytes = permatoken_fs::read_capped(path, MAX_CONFIG_BYTES).map_err(|e| match e {
        permatoken_fs::ReadError::TooLarge { .. } => ConfigError::TooLarge {
            path: path.to_owned(),
        },
        permatoken_fs::ReadError::Io(source) => ConfigError::Read {
            path: path.to_owned(),
            source,
        },
        other => ConfigError::Read {
            path: path.to_owned(),
            source: std::io::Error::other(other),
        },
    })?;
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::NotUtf8 {
        path: path.to_owned(),
        line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    parse(&text, &absolute)
}

/// Checks `text`, the content of the file `path` (relative paths inside are resolved against its
/// folder).
pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let at = |span: std::ops::Range<usize>, message: String| {
        let (line, column) = position(text, span.start);
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let mut message = explain(e.message());
        // A missing key is reported at its table: name the table.
        if message.starts_with("missing key")
            && let Some(header) = text.get(span.start..).and_then(table_header)
        {
            message.push_str(&format!(" in this `{header}`"));
        }
        at(span, message)
    })?;
    let folder = path.parent().unwrap_or(Path::new("/")).to_owned();
    Checker {
        folder,
        at: &at,
        warnings: Vec::new(),
        jitter_given: false,
    }
    .check(raw, path)
}

/// `[[alert]]`, `[defaults]`: the table header `text` starts with, if it does.
fn table_header(text: &str) -> Option<&str> {
    let line = text.lines().next()?.trim();
    let end = if line.starts_with("[[") {
        line.find("]]")? + 2
    } else if line.starts_with('[') {
        line.find(']')? + 1
    } else {
        return None;
    };
    Some(&line[..end])
}

/// Line and column (from 1, in characters) of byte `offset`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// serde's words made ours: "unknown key … allowed: …, did you mean …".
fn explain(message: &str) -> String {
    let message = message.trim();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.replace("missing field", "missing key");
    };
    let Some((key, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    // `app_secret` is read only to be refused with its own message.
    let allowed: Vec<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|k| *k != "app_secret")
        .collect();
    let mut text = format!("unknown key `{key}`");
    if allowed.is_empty() {
        text.push_str("; no key is allowed here");
        return text;
    }
    text.push_str(&format!("; allowed: `{}`", allowed.join("`, `")));
    if let Some(near) = nearest(key, &allowed) {
        text.push_str(&format!("; did you mean `{near}`?"));
    }
    text
}

/// The allowed word closest to `word`, if it is a near miss (a typo or two).
fn nearest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (distance(word, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// A humane duration: numbers each followed by a unit (`s`, `m`, `h`, `d`, `w`, or their long
/// forms), optionally separated by spaces: `30s`, `5m`, `1h 30m`, `2d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration: write a number and a unit, such as \"30s\", \"5m\", \"1h\", \"2d\" or \"1h 30m\""
        )
    };
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 || digits > 12 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        rest = rest[unit_len..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(Duration::from_secs(total))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    state: Option<Spanned<String>>,
    state_password_file: Option<Spanned<String>>,
    #[serde(default)]
    defaults: Option<Spanned<RawPolicy>>,
    #[serde(default)]
    token: Vec<Spanned<RawToken>>,
    #[serde(default)]
    alert: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    token_set: Vec<Spanned<RawTokenSet>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    interval: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    warn_days: Option<Spanned<u32>>,
    crit_days: Option<Spanned<u32>>,
    renew_days: Option<Spanned<u32>>,
    unknown_after: Option<Spanned<String>>,
    remind_every: Option<Spanned<String>>,
    doctor: Option<bool>,
    doctor_interval: Option<Spanned<String>>,
    failover: Option<bool>,
    try_user_token: Option<bool>,
    /// Only in `[defaults]`: a token's history is not kept apart.
    retention: Option<Spanned<String>>,
    /// Only in `[defaults]` (and a set).
    max_concurrent_reloads: Option<Spanned<u32>>,
    /// Only in `[defaults]`: batching is per app, across tokens.
    batch_checks: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Spanned<String>,
    env_file: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    env: Option<Spanned<String>>,
    app_id: Option<Spanned<String>>,
    app_secret_file: Option<Spanned<String>>,
    app_secret_env: Option<Spanned<String>>,
    /// Refused with its own message: the secret is never written here.
    app_secret: Option<Spanned<toml::Value>>,
    backups: Option<Vec<Spanned<String>>>,
    reload: Option<String>,
    #[serde(default)]
    alerts: Vec<Spanned<String>>,
    // The keys of `[defaults]`, each overriding it (serde's `flatten` would lose spans and
    // `deny_unknown_fields`).
    interval: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    warn_days: Option<Spanned<u32>>,
    crit_days: Option<Spanned<u32>>,
    renew_days: Option<Spanned<u32>>,
    unknown_after: Option<Spanned<String>>,
    remind_every: Option<Spanned<String>>,
    doctor: Option<bool>,
    doctor_interval: Option<Spanned<String>>,
    failover: Option<bool>,
    try_user_token: Option<bool>,
}

impl RawToken {
    fn policy(&mut self) -> RawPolicy {
        RawPolicy {
            interval: self.interval.take(),
            jitter: self.jitter.take(),
            warn_days: self.warn_days.take(),
            crit_days: self.crit_days.take(),
            renew_days: self.renew_days.take(),
            unknown_after: self.unknown_after.take(),
            remind_every: self.remind_every.take(),
            doctor: self.doctor.take(),
            doctor_interval: self.doctor_interval.take(),
            failover: self.failover.take(),
            try_user_token: self.try_user_token.take(),
            retention: None,
            max_concurrent_reloads: None,
            batch_checks: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenSet {
    name: Spanned<String>,
    env_files: Option<Spanned<String>>,
    token_files: Option<Spanned<String>>,
    alert_route_key: Option<Spanned<String>>,
    max_concurrent_reloads: Option<Spanned<u32>>,
    key: Option<Spanned<String>>,
    app_id: Option<Spanned<String>>,
    app_secret_file: Option<Spanned<String>>,
    app_secret_env: Option<Spanned<String>>,
    app_secret: Option<Spanned<toml::Value>>,
    backups: Option<Vec<Spanned<String>>>,
    reload: Option<String>,
    #[serde(default)]
    alerts: Vec<Spanned<String>>,
    interval: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    warn_days: Option<Spanned<u32>>,
    crit_days: Option<Spanned<u32>>,
    renew_days: Option<Spanned<u32>>,
    unknown_after: Option<Spanned<String>>,
    remind_every: Option<Spanned<String>>,
    doctor: Option<bool>,
    doctor_interval: Option<Spanned<String>>,
    failover: Option<bool>,
    try_user_token: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    kind: Spanned<String>,
    url: Option<Spanned<String>>,
    url_file: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    #[serde(default)]
    headers: Option<Spanned<toml::Table>>,
    timeout: Option<Spanned<String>>,
}

struct Checker<'a> {
    folder: PathBuf,
    at: &'a dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
    warnings: Vec<String>,
    /// Whether `[defaults]` sets `jitter`: then a token's own `interval` keeps it, rather than
    /// taking a tenth of its interval.
    jitter_given: bool,
}

impl Checker<'_> {
    fn check(mut self, raw: RawConfig, path: &Path) -> Result<Loaded, ConfigError> {
        let at = self.at;
        let listen = raw
            .listen
            .map(|l| {
                l.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                    at(
                        l.span(),
                        format!(
                            "`listen` = `{}` is not an address and port; write e.g. \"127.0.0.1:9464\"",
                            l.get_ref()
                        ),
                    )
                })
            })
            .transpose()?;
        let state = raw
            .state
            .map(|s| match StateLocation::parse(s.get_ref(), Path::new("")) {
                StateLocation::File(_) => self.path(&s).map(StateLocation::File),
                url => Ok(url),
            })
            .transpose()?;
        let state_password_file = raw.state_password_file.map(|s| self.path(&s)).transpose()?;
        let base = Policy::default();
        let defaults = match &raw.defaults {
            Some(d) => self.policy(d.get_ref(), base, d.span())?,
            None => base,
        };
        let retention = match raw
            .defaults
            .as_ref()
            .and_then(|d| d.get_ref().retention.as_ref())
        {
            Some(v) => {
                let d = self.duration(v, "retention", true)?;
                if d < Duration::from_secs(86_400) {
                    return Err(at(
                        v.span(),
                        "`retention` must be at least a day, such as \"90d\"".into(),
                    ));
                }
                d
            }
            None => DEFAULT_RETENTION,
        };
        self.jitter_given = raw
            .defaults
            .as_ref()
            .is_some_and(|d| d.get_ref().jitter.is_some());
        let mut routes: Vec<Route> = Vec::new();
        for r in raw.alert {
            let span = r.span();
            let raw = r.into_inner();
            if routes
                .iter()
                .any(|known| known.name == raw.name.get_ref().trim())
            {
                return Err(at(
                    raw.name.span(),
                    format!(
                        "a second route is named `{}`; route names must be unique",
                        raw.name.get_ref()
                    ),
                ));
            }
            routes.push(self.route(raw, span)?);
        }
        let mut tokens = Vec::new();
        let mut token_names = HashSet::new();
        for t in raw.token {
            let span = t.span();
            let raw = t.into_inner();
            if !token_names.insert(raw.name.get_ref().clone()) {
                return Err(at(
                    raw.name.span(),
                    format!(
                        "a second token is named `{}`; token names must be unique",
                        raw.name.get_ref()
                    ),
                ));
            }
            tokens.push(self.token(raw, defaults, &routes, span)?);
        }
        let max_concurrent_reloads = match raw
            .defaults
            .as_ref()
            .and_then(|d| d.get_ref().max_concurrent_reloads.as_ref())
        {
            Some(v) => self.reloads(v)?,
            None => DEFAULT_MAX_CONCURRENT_RELOADS,
        };
        let mut token_sets: Vec<TokenSet> = Vec::new();
        for t in raw.token_set {
            let span = t.span();
            let raw = t.into_inner();
            let name = raw.name.get_ref().trim().to_owned();
            if token_names.contains(&name) || token_sets.iter().any(|s| s.name == name) {
                return Err(at(
                    raw.name.span(),
                    format!(
                        "a token or token set is already named `{name}`; token and set names must be unique"
                    ),
                ));
            }
            if let Some(clash) = tokens.iter().find(|t| {
                t.name
                    .strip_prefix(&name)
                    .is_some_and(|r| r.starts_with('/'))
            }) {
                return Err(at(
                    raw.name.span(),
                    format!(
                        "token set `{name}` names its tokens `{name}/…`, and token `{}` is named so too; rename one of them",
                        clash.name
                    ),
                ));
            }
            token_sets.push(self.token_set(
                raw,
                defaults,
                max_concurrent_reloads,
                &routes,
                span,
            )?);
        }
        Ok(Loaded {
            config: Config {
                path: Some(path.to_owned()),
                listen,
                state,
                state_password_file,
                defaults,
                tokens,
                routes,
                token_sets,
                max_concurrent_reloads,
                retention,
                batch_checks: raw
                    .defaults
                    .as_ref()
                    .and_then(|d| d.get_ref().batch_checks)
                    .unwrap_or(true),
            },
            warnings: self.warnings,
        })
    }

    fn path(&self, value: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        let text = value.get_ref();
        if text.trim().is_empty() {
            return Err((self.at)(value.span(), "the path is empty".into()));
        }
        let path = Path::new(text);
        Ok(if path.is_absolute() {
            path.to_owned()
        } else {
            self.folder.join(path)
        })
    }

    fn duration(
        &self,
        value: &Spanned<String>,
        name: &str,
        positive: bool,
    ) -> Result<Duration, ConfigError> {
        let d = parse_duration(value.get_ref())
            .map_err(|e| (self.at)(value.span(), format!("`{name}`: {e}")))?;
        if positive && d.is_zero() {
            return Err((self.at)(
                value.span(),
                format!("`{name}` must be longer than zero, such as \"1h\""),
            ));
        }
        Ok(d)
    }

    fn policy(
        &self,
        raw: &RawPolicy,
        base: Policy,
        span: std::ops::Range<usize>,
    ) -> Result<Policy, ConfigError> {
        let mut p = base;
        if let Some(v) = &raw.interval {
            p.interval = self.duration(v, "interval", true)?;
            if raw.jitter.is_none() && !self.jitter_given {
                p.jitter = p.interval / 10;
            }
        }
        if let Some(v) = &raw.jitter {
            p.jitter = self.duration(v, "jitter", false)?;
        }
        if let Some(v) = &raw.unknown_after {
            p.unknown_after = self.duration(v, "unknown_after", true)?;
        }
        if let Some(v) = &raw.remind_every {
            p.remind_every = self.duration(v, "remind_every", false)?;
        }
        if let Some(v) = &raw.doctor_interval {
            p.doctor_interval = self.duration(v, "doctor_interval", true)?;
        }
        let days = |v: &Option<Spanned<u32>>, name: &str| -> Result<Option<u32>, ConfigError> {
            match v {
                Some(v) if *v.get_ref() > 3650 => Err((self.at)(
                    v.span(),
                    format!(
                        "`{name}` = {} is more than ten years; write a number of days from 0 to 3650",
                        v.get_ref()
                    ),
                )),
                Some(v) => Ok(Some(*v.get_ref())),
                None => Ok(None),
            }
        };
        let warn_given = days(&raw.warn_days, "warn_days")?;
        if let Some(w) = warn_given {
            // renew_days follows warn_days unless set.
            if p.renew_days == p.warn_days {
                p.renew_days = w;
            }
            p.warn_days = w;
        }
        if let Some(c) = days(&raw.crit_days, "crit_days")? {
            p.crit_days = c;
        }
        if let Some(r) = days(&raw.renew_days, "renew_days")? {
            p.renew_days = r;
        }
        if p.crit_days > p.warn_days {
            let span = raw
                .crit_days
                .as_ref()
                .map(Spanned::span)
                .or(raw.warn_days.as_ref().map(Spanned::span))
                .unwrap_or(span);
            return Err((self.at)(
                span,
                format!(
                    "`crit_days` ({}) is more than `warn_days` ({}); the critical window lies inside the warning window",
                    p.crit_days, p.warn_days
                ),
            ));
        }
        p.doctor = raw.doctor.unwrap_or(p.doctor);
        p.failover = raw.failover.unwrap_or(p.failover);
        p.try_user_token = raw.try_user_token.unwrap_or(p.try_user_token);
        Ok(p)
    }

    fn token(
        &mut self,
        mut raw: RawToken,
        defaults: Policy,
        routes: &[Route],
        span: std::ops::Range<usize>,
    ) -> Result<TokenConfig, ConfigError> {
        let at = self.at;
        let raw_policy = raw.policy();
        let name = raw.name.get_ref().trim().to_owned();
        check_name(&name).map_err(|e| at(raw.name.span(), e))?;
        if let Some(secret) = &raw.app_secret {
            return Err(at(
                secret.span(),
                format!(
                    "token `{name}`: the app secret is never written in the configuration; leave it in the token's env file as `FACEBOOK_APP_SECRET`, or set `app_id` and `app_secret_file` (a file holding the secret only) or `app_secret_env` (a variable's name)"
                ),
            ));
        }
        let sources: Vec<&Spanned<String>> = [&raw.env_file, &raw.token_file, &raw.env]
            .into_iter()
            .flatten()
            .collect();
        let source = match (&raw.env_file, &raw.token_file, &raw.env) {
            _ if sources.len() > 1 => {
                return Err(at(
                    sources[1].span(),
                    format!(
                        "token `{name}` has more than one source; keep exactly one of `env_file`, `token_file` and `env`"
                    ),
                ));
            }
            (Some(file), None, None) => TokenSource::EnvFile {
                path: self.path(file)?,
                key: match &raw.key {
                    Some(k) => {
                        check_variable(k.get_ref())
                            .map_err(|e| at(k.span(), format!("`key`: {e}")))?;
                        k.get_ref().clone()
                    }
                    None => DEFAULT_KEY.into(),
                },
            },
            (None, Some(file), None) => TokenSource::TokenFile {
                path: self.path(file)?,
            },
            (None, None, Some(var)) => {
                check_variable(var.get_ref()).map_err(|e| at(var.span(), format!("`env`: {e}")))?;
                TokenSource::Environment {
                    variable: var.get_ref().clone(),
                }
            }
            _ => {
                return Err(at(
                    raw.name.span(),
                    format!(
                        "token `{name}` has no source; set one of `env_file` (a .env file, with `key`), `token_file` (a file holding the token only) or `env` (a variable of the environment)"
                    ),
                ));
            }
        };
        if let (Some(key), TokenSource::TokenFile { .. } | TokenSource::Environment { .. }) =
            (&raw.key, &source)
        {
            return Err(at(
                key.span(),
                format!(
                    "token `{name}`: `key` names the variable of an `env_file`; with `token_file` or `env` leave it out"
                ),
            ));
        }
        let app = match (&raw.app_id, &raw.app_secret_file, &raw.app_secret_env) {
            (_, Some(_), Some(env)) => {
                return Err(at(
                    env.span(),
                    format!(
                        "token `{name}`: set either `app_secret_file` or `app_secret_env`, not both"
                    ),
                ));
            }
            (None, Some(s), None) | (None, None, Some(s)) => {
                return Err(at(
                    s.span(),
                    format!(
                        "token `{name}`: the app secret needs its app: set `app_id` too (the number at the top of App Dashboard → Settings → Basic)"
                    ),
                ));
            }
            (Some(id), file, env) => {
                let app_id = id.get_ref().trim();
                if app_id.is_empty() || !app_id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(at(id.span(), "`app_id` is a number (App Dashboard → Settings → Basic); write it as a string: app_id = \"1234567890\"".into()));
                }
                let secret = match (file, env) {
                    (Some(f), _) => Some(SecretFrom::File(self.path(f)?)),
                    (None, Some(e)) => {
                        check_variable(e.get_ref())
                            .map_err(|m| at(e.span(), format!("`app_secret_env`: {m}")))?;
                        Some(SecretFrom::Env(e.get_ref().clone()))
                    }
                    (None, None) => None,
                };
                AppSource::Given {
                    app_id: app_id.to_owned(),
                    secret,
                }
            }
            (None, None, None) => match &source {
                TokenSource::EnvFile { path, .. } => AppSource::EnvFile(path.clone()),
                _ => AppSource::Environment,
            },
        };
        let backups = match raw.backups {
            None => Backups::Series,
            Some(keys) => {
                if !matches!(source, TokenSource::EnvFile { .. }) && !keys.is_empty() {
                    return Err(at(
                        keys[0].span(),
                        format!(
                            "token `{name}`: `backups` are variables of its env file; only a token with `env_file` has backups"
                        ),
                    ));
                }
                for k in &keys {
                    check_variable(k.get_ref())
                        .map_err(|e| at(k.span(), format!("`backups`: {e}")))?;
                }
                Backups::Keys(keys.into_iter().map(Spanned::into_inner).collect())
            }
        };
        let mut alerts = Vec::new();
        for a in &raw.alerts {
            if !routes.iter().any(|r| &r.name == a.get_ref()) {
                let known: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
                let mut message = format!(
                    "token `{name}` sends alerts to `{}`, and no `[[alert]]` has that name",
                    a.get_ref()
                );
                if known.is_empty() {
                    message.push_str("; add an [[alert]] with name = \"…\"");
                } else {
                    message.push_str(&format!("; routes: `{}`", known.join("`, `")));
                    if let Some(near) = nearest(a.get_ref(), &known) {
                        message.push_str(&format!("; did you mean `{near}`?"));
                    }
                }
                return Err(at(a.span(), message));
            }
            alerts.push(a.get_ref().clone());
        }
        let policy = self.policy(&raw_policy, defaults, span)?;
        Ok(TokenConfig {
            name,
            source,
            app,
            policy,
            backups,
            reload: raw.reload.filter(|r| !r.trim().is_empty()),
            alerts,
            reload_args: Vec::new(),
            set: None,
        })
    }

    fn reloads(&self, v: &Spanned<u32>) -> Result<usize, ConfigError> {
        match *v.get_ref() {
            n @ 1..=1000 => Ok(n as usize),
            n => Err((self.at)(
                v.span(),
                format!("`max_concurrent_reloads` = {n}: write a number from 1 to 1000"),
            )),
        }
    }

    fn token_set(
        &mut self,
        raw: RawTokenSet,
        defaults: Policy,
        default_reloads: usize,
        routes: &[Route],
        span: std::ops::Range<usize>,
    ) -> Result<TokenSet, ConfigError> {
        let at = self.at;
        let name = raw.name.get_ref().trim().to_owned();
        check_name(&name).map_err(|e| at(raw.name.span(), e))?;
        if name.contains('/') {
            return Err(at(
                raw.name.span(),
                format!(
                    "token set `{name}`: a set's name has no `/` (its tokens are named `<set>/<what * matched>`)"
                ),
            ));
        }
        let pattern = match (&raw.env_files, &raw.token_files) {
            (Some(_), Some(second)) => {
                return Err(at(
                    second.span(),
                    format!(
                        "token set `{name}`: set either `env_files` or `token_files`, not both"
                    ),
                ));
            }
            (Some(p), None) | (None, Some(p)) => p,
            (None, None) => {
                return Err(at(
                    raw.name.span(),
                    format!(
                        "token set `{name}` has no files; set `env_files` (like \"/srv/clients/*/.env\") or `token_files` (files holding the token only)"
                    ),
                ));
            }
        };
        let path = self.path(pattern)?;
        let segments: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if segments.iter().any(|s| s.contains("**")) {
            return Err(at(
                pattern.span(),
                format!(
                    "token set `{name}`: `**` is not supported; a `*` matches within one folder or file name, like \"/srv/clients/*/.env\""
                ),
            ));
        }
        if !segments.iter().any(|s| s.contains('*')) {
            return Err(at(
                pattern.span(),
                format!(
                    "token set `{name}`: the pattern has no `*`; each token is named by what the wildcards match, like \"/srv/clients/*/.env\" (for one file, use [[token]])"
                ),
            ));
        }
        if let Some(key) = &raw.alert_route_key {
            if raw.env_files.is_none() {
                return Err(at(
                    key.span(),
                    format!(
                        "token set `{name}`: `alert_route_key` names a variable of each env file; it needs `env_files`"
                    ),
                ));
            }
            check_variable(key.get_ref())
                .map_err(|e| at(key.span(), format!("`alert_route_key`: {e}")))?;
        }
        let max_concurrent_reloads = match &raw.max_concurrent_reloads {
            Some(v) => self.reloads(v)?,
            None => default_reloads,
        };
        let token = RawToken {
            name: raw.name,
            env_file: raw.env_files,
            key: raw.key,
            token_file: raw.token_files,
            env: None,
            app_id: raw.app_id,
            app_secret_file: raw.app_secret_file,
            app_secret_env: raw.app_secret_env,
            app_secret: raw.app_secret,
            backups: raw.backups,
            reload: raw.reload,
            alerts: raw.alerts,
            interval: raw.interval,
            jitter: raw.jitter,
            warn_days: raw.warn_days,
            crit_days: raw.crit_days,
            renew_days: raw.renew_days,
            unknown_after: raw.unknown_after,
            remind_every: raw.remind_every,
            doctor: raw.doctor,
            doctor_interval: raw.doctor_interval,
            failover: raw.failover,
            try_user_token: raw.try_user_token,
        };
        let mut template = self.token(token, defaults, routes, span)?;
        template.set = Some(name.clone());
        Ok(TokenSet {
            name,
            pattern: path,
            template,
            alert_route_key: raw.alert_route_key.map(Spanned::into_inner),
            max_concurrent_reloads,
        })
    }

    fn route(
        &mut self,
        raw: RawRoute,
        _span: std::ops::Range<usize>,
    ) -> Result<Route, ConfigError> {
        let at = self.at;
        let name = raw.name.get_ref().trim().to_owned();
        check_name(&name).map_err(|e| at(raw.name.span(), e))?;
        let kind = match raw.kind.get_ref().as_str() {
            "webhook" => RouteKind::Webhook,
            "slack" => RouteKind::Slack,
            "command" => RouteKind::Command,
            other => {
                let mut message = format!(
                    "route `{name}`: unknown kind `{other}`; allowed: `webhook`, `slack`, `command`"
                );
                if let Some(near) = nearest(other, &["webhook", "slack", "command"]) {
                    message.push_str(&format!("; did you mean `{near}`?"));
                }
                return Err(at(raw.kind.span(), message));
            }
        };
        let target = match (kind, &raw.url, &raw.url_file, &raw.command) {
            (RouteKind::Command, url, file, command) => {
                if let Some(extra) = url.as_ref().or(file.as_ref()) {
                    return Err(at(
                        extra.span(),
                        format!(
                            "route `{name}` is a command; it takes `command`, not `url` or `url_file`"
                        ),
                    ));
                }
                match command {
                    Some(c) if !c.get_ref().trim().is_empty() => {
                        Target::Command(c.get_ref().clone())
                    }
                    Some(c) => {
                        return Err(at(
                            c.span(),
                            format!("route `{name}`: the command is empty"),
                        ));
                    }
                    None => {
                        return Err(at(
                            raw.kind.span(),
                            format!(
                                "route `{name}` is a command and needs `command`, run with `sh -c` with the alert JSON on its standard input"
                            ),
                        ));
                    }
                }
            }
            (_, _, _, Some(c)) => {
                return Err(at(
                    c.span(),
                    format!(
                        "route `{name}` is a {}; `command` belongs to kind = \"command\"",
                        kind.as_str()
                    ),
                ));
            }
            (_, Some(_), Some(file), None) => {
                return Err(at(
                    file.span(),
                    format!("route `{name}`: set either `url` or `url_file`, not both"),
                ));
            }
            (_, Some(url), None, None) => {
                let parsed = SecretUrl::parse(url.get_ref()).map_err(|e| {
                    at(
                        url.span(),
                        format!("route `{name}`: the `url` is not usable: {e}"),
                    )
                })?;
                if parsed.is_plain_http() {
                    self.warnings.push(plain_http_warning(&name, &parsed));
                }
                Target::Url(parsed)
            }
            (_, None, Some(file), None) => Target::UrlFile(self.path(file)?),
            (_, None, None, None) => {
                return Err(at(
                    raw.kind.span(),
                    format!(
                        "route `{name}` needs `url`, or `url_file` (a file holding the URL only, which keeps it out of this file)"
                    ),
                ));
            }
        };
        if kind == RouteKind::Command
            && let Some(h) = &raw.headers
        {
            return Err(at(
                h.span(),
                format!(
                    "route `{name}` is a command; `headers` belong to webhook and slack routes"
                ),
            ));
        }
        let mut headers = Vec::new();
        if let Some(table) = raw.headers {
            let span = table.span();
            for (key, value) in table.into_inner() {
                let toml::Value::String(value) = value else {
                    return Err(at(
                        span,
                        format!("route `{name}`: header `{key}` must be a string"),
                    ));
                };
                if reqwest::header::HeaderName::from_bytes(key.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(&value).is_err()
                {
                    return Err(at(
                        span,
                        format!(
                            "route `{name}`: header `{key}` is not a valid HTTP header name and value"
                        ),
                    ));
                }
                let lower = key.to_ascii_lowercase();
                if lower == "content-type"
                    || lower == "content-length"
                    || lower == "host"
                    || lower == crate::alert::SIGNATURE_HEADER.to_ascii_lowercase()
                {
                    return Err(at(
                        span,
                        format!("route `{name}`: header `{key}` is set by permatoken itself"),
                    ));
                }
                headers.push((key, SecretText::new(value)));
            }
        }
        let secret_file = raw.secret_file.as_ref().map(|s| self.path(s)).transpose()?;
        if kind == RouteKind::Command
            && let Some(s) = &raw.secret_file
        {
            return Err(at(
                s.span(),
                format!(
                    "route `{name}` is a command; `secret_file` signs HTTP bodies of webhook and slack routes"
                ),
            ));
        }
        let timeout = match &raw.timeout {
            Some(t) => self.duration(t, "timeout", true)?,
            None => crate::alert::DEFAULT_TIMEOUT,
        };
        Ok(Route {
            name,
            kind,
            target,
            secret_file,
            headers,
            timeout,
        })
    }
}

/// The warning for a route whose alerts travel in clear text.
pub(crate) fn plain_http_warning(route: &str, url: &SecretUrl) -> String {
    format!(
        "route `{route}` sends alerts over plain http:// to `{}`: anyone on the way can read them (fine for a receiver on this machine or a trusted network; use https:// otherwise)",
        url.host()
    )
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty; give it one, like name = \"orders\"".into());
    }
    if name.len() > 100 || name.chars().any(|c| c.is_control()) {
        return Err("a name is at most 100 characters, without control characters".into());
    }
    Ok(())
}

fn check_variable(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        for (text, secs) in [
            ("1s", 1),
            ("5m", 300),
            ("1h", 3600),
            ("2d", 172_800),
            ("1h 30m", 5400),
            ("1h30m", 5400),
            ("90 minutes", 5400),
            ("1w", 604_800),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in ["", "5", "h", "5x", "-1h", "1.5h", "99999999999999999h"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(
            nearest("intervl", &["interval", "jitter"]),
            Some("interval")
        );
        assert_eq!(nearest("zzz", &["interval", "jitter"]), None);
        let m = explain("unknown field `intervl`, expected one of `interval`, `jitter`");
        assert_eq!(
            m,
            "unknown key `intervl`; allowed: `interval`, `jitter`; did you mean `interval`?"
        );
    }

    #[test]
    fn batch_checks_is_a_defaults_key_on_by_default() {
        let path = Path::new("/etc/permatoken/permatoken.toml");
        let read = |text: &str| parse(text, path).map(|l| l.config.batch_checks);
        assert!(read("").unwrap());
        assert!(default_config(Path::new("/srv")).batch_checks);
        assert!(!read("[defaults]\nbatch_checks = false\n").unwrap());
        assert!(read("[defaults]\nbatch_checks = true\n").unwrap());
        // Not per token: batching is per app, across tokens.
        let e = read("[[token]]\nname = \"a\"\nenv = \"A\"\nbatch_checks = false\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key `batch_checks`"), "{e}");
        let e = read("[defaults]\nbatch_checks = \"no\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn positions_count_lines_and_characters() {
        assert_eq!(position("a\nbé c", 6), (2, 4));
        assert_eq!(position("", 0), (1, 1));
    }
}
