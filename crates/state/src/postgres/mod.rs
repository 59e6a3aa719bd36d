//! The PostgreSQL backend: one tokio-postgres session behind an async mutex (calls are serialised,
//! as SQLite's are), opened again at the next call if the server dropped it. What is PostgreSQL's
//! own: connecting (the URL in [`url`], the password in [`password`], TLS in [`tls`]), migrating
//! under a transaction-scoped advisory lock ([`MIGRATION_LOCK`]: replicas starting together apply
//! each migration once), a round's tokens and checks in one `UNNEST` statement each (`RETURNING
//! id` naming the new checks), the [`Session`] the shared queries run on, and the leader
//! [`election`]. No file lock: replicas share the database and elect a leader.
//!
//! Must never: show, log or store the password, or accept it in the URL.

mod election;
mod password;
mod tls;
mod url;

pub(crate) use election::Election;
pub use election::LEADER_LOCK;
pub use password::PgOptions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config};
use zeroize::Zeroizing;

use crate::conn::{Arg, Conn, Row, Session, Sql};
use crate::rows::{check_insert, role_columns, to_json, token_insert, token_update};
use crate::{CheckRecord, Error, TokenRecord};
use url::{Parsed, SslMode, parse_url};

/// Schema migrations, in order: the schema's version is the number applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_reminders.sql"),
    include_str!("../../migrations/postgres/0003_claims.sql"),
    include_str!("../../migrations/postgres/0004_identities.sql"),
];

// Both backends are at the same schema version ([`crate::SCHEMA_VERSION`]): a SQLite migration
// without its PostgreSQL twin (or the reverse) does not build.
const _: () = assert!(
    MIGRATIONS.len() == crate::sqlite::MIGRATIONS.len(),
    "each migrations/sqlite/NNNN_*.sql needs its twin in migrations/postgres/"
);

/// The advisory lock key taken while migrating (ASCII "permmigr"). Leader election uses its own key.
pub const MIGRATION_LOCK: i64 = 0x7065_726d_6d69_6772;

/// The longest password file, passfile or `sslrootcert` read (a larger one is not what it claims
/// to be).
const MAX_FILE: u64 = 64 * 1024;

/// A round's tokens in one statement, one array a column (see [`PgConn::upsert_tokens`]).
static UPSERT_TOKENS: Sql = Sql::new(concat!(
    token_insert!(),
    "SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[],
        $12::bigint[])",
    token_update!()
));
/// The checks inserted in the given order, then each token's newest among them made its latest
/// unless it already has a newer one: what SQLite's loop leaves, ties going to the later check.
static RECORD_CHECKS: Sql = Sql::new(concat!(
    "WITH input AS (
        SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::boolean[],
            $6::bigint[], $7::boolean[], $8::text[], $9::text[], $10::text[], $11::bigint[])
            WITH ORDINALITY AS i (token_sha256, checked_at, status, alert_state, valid,
                expires_at, never_expires, kind, missing_scopes, finding_codes, elapsed_ms, n)
     ), inserted AS (",
    check_insert!(),
    "SELECT token_sha256, checked_at, status, alert_state, valid, expires_at,
            never_expires, kind, missing_scopes, finding_codes, elapsed_ms
        FROM input ORDER BY n
        RETURNING id, token_sha256, checked_at
     ), newest AS (
        SELECT DISTINCT ON (token_sha256) id, token_sha256, checked_at FROM inserted
        ORDER BY token_sha256, checked_at DESC, id DESC
     )
     UPDATE tokens t SET last_check_id = newest.id, last_check_at = newest.checked_at
     FROM newest
     WHERE t.token_sha256 = newest.token_sha256
       AND (t.last_check_at IS NULL OR t.last_check_at <= newest.checked_at)"
));

/// A small file the backend reads whole, at most [`MAX_FILE`] bytes, into memory zeroed on drop
/// (it may be a password); a larger one is refused ("it is larger than 64 KiB") unread.
fn read_capped(path: &Path, action: &'static str) -> Result<Zeroizing<Vec<u8>>, Error> {
    permatoken_fs::read_secret(path, MAX_FILE).map_err(|e| Error::Io {
        action,
        path: path.to_path_buf(),
        source: match e {
            permatoken_fs::ReadError::Io(source) => source,
            too_large => std::io::Error::other(too_large.to_string()),
        },
    })
}

#[derive(Clone)]
pub(crate) struct Postgres {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    tls: tls::MakeRustls,
    ssl_mode: SslMode,
    location: PathBuf,
    /// Why a passfile was passed over, told when the server then asks for a password.
    passfile_note: Option<String>,
    client: Mutex<Option<Client>>,
}

fn pg(location: &Path) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| {
        let location = location.display().to_string();
        let reason = reason_of(&e);
        if unreachable(&e) {
            Error::PostgresUnreachable { location, reason }
        } else {
            Error::Postgres { location, reason }
        }
    }
}

/// Whether `e` says the server is gone or not there yet (a closed session, a socket's error, a
/// server shutting down, starting or full), rather than refusing what was asked.
fn unreachable(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        let code = code.code();
        // 08: connection exception; 57P0x: admin or crash shutdown, cannot connect now; 53300:
        // too many connections.
        return code.starts_with("08") || code.starts_with("57P0") || code == "53300";
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    e.is_closed()
}

fn reason_of(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => chain(e),
    }
}

/// The error and its causes: tokio-postgres keeps the telling part ("password missing", "server
/// does not support TLS") in the source.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

impl Postgres {
    pub(crate) async fn open(url: &str, options: &PgOptions) -> Result<Self, Error> {
        let Parsed {
            mut config,
            ssl_mode,
            root_cert,
            location,
        } = parse_url(url)?;
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => PgSslMode::Require,
        });
        config.connect_timeout(options.connect_timeout.unwrap_or(Duration::from_secs(10)));
        // A server cut off without a word (a partition, a blackholing firewall) is noticed in some
        // 15 s rather than the kernel's hours: keepalive while the session is idle, the user
        // timeout while a query waits unacknowledged. The election bounds each call besides.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(15));
        if config.get_application_name().is_none() {
            config.application_name("permatoken");
        }
        let (password, passfile_note) = password::find_password(&config, options)?;
        if let Some(p) = password {
            config.password(p.as_bytes());
        }
        let tls = tls::MakeRustls::new(tls::config(ssl_mode, root_cert.as_deref())?);
        let db = Self {
            inner: Arc::new(Inner {
                config,
                tls,
                ssl_mode,
                location: PathBuf::from(location),
                passfile_note,
                client: Mutex::new(None),
            }),
        };
        crate::queries::migrate(&mut db.session().await?, MIGRATIONS).await?;
        Ok(db)
    }

    pub(crate) fn location(&self) -> &Path {
        &self.inner.location
    }

    /// The session, opened again if the server dropped it; held until it is dropped.
    pub(crate) async fn session(&self) -> Result<PgConn<'_>, Error> {
        let mut guard = self.inner.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            *guard = Some(self.connect().await?);
        }
        Ok(PgConn {
            guard,
            loc: self.location(),
            in_transaction: false,
        })
    }

    pub(super) async fn connect(&self) -> Result<Client, Error> {
        let inner = &self.inner;
        let (client, connection) = inner
            .config
            .connect(inner.tls.clone())
            .await
            .map_err(|e| self.connect_error(&e))?;
        // The connection's errors end the session; the next call sees it closed and reconnects.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// A connection failure, with what to check.
    fn connect_error(&self, e: &tokio_postgres::Error) -> Error {
        let inner = &self.inner;
        let user = inner.config.get_user().unwrap_or("(your login name)");
        let db = inner.config.get_dbname().unwrap_or(user);
        let host = match inner.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "the default socket".to_owned(),
        };
        let port = inner.config.get_ports().first().copied().unwrap_or(5432);
        let text = chain(e);
        let reason = if let Some(db_error) = e.as_db_error() {
            let code = db_error.code();
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                format!(
                    "the server refused role `{user}` on database `{db}` ({}); check the password \
                     (state_password_file, PGPASSWORD or the passfile) and that pg_hba.conf on the \
                     server lets this host in as `{user}`",
                    db_error.message()
                )
            } else if *code == SqlState::INVALID_CATALOG_NAME {
                format!(
                    "the server has no database `{db}`: create it (`createdb -O {user} {db}`) or fix the URL"
                )
            } else {
                format!("the server refused the connection: {}", reason_of(e))
            }
        } else if text.contains("password missing") {
            let mut reason = format!(
                "the server asks a password for role `{user}` and none was given: set PGPASSWORD, \
                 add a line `{host}:{port}:{db}:{user}:<password>` to ~/.pgpass (mode 0600), or set \
                 `state_password_file`"
            );
            if let Some(note) = &inner.passfile_note {
                reason.push_str(&format!(" ({note})"));
            }
            reason
        } else if text.contains("server does not support TLS") {
            format!(
                "`sslmode={}` asks for TLS and the server at {host}:{port} does not offer it: turn \
                 `ssl = on` in its postgresql.conf, or use `sslmode=prefer` on a trusted network",
                inner.ssl_mode.as_str()
            )
        } else if text.contains("TLS") || text.contains("certificate") {
            format!(
                "the TLS handshake with {host}:{port} failed ({}): with `sslmode=verify-full` the \
                 server's certificate must chain to a system root or `sslrootcert`, and name `{host}`",
                crate::clean_text(&text)
            )
        } else if text.contains("timeout") || text.contains("timed out") {
            format!(
                "{host}:{port} did not answer in time: check that the server is up and that no \
                 firewall drops the port"
            )
        } else {
            format!(
                "cannot reach {host}:{port} ({}): check that the PostgreSQL server is running and \
                 listening there (`listen_addresses`, `port` in postgresql.conf)",
                crate::clean_text(&text)
            )
        };
        let location = inner.location.display().to_string();
        // A refusal (the password, the database, TLS) stays one however long it is waited on.
        if e.as_db_error().is_none_or(|_| unreachable(e))
            && !text.contains("password missing")
            && !text.contains("TLS")
            && !text.contains("certificate")
        {
            Error::PostgresUnreachable { location, reason }
        } else {
            Error::Postgres { location, reason }
        }
    }
}

/// The store's session, while a call holds it.
pub(crate) struct PgConn<'a> {
    /// Always `Some` (see [`Postgres::session`]); emptied to end the session.
    guard: MutexGuard<'a, Option<Client>>,
    loc: &'a Path,
    in_transaction: bool,
}

impl PgConn<'_> {
    fn client(&self) -> Result<&Client, Error> {
        self.guard.as_ref().ok_or(Error::Worker)
    }

    async fn transaction_statement(&mut self, sql: &str, open: bool) -> Result<(), Error> {
        self.client()?
            .batch_execute(sql)
            .await
            .map_err(pg(self.loc))?;
        self.in_transaction = open;
        Ok(())
    }
}

impl Drop for PgConn<'_> {
    /// A call that stopped waiting mid-transaction, or whose rollback failed, must not leave the
    /// transaction open for the next: ending the session rolls it back on the server, and the next
    /// call opens a new one.
    fn drop(&mut self) {
        if self.in_transaction {
            *self.guard = None;
        }
    }
}

struct PgRow<'a> {
    row: &'a tokio_postgres::Row,
    loc: &'a Path,
}

impl Row for PgRow<'_> {
    fn location(&self) -> &Path {
        self.loc
    }

    fn text(&self, i: usize) -> Result<&str, Error> {
        self.row.try_get(i).map_err(pg(self.loc))
    }

    fn opt_text(&self, i: usize) -> Result<Option<&str>, Error> {
        self.row.try_get(i).map_err(pg(self.loc))
    }

    fn int(&self, i: usize) -> Result<i64, Error> {
        if self.is_int4(i) {
            return self
                .row
                .try_get::<_, i32>(i)
                .map(i64::from)
                .map_err(pg(self.loc));
        }
        self.row.try_get(i).map_err(pg(self.loc))
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, Error> {
        if self.is_int4(i) {
            let n = self.row.try_get::<_, Option<i32>>(i);
            return n.map(|n| n.map(i64::from)).map_err(pg(self.loc));
        }
        self.row.try_get(i).map_err(pg(self.loc))
    }

    fn flag(&self, i: usize) -> Result<bool, Error> {
        self.row.try_get(i).map_err(pg(self.loc))
    }

    fn opt_flag(&self, i: usize) -> Result<Option<bool>, Error> {
        self.row.try_get(i).map_err(pg(self.loc))
    }
}

impl PgRow<'_> {
    /// An INTEGER column (`deliveries.attempts`): SQLite reads every integer as `i64`,
    /// tokio-postgres only as the column's own width.
    fn is_int4(&self, i: usize) -> bool {
        self.row
            .columns()
            .get(i)
            .is_some_and(|c| *c.type_() == Type::INT4)
    }
}

/// The arguments as tokio-postgres binds them; a list as a `text[]`.
fn values<'a>(args: &'a [Arg<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter()
        .map(|arg| -> &(dyn ToSql + Sync) {
            match arg {
                Arg::Int(n) => n,
                Arg::Text(s) => s,
                Arg::Texts(list) => list,
            }
        })
        .collect()
}

async fn query(
    client: &Client,
    loc: &Path,
    sql: &Sql,
    args: &[Arg<'_>],
) -> Result<Vec<tokio_postgres::Row>, Error> {
    let values = values(args);
    client.query(sql.postgres(), &values).await.map_err(pg(loc))
}

impl Session for PgConn<'_> {
    fn location(&self) -> &Path {
        self.loc
    }

    async fn execute(&mut self, sql: &Sql, args: &[Arg<'_>]) -> Result<u64, Error> {
        let values = values(args);
        self.client()?
            .execute(sql.postgres(), &values)
            .await
            .map_err(pg(self.loc))
    }

    async fn batch(&mut self, sql: &str) -> Result<(), Error> {
        self.client()?
            .batch_execute(sql)
            .await
            .map_err(pg(self.loc))
    }

    async fn query(
        &mut self,
        sql: &Sql,
        args: &[Arg<'_>],
        mut each: impl FnMut(&dyn Row) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let loc = self.loc;
        for row in &query(self.client()?, loc, sql, args).await? {
            each(&PgRow { row, loc })?;
        }
        Ok(())
    }

    /// Sized from the rows, which tokio-postgres has all read before the first is decoded.
    async fn collect<T>(
        &mut self,
        sql: &Sql,
        args: &[Arg<'_>],
        _count: Option<&Sql>,
        mut decode: impl FnMut(&dyn Row) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let loc = self.loc;
        let rows = query(self.client()?, loc, sql, args).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(decode(&PgRow { row, loc })?);
        }
        Ok(out)
    }
}

impl Conn for PgConn<'_> {
    async fn begin(&mut self) -> Result<(), Error> {
        self.transaction_statement("BEGIN", true).await
    }

    /// Under [`MIGRATION_LOCK`], released at commit or rollback: a replica that dies
    /// mid-migration frees it with its session.
    async fn begin_migration(&mut self) -> Result<(), Error> {
        self.begin().await?;
        self.client()?
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg(self.loc))?;
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), Error> {
        self.transaction_statement("COMMIT", false).await
    }

    async fn rollback(&mut self) -> Result<(), Error> {
        self.transaction_statement("ROLLBACK", false).await
    }

    /// One statement for the whole batch, like [`PgConn::record_checks`]. A key given twice ends
    /// as SQLite's loop leaves it: the last record's fields with the first one's `first_seen` (a
    /// statement may not upsert a row twice, so duplicates are folded here first).
    async fn upsert_tokens(&mut self, tokens: &[TokenRecord]) -> Result<(), Error> {
        let mut folded: Vec<(&TokenRecord, i64)> = Vec::with_capacity(tokens.len());
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for t in tokens {
            match index.get(t.key.as_str()) {
                Some(&i) => folded[i].0 = t,
                None => {
                    index.insert(t.key.as_str(), folded.len());
                    folded.push((t, t.first_seen.as_second()));
                }
            }
        }
        if folded.is_empty() {
            return Ok(());
        }
        let c = TokenColumns::of(&folded);
        let columns: [&(dyn ToSql + Sync); 12] = [
            &c.keys,
            &c.names,
            &c.roles,
            &c.backup_of,
            &c.fingerprints,
            &c.paths,
            &c.source_keys,
            &c.first,
            &c.last,
            &c.ids,
            &c.id_names,
            &c.id_at,
        ];
        self.client()?
            .execute(UPSERT_TOKENS.postgres(), &columns)
            .await
            .map_err(pg(self.loc))?;
        Ok(())
    }

    /// One statement for the whole batch (a round of thousands of checks is one round trip, not
    /// two per check). A check for an unknown token fails the statement, so nothing of the batch
    /// is kept.
    async fn record_checks(&mut self, checks: &[CheckRecord]) -> Result<(), Error> {
        if checks.is_empty() {
            return Ok(());
        }
        let c = CheckColumns::of(checks);
        let columns: [&(dyn ToSql + Sync); 11] = [
            &c.keys,
            &c.at,
            &c.status,
            &c.alert_state,
            &c.valid,
            &c.expires,
            &c.never,
            &c.kind,
            &c.scopes,
            &c.codes,
            &c.elapsed,
        ];
        self.client()?
            .execute(RECORD_CHECKS.postgres(), &columns)
            .await
            .map_err(pg(self.loc))?;
        Ok(())
    }
}

/// A batch of tokens as [`UPSERT_TOKENS`]' twelve arrays.
struct TokenColumns<'a> {
    keys: Vec<&'a str>,
    names: Vec<&'a str>,
    roles: Vec<&'a str>,
    backup_of: Vec<Option<&'a str>>,
    fingerprints: Vec<&'a str>,
    paths: Vec<&'a str>,
    source_keys: Vec<Option<&'a str>>,
    first: Vec<i64>,
    last: Vec<i64>,
    ids: Vec<Option<&'a str>>,
    id_names: Vec<Option<&'a str>>,
    id_at: Vec<Option<i64>>,
}

impl<'a> TokenColumns<'a> {
    /// `tokens` with the `first_seen` each keeps.
    fn of(tokens: &[(&'a TokenRecord, i64)]) -> Self {
        let n = tokens.len();
        let mut c = Self {
            keys: Vec::with_capacity(n),
            names: Vec::with_capacity(n),
            roles: Vec::with_capacity(n),
            backup_of: Vec::with_capacity(n),
            fingerprints: Vec::with_capacity(n),
            paths: Vec::with_capacity(n),
            source_keys: Vec::with_capacity(n),
            first: Vec::with_capacity(n),
            last: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            id_names: Vec::with_capacity(n),
            id_at: Vec::with_capacity(n),
        };
        for &(t, first) in tokens {
            let (role, of) = role_columns(&t.role);
            let identity = t.identity.as_ref();
            c.keys.push(t.key.as_str());
            c.names.push(&t.name);
            c.roles.push(role);
            c.backup_of.push(of);
            c.fingerprints.push(&t.fingerprint);
            c.paths.push(&t.source_path);
            c.source_keys.push(t.source_key.as_deref());
            c.first.push(first);
            c.last.push(t.last_seen.as_second());
            c.ids.push(identity.map(|i| i.id.as_str()));
            c.id_names.push(identity.and_then(|i| i.name.as_deref()));
            c.id_at.push(identity.map(|i| i.seen_at.as_second()));
        }
        c
    }
}

/// A batch of checks as [`RECORD_CHECKS`]' eleven arrays.
struct CheckColumns<'a> {
    keys: Vec<&'a str>,
    at: Vec<i64>,
    status: Vec<&'static str>,
    alert_state: Vec<&'a str>,
    valid: Vec<Option<bool>>,
    expires: Vec<Option<i64>>,
    never: Vec<bool>,
    kind: Vec<Option<&'a str>>,
    scopes: Vec<String>,
    codes: Vec<String>,
    elapsed: Vec<i64>,
}

impl<'a> CheckColumns<'a> {
    fn of(checks: &'a [CheckRecord]) -> Self {
        let n = checks.len();
        let mut c = Self {
            keys: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            alert_state: Vec::with_capacity(n),
            valid: Vec::with_capacity(n),
            expires: Vec::with_capacity(n),
            never: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            scopes: Vec::with_capacity(n),
            codes: Vec::with_capacity(n),
            elapsed: Vec::with_capacity(n),
        };
        for check in checks {
            c.keys.push(check.key.as_str());
            c.at.push(check.checked_at.as_second());
            c.status.push(check.status.as_str());
            c.alert_state.push(&check.alert_state);
            c.valid.push(check.valid);
            c.expires.push(check.expires_at.map(|t| t.as_second()));
            c.never.push(check.never_expires);
            c.kind.push(check.kind.as_deref());
            c.scopes.push(to_json(&check.missing_scopes));
            c.codes.push(to_json(&check.finding_codes));
            c.elapsed.push(crate::rows::elapsed(check));
        }
        c
    }
}
