//! permatoken watch's memory: what it knows of each token, every check's result, renewals,
//! failovers and the alerts it sent, so that a restart neither forgets nor repeats itself.
//!
//! Tokens are keyed by the full SHA-256 of the token (the short fingerprint collides in large fleets).
//!
//! One interface, [`Store`], over a backend enum: SQLite (an embedded file, the default) and
//! PostgreSQL (shared by replicas, issue 10). An enum rather than a trait object because the methods are `async` (a `dyn` trait
//! would need boxed futures or another crate) and the set of backends is closed and small; the caller
//! sees one concrete type whatever the backend. Each backend has its own numbered migrations
//! (`migrations/<backend>/NNNN_*.sql`) and shares the schema's shape and the SQL's portable dialect:
//! integer unix seconds for times, TEXT ids, JSON arrays in TEXT, `ON CONFLICT … DO UPDATE` upserts.
//!
//! Times are whole unix seconds: anything finer is dropped when stored.
//!
//! The PostgreSQL backend ([`Store::open_postgres`], `postgres.rs`) is tokio-postgres:
//! `migrations/postgres/` has the same tables (`BIGINT GENERATED ALWAYS AS IDENTITY` for the two
//! auto-numbered keys, BOOLEAN for the flags), the queries are the same with `$N` for `?N` (a round's
//! tokens and checks in one `UNNEST` statement each), and migrations run under their own advisory
//! lock ([`MIGRATION_LOCK`]). The exclusive hold differs by design: replicas share one database and
//! elect a leader, so PostgreSQL takes no file lock.
//!
//! Writes that belong together (an alert, its deliveries and the announced state; a round's checks)
//! are one transaction, so a crash leaves all of them or none.
//!
//! Must never: store a secret (a token, an app secret, a route's URL), or know the terminal.

mod postgres;
mod rows;
mod sqlite;

pub use postgres::{LEADER_LOCK, MIGRATION_LOCK, PgOptions};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

/// The newest schema this build knows, for each backend.
pub const SCHEMA_VERSION: i64 = sqlite::MIGRATIONS.len() as i64;

/// What went wrong with the state. Messages name the file and never hold a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or another `Store` in this one) holds the file.
    #[error(
        "the state file `{}` is in use by another `permatoken watch` (it holds `{}`); stop that one or give this one another `--state`",
        path.display(),
        lock.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
        /// The lock file beside it.
        lock: PathBuf,
    },
    /// The state's schema is newer than this build knows (a newer replica migrated it).
    #[error(
        "the state `{}` was written by a newer permatoken (schema {found}, this one knows up to {known}); stop this replica and upgrade it, or use another `--state`",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema this build knows.
        known: i64,
    },
    /// The file exists but is not an SQLite database (a wrong `--state`).
    #[error(
        "`{}` is not a permatoken state file (not an SQLite database); move it away or give another `--state`",
        path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// A file or folder could not be created, opened or locked.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done, e.g. "create the folder".
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The database refused an operation.
    #[error("the state file `{}` failed: {source}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// The database's reason (it never holds a secret: none is ever written).
        source: rusqlite::Error,
    },
    /// A value read back from the file is not one this build writes (the file was edited by hand).
    #[error("the state file `{}` holds an unexpected value in {what}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which column, e.g. "checks.status".
        what: &'static str,
    },
    /// A key passed by the caller is not a SHA-256 in lowercase hex.
    #[error("a token key must be 64 lowercase hex digits (a SHA-256), got {len} characters")]
    InvalidKey {
        /// The length received (never the value: it might be a token passed by mistake).
        len: usize,
    },
    /// [`Store::mark_delivered`] or [`Store::mark_failed`] named no recorded delivery.
    #[error("no delivery of alert `{alert_id}` to route `{route}` is recorded")]
    UnknownDelivery {
        /// The alert's id.
        alert_id: String,
        /// The route's name.
        route: String,
    },
    /// The PostgreSQL state could not be reached, or refused an operation; `reason` says what to
    /// check. It never holds the password.
    #[error("the PostgreSQL state `{location}` failed: {reason}")]
    Postgres {
        /// The URL without its query (no password is ever in it).
        location: String,
        /// What happened and what to do.
        reason: String,
    },
    /// The PostgreSQL URL cannot be used as given. The URL is not repeated: it may hold a password.
    #[error("the PostgreSQL `--state` URL {reason}")]
    PostgresUrl {
        /// What is wrong with it and what to do.
        reason: String,
    },
    /// The blocking task running the query panicked or was cancelled.
    #[error("the state's worker stopped unexpectedly")]
    Worker,
}

/// A token's key: the full SHA-256 of the token as 64 lowercase hex digits. The caller hashes; the
/// store never sees a token.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TokenKey(String);

impl TokenKey {
    /// Accepts 64 hex digits (either case; kept lowercase). Anything else is refused without
    /// repeating the value, which might be a token handed over by mistake.
    pub fn parse(hex: &str) -> Result<Self, Error> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(hex.to_ascii_lowercase()))
        } else {
            Err(Error::InvalidKey { len: hex.len() })
        }
    }

    /// The 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({})", &self.0)
    }
}

impl std::fmt::Display for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a token is the one in use or a backup standing by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "role", content = "of")]
pub enum Role {
    /// The token the application uses.
    Primary,
    /// A backup of the token with this configuration name.
    Backup(String),
}

/// A token as watch knows it. Written with [`Store::upsert_tokens`]; `first_seen` is kept from the
/// first write, everything else is replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// The token's SHA-256.
    pub key: TokenKey,
    /// Configuration name, e.g. `orders` or `orders/WHATSAPP_ACCESS_TOKEN_BACKUP`.
    pub name: String,
    /// Primary, or backup of which name.
    pub role: Role,
    /// The short fingerprint permatoken prints (`EAAT…sZD sha256:1a2b3c4d`).
    pub fingerprint: String,
    /// The file the token is read from (never the value).
    pub source_path: String,
    /// The variable in that file, if the file holds several.
    pub source_key: Option<String>,
    /// When this token was first seen (ignored on update).
    pub first_seen: Timestamp,
    /// When this token was last seen in its source.
    pub last_seen: Timestamp,
    /// What `/me` said of it, if the check written with this record asked or knew it. `None` keeps
    /// the identity already stored (a check without an answer does not make a token a stranger).
    pub identity: Option<TokenIdentity>,
}

/// A token's `/me` answer: who it acts as. Not a secret; the text is cleaned and cut to
/// [`MAX_TEXT`] when written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The user or system-user id.
    pub id: String,
    /// Its name, if `/me` gave one.
    pub name: Option<String>,
    /// When the check that saw it was made (its [`CheckRecord::checked_at`]).
    pub seen_at: Timestamp,
}

/// A token whose latest check saw its identity: [`Store::identities`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityCheck {
    /// The token.
    pub key: TokenKey,
    /// The user or system-user id `/me` gave.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// The latest check's status.
    pub status: Status,
    /// The latest check's finding codes.
    pub finding_codes: Vec<String>,
}

/// One past check as a chart draws it: when, and its status ([`Store::history_points`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusPoint {
    /// When the check was made.
    pub checked_at: Timestamp,
    /// What it said.
    pub status: Status,
}

/// A check's overall status, as `permatoken check` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Valid, not expiring soon.
    Ok,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
    /// Could not be checked (network, outage, rate limit).
    Unknown,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => Self::Ok,
            "warning" => Self::Warning,
            "critical" => Self::Critical,
            "unknown" => Self::Unknown,
            _ => return None,
        })
    }
}

/// One check's result, for [`Store::record_checks`] and read back by the queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRecord {
    /// The token checked (it must have been written with [`Store::upsert_tokens`] first).
    pub key: TokenKey,
    /// When the check ended.
    pub checked_at: Timestamp,
    /// The overall status.
    pub status: Status,
    /// The alert state it maps to: `ok`, `expiring`, `critical`, `dead`, `failed_over`,
    /// `cannot_be_checked`, … (the alerts module owns the list; stored as given).
    pub alert_state: String,
    /// Whether the API called the token valid; `None` when the check could not tell.
    pub valid: Option<bool>,
    /// When the token expires, if it does.
    pub expires_at: Option<Timestamp>,
    /// The API said it never expires.
    pub never_expires: bool,
    /// The token's kind as reported (e.g. `system_user`), if known.
    pub kind: Option<String>,
    /// Required permissions the token lacks.
    pub missing_scopes: Vec<String>,
    /// The finding codes of the check.
    pub finding_codes: Vec<String>,
    /// How long the check took.
    pub elapsed_ms: u64,
}

/// [`LatestCheck`] reduced to what the status page shows: [`Store::latest_statuses`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestStatus {
    /// The token's name.
    pub name: String,
    /// The token's key.
    pub key: TokenKey,
    /// The token's short fingerprint.
    pub fingerprint: String,
    /// Its latest check; `None` before any.
    pub check: Option<CheckStatus>,
}

/// What the status page shows of a check: [`CheckRecord`]'s fields of the same names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckStatus {
    /// When.
    pub checked_at: Timestamp,
    /// The overall status.
    pub status: Status,
    /// Whether the API said it is valid; `None` without an answer.
    pub valid: Option<bool>,
    /// When it expires.
    pub expires_at: Option<Timestamp>,
    /// Whether the API said it never expires.
    pub never_expires: bool,
    /// The token's kind.
    pub kind: Option<String>,
    /// Required permissions it lacks.
    pub missing_scopes: Vec<String>,
}

/// A token with its latest check, for the page and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestCheck {
    /// The token.
    pub token: TokenRecord,
    /// Its latest check, `None` if it was never checked.
    pub check: Option<CheckRecord>,
}

/// What one decision about a token name leaves: the arguments of [`Store::announce`], for
/// [`Store::announce_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The token name.
    pub token_name: String,
    /// The announcement exactly as given (`None`: nothing announced yet; any earlier one is kept).
    pub announcement: Option<Announcement>,
    /// Since when the token has been unknown.
    pub unknown_since: Option<Timestamp>,
    /// The alert, if any, with the routes it goes to.
    pub alert: Option<(Alert, Vec<String>)>,
}

/// What watch last said about one token name, and how long it has not been able to check it.
/// Survives restarts, so that a restarted watch does not announce a state again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    /// The token's configuration name.
    pub token_name: String,
    /// The state last announced, `None` if none was yet.
    pub announcement: Option<Announcement>,
    /// Since when the token has been `unknown` without a break, `None` if it is not.
    pub unknown_since: Option<Timestamp>,
}

/// A state that was announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The alert state, e.g. `expiring`.
    pub state: String,
    /// When it was announced.
    pub since: Timestamp,
    /// The id of the alert that announced it, `None` if it was taken in silently (e.g. a first `ok`).
    pub alert_id: Option<String>,
    /// When the last reminder for it went, if any.
    pub last_reminder_at: Option<Timestamp>,
    /// How many reminders went for it (each reminder's id depends on its number).
    pub reminders: u32,
}

/// An alert, as sent to every route (documented JSON: the same fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// Stable id chosen by the caller; a receiver drops a repeat by it.
    pub id: String,
    /// The token's configuration name.
    pub token_name: String,
    /// The new state.
    pub state: String,
    /// The state before, if one was announced.
    pub previous_state: Option<String>,
    /// One secret-free sentence.
    pub message: String,
    /// What to do, if known.
    pub fix: Option<String>,
    /// When the alert was raised.
    pub time: Timestamp,
}

/// Where one alert stands on one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not tried yet.
    Pending,
    /// The route accepted it.
    Delivered,
    /// The last attempt failed; it is tried again at `next_attempt_at`, or never if that is `None`.
    Failed,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// One alert on one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The alert (whole, so the sender needs nothing else).
    pub alert: Alert,
    /// The route's configuration name.
    pub route: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When to try next; `None` once delivered or given up.
    pub next_attempt_at: Option<Timestamp>,
    /// The last failure's text (secret-free, capped), if any.
    pub last_error: Option<String>,
}

/// How one route is doing, for the page and the log: a failing route is itself shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteHealth {
    /// The route's configuration name.
    pub route: String,
    /// Deliveries not yet tried.
    pub pending: u64,
    /// Deliveries accepted.
    pub delivered: u64,
    /// Deliveries whose last attempt failed (retrying or given up).
    pub failed: u64,
    /// The most recent failure's text, if the latest attempt on this route failed.
    pub last_error: Option<String>,
    /// When a delivery on this route was last settled (delivered or failed).
    pub last_at: Option<Timestamp>,
    /// While the latest attempt failed: the earliest failure since the last delivery, as far as the
    /// deliveries still kept tell (a retried delivery keeps its latest attempt's time).
    pub failing_since: Option<Timestamp>,
}

/// How one attempt on a route ended, for [`Store::settle_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// The receiver took it.
    Delivered,
    /// It failed; `error` as for [`Store::mark_failed`], and the next attempt (`None`: give up).
    Failed {
        /// What went wrong, without any URL or secret.
        error: String,
        /// When to try again.
        next_attempt_at: Option<Timestamp>,
    },
}

impl Settlement {
    /// What the attempt writes for each delivery it settles.
    pub(crate) fn attempt(&self, at: Timestamp) -> Attempt<'_> {
        match self {
            Self::Delivered => Attempt {
                status: DeliveryStatus::Delivered,
                at,
                error: None,
                next: None,
            },
            Self::Failed {
                error,
                next_attempt_at,
            } => Attempt {
                status: DeliveryStatus::Failed,
                at,
                error: Some(error),
                next: *next_attempt_at,
            },
        }
    }
}

/// One attempt on one delivery, as both backends write it.
pub(crate) struct Attempt<'a> {
    pub(crate) status: DeliveryStatus,
    pub(crate) at: Timestamp,
    pub(crate) error: Option<&'a str>,
    pub(crate) next: Option<Timestamp>,
}

/// What an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A token was renewed.
    Renewal,
    /// A renewal was attempted and failed.
    RenewalFailed,
    /// A backup was promoted in place of a dead primary.
    Failover,
    /// The application's reload command ran.
    Reload,
    /// The configuration was reloaded (SIGHUP).
    ConfigReload,
    /// watch started.
    Start,
    /// An alert was raised (written with the alert itself).
    Alert,
}

impl EventKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Renewal => "renewal",
            Self::RenewalFailed => "renewal_failed",
            Self::Failover => "failover",
            Self::Reload => "reload",
            Self::ConfigReload => "config_reload",
            Self::Start => "start",
            Self::Alert => "alert",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "renewal" => Self::Renewal,
            "renewal_failed" => Self::RenewalFailed,
            "failover" => Self::Failover,
            "reload" => Self::Reload,
            "config_reload" => Self::ConfigReload,
            "start" => Self::Start,
            "alert" => Self::Alert,
            _ => return None,
        })
    }
}

/// Something that happened, for the page's recent events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When.
    pub at: Timestamp,
    /// Which token, if it concerns one.
    pub token_name: Option<String>,
    /// What.
    pub kind: EventKind,
    /// A short secret-free detail (capped when stored).
    pub detail: String,
}

/// Sizes of the state, for the page and the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tokens known.
    pub tokens: u64,
    /// Checks kept.
    pub checks: u64,
    /// Events kept.
    pub events: u64,
    /// Alerts kept.
    pub alerts: u64,
    /// Deliveries not yet delivered nor given up.
    pub deliveries_outstanding: u64,
}

/// What [`Store::prune`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Checks removed.
    pub checks: u64,
    /// Events removed.
    pub events: u64,
    /// Alerts removed (all their deliveries settled, and not the one behind an announced state).
    pub alerts: u64,
}

/// The longest error or detail text kept; longer ones are cut (a receiver's body is not ours to keep).
pub const MAX_TEXT: usize = 500;

/// watch's state. Cheap to clone (clones share the backend and its lock). Dropping the last clone
/// closes the database and releases the lock.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Leader election among the `watch` replicas sharing one PostgreSQL state.
///
/// The leader holds the advisory lock [`LEADER_LOCK`] on a session of its own, and writes a
/// heartbeat row (its replica name, its session's pid, the server's time) at each
/// [`Election::poll`]. A standby tries the lock at each poll; when the heartbeat is older than the
/// lease (a leader stopped or cut off keeps its session, and so the lock), it ends that session
/// (`pg_terminate_backend`) and takes the lock. A leader whose session is gone, or whose heartbeat
/// fails, is fenced: `poll` says it stands by (and drops the session, releasing the lock) until it
/// wins the lock again. Poll about every second, and once more right before acting. Clones share
/// one session.
#[derive(Clone)]
pub struct Election {
    inner: Arc<tokio::sync::Mutex<Option<postgres::Election>>>,
    store: Store,
    replica: String,
}

impl Election {
    /// Whether this replica leads now, after renewing its heartbeat (leader) or trying the lock
    /// (standby). An error (the database unreachable) means standing by; the next poll tries again.
    pub async fn poll(&self) -> Result<bool, Error> {
        match self.inner.lock().await.as_mut() {
            None => Ok(true),
            Some(election) => election.poll().await,
        }
    }

    /// Claims the action named by `key` for this replica, as [`Store::claim`] does, but only while
    /// this replica leads: `true` when this call inserted the claim (do the action, then
    /// [`Store::claim_done`]); `false` when the key was claimed before, or when this replica does
    /// not lead (skip the action either way).
    ///
    /// On PostgreSQL the claim is inserted on the election's own session, and only if that
    /// session holds [`LEADER_LOCK`]: fencing ends exactly that session (a standby's
    /// `pg_terminate_backend`), so a fenced leader's claim cannot land, even in the middle of a
    /// round and before its next poll. The store's query session would not do: fencing leaves it
    /// open. An error (that session gone) also stands this replica by, as [`Election::poll`] does.
    /// With SQLite the file lock already fences: the claim goes through the store.
    pub async fn claim(&self, key: &str, at: Timestamp) -> Result<bool, Error> {
        match self.inner.lock().await.as_mut() {
            None => self.store.claim(key, &self.replica, at).await,
            Some(election) => election.claim(key, at).await,
        }
    }
}

impl Store {
    /// Opens (creating if missing) the SQLite state at `path`: its folder is created with mode 0700,
    /// the file with 0600; migrations are applied in one transaction; a schema newer than this build
    /// knows is refused ([`Error::NewerSchema`]). The file is held exclusively for the store's lifetime
    /// by a lock on `<path>.lock`: a second open, in this process or another, fails with
    /// [`Error::Locked`] naming the file. The lock file stays after the store is dropped (removing it
    /// would race with the next opener); only the lock on it goes.
    ///
    /// Every method runs its blocking SQLite work on tokio's blocking pool, so it must be called
    /// inside a tokio runtime; calls are serialised on one connection.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let sqlite = tokio::task::spawn_blocking(move || sqlite::Sqlite::open(&path))
            .await
            .map_err(|_| Error::Worker)??;
        Ok(Self {
            backend: Backend::Sqlite(sqlite),
        })
    }

    /// Opens the PostgreSQL state at `url` (`postgres://user@host:port/database?sslmode=…`), shared by
    /// every replica: the URL must not hold a password ([`Error::PostgresUrl`], the URL not repeated);
    /// the password comes from `options` (see [`PgOptions`]). Migrations are applied in one
    /// transaction under the advisory lock [`MIGRATION_LOCK`], so replicas starting together apply
    /// them once; a schema newer than this build knows is refused ([`Error::NewerSchema`]). No lock
    /// is held by the store itself: the leader among replicas is elected by [`Store::election`]. A session the server drops is
    /// opened again at the next call.
    pub async fn open_postgres(url: &str, options: PgOptions) -> Result<Self, Error> {
        let pg = postgres::Postgres::open(url, &options).await?;
        Ok(Self {
            backend: Backend::Postgres(pg),
        })
    }

    /// For a process that takes no part in the election but shares the state (`watch --once`):
    /// it always "leads", and its [`Election::claim`]s go through the store's own session, so that
    /// it never repeats a renewal or failover a leader (or another such process) has claimed.
    pub fn claims_only(&self, replica: &str) -> Election {
        Election {
            inner: Arc::new(tokio::sync::Mutex::new(None)),
            store: self.clone(),
            replica: clean_text(replica),
        }
    }

    /// This replica's side of the leader election among the replicas sharing this state, known to
    /// the others as `replica` (for the heartbeat row; not a secret). SQLite's file lock already
    /// makes its one `watch` the leader: its election always leads. See [`Election`].
    pub fn election(&self, replica: &str, lease: Duration) -> Election {
        let inner = match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(db) => Some(postgres::Election::new(
                db.clone(),
                clean_text(replica),
                lease,
            )),
        };
        Election {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            store: self.clone(),
            replica: clean_text(replica),
        }
    }

    /// Where the state lives, for messages (the SQLite file, or the PostgreSQL URL without its query).
    pub fn location(&self) -> &Path {
        match &self.backend {
            Backend::Sqlite(db) => db.path(),
            Backend::Postgres(db) => db.location(),
        }
    }

    /// The schema version of the open state (equal to [`SCHEMA_VERSION`] once open).
    pub async fn schema_version(&self) -> Result<i64, Error> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(sqlite::schema_version).await,
            Backend::Postgres(db) => {
                postgres::schema_version(&mut *db.conn().await?, db.location()).await
            }
        }
    }

    /// Writes tokens in one transaction: inserts new ones, updates known ones (keeping `first_seen`).
    /// An identity given replaces the stored one; a record without one keeps it.
    pub async fn upsert_tokens(&self, mut tokens: Vec<TokenRecord>) -> Result<(), Error> {
        for identity in tokens.iter_mut().filter_map(|t| t.identity.as_mut()) {
            identity.id = clean_text(&identity.id);
            identity.name = identity.name.as_deref().map(clean_text);
        }
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::upsert_tokens(c, p, &tokens))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::upsert_tokens(&mut *db.conn().await?, db.location(), &tokens).await
            }
        }
    }

    /// Every token known, by name then key.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(sqlite::tokens).await,
            Backend::Postgres(db) => postgres::tokens(&mut *db.conn().await?, db.location()).await,
        }
    }

    /// Removes tokens not seen since `cutoff`, with their checks (a token renewed away or removed
    /// from the configuration).
    pub async fn forget_tokens_unseen_since(&self, cutoff: Timestamp) -> Result<u64, Error> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::forget_tokens(c, p, cutoff))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::forget_tokens(&mut *db.conn().await?, db.location(), cutoff).await
            }
        }
    }

    /// Records checks in one transaction (a whole round at once is much faster than one call per
    /// check). Each check's token must already be known; a check older than its token's latest
    /// does not become the latest.
    pub async fn record_checks(&self, checks: Vec<CheckRecord>) -> Result<(), Error> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::record_checks(c, p, &checks))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::record_checks(&mut *db.conn().await?, db.location(), &checks).await
            }
        }
    }

    /// Every token with its latest check, by name then key. After a renewal the old token stays
    /// until forgotten: the page shows, per name, the entry with the newest check.
    pub async fn latest_checks(&self) -> Result<Vec<LatestCheck>, Error> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(sqlite::latest_checks).await,
            Backend::Postgres(db) => {
                postgres::latest_checks(&mut *db.conn().await?, db.location()).await
            }
        }
    }

    /// The tokens whose latest check saw their identity (the identity was written with that
    /// check's time), with that check's status and findings, by key: what a restarted watch or a
    /// new leader needs to ask `/me` only of the others. A token whose latest check had no answer
    /// from `/me`, or that was never checked, is not in it.
    pub async fn identities(&self) -> Result<Vec<IdentityCheck>, Error> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(sqlite::identities).await,
            Backend::Postgres(db) => {
                postgres::identities(&mut *db.conn().await?, db.location()).await
            }
        }
    }

    /// [`Store::latest_checks`] with only what the status page shows, in the same order: a fleet's
    /// page is rebuilt from every token's latest check, and whole records (source, key twice,
    /// findings) took twice the memory.
    pub async fn latest_statuses(&self) -> Result<Vec<LatestStatus>, Error> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(sqlite::latest_statuses).await,
            Backend::Postgres(db) => {
                postgres::latest_statuses(&mut *db.conn().await?, db.location()).await
            }
        }
    }

    /// The checks of every token named `token_name` (across renewals) with `from <= checked_at <
    /// to`, oldest first, for the page's chart.
    pub async fn history(
        &self,
        token_name: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<CheckRecord>, Error> {
        let name = token_name.to_owned();
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::history(c, p, &name, from, to))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::history(&mut *db.conn().await?, db.location(), &name, from, to).await
            }
        }
    }

    /// The newest `per_name` checks of every token name (across renewals) with `from <= checked_at <
    /// to`, each name's oldest first, by name: [`Store::history`] for every name in one query, so
    /// that a page of thousands of tokens costs one read, not one per token.
    pub async fn histories(
        &self,
        from: Timestamp,
        to: Timestamp,
        per_name: u32,
    ) -> Result<Vec<(String, Vec<CheckRecord>)>, Error> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::histories(c, p, from, to, per_name))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::histories(&mut *db.conn().await?, db.location(), from, to, per_name).await
            }
        }
    }

    /// [`Store::histories`] reduced to what a chart draws: per name, the times and statuses of
    /// the newest `per_name` checks, oldest first. A fleet's page holds up to `per_name` points for each of
    /// thousands of tokens: whole [`CheckRecord`]s (key, lists, kind) would cost some 25 times the
    /// memory of these pairs.
    pub async fn history_points(
        &self,
        from: Timestamp,
        to: Timestamp,
        per_name: u32,
    ) -> Result<Vec<(String, Vec<StatusPoint>)>, Error> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::history_points(c, p, from, to, per_name))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::history_points(&mut *db.conn().await?, db.location(), from, to, per_name)
                    .await
            }
        }
    }

    /// [`Store::history_points`] of only the tokens named in `names` (each name's points once,
    /// however often it is given), by name: what one page of the status page draws, read when the
    /// page is asked for, so that no process holds every token's chart.
    pub async fn history_points_of(
        &self,
        names: Vec<String>,
        from: Timestamp,
        to: Timestamp,
        per_name: u32,
    ) -> Result<Vec<(String, Vec<StatusPoint>)>, Error> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::history_points_of(c, p, names, from, to, per_name))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::history_points_of(
                    &mut *db.conn().await?,
                    db.location(),
                    names,
                    from,
                    to,
                    per_name,
                )
                .await
            }
        }
    }

    /// Sizes of the state.
    pub async fn counts(&self) -> Result<Counts, Error> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(sqlite::counts).await,
            Backend::Postgres(db) => postgres::counts(&mut *db.conn().await?, db.location()).await,
        }
    }

    /// What was last announced for `token_name`, `None` if nothing was ever stored for it.
    pub async fn announced(&self, token_name: &str) -> Result<Option<Announced>, Error> {
        let name = token_name.to_owned();
        match &self.backend {
            Backend::Sqlite(db) => db.call(move |c, p| sqlite::announced(c, p, &name)).await,
            Backend::Postgres(db) => {
                postgres::announced(&mut *db.conn().await?, db.location(), &name).await
            }
        }
    }

    /// Everything announced, by name: what a restarted watch loads before its first round.
    pub async fn all_announced(&self) -> Result<Vec<Announced>, Error> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(sqlite::all_announced).await,
            Backend::Postgres(db) => {
                postgres::all_announced(&mut *db.conn().await?, db.location()).await
            }
        }
    }

    /// Takes in a state without an alert (e.g. a token's first `ok`, or a state the caller decides
    /// not to announce), keeping `unknown_since`. An alert announces its state by itself: see
    /// [`Store::record_alert`].
    pub async fn set_announcement(
        &self,
        token_name: &str,
        announcement: Announcement,
    ) -> Result<(), Error> {
        let name = token_name.to_owned();
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::set_announcement(c, p, &name, &announcement))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::set_announcement(
                    &mut *db.conn().await?,
                    db.location(),
                    &name,
                    &announcement,
                )
                .await
            }
        }
    }

    /// Sets or clears (`None`) since when `token_name` has been `unknown`, keeping its announcement.
    pub async fn set_unknown_since(
        &self,
        token_name: &str,
        since: Option<Timestamp>,
    ) -> Result<(), Error> {
        let name = token_name.to_owned();
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::set_unknown_since(c, p, &name, since))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::set_unknown_since(&mut *db.conn().await?, db.location(), &name, since)
                    .await
            }
        }
    }

    /// Records an alert and one pending delivery per route (due at once), and announces its state,
    /// all in one transaction, so that a crash leaves either nothing (the alert is raised again) or
    /// the alert both announced and queued (it is delivered, never raised twice). If `alert.state` is
    /// already the announced state, the alert is a reminder: `last_reminder_at` becomes its time.
    /// An id already recorded is left as it was (recording is idempotent).
    pub async fn record_alert(&self, alert: Alert, routes: Vec<String>) -> Result<(), Error> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::record_alert(c, p, &alert, &routes))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::record_alert(&mut *db.conn().await?, db.location(), &alert, &routes).await
            }
        }
    }

    /// What a decision about `token_name` leaves, in one transaction: the alert (if any) with one
    /// pending delivery per route (an id already recorded is left as it was), then the announcement
    /// exactly as given (`None`: nothing announced yet; any earlier one is kept) and `unknown_since`.
    /// Unlike [`Store::record_alert`], the announced state is the caller's, not derived from the
    /// alert: a `recovered` alert announces `ok`.
    pub async fn announce(
        &self,
        token_name: &str,
        announcement: Option<Announcement>,
        unknown_since: Option<Timestamp>,
        alert: Option<(Alert, Vec<String>)>,
    ) -> Result<(), Error> {
        let name = token_name.to_owned();
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| {
                    sqlite::announce(
                        c,
                        p,
                        &name,
                        announcement.as_ref(),
                        unknown_since,
                        alert.as_ref().map(|(a, r)| (a, r.as_slice())),
                    )
                })
                .await
            }
            Backend::Postgres(db) => {
                let alert = alert.as_ref().map(|(a, r)| (a, r.as_slice()));
                let conn = &mut *db.conn().await?;
                postgres::announce(
                    conn,
                    db.location(),
                    &name,
                    announcement.as_ref(),
                    unknown_since,
                    alert,
                )
                .await
            }
        }
    }

    /// [`Store::announce`] for many tokens in one transaction (a round's decisions): each is applied
    /// in order, and a crash leaves all of them or none.
    pub async fn announce_all(&self, decisions: Vec<Decision>) -> Result<(), Error> {
        if decisions.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::announce_all(c, p, &decisions))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::announce_all(&mut *db.conn().await?, db.location(), &decisions).await
            }
        }
    }

    /// Deliveries to attempt at `now` (pending, or failed with a next attempt due), oldest first,
    /// at most `limit`.
    pub async fn due_deliveries(&self, now: Timestamp, limit: u32) -> Result<Vec<Delivery>, Error> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::due_deliveries(c, p, now, limit))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::due_deliveries(&mut *db.conn().await?, db.location(), now, limit).await
            }
        }
    }

    /// Every delivery of one alert, by route.
    pub async fn deliveries(&self, alert_id: &str) -> Result<Vec<Delivery>, Error> {
        let id = alert_id.to_owned();
        match &self.backend {
            Backend::Sqlite(db) => db.call(move |c, p| sqlite::deliveries(c, p, &id)).await,
            Backend::Postgres(db) => {
                postgres::deliveries(&mut *db.conn().await?, db.location(), &id).await
            }
        }
    }

    /// The route accepted the alert: counts the attempt; it is not tried again.
    pub async fn mark_delivered(
        &self,
        alert_id: &str,
        route: &str,
        at: Timestamp,
    ) -> Result<(), Error> {
        let (id, route) = (alert_id.to_owned(), route.to_owned());
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::mark_delivered(c, p, &id, &route, at))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::mark_delivered(&mut *db.conn().await?, db.location(), &id, &route, at)
                    .await
            }
        }
    }

    /// The attempt failed: counts it, keeps `error` (control characters removed, cut to
    /// [`MAX_TEXT`]; the caller must already have removed any URL or secret), and schedules the next
    /// attempt at `next_attempt_at`, or gives up if it is `None`.
    pub async fn mark_failed(
        &self,
        alert_id: &str,
        route: &str,
        at: Timestamp,
        error: &str,
        next_attempt_at: Option<Timestamp>,
    ) -> Result<(), Error> {
        let (id, route, error) = (alert_id.to_owned(), route.to_owned(), clean_text(error));
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| {
                    sqlite::mark_failed(c, p, &id, &route, at, &error, next_attempt_at)
                })
                .await
            }
            Backend::Postgres(db) => {
                postgres::mark_failed(
                    &mut *db.conn().await?,
                    db.location(),
                    &id,
                    &route,
                    at,
                    &error,
                    next_attempt_at,
                )
                .await
            }
        }
    }

    /// Settles the deliveries of many alerts on one route alike, in one transaction: what a grouped
    /// alert's one attempt means for each alert in it. An unknown delivery fails the whole call.
    pub async fn settle_all(
        &self,
        route: &str,
        alert_ids: Vec<String>,
        at: Timestamp,
        settlement: Settlement,
    ) -> Result<(), Error> {
        let route = route.to_owned();
        let settlement = match settlement {
            Settlement::Failed {
                error,
                next_attempt_at,
            } => Settlement::Failed {
                error: clean_text(&error),
                next_attempt_at,
            },
            delivered => delivered,
        };
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::settle_all(c, p, &route, &alert_ids, at, &settlement))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::settle_all(
                    &mut *db.conn().await?,
                    db.location(),
                    &route,
                    &alert_ids,
                    at,
                    &settlement,
                )
                .await
            }
        }
    }

    /// How each route is doing, by route name.
    pub async fn route_health(&self) -> Result<Vec<RouteHealth>, Error> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(sqlite::route_health).await,
            Backend::Postgres(db) => {
                postgres::route_health(&mut *db.conn().await?, db.location()).await
            }
        }
    }

    /// Records an event; its detail is cleaned like an error text.
    pub async fn record_event(&self, event: Event) -> Result<(), Error> {
        let event = Event {
            detail: clean_text(&event.detail),
            ..event
        };
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::record_event(c, p, &event))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::record_event(&mut *db.conn().await?, db.location(), &event).await
            }
        }
    }

    /// The `limit` most recent events, newest first.
    pub async fn recent_events(&self, limit: u32) -> Result<Vec<Event>, Error> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::recent_events(c, p, limit))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::recent_events(&mut *db.conn().await?, db.location(), limit).await
            }
        }
    }

    /// Claims the action named by `key` for `replica` (not a secret; cleaned like a text): `true` when
    /// this call inserted the claim and so must do the action, then [`Store::claim_done`] it;
    /// `false` when the key was claimed before (by anyone, done or not), and the action must be
    /// skipped. Build the key from the token's SHA-256, the action and the state change it answers
    /// (`<sha256>:renew:<expiry>`), so that two leaders reaching the same change meet on one row
    /// while the next change gets a key of its own. The key must hold no secret.
    pub async fn claim(&self, key: &str, replica: &str, at: Timestamp) -> Result<bool, Error> {
        let key = key.to_owned();
        let replica = clean_text(replica);
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::claim(c, p, &key, &replica, at))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::claim(&mut *db.conn().await?, db.location(), &key, &replica, at).await
            }
        }
    }

    /// Marks the claim `key` done at `at`: `true` when it was claimed and not yet done. A claim
    /// never marked done (its holder stopped half-way) stays claimed: the action may have happened.
    pub async fn claim_done(&self, key: &str, at: Timestamp) -> Result<bool, Error> {
        let key = key.to_owned();
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::claim_done(c, p, &key, at))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::claim_done(&mut *db.conn().await?, db.location(), &key, at).await
            }
        }
    }

    /// Retention for claims: removes those done before `cutoff` (their state change is long past, so
    /// their key does not come again); claims not done are kept. Returns how many went.
    pub async fn prune_claims(&self, cutoff: Timestamp) -> Result<u64, Error> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.call(move |c, p| sqlite::prune_claims(c, p, cutoff))
                    .await
            }
            Backend::Postgres(db) => {
                postgres::prune_claims(&mut *db.conn().await?, db.location(), cutoff).await
            }
        }
    }

    /// Retention: removes checks and events older than `cutoff` (always keeping each token's latest
    /// check), and alerts older than `cutoff` whose deliveries are all settled and that no announced
    /// state points to. One transaction.
    pub async fn prune(&self, cutoff: Timestamp) -> Result<Pruned, Error> {
        match &self.backend {
            Backend::Sqlite(db) => db.call(move |c, p| sqlite::prune(c, p, cutoff)).await,
            Backend::Postgres(db) => {
                postgres::prune(&mut *db.conn().await?, db.location(), cutoff).await
            }
        }
    }
}

/// An alert as the recent events list it: `expiring → critical: the message`.
pub(crate) fn alert_event_text(alert: &Alert) -> String {
    format!(
        "{} → {}: {}",
        alert.previous_state.as_deref().unwrap_or("new"),
        alert.state,
        alert.message
    )
}

/// Removes control characters (a receiver's answer may hold anything) and cuts to [`MAX_TEXT`]
/// characters.
pub(crate) fn clean_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|c| !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        .take(MAX_TEXT)
        .collect()
}
