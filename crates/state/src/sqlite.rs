//! The SQLite backend: one connection behind a mutex, used from `spawn_blocking`, held exclusively
//! through a lock on `<file>.lock`. What is SQLite's own: opening the file (its folder 0700, the
//! file 0600, WAL, `synchronous = FULL`), its migrations, the bulk writes of a round (one
//! prepared statement run per row, in one transaction) and the [`Session`] the shared queries
//! run on.
//!
//! The lock is taken on the file the path resolves to (symlinks followed, `..` removed), so a symlink
//! or a second spelling of the same file clashes like the same path; the lock file records the
//! holder's pid, for the message of the one refused. An existing zero-length file is not taken as a
//! new state unless the caller says so: it is more likely a state lost (truncated, or restored
//! empty), and starting from nothing would send every alert again under new ids.
//!
//! Why a lock file and not SQLite's `locking_mode=EXCLUSIVE`: SQLite takes that lock only at the first
//! read or write and reports a clash as `SQLITE_BUSY`, which looks like any transient busy; it would
//! also shut out read-only tools (the `sqlite3` shell while debugging). An advisory `flock` on a sibling
//! file is taken before anything is read, is released by the kernel when the process dies (no stale
//! lock to clean up), and clashes even within one process (it belongs to the open file description),
//! so the error can say plainly which file is in use.
//!
//! rusqlite blocks, so the shared queries' futures never wait here: [`Sqlite::run`] polls each once,
//! on the blocking thread holding the connection.
//!
//! Must never: run a query on an async worker thread, or write a value it was not given.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use rusqlite::types::{Null, ToSqlOutput, ValueRef};
use rusqlite::{Connection, params, params_from_iter};

use crate::conn::{Arg, Conn, Row, Session, Sql};
use crate::rows::{check_insert, role_columns, to_json, token_insert, token_update};
use crate::{CheckRecord, Error, TokenRecord};

/// Schema migrations, in order: the schema's version is the number applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_reminders.sql"),
    include_str!("../migrations/sqlite/0003_claims.sql"),
    include_str!("../migrations/sqlite/0004_identities.sql"),
];

static UPSERT_TOKEN: Sql = Sql::new(concat!(
    token_insert!(),
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    token_update!()
));
static INSERT_CHECK: Sql = Sql::new(concat!(
    check_insert!(),
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
));
static MAKE_LATEST: Sql = Sql::new(
    "UPDATE tokens SET last_check_id = $1, last_check_at = $2
     WHERE token_sha256 = $3 AND (last_check_at IS NULL OR last_check_at <= $2)",
);

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
    /// Opens the file at `path`; an existing zero-length file is refused ([`Error::EmptyState`])
    /// unless `empty_is_new`.
    pub(crate) fn open(path: &Path, empty_is_new: bool) -> Result<Self, Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io("create the folder", parent))?;
        }
        let lock = lock(path)?;
        // Looked at under the lock: a file another opener has just created is never seen here
        // before its first page is written (setting WAL writes it).
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() && meta.len() == 0 && !empty_is_new => {
                return Err(Error::EmptyState {
                    path: path.to_path_buf(),
                });
            }
            _ => {}
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
        ready(crate::queries::migrate(
            &mut LiteConn::new(&mut conn, path),
            MIGRATIONS,
        ))?;
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

    /// Runs `op` with the connection on tokio's blocking pool, polling it once: it is ready at
    /// once, since nothing in it waits (see [`ready`]).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        op: impl AsyncFnOnce(&mut LiteConn<'_>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic mid-transaction rolled it back when its `LiteConn` dropped: the connection
            // is still sound.
            let mut conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner());
            ready(op(&mut LiteConn::new(&mut conn, &inner.path)))
        })
        .await
        .map_err(|_| Error::Worker)?
    }
}

/// The file `path` names, whatever the spelling: symlinks followed and `.`/`..` removed. A file
/// not there yet is its folder's resolved path and its name, after following a dangling symlink
/// (the file SQLite would create is the symlink's target).
fn resolve(path: &Path) -> Result<PathBuf, Error> {
    // Symlinks to symlinks: as deep as the kernel follows (ELOOP past 40).
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::canonicalize(&path) {
            Ok(resolved) => return Ok(resolved),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("resolve", &path)(e));
            }
            Err(_) => {}
        }
        match std::fs::read_link(&path) {
            Ok(target) => {
                path = match path.parent() {
                    Some(parent) => parent.join(target),
                    None => target,
                };
            }
            Err(_) => break,
        }
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(path);
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let parent = std::fs::canonicalize(parent).map_err(io("resolve", parent))?;
    Ok(parent.join(name))
}

/// The most bytes read from a lock file: a pid and a newline.
const MAX_LOCK_FILE: u64 = 64;

/// Takes the lock on `<resolved path>.lock`, creating that file (0600) if need be, and writes this
/// process's pid in it.
fn lock(path: &Path) -> Result<File, Error> {
    let mut lock_path = resolve(path)?.into_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io("open the lock file", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => {
            // Only a help for the message of the next one refused: a failure here is not one.
            let _ = lock.set_len(0).and_then(|()| {
                lock.rewind()?;
                writeln!(lock, "{}", std::process::id())
            });
            Ok(lock)
        }
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = (&lock).take(MAX_LOCK_FILE).read_to_string(&mut text);
            Err(Error::Locked {
                path: path.to_path_buf(),
                lock: lock_path,
                pid: text.trim().parse().ok(),
            })
        }
        Err(TryLockError::Error(e)) => Err(io("lock", &lock_path)(e)),
    }
}

/// The output of a future that is ready at its first poll, as every SQLite operation is (nothing
/// in it waits: rusqlite blocks instead). One that is not is a bug, reported as
/// [`Error::Worker`] rather than blocking the thread.
fn ready<T>(op: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    let mut op = pin!(op);
    match op.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => {
            debug_assert!(false, "an SQLite operation waited");
            Err(Error::Worker)
        }
    }
}

/// The connection, while [`Sqlite::run`] holds it.
pub(crate) struct LiteConn<'a> {
    conn: &'a mut Connection,
    path: &'a Path,
    in_transaction: bool,
}

impl<'a> LiteConn<'a> {
    fn new(conn: &'a mut Connection, path: &'a Path) -> Self {
        Self {
            conn,
            path,
            in_transaction: false,
        }
    }

    fn transaction_statement(&mut self, sql: &str, open: bool) -> Result<(), Error> {
        self.conn.execute_batch(sql).map_err(db(self.path))?;
        self.in_transaction = open;
        Ok(())
    }
}

impl Drop for LiteConn<'_> {
    /// An operation that panicked or stopped half-way leaves no transaction open for the next.
    fn drop(&mut self) {
        if self.in_transaction {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A row, with the file's path for errors.
struct LiteRow<'a> {
    row: &'a rusqlite::Row<'a>,
    path: &'a Path,
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Arg::Int(Some(n)) => ToSqlOutput::from(n),
            Arg::Text(Some(s)) => ToSqlOutput::from(s),
            Arg::Int(None) | Arg::Text(None) => ToSqlOutput::from(Null),
            // SQLite has no arrays: a list is bound as the JSON array the statement reads with
            // `json_each`.
            Arg::Texts(list) => ToSqlOutput::from(to_json(list)),
        })
    }
}

impl Row for LiteRow<'_> {
    fn location(&self) -> &Path {
        self.path
    }

    fn text(&self, i: usize) -> Result<&str, Error> {
        // In place: no allocation for a text that is only compared or parsed.
        let value = self.row.get_ref(i).map_err(db(self.path))?;
        value.as_str().map_err(|e| {
            let name = self.row.as_ref().column_name(i).unwrap_or_default();
            let source = match e {
                rusqlite::types::FromSqlError::InvalidType => {
                    rusqlite::Error::InvalidColumnType(i, name.to_owned(), value.data_type())
                }
                other => {
                    rusqlite::Error::FromSqlConversionFailure(i, value.data_type(), Box::new(other))
                }
            };
            db(self.path)(source)
        })
    }

    fn opt_text(&self, i: usize) -> Result<Option<&str>, Error> {
        match self.row.get_ref(i).map_err(db(self.path))? {
            ValueRef::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    fn int(&self, i: usize) -> Result<i64, Error> {
        self.row.get(i).map_err(db(self.path))
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, Error> {
        self.row.get(i).map_err(db(self.path))
    }

    /// Flags are INTEGER 0/1 in SQLite.
    fn flag(&self, i: usize) -> Result<bool, Error> {
        Ok(self.int(i)? != 0)
    }

    fn opt_flag(&self, i: usize) -> Result<Option<bool>, Error> {
        Ok(self.opt_int(i)?.map(|v| v != 0))
    }
}

fn query(
    conn: &Connection,
    path: &Path,
    sql: &Sql,
    args: &[Arg<'_>],
    mut each: impl FnMut(&dyn Row) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut stmt = conn.prepare(sql.sqlite()).map_err(db(path))?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(db(path))?;
    while let Some(row) = rows.next().map_err(db(path))? {
        each(&LiteRow { row, path })?;
    }
    Ok(())
}

impl Session for LiteConn<'_> {
    fn location(&self) -> &Path {
        self.path
    }

    async fn execute(&mut self, sql: &Sql, args: &[Arg<'_>]) -> Result<u64, Error> {
        let changed = self
            .conn
            .execute(sql.sqlite(), params_from_iter(args))
            .map_err(db(self.path))?;
        Ok(changed as u64)
    }

    async fn batch(&mut self, sql: &str) -> Result<(), Error> {
        self.conn.execute_batch(sql).map_err(db(self.path))
    }

    async fn query(
        &mut self,
        sql: &Sql,
        args: &[Arg<'_>],
        each: impl FnMut(&dyn Row) -> Result<(), Error>,
    ) -> Result<(), Error> {
        query(self.conn, self.path, sql, args, each)
    }

    async fn collect<T>(
        &mut self,
        sql: &Sql,
        args: &[Arg<'_>],
        count: Option<&Sql>,
        mut decode: impl FnMut(&dyn Row) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let capacity = match count {
            Some(count) => self
                .conn
                .query_row(count.sqlite(), [], |r| r.get::<_, i64>(0))
                .map_err(db(self.path))?,
            None => 0,
        };
        let mut out = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        query(self.conn, self.path, sql, args, |row| {
            out.push(decode(row)?);
            Ok(())
        })?;
        Ok(out)
    }
}

impl Conn for LiteConn<'_> {
    async fn begin(&mut self) -> Result<(), Error> {
        self.transaction_statement("BEGIN", true)
    }

    /// IMMEDIATE: the write lock is taken at once, so a second process migrating waits (up to
    /// the busy timeout) instead of failing half-way.
    async fn begin_migration(&mut self) -> Result<(), Error> {
        self.transaction_statement("BEGIN IMMEDIATE", true)
    }

    async fn commit(&mut self) -> Result<(), Error> {
        self.transaction_statement("COMMIT", false)
    }

    async fn rollback(&mut self) -> Result<(), Error> {
        self.transaction_statement("ROLLBACK", false)
    }

    /// One prepared statement run per token: as fast in SQLite as one statement for the batch,
    /// and a key given twice simply ends as the last record left it.
    async fn upsert_tokens(&mut self, tokens: &[TokenRecord]) -> Result<(), Error> {
        let path = self.path;
        let tx = self.conn.transaction().map_err(db(path))?;
        {
            let mut stmt = tx.prepare(UPSERT_TOKEN.sqlite()).map_err(db(path))?;
            for t in tokens {
                let (role, of) = role_columns(&t.role);
                let identity = t.identity.as_ref();
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
                    identity.map(|i| i.id.as_str()),
                    identity.and_then(|i| i.name.as_deref()),
                    identity.map(|i| i.seen_at.as_second()),
                ])
                .map_err(db(path))?;
            }
        }
        tx.commit().map_err(db(path))
    }

    /// Each check inserted, then made its token's latest by the row id SQLite just gave it.
    async fn record_checks(&mut self, checks: &[CheckRecord]) -> Result<(), Error> {
        let path = self.path;
        let tx = self.conn.transaction().map_err(db(path))?;
        {
            let mut insert = tx.prepare(INSERT_CHECK.sqlite()).map_err(db(path))?;
            let mut latest = tx.prepare(MAKE_LATEST.sqlite()).map_err(db(path))?;
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
                        crate::rows::elapsed(c),
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
}
