//! The SQLite backend: one connection behind a mutex, used from `spawn_blocking`, held exclusively
//! through a lock on `<file>.lock`.
//!
//! Why a lock file and not SQLite's `locking_mode=EXCLUSIVE`: SQLite takes that lock only at the first
//! read or write and reports a clash as `SQLITE_BUSY`, which looks like any transient busy; it would
//! also shut out read-only tools (the `sqlite3` shell while debugging). An advisory `flock` on a sibling
//! file is taken before anything is read, is released by the kernel when the process dies (no stale
//! lock to clean up), and clashes even within one process (it belongs to the open file description),
//! so the error can say plainly which file is in use.
//!
//! The SQL stays in the portable dialect shared with PostgreSQL (numbered `?N` placeholders map to
//! `$N`); only the migrations differ per backend.
//!
//! Must never: run a query on an async worker thread, or write a value it was not given.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::rows::{
    CHECK_COLS, IDENTITIES, KEEP_IDENTITY, TOKEN_COLS, TOKEN_WIDTH, corrupt, identity, list,
    opt_ts, to_json, ts,
};
use crate::{
    Alert, Announced, Announcement, Attempt, CheckRecord, CheckStatus, Counts, Delivery,
    DeliveryStatus, Error, Event, EventKind, IdentityCheck, LatestCheck, LatestStatus, Pruned,
    Role, RouteHealth, Status, StatusPoint, TokenKey, TokenRecord,
};

/// Schema migrations, in order: the schema's version is the number applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_reminders.sql"),
    include_str!("../migrations/sqlite/0003_claims.sql"),
    include_str!("../migrations/sqlite/0004_identities.sql"),
];

#[derive(Clone)]
pub(crate) struct Sqlite {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    path: PathBuf,
    // Held for the store's lifetime: dropping the last clone closes the connection, then the lock.
    _lock: File,
}

fn db(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Database {
        path: path.to_path_buf(),
        source,
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl Sqlite {
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io("create the folder", parent))?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open the lock file", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                    lock: lock_path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }
        // Created here rather than by SQLite so that its mode is 0600 whatever the umask; SQLite
        // gives its `-wal` and `-shm` files the database file's mode.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("create", path))?;
        let mut conn = Connection::open(path).map_err(db(path))?;
        // The first statement reads the header: a file that is not a database is refused here,
        // before anything is written to it.
        let not_a_database = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => Error::NotADatabase {
                path: path.to_path_buf(),
            },
            _ => db(path)(e),
        };
        conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(not_a_database)?;
        // FULL: one fsync per transaction, cheap with batched rounds, and an announced alert is
        // never lost to a power cut (at-least-once delivery rests on it).
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(db(path))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db(path))?;
        migrate(&mut conn, path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: path.to_path_buf(),
                _lock: lock,
            }),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` with the connection on tokio's blocking pool.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Path) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic mid-transaction rolled it back when the transaction dropped: the connection
            // is still sound.
            let mut conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn, &inner.path)
        })
        .await
        .map_err(|_| Error::Worker)?
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), Error> {
    let known = MIGRATIONS.len() as i64;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(path))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
    )
    .map_err(db(path))?;
    let found: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(db(path))?;
    if found > known {
        return Err(Error::NewerSchema {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    let now = Timestamp::now().as_second();
    for (version, sql) in (1..).zip(MIGRATIONS).skip(found as usize) {
        tx.execute_batch(sql).map_err(db(path))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, now],
        )
        .map_err(db(path))?;
    }
    tx.commit().map_err(db(path))
}

pub(crate) fn schema_version(conn: &mut Connection, path: &Path) -> Result<i64, Error> {
    conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
        r.get(0)
    })
    .map_err(db(path))
}

fn token_from_row(row: &Row<'_>, at: usize, path: &Path) -> Result<TokenRecord, Error> {
    let g = |e| db(path)(e);
    let key: String = row.get(at).map_err(g)?;
    let role: String = row.get(at + 2).map_err(g)?;
    let backup_of: Option<String> = row.get(at + 3).map_err(g)?;
    let role = match (role.as_str(), backup_of) {
        ("primary", _) => Role::Primary,
        ("backup", Some(of)) => Role::Backup(of),
        _ => return Err(corrupt(path, "tokens.role")),
    };
    Ok(TokenRecord {
        key: TokenKey::parse(&key).map_err(|_| corrupt(path, "tokens.token_sha256"))?,
        name: row.get(at + 1).map_err(g)?,
        role,
        fingerprint: row.get(at + 4).map_err(g)?,
        source_path: row.get(at + 5).map_err(g)?,
        source_key: row.get(at + 6).map_err(g)?,
        first_seen: ts(path, "tokens.first_seen", row.get(at + 7).map_err(g)?)?,
        last_seen: ts(path, "tokens.last_seen", row.get(at + 8).map_err(g)?)?,
        identity: identity(
            path,
            row.get(at + 9).map_err(g)?,
            row.get(at + 10).map_err(g)?,
            row.get(at + 11).map_err(g)?,
        )?,
    })
}

fn check_from_row(row: &Row<'_>, at: usize, path: &Path) -> Result<CheckRecord, Error> {
    let g = |e| db(path)(e);
    let key: String = row.get(at).map_err(g)?;
    let status: String = row.get(at + 2).map_err(g)?;
    let valid: Option<i64> = row.get(at + 4).map_err(g)?;
    let never: i64 = row.get(at + 6).map_err(g)?;
    let scopes: String = row.get(at + 8).map_err(g)?;
    let codes: String = row.get(at + 9).map_err(g)?;
    let elapsed: i64 = row.get(at + 10).map_err(g)?;
    Ok(CheckRecord {
        key: TokenKey::parse(&key).map_err(|_| corrupt(path, "checks.token_sha256"))?,
        checked_at: ts(path, "checks.checked_at", row.get(at + 1).map_err(g)?)?,
        status: Status::parse(&status).ok_or_else(|| corrupt(path, "checks.status"))?,
        alert_state: row.get(at + 3).map_err(g)?,
        valid: valid.map(|v| v != 0),
        expires_at: opt_ts(path, "checks.expires_at", row.get(at + 5).map_err(g)?)?,
        never_expires: never != 0,
        kind: row.get(at + 7).map_err(g)?,
        missing_scopes: list(path, "checks.missing_scopes", &scopes)?,
        finding_codes: list(path, "checks.finding_codes", &codes)?,
        elapsed_ms: u64::try_from(elapsed).map_err(|_| corrupt(path, "checks.elapsed_ms"))?,
    })
}

pub(crate) fn upsert_tokens(
    conn: &mut Connection,
    path: &Path,
    tokens: &[TokenRecord],
) -> Result<(), Error> {
    let tx = conn.transaction().map_err(db(path))?;
    {
        let mut stmt = tx
            .prepare(&format!(
                "INSERT INTO tokens (token_sha256, name, role, backup_of, fingerprint, source_path,
                    source_key, first_seen, last_seen, identity_id, identity_name, identity_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (token_sha256) DO UPDATE SET name = excluded.name,
                    role = excluded.role, backup_of = excluded.backup_of,
                    fingerprint = excluded.fingerprint, source_path = excluded.source_path,
                    source_key = excluded.source_key, last_seen = excluded.last_seen,
                    {KEEP_IDENTITY}"
            ))
            .map_err(db(path))?;
        for t in tokens {
            let (role, of) = match &t.role {
                Role::Primary => ("primary", None),
                Role::Backup(of) => ("backup", Some(of.as_str())),
            };
            stmt.execute(params![
                t.key.as_str(),
                t.name,
                role,
                of,
                t.fingerprint,
                t.source_path,
                t.source_key,
                t.first_seen.as_second(),
                t.last_seen.as_second(),
                t.identity.as_ref().map(|i| i.id.as_str()),
                t.identity.as_ref().and_then(|i| i.name.as_deref()),
                t.identity.as_ref().map(|i| i.seen_at.as_second()),
            ])
            .map_err(db(path))?;
        }
    }
    tx.commit().map_err(db(path))
}

pub(crate) fn tokens(conn: &mut Connection, path: &Path) -> Result<Vec<TokenRecord>, Error> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {TOKEN_COLS} FROM tokens t ORDER BY t.name, t.token_sha256"
        ))
        .map_err(db(path))?;
    let mut rows = stmt.query([]).map_err(db(path))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db(path))? {
        out.push(token_from_row(row, 0, path)?);
    }
    Ok(out)
}

pub(crate) fn forget_tokens(
    conn: &mut Connection,
    path: &Path,
    cutoff: Timestamp,
) -> Result<u64, Error> {
    let n = conn
        .execute(
            "DELETE FROM tokens WHERE last_seen < ?1",
            params![cutoff.as_second()],
        )
        .map_err(db(path))?;
    Ok(n as u64)
}

pub(crate) fn record_checks(
    conn: &mut Connection,
    path: &Path,
    checks: &[CheckRecord],
) -> Result<(), Error> {
    let tx = conn.transaction().map_err(db(path))?;
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO checks (token_sha256, checked_at, status, alert_state, valid,
                    expires_at, never_expires, kind, missing_scopes, finding_codes, elapsed_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .map_err(db(path))?;
        let mut latest = tx
            .prepare(
                "UPDATE tokens SET last_check_id = ?1, last_check_at = ?2
                 WHERE token_sha256 = ?3 AND (last_check_at IS NULL OR last_check_at <= ?2)",
            )
            .map_err(db(path))?;
        for c in checks {
            insert
                .execute(params![
                    c.key.as_str(),
                    c.checked_at.as_second(),
                    c.status.as_str(),
                    c.alert_state,
                    c.valid.map(i64::from),
                    c.expires_at.map(|t| t.as_second()),
                    i64::from(c.never_expires),
                    c.kind,
                    to_json(&c.missing_scopes),
                    to_json(&c.finding_codes),
                    i64::try_from(c.elapsed_ms).unwrap_or(i64::MAX),
                ])
                .map_err(db(path))?;
            let id = tx.last_insert_rowid();
            latest
                .execute(params![id, c.checked_at.as_second(), c.key.as_str()])
                .map_err(db(path))?;
        }
    }
    tx.commit().map_err(db(path))
}

pub(crate) fn latest_checks(conn: &mut Connection, path: &Path) -> Result<Vec<LatestCheck>, Error> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {TOKEN_COLS}, {CHECK_COLS} FROM tokens t
             LEFT JOIN checks c ON c.id = t.last_check_id
             ORDER BY t.name, t.token_sha256"
        ))
        .map_err(db(path))?;
    // Sized once: grown by doubling, 10,000 rows left the larger half of a copy behind.
    let tokens: i64 = conn
        .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))
        .map_err(db(path))?;
    let mut out = Vec::with_capacity(usize::try_from(tokens).unwrap_or(0));
    let mut rows = stmt.query([]).map_err(db(path))?;
    while let Some(row) = rows.next().map_err(db(path))? {
        let token = token_from_row(row, 0, path)?;
        let has_check: Option<String> = row.get(TOKEN_WIDTH).map_err(db(path))?;
        let check = match has_check {
            Some(_) => Some(check_from_row(row, TOKEN_WIDTH, path)?),
            None => None,
        };
        out.push(LatestCheck { token, check });
    }
    Ok(out)
}

pub(crate) fn history(
    conn: &mut Connection,
    path: &Path,
    name: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<CheckRecord>, Error> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {CHECK_COLS} FROM checks c JOIN tokens t ON t.token_sha256 = c.token_sha256
             WHERE t.name = ?1 AND c.checked_at >= ?2 AND c.checked_at < ?3
             ORDER BY c.checked_at, c.id"
        ))
        .map_err(db(path))?;
    let mut rows = stmt
        .query(params![name, from.as_second(), to.as_second()])
        .map_err(db(path))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db(path))? {
        out.push(check_from_row(row, 0, path)?);
    }
    Ok(out)
}

pub(crate) fn identities(conn: &mut Connection, path: &Path) -> Result<Vec<IdentityCheck>, Error> {
    let mut stmt = conn.prepare(IDENTITIES).map_err(db(path))?;
    let mut rows = stmt.query([]).map_err(db(path))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db(path))? {
        let g = |e| db(path)(e);
        let key: String = row.get(0).map_err(g)?;
        let status: String = row.get(3).map_err(g)?;
        let codes: String = row.get(4).map_err(g)?;
        out.push(IdentityCheck {
            key: TokenKey::parse(&key).map_err(|_| corrupt(path, "tokens.token_sha256"))?,
            id: row.get(1).map_err(g)?,
            name: row.get(2).map_err(g)?,
            status: Status::parse(&status).ok_or_else(|| corrupt(path, "checks.status"))?,
            finding_codes: list(path, "checks.finding_codes", &codes)?,
        });
    }
    Ok(out)
}

pub(crate) fn latest_statuses(
    conn: &mut Connection,
    path: &Path,
) -> Result<Vec<LatestStatus>, Error> {
    let tokens: i64 = conn
        .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))
        .map_err(db(path))?;
    let mut out = Vec::with_capacity(usize::try_from(tokens).unwrap_or(0));
    let mut stmt = conn
        .prepare(
            "SELECT t.name, t.token_sha256, t.fingerprint, c.checked_at, c.status, c.valid,
                    c.expires_at, c.never_expires, c.kind, c.missing_scopes
             FROM tokens t LEFT JOIN checks c ON c.id = t.last_check_id
             ORDER BY t.name, t.token_sha256",
        )
        .map_err(db(path))?;
    let mut rows = stmt.query([]).map_err(db(path))?;
    while let Some(row) = rows.next().map_err(db(path))? {
        let g = |e| db(path)(e);
        let key: String = row.get(1).map_err(g)?;
        let checked_at: Option<i64> = row.get(3).map_err(g)?;
        let check = match checked_at {
            None => None,
            Some(at) => {
                let status: String = row.get(4).map_err(g)?;
                let valid: Option<i64> = row.get(5).map_err(g)?;
                let never: i64 = row.get(7).map_err(g)?;
                let scopes: String = row.get(9).map_err(g)?;
                Some(CheckStatus {
                    checked_at: ts(path, "checks.checked_at", at)?,
                    status: Status::parse(&status).ok_or_else(|| corrupt(path, "checks.status"))?,
                    valid: valid.map(|v| v != 0),
                    expires_at: opt_ts(path, "checks.expires_at", row.get(6).map_err(g)?)?,
                    never_expires: never != 0,
                    kind: row.get(8).map_err(g)?,
                    missing_scopes: list(path, "checks.missing_scopes", &scopes)?,
                })
            }
        };
        out.push(LatestStatus {
            name: row.get(0).map_err(g)?,
            key: TokenKey::parse(&key).map_err(|_| corrupt(path, "tokens.token_sha256"))?,
            fingerprint: row.get(2).map_err(g)?,
            check,
        });
    }
    Ok(out)
}

pub(crate) fn histories(
    conn: &mut Connection,
    path: &Path,
    from: Timestamp,
    to: Timestamp,
    per_name: u32,
) -> Result<Vec<(String, Vec<CheckRecord>)>, Error> {
    // The newest `per_name` of each name, chosen in SQL (a window function, as PostgreSQL has it)
    // so that months of history are never all brought out to be cut.
    let mut stmt = conn
        .prepare(&format!(
            "WITH ranked AS (
                SELECT c.id AS cid, t.name AS tname, ROW_NUMBER() OVER (
                    PARTITION BY t.name ORDER BY c.checked_at DESC, c.id DESC) AS rn
                FROM checks c JOIN tokens t ON t.token_sha256 = c.token_sha256
                WHERE c.checked_at >= ?1 AND c.checked_at < ?2)
             SELECT r.tname, {CHECK_COLS} FROM ranked r JOIN checks c ON c.id = r.cid
             WHERE r.rn <= ?3 ORDER BY r.tname, c.checked_at, c.id"
        ))
        .map_err(db(path))?;
    let mut rows = stmt
        .query(params![
            from.as_second(),
            to.as_second(),
            i64::from(per_name)
        ])
        .map_err(db(path))?;
    let mut out: Vec<(String, Vec<CheckRecord>)> = Vec::new();
    while let Some(row) = rows.next().map_err(db(path))? {
        let name: String = row.get(0).map_err(db(path))?;
        let check = check_from_row(row, 1, path)?;
        match out.last_mut() {
            Some((last, checks)) if *last == name => checks.push(check),
            _ => out.push((name, vec![check])),
        }
    }
    Ok(out)
}

pub(crate) fn counts(conn: &mut Connection, path: &Path) -> Result<Counts, Error> {
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM tokens), (SELECT COUNT(*) FROM checks),
                (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM alerts),
                (SELECT COUNT(*) FROM deliveries WHERE next_attempt_at IS NOT NULL)",
        [],
        |r| {
            Ok(Counts {
                tokens: r.get::<_, i64>(0)?.max(0) as u64,
                checks: r.get::<_, i64>(1)?.max(0) as u64,
                events: r.get::<_, i64>(2)?.max(0) as u64,
                alerts: r.get::<_, i64>(3)?.max(0) as u64,
                deliveries_outstanding: r.get::<_, i64>(4)?.max(0) as u64,
            })
        },
    )
    .map_err(db(path))
}

const ANNOUNCED_COLS: &str =
    "token_name, state, since, alert_id, last_reminder_at, unknown_since, reminders";

fn announced_from_row(row: &Row<'_>, path: &Path) -> Result<Announced, Error> {
    let g = |e| db(path)(e);
    let state: Option<String> = row.get(1).map_err(g)?;
    let since: Option<i64> = row.get(2).map_err(g)?;
    let announcement = match (state, since) {
        (Some(state), Some(since)) => Some(Announcement {
            state,
            since: ts(path, "announced.since", since)?,
            alert_id: row.get(3).map_err(g)?,
            last_reminder_at: opt_ts(path, "announced.last_reminder_at", row.get(4).map_err(g)?)?,
            reminders: u32::try_from(row.get::<_, i64>(6).map_err(g)?).unwrap_or(0),
        }),
        (None, _) => None,
        (Some(_), None) => return Err(corrupt(path, "announced.since")),
    };
    Ok(Announced {
        token_name: row.get(0).map_err(g)?,
        announcement,
        unknown_since: opt_ts(path, "announced.unknown_since", row.get(5).map_err(g)?)?,
    })
}

pub(crate) fn announced(
    conn: &mut Connection,
    path: &Path,
    name: &str,
) -> Result<Option<Announced>, Error> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {ANNOUNCED_COLS} FROM announced WHERE token_name = ?1"
        ))
        .map_err(db(path))?;
    let mut rows = stmt.query(params![name]).map_err(db(path))?;
    match rows.next().map_err(db(path))? {
        Some(row) => Ok(Some(announced_from_row(row, path)?)),
        None => Ok(None),
    }
}

pub(crate) fn history_points(
    conn: &mut Connection,
    path: &Path,
    from: Timestamp,
    to: Timestamp,
    per_name: u32,
) -> Result<Vec<(String, Vec<StatusPoint>)>, Error> {
    points(conn, path, None, from, to, per_name)
}

/// Names per query of [`history_points_of`]: far under SQLite's limit on parameters, and as many as
/// the largest page of the status page.
const NAMES_PER_QUERY: usize = 500;

pub(crate) fn history_points_of(
    conn: &mut Connection,
    path: &Path,
    mut names: Vec<String>,
    from: Timestamp,
    to: Timestamp,
    per_name: u32,
) -> Result<Vec<(String, Vec<StatusPoint>)>, Error> {
    // Sorted (as SQLite's binary collation sorts) and each name once, so that the chunks' answers,
    // each in name order, follow one another in name order.
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::new();
    for chunk in names.chunks(NAMES_PER_QUERY) {
        out.extend(points(conn, path, Some(chunk), from, to, per_name)?);
    }
    Ok(out)
}

/// `histories`' choice of rows, with only the two columns a chart draws, of every name or only of
/// `names`.
fn points(
    conn: &mut Connection,
    path: &Path,
    names: Option<&[String]>,
    from: Timestamp,
    to: Timestamp,
    per_name: u32,
) -> Result<Vec<(String, Vec<StatusPoint>)>, Error> {
    use rusqlite::types::Value;
    // Names and statuses are read in place, a name allocated once per name, not once per row.
    let filter = match names {
        Some(names) => {
            let marks: Vec<String> = (0..names.len()).map(|i| format!("?{}", i + 4)).collect();
            format!("AND t.name IN ({})", marks.join(", "))
        }
        None => String::new(),
    };
    let mut stmt = conn
        .prepare(&format!(
            "WITH ranked AS (
                SELECT c.id AS cid, t.name AS tname, ROW_NUMBER() OVER (
                    PARTITION BY t.name ORDER BY c.checked_at DESC, c.id DESC) AS rn
                FROM checks c JOIN tokens t ON t.token_sha256 = c.token_sha256
                WHERE c.checked_at >= ?1 AND c.checked_at < ?2 {filter})
             SELECT r.tname, c.checked_at, c.status FROM ranked r JOIN checks c ON c.id = r.cid
             WHERE r.rn <= ?3 ORDER BY r.tname, c.checked_at, c.id"
        ))
        .map_err(db(path))?;
    let mut values = vec![
        Value::Integer(from.as_second()),
        Value::Integer(to.as_second()),
        Value::Integer(i64::from(per_name)),
    ];
    values.extend(names.into_iter().flatten().cloned().map(Value::Text));
    let mut rows = stmt
        .query(rusqlite::params_from_iter(values))
        .map_err(db(path))?;
    let mut out: Vec<(String, Vec<StatusPoint>)> = Vec::new();
    while let Some(row) = rows.next().map_err(db(path))? {
        let text = |i: usize| -> Result<&str, Error> {
            row.get_ref(i)
                .map_err(db(path))?
                .as_str()
                .map_err(|_| corrupt(path, "checks.status"))
        };
        let point = StatusPoint {
            checked_at: ts(path, "checks.checked_at", row.get(1).map_err(db(path))?)?,
            status: Status::parse(text(2)?).ok_or_else(|| corrupt(path, "checks.status"))?,
        };
        let name = row
            .get_ref(0)
            .map_err(db(path))?
            .as_str()
            .map_err(|_| corrupt(path, "tokens.name"))?;
        match out.last_mut() {
            Some((last, points)) if last == name => points.push(point),
            _ => out.push((name.to_owned(), vec![point])),
        }
    }
    Ok(out)
}

pub(crate) fn all_announced(conn: &mut Connection, path: &Path) -> Result<Vec<Announced>, Error> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {ANNOUNCED_COLS} FROM announced ORDER BY token_name"
        ))
        .map_err(db(path))?;
    let mut rows = stmt.query([]).map_err(db(path))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db(path))? {
        out.push(announced_from_row(row, path)?);
    }
    Ok(out)
}

fn upsert_announcement(
    conn: &Connection,
    path: &Path,
    name: &str,
    a: &Announcement,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO announced (token_name, state, since, alert_id, last_reminder_at, reminders)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (token_name) DO UPDATE SET state = excluded.state, since = excluded.since,
            alert_id = excluded.alert_id, last_reminder_at = excluded.last_reminder_at,
            reminders = excluded.reminders",
        params![
            name,
            a.state,
            a.since.as_second(),
            a.alert_id,
            a.last_reminder_at.map(|t| t.as_second()),
            i64::from(a.reminders),
        ],
    )
    .map_err(db(path))?;
    Ok(())
}

pub(crate) fn set_announcement(
    conn: &mut Connection,
    path: &Path,
    name: &str,
    a: &Announcement,
) -> Result<(), Error> {
    upsert_announcement(conn, path, name, a)
}

pub(crate) fn set_unknown_since(
    conn: &mut Connection,
    path: &Path,
    name: &str,
    since: Option<Timestamp>,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO announced (token_name, unknown_since) VALUES (?1, ?2)
         ON CONFLICT (token_name) DO UPDATE SET unknown_since = excluded.unknown_since",
        params![name, since.map(|t| t.as_second())],
    )
    .map_err(db(path))?;
    Ok(())
}

/// Inserts an alert and its pending deliveries; `false` if the id was already recorded.
fn insert_alert(
    tx: &Connection,
    path: &Path,
    alert: &Alert,
    routes: &[String],
) -> Result<bool, Error> {
    let time = alert.time.as_second();
    let inserted = tx
        .execute(
            "INSERT INTO alerts (id, token_name, state, previous_state, message, fix, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
            params![
                alert.id,
                alert.token_name,
                alert.state,
                alert.previous_state,
                alert.message,
                alert.fix,
                time,
            ],
        )
        .map_err(db(path))?;
    if inserted == 0 {
        return Ok(false);
    }
    // Listed among the recent events too, in the same transaction: the page shows what was said.
    tx.execute(
        "INSERT INTO events (at, token_name, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![
            time,
            alert.token_name,
            EventKind::Alert.as_str(),
            crate::clean_text(&crate::alert_event_text(alert)),
        ],
    )
    .map_err(db(path))?;
    for route in routes {
        tx.execute(
            "INSERT INTO deliveries (alert_id, route, status, attempts, next_attempt_at, updated_at)
             VALUES (?1, ?2, 'pending', 0, ?3, ?3) ON CONFLICT (alert_id, route) DO NOTHING",
            params![alert.id, route, time],
        )
        .map_err(db(path))?;
    }
    Ok(true)
}

pub(crate) fn announce(
    conn: &mut Connection,
    path: &Path,
    name: &str,
    announcement: Option<&Announcement>,
    unknown_since: Option<Timestamp>,
    alert: Option<(&Alert, &[String])>,
) -> Result<(), Error> {
    let tx = conn.transaction().map_err(db(path))?;
    announce_in(&tx, path, name, announcement, unknown_since, alert)?;
    tx.commit().map_err(db(path))
}

pub(crate) fn announce_all(
    conn: &mut Connection,
    path: &Path,
    decisions: &[crate::Decision],
) -> Result<(), Error> {
    let tx = conn.transaction().map_err(db(path))?;
    for d in decisions {
        announce_in(
            &tx,
            path,
            &d.token_name,
            d.announcement.as_ref(),
            d.unknown_since,
            d.alert.as_ref().map(|(a, r)| (a, r.as_slice())),
        )?;
    }
    tx.commit().map_err(db(path))
}

fn announce_in(
    tx: &Connection,
    path: &Path,
    name: &str,
    announcement: Option<&Announcement>,
    unknown_since: Option<Timestamp>,
    alert: Option<(&Alert, &[String])>,
) -> Result<(), Error> {
    if let Some((alert, routes)) = alert {
        insert_alert(tx, path, alert, routes)?;
    }
    match announcement {
        Some(a) => upsert_announcement(tx, path, name, a)?,
        None => {
            tx.execute(
                "INSERT INTO announced (token_name) VALUES (?1) ON CONFLICT (token_name) DO NOTHING",
                params![name],
            )
            .map_err(db(path))?;
        }
    }
    tx.execute(
        "UPDATE announced SET unknown_since = ?2 WHERE token_name = ?1",
        params![name, unknown_since.map(|t| t.as_second())],
    )
    .map_err(db(path))?;
    Ok(())
}

pub(crate) fn record_alert(
    conn: &mut Connection,
    path: &Path,
    alert: &Alert,
    routes: &[String],
) -> Result<(), Error> {
    let tx = conn.transaction().map_err(db(path))?;
    let time = alert.time.as_second();
    if !insert_alert(&tx, path, alert, routes)? {
        return tx.commit().map_err(db(path));
    }
    let current: Option<Option<String>> = tx
        .query_row(
            "SELECT state FROM announced WHERE token_name = ?1",
            params![alert.token_name],
            |r| r.get(0),
        )
        .optional()
        .map_err(db(path))?;
    if current.flatten().as_deref() == Some(alert.state.as_str()) {
        tx.execute(
            "UPDATE announced SET last_reminder_at = ?2, reminders = reminders + 1
             WHERE token_name = ?1",
            params![alert.token_name, time],
        )
        .map_err(db(path))?;
    } else {
        upsert_announcement(
            &tx,
            path,
            &alert.token_name,
            &Announcement {
                state: alert.state.clone(),
                since: alert.time,
                alert_id: Some(alert.id.clone()),
                last_reminder_at: None,
                reminders: 0,
            },
        )?;
    }
    tx.commit().map_err(db(path))
}

const DELIVERY_COLS: &str = "d.route, d.status, d.attempts, d.next_attempt_at, d.last_error, \
    a.id, a.token_name, a.state, a.previous_state, a.message, a.fix, a.created_at";

fn delivery_from_row(row: &Row<'_>, path: &Path) -> Result<Delivery, Error> {
    let g = |e| db(path)(e);
    let status: String = row.get(1).map_err(g)?;
    let attempts: i64 = row.get(2).map_err(g)?;
    Ok(Delivery {
        route: row.get(0).map_err(g)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt(path, "deliveries.status"))?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt(path, "deliveries.attempts"))?,
        next_attempt_at: opt_ts(path, "deliveries.next_attempt_at", row.get(3).map_err(g)?)?,
        last_error: row.get(4).map_err(g)?,
        alert: Alert {
            id: row.get(5).map_err(g)?,
            token_name: row.get(6).map_err(g)?,
            state: row.get(7).map_err(g)?,
            previous_state: row.get(8).map_err(g)?,
            message: row.get(9).map_err(g)?,
            fix: row.get(10).map_err(g)?,
            time: ts(path, "alerts.created_at", row.get(11).map_err(g)?)?,
        },
    })
}

pub(crate) fn due_deliveries(
    conn: &mut Connection,
    path: &Path,
    now: Timestamp,
    limit: u32,
) -> Result<Vec<Delivery>, Error> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries d JOIN alerts a ON a.id = d.alert_id
             WHERE d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= ?1
             ORDER BY d.next_attempt_at, a.created_at, d.alert_id, d.route
             LIMIT ?2"
        ))
        .map_err(db(path))?;
    let mut rows = stmt
        .query(params![now.as_second(), limit])
        .map_err(db(path))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db(path))? {
        out.push(delivery_from_row(row, path)?);
    }
    Ok(out)
}

pub(crate) fn deliveries(
    conn: &mut Connection,
    path: &Path,
    alert_id: &str,
) -> Result<Vec<Delivery>, Error> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries d JOIN alerts a ON a.id = d.alert_id
             WHERE d.alert_id = ?1 ORDER BY d.route"
        ))
        .map_err(db(path))?;
    let mut rows = stmt.query(params![alert_id]).map_err(db(path))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db(path))? {
        out.push(delivery_from_row(row, path)?);
    }
    Ok(out)
}

/// How one attempt at a delivery ended.
fn settle(
    conn: &Connection,
    path: &Path,
    alert_id: &str,
    route: &str,
    attempt: Attempt<'_>,
) -> Result<(), Error> {
    let n = conn
        .execute(
            "UPDATE deliveries SET status = ?3, attempts = attempts + 1, next_attempt_at = ?4,
                last_error = ?5, updated_at = ?6
             WHERE alert_id = ?1 AND route = ?2",
            params![
                alert_id,
                route,
                attempt.status.as_str(),
                attempt.next.map(|t| t.as_second()),
                attempt.error,
                attempt.at.as_second(),
            ],
        )
        .map_err(db(path))?;
    if n == 0 {
        return Err(Error::UnknownDelivery {
            alert_id: alert_id.to_owned(),
            route: route.to_owned(),
        });
    }
    Ok(())
}

pub(crate) fn settle_all(
    conn: &mut Connection,
    path: &Path,
    route: &str,
    alert_ids: &[String],
    at: Timestamp,
    settlement: &crate::Settlement,
) -> Result<(), Error> {
    let tx = conn.transaction().map_err(db(path))?;
    for id in alert_ids {
        let attempt = settlement.attempt(at);
        settle(&tx, path, id, route, attempt)?;
    }
    tx.commit().map_err(db(path))
}

pub(crate) fn mark_delivered(
    conn: &mut Connection,
    path: &Path,
    alert_id: &str,
    route: &str,
    at: Timestamp,
) -> Result<(), Error> {
    let attempt = Attempt {
        status: DeliveryStatus::Delivered,
        at,
        error: None,
        next: None,
    };
    settle(conn, path, alert_id, route, attempt)
}

pub(crate) fn mark_failed(
    conn: &mut Connection,
    path: &Path,
    alert_id: &str,
    route: &str,
    at: Timestamp,
    error: &str,
    next: Option<Timestamp>,
) -> Result<(), Error> {
    let attempt = Attempt {
        status: DeliveryStatus::Failed,
        at,
        error: Some(error),
        next,
    };
    settle(conn, path, alert_id, route, attempt)
}

pub(crate) fn route_health(conn: &mut Connection, path: &Path) -> Result<Vec<RouteHealth>, Error> {
    let mut stmt = conn
        .prepare(
            "SELECT d.route,
                SUM(CASE WHEN d.status = 'pending' THEN 1 ELSE 0 END),
                SUM(CASE WHEN d.status = 'delivered' THEN 1 ELSE 0 END),
                SUM(CASE WHEN d.status = 'failed' THEN 1 ELSE 0 END),
                (SELECT CASE WHEN l.status = 'failed' THEN l.last_error END FROM deliveries l
                  WHERE l.route = d.route AND l.status <> 'pending'
                  ORDER BY l.updated_at DESC, l.alert_id DESC LIMIT 1),
                MAX(CASE WHEN d.status <> 'pending' THEN d.updated_at END),
                MIN(CASE WHEN d.status = 'failed' AND d.updated_at > COALESCE(
                    (SELECT MAX(o.updated_at) FROM deliveries o
                      WHERE o.route = d.route AND o.status = 'delivered'), -1)
                    THEN d.updated_at END)
             FROM deliveries d GROUP BY d.route ORDER BY d.route",
        )
        .map_err(db(path))?;
    let mut rows = stmt.query([]).map_err(db(path))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db(path))? {
        let g = |e| db(path)(e);
        out.push(RouteHealth {
            route: row.get(0).map_err(g)?,
            pending: row.get::<_, i64>(1).map_err(g)?.max(0) as u64,
            delivered: row.get::<_, i64>(2).map_err(g)?.max(0) as u64,
            failed: row.get::<_, i64>(3).map_err(g)?.max(0) as u64,
            last_error: row.get(4).map_err(g)?,
            last_at: row
                .get::<_, Option<i64>>(5)
                .map_err(g)?
                .and_then(|t| Timestamp::from_second(t).ok()),
            failing_since: row
                .get::<_, Option<i64>>(6)
                .map_err(g)?
                .and_then(|t| Timestamp::from_second(t).ok()),
        });
    }
    Ok(out)
}

pub(crate) fn record_event(conn: &mut Connection, path: &Path, e: &Event) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO events (at, token_name, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![e.at.as_second(), e.token_name, e.kind.as_str(), e.detail],
    )
    .map_err(db(path))?;
    Ok(())
}

pub(crate) fn recent_events(
    conn: &mut Connection,
    path: &Path,
    limit: u32,
) -> Result<Vec<Event>, Error> {
    let mut stmt = conn
        .prepare(
            "SELECT at, token_name, kind, detail FROM events ORDER BY at DESC, id DESC LIMIT ?1",
        )
        .map_err(db(path))?;
    let mut rows = stmt.query(params![limit]).map_err(db(path))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db(path))? {
        let g = |e| db(path)(e);
        let kind: String = row.get(2).map_err(g)?;
        out.push(Event {
            at: ts(path, "events.at", row.get(0).map_err(g)?)?,
            token_name: row.get(1).map_err(g)?,
            kind: EventKind::parse(&kind).ok_or_else(|| corrupt(path, "events.kind"))?,
            detail: row.get(3).map_err(g)?,
        });
    }
    Ok(out)
}

pub(crate) fn claim(
    conn: &mut Connection,
    path: &Path,
    key: &str,
    replica: &str,
    at: Timestamp,
) -> Result<bool, Error> {
    let inserted = conn
        .execute(
            "INSERT INTO claims (key, replica, claimed_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO NOTHING",
            params![key, replica, at.as_second()],
        )
        .map_err(db(path))?;
    Ok(inserted == 1)
}

pub(crate) fn claim_done(
    conn: &mut Connection,
    path: &Path,
    key: &str,
    at: Timestamp,
) -> Result<bool, Error> {
    let marked = conn
        .execute(
            "UPDATE claims SET done_at = ?2 WHERE key = ?1 AND done_at IS NULL",
            params![key, at.as_second()],
        )
        .map_err(db(path))?;
    Ok(marked == 1)
}

pub(crate) fn prune_claims(
    conn: &mut Connection,
    path: &Path,
    cutoff: Timestamp,
) -> Result<u64, Error> {
    let pruned = conn
        .execute(
            "DELETE FROM claims WHERE done_at IS NOT NULL AND done_at < ?1",
            params![cutoff.as_second()],
        )
        .map_err(db(path))?;
    Ok(pruned as u64)
}

pub(crate) fn prune(
    conn: &mut Connection,
    path: &Path,
    cutoff: Timestamp,
) -> Result<Pruned, Error> {
    let cutoff = cutoff.as_second();
    let tx = conn.transaction().map_err(db(path))?;
    let checks = tx
        .execute(
            "DELETE FROM checks WHERE checked_at < ?1
               AND id NOT IN (SELECT last_check_id FROM tokens WHERE last_check_id IS NOT NULL)",
            params![cutoff],
        )
        .map_err(db(path))?;
    let events = tx
        .execute("DELETE FROM events WHERE at < ?1", params![cutoff])
        .map_err(db(path))?;
    let alerts = tx
        .execute(
            "DELETE FROM alerts WHERE created_at < ?1
               AND id NOT IN (SELECT alert_id FROM announced WHERE alert_id IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM deliveries d
                               WHERE d.alert_id = alerts.id AND d.next_attempt_at IS NOT NULL)",
            params![cutoff],
        )
        .map_err(db(path))?;
    tx.commit().map_err(db(path))?;
    Ok(Pruned {
        checks: checks as u64,
        events: events as u64,
        alerts: alerts as u64,
    })
}
