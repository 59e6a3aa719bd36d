//! permatoken watch's memory: what it knows of each token, every check's result, renewals,
//! failovers and the alerts it sent, so that a restart neither forgets nor repeats itself.
//!
//! Tokens are keyed by the full SHA-256 of the token (the short fingerprint collides in large fleets).
//! Times are whole unix seconds: anything finer is dropped when stored.
//!
//! One interface, [`Store`], over two backends: SQLite (an embedded file, the default) and
//! PostgreSQL (shared by replicas, issue 10). The caller sees one concrete type whatever the
//! backend; inside, each query is written once (`queries`) over a small connection trait
//! (`conn`), and a backend is only what truly differs: connecting, its numbered migrations
//! (`migrations/<backend>/NNNN_*.sql`, the same tables: `BIGINT GENERATED ALWAYS AS IDENTITY` and
//! BOOLEAN in PostgreSQL where SQLite has `INTEGER PRIMARY KEY` and 0/1), the bulk writes of a
//! round, and holding the state: SQLite takes a file lock, PostgreSQL's replicas share the
//! database and elect a leader ([`Election`]), and migrate under an advisory lock
//! ([`MIGRATION_LOCK`]).
//!
//! The backends are an enum, not a trait object: the methods are `async` (a `dyn` trait would need
//! boxed futures or another crate) and the set is closed and small. Each [`Store`] method runs one
//! query on whichever the store has, through `on_backend!`.
//!
//! Writes that belong together (an alert, its deliveries and the announced state; a round's checks)
//! are one transaction, so a crash leaves all of them or none.
//!
//! Must never: store a secret (a token, an app secret, a route's URL), or know the terminal.

mod conn;
mod postgres;
mod queries;
mod records;
mod rows;
mod sqlite;

pub use postgres::{LEADER_LOCK, MIGRATION_LOCK, PgOptions};
pub use records::*;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::conn::Conn;

/// Runs one operation, written once over [`conn::Conn`], on the store's backend, as `|c| op(c,
/// …)`: SQLite's on tokio's blocking pool (its futures are ready at once, so it polls the one
/// body there), PostgreSQL's on the session. The operation's arguments must be owned: SQLite's
/// closure outlives the call.
macro_rules! on_backend {
    ($store:expr, |$c:ident| $op:expr) => {
        match &$store.backend {
            Backend::Sqlite(db) => db.run(async move |$c| $op.await).await,
            Backend::Postgres(db) => {
                let $c = &mut db.session().await?;
                $op.await
            }
        }
    };
}

/// Decisions the state did not take ([`Store::announce_all`]), handed back with why.
#[derive(Debug)]
pub struct Refused {
    /// Why the state refused them.
    pub error: Error,
    /// The decisions, as given.
    pub decisions: Vec<Decision>,
}

/// The newest schema this build knows, for each backend.
pub const SCHEMA_VERSION: i64 = sqlite::MIGRATIONS.len() as i64;

/// What went wrong with the state. Messages name the file and never hold a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or another `Store` in this one) holds the file, by this path or another
    /// (a symlink, `..`).
    #[error(
        "the state file `{}` is in use by another `permatoken watch` ({}it holds `{}`); stop that one or give this one another `--state`",
        path.display(),
        pid.map(|p| format!("pid {p}; ")).unwrap_or_default(),
        lock.display()
    )]
    Locked {
        /// The database file, as given.
        path: PathBuf,
        /// The lock file beside the file it resolves to.
        lock: PathBuf,
        /// The holder's pid, when its lock file records one.
        pid: Option<u32>,
    },
    /// The file exists and is empty: a state lost (truncated, restored empty) more likely than a
    /// new one, and starting from nothing would send every alert again under new ids.
    #[error(
        "the state file `{}` is empty (zero bytes): starting from it would forget every alert already sent and send them again under new ids; restore it from a backup, or pass `--state-new` if it is meant as a new state",
        path.display()
    )]
    EmptyState {
        /// The file.
        path: PathBuf,
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
    /// The PostgreSQL server could not be reached, or went away (down, restarting, the network cut,
    /// no answer in time): a fault that passes, unlike [`Error::Postgres`]'s refusals. It never
    /// holds the password.
    #[error("the PostgreSQL state `{location}` failed: {reason}")]
    PostgresUnreachable {
        /// The URL without its query.
        location: String,
        /// What happened and what to check.
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

impl Error {
    /// Whether the state's server could not be reached ([`Error::PostgresUnreachable`]): waiting and
    /// trying again may help, where a refusal (a bad URL, password or schema) will not.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::PostgresUnreachable { .. })
    }
}

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
    lease: Duration,
}

impl Election {
    /// How long a leader's heartbeat may be silent before a standby ends its session; zero when
    /// there is no election (SQLite).
    pub fn lease(&self) -> Duration {
        self.lease
    }

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
    /// by a lock on `<resolved path>.lock` (symlinks followed, `..` removed): a second open of the
    /// same file, by any path, in this process or another, fails with [`Error::Locked`] naming the
    /// file and the holder's pid. The lock file stays after the store is dropped (removing it
    /// would race with the next opener); only the lock on it goes. An existing zero-length file is
    /// refused ([`Error::EmptyState`]); [`Store::open_as_new`] takes it.
    ///
    /// Every method runs its blocking SQLite work on tokio's blocking pool, so it must be called
    /// inside a tokio runtime; calls are serialised on one connection.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_sqlite(path.as_ref(), false).await
    }

    /// As [`Store::open`], but an existing zero-length file is taken as a new state (the person
    /// said so: `watch --state-new`). A file with a state in it is opened as it is.
    pub async fn open_as_new(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_sqlite(path.as_ref(), true).await
    }

    async fn open_sqlite(path: &Path, empty_is_new: bool) -> Result<Self, Error> {
        let path = path.to_path_buf();
        let sqlite = tokio::task::spawn_blocking(move || sqlite::Sqlite::open(&path, empty_is_new))
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
            lease: Duration::ZERO,
        }
    }

    /// This replica's side of the leader election among the replicas sharing this state, known to
    /// the others as `replica` (for the heartbeat row; not a secret). SQLite's file lock already
    /// makes its one `watch` the leader: its election always leads. See [`Election`].
    pub fn election(&self, replica: &str, lease: Duration) -> Election {
        let (inner, lease) = match &self.backend {
            Backend::Sqlite(_) => (None, Duration::ZERO),
            Backend::Postgres(db) => (
                Some(postgres::Election::new(
                    db.clone(),
                    clean_text(replica),
                    lease,
                )),
                lease,
            ),
        };
        Election {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            store: self.clone(),
            replica: clean_text(replica),
            lease,
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
        on_backend!(self, |c| queries::schema_version(c))
    }

    /// Writes tokens in one transaction: inserts new ones, updates known ones (keeping `first_seen`).
    /// An identity given replaces the stored one; a record without one keeps it.
    pub async fn upsert_tokens(&self, mut tokens: Vec<TokenRecord>) -> Result<(), Error> {
        for identity in tokens.iter_mut().filter_map(|t| t.identity.as_mut()) {
            identity.id = clean_text(&identity.id);
            identity.name = identity.name.as_deref().map(clean_text);
        }
        on_backend!(self, |c| c.upsert_tokens(&tokens))
    }

    /// Every token known, by name then key.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        on_backend!(self, |c| queries::tokens(c))
    }

    /// Removes tokens not seen since `cutoff`, with their checks (a token renewed away or removed
    /// from the configuration).
    pub async fn forget_tokens_unseen_since(&self, cutoff: Timestamp) -> Result<u64, Error> {
        on_backend!(self, |c| queries::forget_tokens(c, cutoff))
    }

    /// Records checks in one transaction (a whole round at once is much faster than one call per
    /// check). Each check's token must already be known; a check older than its token's latest
    /// does not become the latest.
    pub async fn record_checks(&self, checks: Vec<CheckRecord>) -> Result<(), Error> {
        on_backend!(self, |c| c.record_checks(&checks))
    }

    /// Every token with its latest check, by name then key. After a renewal the old token stays
    /// until forgotten: the page shows, per name, the entry with the newest check.
    pub async fn latest_checks(&self) -> Result<Vec<LatestCheck>, Error> {
        on_backend!(self, |c| queries::latest_checks(c))
    }

    /// The tokens whose latest check saw their identity (the identity was written with that
    /// check's time), with that check's status and findings, by key: what a restarted watch or a
    /// new leader needs to ask `/me` only of the others. A token whose latest check had no answer
    /// from `/me`, or that was never checked, is not in it.
    pub async fn identities(&self) -> Result<Vec<IdentityCheck>, Error> {
        on_backend!(self, |c| queries::identities(c))
    }

    /// [`Store::latest_checks`] with only what the status page shows, in the same order: a fleet's
    /// page is rebuilt from every token's latest check, and whole records (source, key twice,
    /// findings) took twice the memory.
    pub async fn latest_statuses(&self) -> Result<Vec<LatestStatus>, Error> {
        on_backend!(self, |c| queries::latest_statuses(c))
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
        on_backend!(self, |c| queries::history(c, &name, from, to))
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
        on_backend!(self, |c| queries::histories(c, from, to, per_name))
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
        on_backend!(self, |c| queries::history_points(
            c, None, from, to, per_name
        ))
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
        on_backend!(self, |c| {
            queries::history_points(c, Some(&names), from, to, per_name)
        })
    }

    /// Sizes of the state.
    pub async fn counts(&self) -> Result<Counts, Error> {
        on_backend!(self, |c| queries::counts(c))
    }

    /// What was last announced for `token_name`, `None` if nothing was ever stored for it.
    pub async fn announced(&self, token_name: &str) -> Result<Option<Announced>, Error> {
        let name = token_name.to_owned();
        on_backend!(self, |c| queries::announced(c, &name))
    }

    /// Everything announced, by name: what a restarted watch loads before its first round.
    pub async fn all_announced(&self) -> Result<Vec<Announced>, Error> {
        on_backend!(self, |c| queries::all_announced(c))
    }

    /// The words of the alert that announced each token's state, but for the tokens announced
    /// `ok` or `except` (a state whose words go stale at once, such as `cannot_be_checked`): for the
    /// status page after a restart. One row per such token, by name.
    pub async fn announced_reasons(&self, except: &str) -> Result<Vec<AnnouncedReason>, Error> {
        let except = except.to_owned();
        on_backend!(self, |c| queries::announced_reasons(c, &except))
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
        on_backend!(self, |c| queries::set_announcement(c, &name, &announcement))
    }

    /// Sets or clears (`None`) since when `token_name` has been `unknown`, keeping its announcement.
    pub async fn set_unknown_since(
        &self,
        token_name: &str,
        since: Option<Timestamp>,
    ) -> Result<(), Error> {
        let name = token_name.to_owned();
        on_backend!(self, |c| queries::set_unknown_since(c, &name, since))
    }

    /// Records an alert and one pending delivery per route (due at once), and announces its state,
    /// all in one transaction, so that a crash leaves either nothing (the alert is raised again) or
    /// the alert both announced and queued (it is delivered, never raised twice). If `alert.state` is
    /// already the announced state, the alert is a reminder: `last_reminder_at` becomes its time.
    /// An id already recorded is left as it was (recording is idempotent).
    pub async fn record_alert(&self, alert: Alert, routes: Vec<String>) -> Result<(), Error> {
        on_backend!(self, |c| queries::record_alert(c, &alert, &routes))
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
        let decision = [Decision {
            token_name: token_name.to_owned(),
            announcement,
            unknown_since,
            alert: alert.map(Box::new),
        }];
        on_backend!(self, |c| queries::announce_all(c, &decision))
    }

    /// [`Store::announce`] for many tokens in one transaction (a round's decisions): each is applied
    /// in order, and a crash leaves all of them or none. When the state refuses them, they are
    /// handed back with the error, for another try: a fleet's first round makes 100,000 of them,
    /// and a copy kept aside for that case was the daemon's largest allocation.
    pub async fn announce_all(&self, decisions: Vec<Decision>) -> Result<(), Refused> {
        if decisions.is_empty() {
            return Ok(());
        }
        // SQLite writes on its own thread, which must own what it writes: it shares them.
        let decisions = std::sync::Arc::new(decisions);
        let written = std::sync::Arc::clone(&decisions);
        let result: Result<(), Error> =
            async { on_backend!(self, |c| queries::announce_all(c, &written)) }.await;
        result.map_err(|error| Refused {
            error,
            decisions: std::sync::Arc::try_unwrap(decisions).unwrap_or_else(|d| (*d).clone()),
        })
    }

    /// Deliveries to attempt at `now` (pending, or failed with a next attempt due), oldest first,
    /// at most `limit`.
    pub async fn due_deliveries(&self, now: Timestamp, limit: u32) -> Result<Vec<Delivery>, Error> {
        on_backend!(self, |c| queries::due_deliveries(c, now, limit))
    }

    /// Every delivery of one alert, by route.
    pub async fn deliveries(&self, alert_id: &str) -> Result<Vec<Delivery>, Error> {
        let id = alert_id.to_owned();
        on_backend!(self, |c| queries::deliveries(c, &id))
    }

    /// The route accepted the alert: counts the attempt; it is not tried again.
    pub async fn mark_delivered(
        &self,
        alert_id: &str,
        route: &str,
        at: Timestamp,
    ) -> Result<(), Error> {
        let (id, route) = (alert_id.to_owned(), route.to_owned());
        let settled = Settlement::Delivered;
        on_backend!(self, |c| queries::settle(
            c,
            &id,
            &route,
            settled.attempt(at)
        ))
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
        let (id, route) = (alert_id.to_owned(), route.to_owned());
        let settled = Settlement::Failed {
            error: clean_text(error),
            next_attempt_at,
        };
        on_backend!(self, |c| queries::settle(
            c,
            &id,
            &route,
            settled.attempt(at)
        ))
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
        let settled = match settlement {
            Settlement::Failed {
                error,
                next_attempt_at,
            } => Settlement::Failed {
                error: clean_text(&error),
                next_attempt_at,
            },
            delivered => delivered,
        };
        on_backend!(self, |c| {
            queries::settle_all(c, &route, &alert_ids, settled.attempt(at))
        })
    }

    /// How each route is doing, by route name.
    pub async fn route_health(&self) -> Result<Vec<RouteHealth>, Error> {
        on_backend!(self, |c| queries::route_health(c))
    }

    /// Records an event; its detail is cleaned like an error text.
    pub async fn record_event(&self, event: Event) -> Result<(), Error> {
        let event = Event {
            detail: clean_text(&event.detail),
            ..event
        };
        on_backend!(self, |c| queries::record_event(c, &event))
    }

    /// The `limit` most recent events, newest first.
    pub async fn recent_events(&self, limit: u32) -> Result<Vec<Event>, Error> {
        on_backend!(self, |c| queries::recent_events(c, limit))
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
        on_backend!(self, |c| queries::claim(c, &key, &replica, at))
    }

    /// Marks the claim `key` done at `at`: `true` when it was claimed and not yet done. A claim
    /// never marked done (its holder stopped half-way) stays claimed: the action may have happened.
    pub async fn claim_done(&self, key: &str, at: Timestamp) -> Result<bool, Error> {
        let key = key.to_owned();
        on_backend!(self, |c| queries::claim_done(c, &key, at))
    }

    /// Retention for claims: removes those done before `cutoff` (their state change is long past, so
    /// their key does not come again); claims not done are kept. Returns how many went.
    pub async fn prune_claims(&self, cutoff: Timestamp) -> Result<u64, Error> {
        on_backend!(self, |c| queries::prune_claims(c, cutoff))
    }

    /// Retention: removes checks and events older than `cutoff` (always keeping each token's latest
    /// check), and alerts older than `cutoff` whose deliveries are all settled and that no announced
    /// state points to. One transaction.
    pub async fn prune(&self, cutoff: Timestamp) -> Result<Pruned, Error> {
        on_backend!(self, |c| queries::prune(c, cutoff))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// watch runs the store's calls on a multi-threaded runtime and spawns them: each call's
    /// future must be `Send`, whichever backend the store has. Checked at compile time.
    #[allow(dead_code, clippy::let_underscore_future)]
    async fn every_call_is_send(store: Store, election: Election, t: Timestamp) {
        fn send<T: Send>(_: T) {}
        send(store.schema_version());
        send(store.upsert_tokens(Vec::new()));
        send(store.tokens());
        send(store.forget_tokens_unseen_since(t));
        send(store.record_checks(Vec::new()));
        send(store.latest_checks());
        send(store.identities());
        send(store.latest_statuses());
        send(store.history("orders", t, t));
        send(store.histories(t, t, 1));
        send(store.history_points(t, t, 1));
        send(store.history_points_of(Vec::new(), t, t, 1));
        send(store.counts());
        send(store.announced("orders"));
        send(store.all_announced());
        send(store.set_unknown_since("orders", None));
        send(store.set_announcement("orders", announcement(t)));
        send(store.record_alert(alert(t), Vec::new()));
        send(store.announce("orders", None, None, None));
        send(store.announce_all(Vec::new()));
        send(store.due_deliveries(t, 1));
        send(store.deliveries("a1"));
        send(store.mark_delivered("a1", "ops", t));
        send(store.mark_failed("a1", "ops", t, "", None));
        send(store.settle_all("ops", Vec::new(), t, Settlement::Delivered));
        send(store.route_health());
        send(store.record_event(Event {
            at: t,
            token_name: None,
            kind: EventKind::Start,
            detail: String::new(),
        }));
        send(store.recent_events(1));
        send(store.claim("k", "r", t));
        send(store.claim_done("k", t));
        send(store.prune_claims(t));
        send(store.prune(t));
        send(election.poll());
        send(election.claim("k", t));
        send(Store::open(""));
        send(Store::open_postgres("", PgOptions::default()));
    }

    fn announcement(since: Timestamp) -> Announcement {
        Announcement {
            state: String::new(),
            since,
            alert_id: None,
            last_reminder_at: None,
            reminders: 0,
        }
    }

    fn alert(time: Timestamp) -> Alert {
        Alert {
            id: String::new(),
            token_name: String::new(),
            state: String::new(),
            previous_state: None,
            message: String::new(),
            fix: None,
            time,
        }
    }
}
