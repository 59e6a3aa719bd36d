//! `permatoken.toml`: which tokens `watch` keeps alive, how, and whom it tells.
//!
//! [`load`] reads a file (at most [`MAX_CONFIG_BYTES`]), [`parse`] checks text, and both return a
//! [`Loaded`]: the typed [`Config`] and the warnings to show at start and at each reload (plain
//! `http://` alert URLs, intervals under five minutes with the calls an hour they cost).
//! Errors name the file, the line and column, and what is allowed there. [`config_path`] finds the
//! file (`--config`, else `$XDG_CONFIG_HOME/permatoken/permatoken.toml`, else
//! `~/.config/permatoken/permatoken.toml`); [`default_config`] is what `watch` runs with when there is
//! none: `./.env` with the defaults.
//!
//! The room is three files. `keys.rs` holds the key table, `KEYS`: one entry per policy key
//! (`interval`, `warn_days`, `retention`, …) saying where it may stand (`[defaults]`, `[[token]]`,
//! `[[token_set]]`), its default, how it is read and checked, which setting it sets, and its line in
//! the README; the allowed-key lists, the merge of a token's values over `[defaults]` and the
//! README's rows (by a test) all follow from it, so a new key is one entry there and its field on
//! [`Policy`]. `read.rs` parses the TOML once, keeping the place of every key and value, and reads
//! the other keys with serde. `check.rs` makes what was read a [`Config`].
//!
//! ```toml
//! listen = "127.0.0.1:9464"          # optional: the HTTP endpoint
//! state = "/var/lib/permatoken/state.db"   # optional: the state file, or a PostgreSQL URL
//! #   "postgres://permatoken@db.internal/permatoken?sslmode=verify-full" (never with a password)
//! state_password_file = "/etc/permatoken/pg-password"  # optional: the PostgreSQL password
//!
//! [defaults]                 # the policy keys of keys.rs, every one optional
//! interval = "1h"            # between checks: "1s", "5m", "1h", "2d", "1h 30m"
//! warn_days = 14             # `expiring` within this many days
//! retention = "90d"          # some keys stand only here (the process's, not a token's)
//!
//! [[token]]
//! name = "orders"                       # unique, no spaces around it
//! env_file = "/srv/orders/.env"         # one source: env_file (+ key), token_file, or env
//! key = "WHATSAPP_ACCESS_TOKEN"         # the default
//! # app credentials: FACEBOOK_APP_ID / FACEBOOK_APP_SECRET of the env file (of the process
//! # environment for token_file / env), or app_id + app_secret_file, or app_id + app_secret_env
//! backups = ["WHATSAPP_ACCESS_TOKEN_BACKUP"]   # default: the <key>_BACKUP* series of the file
//! reload = "systemctl restart orders"
//! alerts = ["ops"]
//! interval = "30m"                      # a policy key over [defaults]
//!
//! [[token_set]]                       # one token per matching file
//! name = "clients"                      # tokens are named clients/<what `*` matched>
//! env_files = "/srv/clients/*/.env"     # or token_files = "…"; `*` within one path segment
//! alert_route_key = "PERMATOKEN_ALERT_ROUTE"  # optional: a variable of each file naming its route
//! max_concurrent_reloads = 4            # a policy key of [defaults] and sets
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
//! Must never: accept a token or an app secret written in the configuration (they come from a file
//! or the environment; an `app_secret` key is refused with its own message), or show a route's URL
//! or a header's value (secrets that may be written here: [`SecretUrl`] and [`SecretText`] show no
//! part of them, and no message quotes them).

mod check;
mod files;
mod keys;
mod read;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use files::unreadable_files;
pub use keys::parse_duration;

use crate::schedule::{FREQUENT, calls_an_hour};

/// Where a token is read: `env_file` (+ `key`), `token_file` or `env`. The renewal engine's own type,
/// so that what the configuration says is what the engine reads, with no mapping between two enums.
pub use permatoken_renew::{AppSource, SecretFrom, TokenSource};

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
    /// Things that do not stop `watch` but a person should know (plain `http://` alert URLs,
    /// intervals under five minutes).
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
    pub listen: Option<crate::listen::Listen>,
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
    /// `[[token_set]]`, in file order: expanded into tokens by [`crate::sets::expand`] before each round.
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
    /// The built-in defaults, as the key table (`keys.rs`) gives them.
    fn default() -> Self {
        keys::builtin().policy
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
    /// The defaults with its own values over them: shared by the members of a set (100,000 copies
    /// of the same 96 bytes otherwise).
    pub policy: Arc<Policy>,
    /// Which backups may take its place.
    pub backups: Backups,
    /// `reload`: run with `sh -c` after the token was written.
    pub reload: Option<String>,
    /// The routes its alerts go to, by name (all exist): shared, as `policy`.
    pub alerts: Arc<[String]>,
    /// The `[[token_set]]` it came from, if any: shared, as `policy`.
    pub set: Option<Arc<str>>,
}

impl TokenConfig {
    /// The reload command's positional parameters: for a set's token, its file and folder (`$1`,
    /// `$2`); none for a `[[token]]`. Worked out when a check is set up, not stored: a fleet of
    /// 100,000 set members held each path twice more for them.
    pub fn reload_args(&self) -> Vec<PathBuf> {
        let (Some(_), TokenSource::EnvFile { path, .. } | TokenSource::TokenFile { path }) =
            (&self.set, &self.source)
        else {
            return Vec::new();
        };
        let folder = path.parent().unwrap_or(Path::new("/")).to_owned();
        vec![path.clone(), folder]
    }
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
    /// POST of Alertmanager's alert array to `<url>/api/v2/alerts`, sent again while active.
    Alertmanager,
}

impl RouteKind {
    /// `webhook`, `slack`, `command`, `alertmanager`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Command => "command",
            Self::Alertmanager => "alertmanager",
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
    let builtin = keys::builtin();
    let policy = builtin.policy;
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
            policy: policy.into(),
            backups: Backups::Series,
            reload: None,
            alerts: Arc::from([]),
            set: None,
        }],
        routes: Vec::new(),
        token_sets: Vec::new(),
        max_concurrent_reloads: builtin.max_concurrent_reloads,
        retention: builtin.retention,
        batch_checks: builtin.batch_checks,
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
    read::read(text)
        .and_then(|raw| check::check(raw, path))
        .map_err(|problem| problem.at(text, path))
}

/// The warning for a route whose alerts travel in clear text.
pub(crate) fn plain_http_warning(route: &str, url: &SecretUrl) -> String {
    format!(
        "route `{route}` sends alerts over plain http:// to `{}`: anyone on the way can read them (fine for a receiver on this machine or a trusted network; use https:// otherwise)",
        url.host()
    )
}

/// The warnings of `loaded` worth logging when it replaces a configuration whose routes were
/// `previous` (a reload): all of them but the plain-http warning of a route that did not change,
/// said already at start or at the reload that brought it.
pub fn reload_warnings<'a>(previous: &[Route], loaded: &'a Loaded) -> Vec<&'a str> {
    let said: Vec<String> = loaded
        .config
        .routes
        .iter()
        .filter(|route| previous.contains(route))
        .filter_map(|route| match &route.target {
            Target::Url(url) if url.is_plain_http() => Some(plain_http_warning(&route.name, url)),
            _ => None,
        })
        .collect();
    loaded
        .warnings
        .iter()
        .map(String::as_str)
        .filter(|warning| !said.iter().any(|s| s == warning))
        .collect()
}

/// One warning line per interval shorter than [`FREQUENT`] among `tokens` (named, a few of them),
/// and one per such set: the `/debug_token` calls an hour it costs, each counted against the
/// allowance its app's tokens share. Meta publishes no figure for that allowance, only the share of
/// it used (`X-App-Usage`), which `/metrics` shows.
pub(crate) fn frequent_checks_warnings(tokens: &[TokenConfig], sets: &[TokenSet]) -> Vec<String> {
    const SHARED: &str = "counted against the hourly allowance that all the tokens of an app share (Meta throttles the whole app once it is used up; `permatoken_graph_usage_percent` on /metrics shows how much is used)";
    let mut groups: BTreeMap<Duration, Vec<&TokenConfig>> = BTreeMap::new();
    for token in tokens.iter().filter(|t| t.policy.interval < FREQUENT) {
        groups.entry(token.policy.interval).or_default().push(token);
    }
    let mut warnings = Vec::new();
    for (interval, group) in groups {
        let calls = calls_an_hour(interval);
        let listed: u64 = group.iter().map(|t| 1 + listed_backups(t)).sum();
        let series = group.iter().any(|t| backup_series(t));
        let mut names: Vec<String> = group
            .iter()
            .take(3)
            .map(|t| format!("`{}`", t.name))
            .collect();
        if group.len() > 3 {
            names.push(format!("{} more", group.len() - 3));
        }
        let (who, are) = match group.len() {
            1 => ("token", "is"),
            _ => ("tokens", "are"),
        };
        let more = if series {
            format!(", and {calls} more for each `_BACKUP` token found in an env file")
        } else {
            String::new()
        };
        warnings.push(format!(
            "{who} {} {are} checked every {}s (`interval`): {} `/debug_token` calls an hour{more}, {SHARED}",
            names.join(", "),
            interval.as_secs(),
            calls.saturating_mul(listed),
        ));
    }
    for set in sets
        .iter()
        .filter(|s| s.template.policy.interval < FREQUENT)
    {
        let interval = set.template.policy.interval;
        warnings.push(format!(
            "each token of set `{}` is checked every {}s (`interval`): {} `/debug_token` calls an hour per file the set matches, and as many for each backup, {SHARED}",
            set.name,
            interval.as_secs(),
            calls_an_hour(interval),
        ));
    }
    warnings
}

/// The backups `token` names in the configuration.
fn listed_backups(token: &TokenConfig) -> u64 {
    match &token.backups {
        Backups::Keys(keys) => keys.len() as u64,
        Backups::Series => 0,
    }
}

/// Whether `token`'s backups are the series its env file holds, unknown until it is read.
fn backup_series(token: &TokenConfig) -> bool {
    matches!(
        (&token.backups, &token.source),
        (Backups::Series, TokenSource::EnvFile { .. })
    )
}

/// A mistake and where in the text it is, before it is said as a line and column of the file.
#[derive(Debug)]
struct Problem {
    span: Range<usize>,
    message: String,
}

impl Problem {
    fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
        }
    }

    /// The error a person reads: file, line, column, and the message. A missing key is reported
    /// at its table, so the table is named too.
    fn at(self, text: &str, path: &Path) -> ConfigError {
        let mut message = self.message;
        if message.starts_with("missing key")
            && let Some(header) = text.get(self.span.start..).and_then(table_header)
        {
            message.push_str(&format!(" in this `{header}`"));
        }
        let (line, column) = position(text, self.span.start);
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
