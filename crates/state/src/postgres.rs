//! The PostgreSQL backend: one tokio-postgres session behind an async mutex (calls are serialised,
//! as SQLite's are), opened again at the next call if the server dropped it.
//!
//! The `--state` URL never holds the password: a URL is seen in `ps`, in shell history and in logs,
//! so one with a password is refused (and never repeated). The password comes, first found wins, from
//! [`PgOptions::password_file`] (the daemon's `state_password_file`), `PGPASSWORD`, or a passfile
//! (`PGPASSFILE`, else `~/.pgpass`; libpq's format; ignored unless its mode gives nothing to the group
//! or others, as libpq does).
//!
//! `sslmode` (libpq's meaning): `disable` (plain), `prefer` (the default: TLS when the server offers
//! it, the certificate not checked), `require` (TLS or fail, the certificate not checked), and
//! `verify-full` (TLS, the chain checked against the system's roots plus `sslrootcert` if given, and
//! the host name checked). `verify-ca` and `allow` are refused: use `verify-full` or `prefer`; so is
//! `sslrootcert` without `verify-full` (libpq would check the chain then; not checking it silently
//! would mislead).
//! rustls with the ring provider; never OpenSSL.
//!
//! Migrations run in one transaction under a transaction-scoped advisory lock ([`MIGRATION_LOCK`]),
//! so replicas starting together apply them once; no file lock (replicas share the database and elect
//! a leader elsewhere). The queries are SQLite's with `$N` placeholders and `RETURNING id`.
//!
//! TLS is this module's own small bridge from tokio-rustls to tokio-postgres ([`tls`]), with the
//! `tls-server-end-point` channel binding (SCRAM-SHA-256-PLUS) hashed with ring: the published
//! bridge crate brings an X.509 parser and a second SHA-2 stack for those few bytes.
//!
//! Must never: show, log or store the password, or accept it in the URL.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, Row};
use zeroize::Zeroizing;

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
    include_str!("../migrations/postgres/0001_init.sql"),
    include_str!("../migrations/postgres/0002_reminders.sql"),
    include_str!("../migrations/postgres/0003_claims.sql"),
    include_str!("../migrations/postgres/0004_identities.sql"),
];

// Both backends are at the same schema version ([`crate::SCHEMA_VERSION`]): a SQLite migration
// without its PostgreSQL twin (or the reverse) does not build.
const _: () = assert!(
    MIGRATIONS.len() == crate::sqlite::MIGRATIONS.len(),
    "each migrations/sqlite/NNNN_*.sql needs its twin in migrations/postgres/"
);

/// The advisory lock key taken while migrating (ASCII "permmigr"). Leader election uses its own key.
pub const MIGRATION_LOCK: i64 = 0x7065_726d_6d69_6772;

/// The longest password file or passfile read (a larger one is not what it claims to be).
const MAX_PASSWORD_FILE: u64 = 64 * 1024;

/// How the PostgreSQL state finds its password and how long it waits for the server. Debug never
/// shows the password.
#[derive(Clone, Default)]
pub struct PgOptions {
    /// A file holding only the password (the daemon's `state_password_file`); one trailing newline
    /// is dropped. Wins over everything else.
    pub password_file: Option<PathBuf>,
    /// `PGPASSWORD`, used when there is no password file.
    pub env_password: Option<Zeroizing<String>>,
    /// `PGPASSFILE`: the passfile to read instead of `~/.pgpass`.
    pub passfile: Option<PathBuf>,
    /// The home folder, where `.pgpass` is looked for when `passfile` is not given.
    pub home: Option<PathBuf>,
    /// How long to wait for the server to answer a connection (10 s if not given).
    pub connect_timeout: Option<Duration>,
}

impl PgOptions {
    /// `PGPASSWORD`, `PGPASSFILE` and `HOME` from the environment (a value that is not UTF-8 is
    /// ignored, as libpq would fail to use it).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::vars_os().find(|(k, _)| k == name).map(|(_, v)| v);
        Self {
            password_file: None,
            env_password: var("PGPASSWORD")
                .and_then(|v| v.into_string().ok())
                .filter(|v| !v.is_empty())
                .map(Zeroizing::new),
            passfile: var("PGPASSFILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            home: var("HOME").filter(|v| !v.is_empty()).map(PathBuf::from),
            connect_timeout: None,
        }
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("password_file", &self.password_file)
            .field(
                "env_password",
                &self.env_password.as_ref().map(|_| "<redacted>"),
            )
            .field("passfile", &self.passfile)
            .field("home", &self.home)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

impl SslMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyFull => "verify-full",
        }
    }
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

fn url_error(reason: impl Into<String>) -> Error {
    Error::PostgresUrl {
        reason: reason.into(),
    }
}

fn pg(location: &Path) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::Postgres {
        location: location.display().to_string(),
        reason: reason_of(&e),
    }
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

/// What the URL says, with the options permatoken handles itself taken out.
struct Parsed {
    config: Config,
    ssl_mode: SslMode,
    root_cert: Option<PathBuf>,
    location: String,
}

fn parse_url(url: &str) -> Result<Parsed, Error> {
    let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        return Err(url_error("must start with `postgres://`"));
    }
    let mut parsed = url::Url::parse(url).map_err(|e| {
        url_error(format!(
            "is not a valid URL ({e}); see `permatoken watch --help`"
        ))
    })?;
    let refuse_password = || {
        url_error(
            "holds a password, which anyone on this machine can read in `ps` and which shell history \
             and logs keep: remove it from the URL and give it through PGPASSWORD, a passfile \
             (~/.pgpass, mode 0600) or `state_password_file`",
        )
    };
    if parsed.password().is_some() {
        return Err(refuse_password());
    }
    let mut ssl_mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match &*key {
            "password" => return Err(refuse_password()),
            "sslmode" => {
                ssl_mode = match &*value {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-full" => SslMode::VerifyFull,
                    "verify-ca" => {
                        return Err(url_error(
                            "asks for `sslmode=verify-ca`, which permatoken does not support: use \
                             `sslmode=verify-full` (the chain and the host name checked)",
                        ));
                    }
                    other => {
                        return Err(url_error(format!(
                            "has `sslmode={}`; permatoken supports disable, prefer, require and verify-full",
                            crate::clean_text(other)
                        )));
                    }
                }
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(&*value)),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if root_cert.is_some() && ssl_mode != SslMode::VerifyFull {
        // libpq would then check the chain; silently not checking it would be worse than refusing.
        return Err(url_error(format!(
            "gives `sslrootcert` with `sslmode={}`, which does not check the server: use \
             `sslmode=verify-full` to check it against that CA, or remove `sslrootcert`",
            ssl_mode.as_str()
        )));
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(&kept);
    }
    let config: Config = parsed
        .as_str()
        .parse()
        .map_err(|e| url_error(format!("cannot be used: {e}")))?;
    let mut shown = parsed.clone();
    shown.set_query(None);
    Ok(Parsed {
        config,
        ssl_mode,
        root_cert,
        location: shown.to_string(),
    })
}

fn read_capped(path: &Path, action: &'static str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let io = |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_PASSWORD_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_PASSWORD_FILE {
        return Err(io(std::io::Error::other(format!(
            "it is larger than {} KiB",
            MAX_PASSWORD_FILE / 1024
        ))));
    }
    Ok(bytes)
}

fn read_password_file(path: &Path) -> Result<Zeroizing<String>, Error> {
    let bytes = read_capped(path, "read the state password file")?;
    let bad = |why: &str| Error::Io {
        action: "read the state password file",
        path: path.to_path_buf(),
        source: std::io::Error::other(why.to_owned()),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("it is not UTF-8 text"))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err(bad("it is empty: put the password in it"));
    }
    if text.contains('\n') {
        return Err(bad(
            "it holds more than one line: put only the password in it",
        ));
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// Splits a passfile line on unescaped `:`, undoing `\:` and `\\`.
fn passfile_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next()
                    && let Some(last) = fields.last_mut()
                {
                    last.push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

/// The password a passfile gives for this host, port, database and user, if any.
fn passfile_lookup(text: &str, want: [&str; 4]) -> Option<Zeroizing<String>> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = passfile_fields(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = fields[..4]
            .iter()
            .zip(want)
            .all(|(field, want)| field == "*" || field == want);
        let password = Zeroizing::new(fields.drain(4..).collect::<Vec<_>>().join(":"));
        for f in &mut fields {
            zeroize::Zeroize::zeroize(f);
        }
        if matches {
            return Some(password);
        }
    }
    None
}

/// The password to offer, and why a passfile was passed over (for the error if one is then asked).
fn find_password(
    config: &Config,
    options: &PgOptions,
) -> Result<(Option<Zeroizing<String>>, Option<String>), Error> {
    if let Some(path) = &options.password_file {
        return Ok((Some(read_password_file(path)?), None));
    }
    if let Some(p) = &options.env_password {
        return Ok((Some(p.clone()), None));
    }
    let (path, explicit) = match (&options.passfile, &options.home) {
        (Some(p), _) => (p.clone(), true),
        (None, Some(home)) => (home.join(".pgpass"), false),
        (None, None) => return Ok((None, None)),
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok((None, None));
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let note = format!(
            "the passfile `{}` was ignored: its mode is {mode:04o}, and a passfile must be readable by its owner only (`chmod 600 {}`)",
            path.display(),
            path.display()
        );
        if explicit {
            return Err(Error::Io {
                action: "use the passfile",
                path: path.clone(),
                source: std::io::Error::other(format!(
                    "its mode is {mode:04o}: a passfile must be readable by its owner only (`chmod 600 {}`)",
                    path.display()
                )),
            });
        }
        return Ok((None, Some(note)));
    }
    let bytes = read_capped(&path, "read the passfile")?;
    let text = String::from_utf8_lossy(&bytes);
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches a Unix socket against `localhost`.
        _ => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or("*").to_owned();
    let db = config.get_dbname().unwrap_or(&user).to_owned();
    let found = passfile_lookup(&text, [&host, &port, &db, &user]);
    if let std::borrow::Cow::Owned(mut s) = text {
        zeroize::Zeroize::zeroize(&mut s);
    }
    let note = found.is_none().then(|| {
        format!(
            "the passfile `{}` has no line for {host}:{port}:{db}:{user}",
            path.display()
        )
    });
    Ok((found, note))
}

/// Accepts any certificate but still checks the handshake's signatures: `prefer` and `require`
/// encrypt without authenticating the server, as libpq does.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(mode: SslMode, root_cert: Option<&Path>) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |why: String| url_error(format!("cannot set up TLS: {why}"));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?;
    if mode != SslMode::VerifyFull {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth());
    }
    let extra = match root_cert {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let pem = read_capped(path, "read the `sslrootcert` file")?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    tls_error(format!(
                        "`sslrootcert` `{}` is not valid PEM: {e}",
                        path.display()
                    ))
                })?;
            if certs.is_empty() {
                return Err(tls_error(format!(
                    "`sslrootcert` `{}` holds no certificate",
                    path.display()
                )));
            }
            certs
        }
        None => Vec::new(),
    };
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider)
        .map_err(|e| tls_error(format!("cannot load the system's root certificates: {e}")))?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
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
        if config.get_application_name().is_none() {
            config.application_name("permatoken");
        }
        let (password, passfile_note) = find_password(&config, options)?;
        if let Some(p) = password {
            config.password(p.as_bytes());
        }
        let tls = tls::MakeRustls::new(tls_config(ssl_mode, root_cert.as_deref())?);
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
        {
            let mut conn = db.conn().await?;
            migrate(&mut conn, &db.inner.location).await?;
        }
        Ok(db)
    }

    pub(crate) fn location(&self) -> &Path {
        &self.inner.location
    }

    /// The session, opened again if the server dropped it; held until the guard is dropped.
    pub(crate) async fn conn(&self) -> Result<MappedMutexGuard<'_, Client>, Error> {
        let mut guard = self.inner.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            *guard = Some(self.connect().await?);
        }
        MutexGuard::try_map(guard, Option::as_mut).map_err(|_| Error::Worker)
    }

    async fn connect(&self) -> Result<Client, Error> {
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
        Error::Postgres {
            location: inner.location.display().to_string(),
            reason,
        }
    }
}

async fn migrate(conn: &mut Client, loc: &Path) -> Result<(), Error> {
    let known = MIGRATIONS.len() as i64;
    let e = pg(loc);
    let tx = conn.transaction().await.map_err(&e)?;
    // Released at commit or rollback: a replica that dies mid-migration frees it with its session.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(&e)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
    )
    .await
    .map_err(&e)?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )
        .await
        .map_err(&e)?
        .get(0);
    if found > known {
        return Err(Error::NewerSchema {
            path: loc.to_path_buf(),
            found,
            known,
        });
    }
    let now = Timestamp::now().as_second();
    for (version, sql) in (1_i64..).zip(MIGRATIONS).skip(found as usize) {
        tx.batch_execute(sql).await.map_err(&e)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&version, &now],
        )
        .await
        .map_err(&e)?;
    }
    tx.commit().await.map_err(&e)
}

pub(crate) async fn schema_version(conn: &mut Client, loc: &Path) -> Result<i64, Error> {
    Ok(conn
        .query_one("SELECT MAX(version) FROM schema_migrations", &[])
        .await
        .map_err(pg(loc))?
        .get(0))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
    loc: &Path,
) -> Result<T, Error> {
    row.try_get(i).map_err(pg(loc))
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

fn token_from_row(row: &Row, at: usize, path: &Path) -> Result<TokenRecord, Error> {
    let key: String = get(row, at, path)?;
    let role: String = get(row, at + 2, path)?;
    let backup_of: Option<String> = get(row, at + 3, path)?;
    let role = match (role.as_str(), backup_of) {
        ("primary", _) => Role::Primary,
        ("backup", Some(of)) => Role::Backup(of),
        _ => return Err(corrupt(path, "tokens.role")),
    };
    Ok(TokenRecord {
        key: TokenKey::parse(&key).map_err(|_| corrupt(path, "tokens.token_sha256"))?,
        name: get(row, at + 1, path)?,
        role,
        fingerprint: get(row, at + 4, path)?,
        source_path: get(row, at + 5, path)?,
        source_key: get(row, at + 6, path)?,
        first_seen: ts(path, "tokens.first_seen", get(row, at + 7, path)?)?,
        last_seen: ts(path, "tokens.last_seen", get(row, at + 8, path)?)?,
        identity: identity(
            path,
            get(row, at + 9, path)?,
            get(row, at + 10, path)?,
            get(row, at + 11, path)?,
        )?,
    })
}

fn check_from_row(row: &Row, at: usize, path: &Path) -> Result<CheckRecord, Error> {
    let key: String = get(row, at, path)?;
    let status: String = get(row, at + 2, path)?;
    let scopes: String = get(row, at + 8, path)?;
    let codes: String = get(row, at + 9, path)?;
    let elapsed: i64 = get(row, at + 10, path)?;
    Ok(CheckRecord {
        key: TokenKey::parse(&key).map_err(|_| corrupt(path, "checks.token_sha256"))?,
        checked_at: ts(path, "checks.checked_at", get(row, at + 1, path)?)?,
        status: Status::parse(&status).ok_or_else(|| corrupt(path, "checks.status"))?,
        alert_state: get(row, at + 3, path)?,
        valid: get(row, at + 4, path)?,
        expires_at: opt_ts(path, "checks.expires_at", get(row, at + 5, path)?)?,
        never_expires: get(row, at + 6, path)?,
        kind: get(row, at + 7, path)?,
        missing_scopes: list(path, "checks.missing_scopes", &scopes)?,
        finding_codes: list(path, "checks.finding_codes", &codes)?,
        elapsed_ms: u64::try_from(elapsed).map_err(|_| corrupt(path, "checks.elapsed_ms"))?,
    })
}

/// One statement for the whole batch, like [`record_checks`]. A key given twice ends as SQLite's
/// loop leaves it: the last record's fields with the first one's `first_seen` (a statement may not
/// upsert a row twice, so duplicates are folded here first).
pub(crate) async fn upsert_tokens(
    conn: &mut Client,
    path: &Path,
    tokens: &[TokenRecord],
) -> Result<(), Error> {
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
    let keys: Vec<&str> = folded.iter().map(|(t, _)| t.key.as_str()).collect();
    let names: Vec<&str> = folded.iter().map(|(t, _)| t.name.as_str()).collect();
    let (roles, backup_of): (Vec<&str>, Vec<Option<&str>>) = folded
        .iter()
        .map(|(t, _)| match &t.role {
            Role::Primary => ("primary", None),
            Role::Backup(of) => ("backup", Some(of.as_str())),
        })
        .unzip();
    let fingerprints: Vec<&str> = folded.iter().map(|(t, _)| t.fingerprint.as_str()).collect();
    let paths: Vec<&str> = folded.iter().map(|(t, _)| t.source_path.as_str()).collect();
    let source_keys: Vec<Option<&str>> = folded
        .iter()
        .map(|(t, _)| t.source_key.as_deref())
        .collect();
    let first: Vec<i64> = folded.iter().map(|(_, first)| *first).collect();
    let last: Vec<i64> = folded
        .iter()
        .map(|(t, _)| t.last_seen.as_second())
        .collect();
    let ids: Vec<Option<&str>> = folded
        .iter()
        .map(|(t, _)| t.identity.as_ref().map(|i| i.id.as_str()))
        .collect();
    let id_names: Vec<Option<&str>> = folded
        .iter()
        .map(|(t, _)| t.identity.as_ref().and_then(|i| i.name.as_deref()))
        .collect();
    let id_at: Vec<Option<i64>> = folded
        .iter()
        .map(|(t, _)| t.identity.as_ref().map(|i| i.seen_at.as_second()))
        .collect();
    conn.execute(
        &format!(
            "INSERT INTO tokens (token_sha256, name, role, backup_of, fingerprint, source_path,
                source_key, first_seen, last_seen, identity_id, identity_name, identity_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[],
                $12::bigint[])
             ON CONFLICT (token_sha256) DO UPDATE SET name = excluded.name,
                role = excluded.role, backup_of = excluded.backup_of,
                fingerprint = excluded.fingerprint, source_path = excluded.source_path,
                source_key = excluded.source_key, last_seen = excluded.last_seen,
                {KEEP_IDENTITY}"
        ),
        &[
            &keys,
            &names,
            &roles,
            &backup_of,
            &fingerprints,
            &paths,
            &source_keys,
            &first,
            &last,
            &ids,
            &id_names,
            &id_at,
        ],
    )
    .await
    .map_err(pg(path))?;
    Ok(())
}

pub(crate) async fn tokens(conn: &mut Client, path: &Path) -> Result<Vec<TokenRecord>, Error> {
    let rows = conn
        .query(
            &format!("SELECT {TOKEN_COLS} FROM tokens t ORDER BY t.name, t.token_sha256"),
            &[],
        )
        .await
        .map_err(pg(path))?;
    rows.iter().map(|r| token_from_row(r, 0, path)).collect()
}

pub(crate) async fn forget_tokens(
    conn: &mut Client,
    path: &Path,
    cutoff: Timestamp,
) -> Result<u64, Error> {
    conn.execute(
        "DELETE FROM tokens WHERE last_seen < $1",
        &[&cutoff.as_second()],
    )
    .await
    .map_err(pg(path))
}

/// One statement for the whole batch (a round of thousands of checks is one round trip, not two
/// per check): the checks inserted in the given order, then each token's newest among them becomes
/// its latest unless it already has a newer one — what SQLite's loop leaves, ties going to the
/// later check. A check for an unknown token fails the statement, so nothing of the batch is kept.
pub(crate) async fn record_checks(
    conn: &mut Client,
    path: &Path,
    checks: &[CheckRecord],
) -> Result<(), Error> {
    if checks.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = checks.iter().map(|c| c.key.as_str()).collect();
    let at: Vec<i64> = checks.iter().map(|c| c.checked_at.as_second()).collect();
    let status: Vec<&str> = checks.iter().map(|c| c.status.as_str()).collect();
    let alert_state: Vec<&str> = checks.iter().map(|c| c.alert_state.as_str()).collect();
    let valid: Vec<Option<bool>> = checks.iter().map(|c| c.valid).collect();
    let expires: Vec<Option<i64>> = checks
        .iter()
        .map(|c| c.expires_at.map(|t| t.as_second()))
        .collect();
    let never: Vec<bool> = checks.iter().map(|c| c.never_expires).collect();
    let kind: Vec<Option<&str>> = checks.iter().map(|c| c.kind.as_deref()).collect();
    let scopes: Vec<String> = checks.iter().map(|c| to_json(&c.missing_scopes)).collect();
    let codes: Vec<String> = checks.iter().map(|c| to_json(&c.finding_codes)).collect();
    let elapsed: Vec<i64> = checks
        .iter()
        .map(|c| i64::try_from(c.elapsed_ms).unwrap_or(i64::MAX))
        .collect();
    conn.execute(
        "WITH input AS (
            SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::boolean[],
                $6::bigint[], $7::boolean[], $8::text[], $9::text[], $10::text[], $11::bigint[])
                WITH ORDINALITY AS i (token_sha256, checked_at, status, alert_state, valid,
                    expires_at, never_expires, kind, missing_scopes, finding_codes, elapsed_ms, n)
         ), inserted AS (
            INSERT INTO checks (token_sha256, checked_at, status, alert_state, valid,
                expires_at, never_expires, kind, missing_scopes, finding_codes, elapsed_ms)
            SELECT token_sha256, checked_at, status, alert_state, valid, expires_at,
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
           AND (t.last_check_at IS NULL OR t.last_check_at <= newest.checked_at)",
        &[
            &keys,
            &at,
            &status,
            &alert_state,
            &valid,
            &expires,
            &never,
            &kind,
            &scopes,
            &codes,
            &elapsed,
        ],
    )
    .await
    .map_err(pg(path))?;
    Ok(())
}

pub(crate) async fn latest_checks(
    conn: &mut Client,
    path: &Path,
) -> Result<Vec<LatestCheck>, Error> {
    let rows = conn
        .query(
            &format!(
                "SELECT {TOKEN_COLS}, {CHECK_COLS} FROM tokens t
                 LEFT JOIN checks c ON c.id = t.last_check_id
                 ORDER BY t.name, t.token_sha256"
            ),
            &[],
        )
        .await
        .map_err(pg(path))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let token = token_from_row(row, 0, path)?;
        let has_check: Option<String> = get(row, TOKEN_WIDTH, path)?;
        let check = match has_check {
            Some(_) => Some(check_from_row(row, TOKEN_WIDTH, path)?),
            None => None,
        };
        out.push(LatestCheck { token, check });
    }
    Ok(out)
}

pub(crate) async fn history(
    conn: &mut Client,
    path: &Path,
    name: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<CheckRecord>, Error> {
    let rows = conn
        .query(
            &format!(
                "SELECT {CHECK_COLS} FROM checks c JOIN tokens t ON t.token_sha256 = c.token_sha256
                 WHERE t.name = $1 AND c.checked_at >= $2 AND c.checked_at < $3
                 ORDER BY c.checked_at, c.id"
            ),
            &[&name, &from.as_second(), &to.as_second()],
        )
        .await
        .map_err(pg(path))?;
    rows.iter().map(|r| check_from_row(r, 0, path)).collect()
}

pub(crate) async fn identities(
    conn: &mut Client,
    path: &Path,
) -> Result<Vec<IdentityCheck>, Error> {
    let rows = conn.query(IDENTITIES, &[]).await.map_err(pg(path))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let key: String = get(row, 0, path)?;
        let status: String = get(row, 3, path)?;
        let codes: String = get(row, 4, path)?;
        out.push(IdentityCheck {
            key: TokenKey::parse(&key).map_err(|_| corrupt(path, "tokens.token_sha256"))?,
            id: get(row, 1, path)?,
            name: get(row, 2, path)?,
            status: Status::parse(&status).ok_or_else(|| corrupt(path, "checks.status"))?,
            finding_codes: list(path, "checks.finding_codes", &codes)?,
        });
    }
    Ok(out)
}

pub(crate) async fn latest_statuses(
    conn: &mut Client,
    path: &Path,
) -> Result<Vec<LatestStatus>, Error> {
    let rows = conn
        .query(
            "SELECT t.name, t.token_sha256, t.fingerprint, c.checked_at, c.status, c.valid,
                    c.expires_at, c.never_expires, c.kind, c.missing_scopes
             FROM tokens t LEFT JOIN checks c ON c.id = t.last_check_id
             ORDER BY t.name, t.token_sha256",
            &[],
        )
        .await
        .map_err(pg(path))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let key: &str = get(row, 1, path)?;
        let checked_at: Option<i64> = get(row, 3, path)?;
        let check = match checked_at {
            None => None,
            Some(at) => {
                let status: &str = get(row, 4, path)?;
                let scopes: &str = get(row, 9, path)?;
                Some(CheckStatus {
                    checked_at: ts(path, "checks.checked_at", at)?,
                    status: Status::parse(status).ok_or_else(|| corrupt(path, "checks.status"))?,
                    valid: get(row, 5, path)?,
                    expires_at: opt_ts(path, "checks.expires_at", get(row, 6, path)?)?,
                    never_expires: get(row, 7, path)?,
                    kind: get(row, 8, path)?,
                    missing_scopes: list(path, "checks.missing_scopes", scopes)?,
                })
            }
        };
        out.push(LatestStatus {
            name: get(row, 0, path)?,
            key: TokenKey::parse(key).map_err(|_| corrupt(path, "tokens.token_sha256"))?,
            fingerprint: get(row, 2, path)?,
            check,
        });
    }
    Ok(out)
}

pub(crate) async fn histories(
    conn: &mut Client,
    path: &Path,
    from: Timestamp,
    to: Timestamp,
    per_name: u32,
) -> Result<Vec<(String, Vec<CheckRecord>)>, Error> {
    // As SQLite's: the newest `per_name` of each name chosen in SQL, with a window function.
    let rows = conn
        .query(
            &format!(
                "WITH ranked AS (
                    SELECT c.id AS cid, t.name AS tname, ROW_NUMBER() OVER (
                        PARTITION BY t.name ORDER BY c.checked_at DESC, c.id DESC) AS rn
                    FROM checks c JOIN tokens t ON t.token_sha256 = c.token_sha256
                    WHERE c.checked_at >= $1 AND c.checked_at < $2)
                 SELECT r.tname, {CHECK_COLS} FROM ranked r JOIN checks c ON c.id = r.cid
                 WHERE r.rn <= $3 ORDER BY r.tname, c.checked_at, c.id"
            ),
            &[&from.as_second(), &to.as_second(), &i64::from(per_name)],
        )
        .await
        .map_err(pg(path))?;
    let mut out: Vec<(String, Vec<CheckRecord>)> = Vec::new();
    for row in &rows {
        let name: String = get(row, 0, path)?;
        let check = check_from_row(row, 1, path)?;
        match out.last_mut() {
            Some((last, checks)) if *last == name => checks.push(check),
            _ => out.push((name, vec![check])),
        }
    }
    Ok(out)
}

pub(crate) async fn history_points(
    conn: &mut Client,
    path: &Path,
    from: Timestamp,
    to: Timestamp,
    per_name: u32,
) -> Result<Vec<(String, Vec<StatusPoint>)>, Error> {
    // As SQLite's: `histories`' rows, with only the two columns a chart draws.
    let rows = conn
        .query(
            "WITH ranked AS (
                SELECT c.id AS cid, t.name AS tname, ROW_NUMBER() OVER (
                    PARTITION BY t.name ORDER BY c.checked_at DESC, c.id DESC) AS rn
                FROM checks c JOIN tokens t ON t.token_sha256 = c.token_sha256
                WHERE c.checked_at >= $1 AND c.checked_at < $2)
             SELECT r.tname, c.checked_at, c.status FROM ranked r JOIN checks c ON c.id = r.cid
             WHERE r.rn <= $3 ORDER BY r.tname, c.checked_at, c.id",
            &[&from.as_second(), &to.as_second(), &i64::from(per_name)],
        )
        .await
        .map_err(pg(path))?;
    points_from_rows(&rows, path)
}

/// Rows of (name, checked_at, status) ordered by name, grouped by name.
fn points_from_rows(rows: &[Row], path: &Path) -> Result<Vec<(String, Vec<StatusPoint>)>, Error> {
    let mut out: Vec<(String, Vec<StatusPoint>)> = Vec::new();
    for row in rows {
        let name: &str = get(row, 0, path)?;
        let status: &str = get(row, 2, path)?;
        let point = StatusPoint {
            checked_at: ts(path, "checks.checked_at", get(row, 1, path)?)?,
            status: Status::parse(status).ok_or_else(|| corrupt(path, "checks.status"))?,
        };
        match out.last_mut() {
            Some((last, points)) if last == name => points.push(point),
            _ => out.push((name.to_owned(), vec![point])),
        }
    }
    Ok(out)
}

pub(crate) async fn history_points_of(
    conn: &mut Client,
    path: &Path,
    names: Vec<String>,
    from: Timestamp,
    to: Timestamp,
    per_name: u32,
) -> Result<Vec<(String, Vec<StatusPoint>)>, Error> {
    // `history_points`' rows of only `names`: one array parameter, however many names.
    let rows = conn
        .query(
            "WITH ranked AS (
                SELECT c.id AS cid, t.name AS tname, ROW_NUMBER() OVER (
                    PARTITION BY t.name ORDER BY c.checked_at DESC, c.id DESC) AS rn
                FROM checks c JOIN tokens t ON t.token_sha256 = c.token_sha256
                WHERE c.checked_at >= $1 AND c.checked_at < $2 AND t.name = ANY($4))
             SELECT r.tname, c.checked_at, c.status FROM ranked r JOIN checks c ON c.id = r.cid
             WHERE r.rn <= $3 ORDER BY r.tname, c.checked_at, c.id",
            &[
                &from.as_second(),
                &to.as_second(),
                &i64::from(per_name),
                &names,
            ],
        )
        .await
        .map_err(pg(path))?;
    points_from_rows(&rows, path)
}

pub(crate) async fn counts(conn: &mut Client, path: &Path) -> Result<Counts, Error> {
    let row = conn
        .query_one(
            "SELECT (SELECT COUNT(*) FROM tokens), (SELECT COUNT(*) FROM checks),
                    (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM alerts),
                    (SELECT COUNT(*) FROM deliveries WHERE next_attempt_at IS NOT NULL)",
            &[],
        )
        .await
        .map_err(pg(path))?;
    Ok(Counts {
        tokens: count(get(&row, 0, path)?),
        checks: count(get(&row, 1, path)?),
        events: count(get(&row, 2, path)?),
        alerts: count(get(&row, 3, path)?),
        deliveries_outstanding: count(get(&row, 4, path)?),
    })
}

const ANNOUNCED_COLS: &str =
    "token_name, state, since, alert_id, last_reminder_at, unknown_since, reminders";

fn announced_from_row(row: &Row, path: &Path) -> Result<Announced, Error> {
    let state: Option<String> = get(row, 1, path)?;
    let since: Option<i64> = get(row, 2, path)?;
    let announcement = match (state, since) {
        (Some(state), Some(since)) => Some(Announcement {
            state,
            since: ts(path, "announced.since", since)?,
            alert_id: get(row, 3, path)?,
            last_reminder_at: opt_ts(path, "announced.last_reminder_at", get(row, 4, path)?)?,
            reminders: u32::try_from(get::<i64>(row, 6, path)?).unwrap_or(0),
        }),
        (None, _) => None,
        (Some(_), None) => return Err(corrupt(path, "announced.since")),
    };
    Ok(Announced {
        token_name: get(row, 0, path)?,
        announcement,
        unknown_since: opt_ts(path, "announced.unknown_since", get(row, 5, path)?)?,
    })
}

pub(crate) async fn announced(
    conn: &mut Client,
    path: &Path,
    name: &str,
) -> Result<Option<Announced>, Error> {
    let row = conn
        .query_opt(
            &format!("SELECT {ANNOUNCED_COLS} FROM announced WHERE token_name = $1"),
            &[&name],
        )
        .await
        .map_err(pg(path))?;
    row.map(|r| announced_from_row(&r, path)).transpose()
}

pub(crate) async fn all_announced(conn: &mut Client, path: &Path) -> Result<Vec<Announced>, Error> {
    let rows = conn
        .query(
            &format!("SELECT {ANNOUNCED_COLS} FROM announced ORDER BY token_name"),
            &[],
        )
        .await
        .map_err(pg(path))?;
    rows.iter().map(|r| announced_from_row(r, path)).collect()
}

async fn upsert_announcement(
    conn: &impl tokio_postgres::GenericClient,
    path: &Path,
    name: &str,
    a: &Announcement,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO announced (token_name, state, since, alert_id, last_reminder_at, reminders)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (token_name) DO UPDATE SET state = excluded.state, since = excluded.since,
            alert_id = excluded.alert_id, last_reminder_at = excluded.last_reminder_at,
            reminders = excluded.reminders",
        &[
            &name,
            &a.state,
            &a.since.as_second(),
            &a.alert_id,
            &a.last_reminder_at.map(|t| t.as_second()),
            &i64::from(a.reminders),
        ],
    )
    .await
    .map_err(pg(path))?;
    Ok(())
}

pub(crate) async fn set_announcement(
    conn: &mut Client,
    path: &Path,
    name: &str,
    a: &Announcement,
) -> Result<(), Error> {
    upsert_announcement(&*conn, path, name, a).await
}

pub(crate) async fn set_unknown_since(
    conn: &mut Client,
    path: &Path,
    name: &str,
    since: Option<Timestamp>,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO announced (token_name, unknown_since) VALUES ($1, $2)
         ON CONFLICT (token_name) DO UPDATE SET unknown_since = excluded.unknown_since",
        &[&name, &since.map(|t| t.as_second())],
    )
    .await
    .map_err(pg(path))?;
    Ok(())
}

/// Inserts an alert and its pending deliveries; `false` if the id was already recorded.
async fn insert_alert(
    tx: &tokio_postgres::Transaction<'_>,
    path: &Path,
    alert: &Alert,
    routes: &[String],
) -> Result<bool, Error> {
    let e = pg(path);
    let time = alert.time.as_second();
    let inserted = tx
        .execute(
            "INSERT INTO alerts (id, token_name, state, previous_state, message, fix, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            &[
                &alert.id,
                &alert.token_name,
                &alert.state,
                &alert.previous_state,
                &alert.message,
                &alert.fix,
                &time,
            ],
        )
        .await
        .map_err(&e)?;
    if inserted == 0 {
        return Ok(false);
    }
    // Listed among the recent events too, in the same transaction, as SQLite does.
    tx.execute(
        "INSERT INTO events (at, token_name, kind, detail) VALUES ($1, $2, $3, $4)",
        &[
            &time,
            &alert.token_name,
            &crate::EventKind::Alert.as_str(),
            &crate::clean_text(&crate::alert_event_text(alert)),
        ],
    )
    .await
    .map_err(&e)?;
    for route in routes {
        tx.execute(
            "INSERT INTO deliveries (alert_id, route, status, attempts, next_attempt_at, updated_at)
             VALUES ($1, $2, 'pending', 0, $3, $3) ON CONFLICT (alert_id, route) DO NOTHING",
            &[&alert.id, route, &time],
        )
        .await
        .map_err(&e)?;
    }
    Ok(true)
}

pub(crate) async fn announce(
    conn: &mut Client,
    path: &Path,
    name: &str,
    announcement: Option<&Announcement>,
    unknown_since: Option<Timestamp>,
    alert: Option<(&Alert, &[String])>,
) -> Result<(), Error> {
    let e = pg(path);
    let tx = conn.transaction().await.map_err(&e)?;
    announce_in(&tx, path, name, announcement, unknown_since, alert).await?;
    tx.commit().await.map_err(&e)
}

pub(crate) async fn announce_all(
    conn: &mut Client,
    path: &Path,
    decisions: &[crate::Decision],
) -> Result<(), Error> {
    let e = pg(path);
    let tx = conn.transaction().await.map_err(&e)?;
    for d in decisions {
        announce_in(
            &tx,
            path,
            &d.token_name,
            d.announcement.as_ref(),
            d.unknown_since,
            d.alert.as_ref().map(|(a, r)| (a, r.as_slice())),
        )
        .await?;
    }
    tx.commit().await.map_err(&e)
}

async fn announce_in(
    tx: &tokio_postgres::Transaction<'_>,
    path: &Path,
    name: &str,
    announcement: Option<&Announcement>,
    unknown_since: Option<Timestamp>,
    alert: Option<(&Alert, &[String])>,
) -> Result<(), Error> {
    let e = pg(path);
    if let Some((alert, routes)) = alert {
        insert_alert(tx, path, alert, routes).await?;
    }
    match announcement {
        Some(a) => upsert_announcement(tx, path, name, a).await?,
        None => {
            tx.execute(
                "INSERT INTO announced (token_name) VALUES ($1) ON CONFLICT (token_name) DO NOTHING",
                &[&name],
            )
            .await
            .map_err(&e)?;
        }
    }
    tx.execute(
        "UPDATE announced SET unknown_since = $2 WHERE token_name = $1",
        &[&name, &unknown_since.map(|t| t.as_second())],
    )
    .await
    .map_err(&e)?;
    Ok(())
}

pub(crate) async fn record_alert(
    conn: &mut Client,
    path: &Path,
    alert: &Alert,
    routes: &[String],
) -> Result<(), Error> {
    let e = pg(path);
    let tx = conn.transaction().await.map_err(&e)?;
    let time = alert.time.as_second();
    if !insert_alert(&tx, path, alert, routes).await? {
        return tx.commit().await.map_err(&e);
    }
    let current: Option<Option<String>> = tx
        .query_opt(
            "SELECT state FROM announced WHERE token_name = $1",
            &[&alert.token_name],
        )
        .await
        .map_err(&e)?
        .map(|r| get(&r, 0, path))
        .transpose()?;
    if current.flatten().as_deref() == Some(alert.state.as_str()) {
        tx.execute(
            "UPDATE announced SET last_reminder_at = $2, reminders = reminders + 1
             WHERE token_name = $1",
            &[&alert.token_name, &time],
        )
        .await
        .map_err(&e)?;
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
        )
        .await?;
    }
    tx.commit().await.map_err(&e)
}

const DELIVERY_COLS: &str = "d.route, d.status, d.attempts, d.next_attempt_at, d.last_error, \
    a.id, a.token_name, a.state, a.previous_state, a.message, a.fix, a.created_at";

fn delivery_from_row(row: &Row, path: &Path) -> Result<Delivery, Error> {
    let status: String = get(row, 1, path)?;
    let attempts: i32 = get(row, 2, path)?;
    Ok(Delivery {
        route: get(row, 0, path)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt(path, "deliveries.status"))?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt(path, "deliveries.attempts"))?,
        next_attempt_at: opt_ts(path, "deliveries.next_attempt_at", get(row, 3, path)?)?,
        last_error: get(row, 4, path)?,
        alert: Alert {
            id: get(row, 5, path)?,
            token_name: get(row, 6, path)?,
            state: get(row, 7, path)?,
            previous_state: get(row, 8, path)?,
            message: get(row, 9, path)?,
            fix: get(row, 10, path)?,
            time: ts(path, "alerts.created_at", get(row, 11, path)?)?,
        },
    })
}

pub(crate) async fn due_deliveries(
    conn: &mut Client,
    path: &Path,
    now: Timestamp,
    limit: u32,
) -> Result<Vec<Delivery>, Error> {
    let rows = conn
        .query(
            &format!(
                "SELECT {DELIVERY_COLS} FROM deliveries d JOIN alerts a ON a.id = d.alert_id
                 WHERE d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= $1
                 ORDER BY d.next_attempt_at, a.created_at, d.alert_id, d.route
                 LIMIT $2"
            ),
            &[&now.as_second(), &i64::from(limit)],
        )
        .await
        .map_err(pg(path))?;
    rows.iter().map(|r| delivery_from_row(r, path)).collect()
}

pub(crate) async fn deliveries(
    conn: &mut Client,
    path: &Path,
    alert_id: &str,
) -> Result<Vec<Delivery>, Error> {
    let rows = conn
        .query(
            &format!(
                "SELECT {DELIVERY_COLS} FROM deliveries d JOIN alerts a ON a.id = d.alert_id
                 WHERE d.alert_id = $1 ORDER BY d.route"
            ),
            &[&alert_id],
        )
        .await
        .map_err(pg(path))?;
    rows.iter().map(|r| delivery_from_row(r, path)).collect()
}

/// How one attempt at a delivery ended.
async fn settle(
    conn: &impl tokio_postgres::GenericClient,
    path: &Path,
    alert_id: &str,
    route: &str,
    attempt: Attempt<'_>,
) -> Result<(), Error> {
    let n = conn
        .execute(
            "UPDATE deliveries SET status = $3, attempts = attempts + 1, next_attempt_at = $4,
                last_error = $5, updated_at = $6
             WHERE alert_id = $1 AND route = $2",
            &[
                &alert_id,
                &route,
                &attempt.status.as_str(),
                &attempt.next.map(|t| t.as_second()),
                &attempt.error,
                &attempt.at.as_second(),
            ],
        )
        .await
        .map_err(pg(path))?;
    if n == 0 {
        return Err(Error::UnknownDelivery {
            alert_id: alert_id.to_owned(),
            route: route.to_owned(),
        });
    }
    Ok(())
}

pub(crate) async fn settle_all(
    conn: &mut Client,
    path: &Path,
    route: &str,
    alert_ids: &[String],
    at: Timestamp,
    settlement: &crate::Settlement,
) -> Result<(), Error> {
    let e = pg(path);
    let tx = conn.transaction().await.map_err(&e)?;
    for id in alert_ids {
        let attempt = settlement.attempt(at);
        settle(&tx, path, id, route, attempt).await?;
    }
    tx.commit().await.map_err(&e)
}

pub(crate) async fn mark_delivered(
    conn: &mut Client,
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
    settle(conn, path, alert_id, route, attempt).await
}

pub(crate) async fn mark_failed(
    conn: &mut Client,
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
    settle(conn, path, alert_id, route, attempt).await
}

pub(crate) async fn route_health(
    conn: &mut Client,
    path: &Path,
) -> Result<Vec<RouteHealth>, Error> {
    let rows = conn
        .query(
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
            &[],
        )
        .await
        .map_err(pg(path))?;
    rows.iter()
        .map(|row| {
            Ok(RouteHealth {
                route: get(row, 0, path)?,
                pending: count(get(row, 1, path)?),
                delivered: count(get(row, 2, path)?),
                failed: count(get(row, 3, path)?),
                last_error: get(row, 4, path)?,
                last_at: opt_ts(path, "last_at", get(row, 5, path)?)?,
                failing_since: opt_ts(path, "failing_since", get(row, 6, path)?)?,
            })
        })
        .collect()
}

pub(crate) async fn record_event(conn: &mut Client, path: &Path, e: &Event) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO events (at, token_name, kind, detail) VALUES ($1, $2, $3, $4)",
        &[
            &e.at.as_second(),
            &e.token_name,
            &e.kind.as_str(),
            &e.detail,
        ],
    )
    .await
    .map_err(pg(path))?;
    Ok(())
}

pub(crate) async fn recent_events(
    conn: &mut Client,
    path: &Path,
    limit: u32,
) -> Result<Vec<Event>, Error> {
    let rows = conn
        .query(
            "SELECT at, token_name, kind, detail FROM events ORDER BY at DESC, id DESC LIMIT $1",
            &[&i64::from(limit)],
        )
        .await
        .map_err(pg(path))?;
    rows.iter()
        .map(|row| {
            let kind: String = get(row, 2, path)?;
            Ok(Event {
                at: ts(path, "events.at", get(row, 0, path)?)?,
                token_name: get(row, 1, path)?,
                kind: EventKind::parse(&kind).ok_or_else(|| corrupt(path, "events.kind"))?,
                detail: get(row, 3, path)?,
            })
        })
        .collect()
}

pub(crate) async fn claim(
    conn: &mut Client,
    path: &Path,
    key: &str,
    replica: &str,
    at: Timestamp,
) -> Result<bool, Error> {
    let inserted = conn
        .execute(
            "INSERT INTO claims (key, replica, claimed_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO NOTHING",
            &[&key, &replica, &at.as_second()],
        )
        .await
        .map_err(pg(path))?;
    Ok(inserted == 1)
}

pub(crate) async fn claim_done(
    conn: &mut Client,
    path: &Path,
    key: &str,
    at: Timestamp,
) -> Result<bool, Error> {
    let marked = conn
        .execute(
            "UPDATE claims SET done_at = $2 WHERE key = $1 AND done_at IS NULL",
            &[&key, &at.as_second()],
        )
        .await
        .map_err(pg(path))?;
    Ok(marked == 1)
}

pub(crate) async fn prune_claims(
    conn: &mut Client,
    path: &Path,
    cutoff: Timestamp,
) -> Result<u64, Error> {
    conn.execute(
        "DELETE FROM claims WHERE done_at IS NOT NULL AND done_at < $1",
        &[&cutoff.as_second()],
    )
    .await
    .map_err(pg(path))
}

pub(crate) async fn prune(
    conn: &mut Client,
    path: &Path,
    cutoff: Timestamp,
) -> Result<Pruned, Error> {
    let cutoff = cutoff.as_second();
    let e = pg(path);
    let tx = conn.transaction().await.map_err(&e)?;
    let checks = tx
        .execute(
            "DELETE FROM checks WHERE checked_at < $1
               AND id NOT IN (SELECT last_check_id FROM tokens WHERE last_check_id IS NOT NULL)",
            &[&cutoff],
        )
        .await
        .map_err(&e)?;
    let events = tx
        .execute("DELETE FROM events WHERE at < $1", &[&cutoff])
        .await
        .map_err(&e)?;
    let alerts = tx
        .execute(
            "DELETE FROM alerts WHERE created_at < $1
               AND id NOT IN (SELECT alert_id FROM announced WHERE alert_id IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM deliveries d
                               WHERE d.alert_id = alerts.id AND d.next_attempt_at IS NOT NULL)",
            &[&cutoff],
        )
        .await
        .map_err(&e)?;
    tx.commit().await.map_err(&e)?;
    Ok(Pruned {
        checks,
        events,
        alerts,
    })
}

/// tokio-postgres's TLS traits over tokio-rustls.
/// The advisory lock key the leader holds on its own session (ASCII "permlead").
pub const LEADER_LOCK: i64 = 0x7065_726d_6c65_6164;

/// One replica's side of the leader election: a session of its own (never the store's query
/// session, whose reconnects would drop the lock unseen), the lock on it, and the heartbeat row.
pub(crate) struct Election {
    db: Postgres,
    replica: String,
    lease: Duration,
    client: Option<Client>,
    leading: bool,
}

impl Election {
    pub(crate) fn new(db: Postgres, replica: String, lease: Duration) -> Self {
        Self {
            db,
            replica,
            lease,
            client: None,
            leading: false,
        }
    }

    /// Leads, stands by or takes over; see [`crate::Election::poll`].
    pub(crate) async fn poll(&mut self) -> Result<bool, Error> {
        match self.try_poll().await {
            Ok(leading) => {
                self.leading = leading;
                Ok(leading)
            }
            Err(e) => {
                // Dropping the session ends it on the server, and the lock with it: whoever takes
                // over next does not wait for a lease.
                self.leading = false;
                self.client = None;
                Err(e)
            }
        }
    }

    async fn try_poll(&mut self) -> Result<bool, Error> {
        let loc = self.db.location().to_path_buf();
        let e = pg(&loc);
        if self.client.as_ref().is_none_or(Client::is_closed) {
            if self.leading {
                // The session that held the lock is gone (ended by a standby, or the network):
                // this replica is fenced and must not act before it wins the lock again.
                self.client = None;
                self.leading = false;
                return Ok(false);
            }
            let client = self.db.connect().await?;
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS leader_heartbeat (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        replica TEXT NOT NULL,
                        pid INTEGER NOT NULL,
                        beat_at BIGINT NOT NULL
                    )",
                )
                .await
                .or_else(|err| {
                    // Two replicas creating it at once: one wins, the other sees it exists.
                    if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                        Ok(())
                    } else {
                        Err(err)
                    }
                })
                .map_err(&e)?;
            self.client = Some(client);
        }
        let Some(client) = self.client.as_ref() else {
            return Err(Error::Worker);
        };
        if self.leading {
            self.beat(client).await?;
            return Ok(true);
        }
        if !self.try_lock(client).await? {
            let lease = i64::try_from(self.lease.as_secs()).unwrap_or(i64::MAX);
            // The server's clock on both sides: replicas' clocks may disagree.
            let stale = client
                .query_opt(
                    "SELECT pid FROM leader_heartbeat WHERE id = 1 \
                     AND beat_at < EXTRACT(EPOCH FROM clock_timestamp())::BIGINT - $1",
                    &[&lease],
                )
                .await
                .map_err(&e)?;
            let Some(row) = stale else { return Ok(false) };
            let pid: i32 = row.get(0);
            let (class, object) = lock_ids(LEADER_LOCK);
            // Only a session that holds the leader lock is ended: a pid the row names may since
            // have been given to another session.
            let ended = client
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
                     AND granted AND pid = $1 AND classid::BIGINT = $2 AND objid::BIGINT = $3 \
                     AND objsubid = 1",
                    &[&pid, &class, &object],
                )
                .await
                .map_err(&e)?;
            if ended.is_empty() {
                return Ok(false);
            }
            // The lock goes when that backend has exited; the next poll takes it if this one
            // cannot yet.
            if !self.try_lock(client).await? {
                return Ok(false);
            }
        }
        self.beat(client).await?;
        Ok(true)
    }

    /// Inserts the claim on the lock's session, only while that session holds the lock; see
    /// [`crate::Election::claim`].
    pub(crate) async fn claim(&mut self, key: &str, at: Timestamp) -> Result<bool, Error> {
        let client = match self.client.as_ref() {
            Some(client) if self.leading && !client.is_closed() => client,
            _ => return Ok(false),
        };
        let (class, object) = lock_ids(LEADER_LOCK);
        let inserted = client
            .execute(
                "INSERT INTO claims (key, replica, claimed_at) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM pg_locks \
                   WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() \
                   AND classid::BIGINT = $4 AND objid::BIGINT = $5 AND objsubid = 1) \
                 ON CONFLICT (key) DO NOTHING",
                &[&key, &self.replica, &at.as_second(), &class, &object],
            )
            .await;
        match inserted {
            Ok(n) => Ok(n == 1),
            Err(err) => {
                // The lock's session failed: fenced, as a failed heartbeat is.
                self.leading = false;
                self.client = None;
                Err(pg(self.db.location())(err))
            }
        }
    }

    async fn try_lock(&self, client: &Client) -> Result<bool, Error> {
        let loc = self.db.location();
        Ok(client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            .await
            .map_err(pg(loc))?
            .get(0))
    }

    /// Writes the heartbeat on the lock's session: it fails once that session is gone.
    async fn beat(&self, client: &Client) -> Result<(), Error> {
        let loc = self.db.location();
        client
            .execute(
                "INSERT INTO leader_heartbeat (id, replica, pid, beat_at) \
                 VALUES (1, $1, pg_backend_pid(), EXTRACT(EPOCH FROM clock_timestamp())::BIGINT) \
                 ON CONFLICT (id) DO UPDATE SET replica = EXCLUDED.replica, pid = EXCLUDED.pid, \
                 beat_at = EXCLUDED.beat_at",
                &[&self.replica],
            )
            .await
            .map_err(pg(loc))?;
        Ok(())
    }
}

/// How `pg_locks` shows a bigint advisory key: its high and low 32 bits.
fn lock_ids(key: i64) -> (i64, i64) {
    let key = key as u64;
    ((key >> 32) as i64, (key & 0xffff_ffff) as i64)
}

mod tls {
    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
    use tokio_rustls::TlsConnector;

    #[derive(Clone)]
    pub(super) struct MakeRustls(Arc<rustls::ClientConfig>);

    impl MakeRustls {
        pub(super) fn new(config: rustls::ClientConfig) -> Self {
            Self(Arc::new(config))
        }
    }

    pub(super) struct Connect {
        config: Arc<rustls::ClientConfig>,
        host: String,
    }

    impl<S> MakeTlsConnect<S> for MakeRustls
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        type Stream = Stream<S>;
        type TlsConnect = Connect;
        type Error = io::Error;

        fn make_tls_connect(&mut self, host: &str) -> io::Result<Connect> {
            Ok(Connect {
                config: Arc::clone(&self.0),
                host: host.to_owned(),
            })
        }
    }

    type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    impl<S> TlsConnect<S> for Connect
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        type Stream = Stream<S>;
        type Error = io::Error;
        type Future = Handshake<S>;

        fn connect(self, stream: S) -> Handshake<S> {
            Box::pin(async move {
                let name = ServerName::try_from(self.host)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let stream = TlsConnector::from(self.config)
                    .connect(name, stream)
                    .await?;
                Ok(Stream(stream))
            })
        }
    }

    pub(super) struct Stream<S>(tokio_rustls::client::TlsStream<S>);

    impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
        fn channel_binding(&self) -> ChannelBinding {
            let (_, session) = self.0.get_ref();
            session
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| end_point(cert.as_ref()))
                .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
        }
    }

    /// RFC 5929 `tls-server-end-point`: the certificate hashed with its signature's hash (SHA-1
    /// and MD5 taken up to SHA-256); `None` for a signature without one (Ed25519, RSA-PSS).
    pub(super) fn end_point(cert: &[u8]) -> Option<Vec<u8>> {
        const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
        const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
        let oid = signature_algorithm(cert)?;
        let algorithm = match oid.split_last()? {
            (0x04 | 0x05 | 0x0b, prefix) if prefix == RSA => &ring::digest::SHA256,
            (0x0c, prefix) if prefix == RSA => &ring::digest::SHA384,
            (0x0d, prefix) if prefix == RSA => &ring::digest::SHA512,
            (0x02, prefix) if prefix == ECDSA => &ring::digest::SHA256,
            (0x03, prefix) if prefix == ECDSA => &ring::digest::SHA384,
            (0x04, prefix) if prefix == ECDSA => &ring::digest::SHA512,
            _ => return None,
        };
        Some(ring::digest::digest(algorithm, cert).as_ref().to_vec())
    }

    /// The OID of `Certificate.signatureAlgorithm` (DER: SEQUENCE { tbs, SEQUENCE { OID, … }, … }).
    fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
        let (0x30, body, _) = tlv(cert)? else {
            return None;
        };
        let (0x30, _tbs, rest) = tlv(body)? else {
            return None;
        };
        let (0x30, algorithm, _) = tlv(rest)? else {
            return None;
        };
        let (0x06, oid, _) = tlv(algorithm)? else {
            return None;
        };
        Some(oid)
    }

    /// One DER tag, its content and what follows.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_a_password_is_refused_without_repeating_it() {
        for url in [
            "postgres://watch:PERMATOKENTEST-pw@db.example/permatoken",
            "postgres://watch@db.example/permatoken?password=PERMATOKENTEST-pw",
        ] {
            let err = parse_url(url).err().expect("refused");
            let shown = err.to_string();
            assert!(!shown.contains("PERMATOKENTEST"), "{shown}");
            assert!(shown.contains("PGPASSWORD"), "{shown}");
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_and_the_location_has_no_query() {
        let p = parse_url(
            "postgres://watch@db.example:6432/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(p.ssl_mode, SslMode::VerifyFull);
        assert_eq!(p.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(p.location, "postgres://watch@db.example:6432/fleet");
        assert_eq!(p.config.get_application_name(), Some("x"));
        assert_eq!(p.config.get_ports(), &[6432]);
        let err = parse_url("postgres://h/db?sslmode=verify-ca")
            .err()
            .unwrap();
        assert!(err.to_string().contains("verify-full"), "{err}");
        assert!(parse_url("mysql://h/db").is_err());
        let err = parse_url("postgres://h/db?sslmode=require&sslrootcert=/etc/ca.pem")
            .err()
            .unwrap();
        assert!(err.to_string().contains("sslmode=verify-full"), "{err}");
    }

    #[test]
    fn passfile_lines_match_with_wildcards_and_escapes() {
        let text = "# comment\nother:5432:*:watch:nope\n127.0.0.1:*:fleet:watch:se\\:cr\\\\et\n";
        let got = passfile_lookup(text, ["127.0.0.1", "5432", "fleet", "watch"]).unwrap();
        assert_eq!(got.as_str(), "se:cr\\et");
        assert!(passfile_lookup(text, ["127.0.0.1", "5432", "other", "watch"]).is_none());
    }

    #[test]
    fn the_channel_binding_hashes_the_certificate_with_its_signatures_hash() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().as_ref();
        // rcgen signs with ECDSA P-256 and SHA-256 by default.
        assert_eq!(
            tls::end_point(der).unwrap(),
            ring::digest::digest(&ring::digest::SHA256, der).as_ref()
        );
        assert_eq!(tls::end_point(&der[..der.len() / 2]), None);
        assert_eq!(tls::end_point(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(tls::end_point(&[]), None);
    }

    #[test]
    fn debug_never_shows_the_password() {
        let options = PgOptions {
            env_password: Some(Zeroizing::new("PERMATOKENTEST-pw".to_owned())),
            ..PgOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("PERMATOKENTEST"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
