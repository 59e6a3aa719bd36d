//! The state against real SQLite files in temporary folders and real PostgreSQL clusters started
//! for each test (`pg_cluster`). A scenario is written once, as `async fn scenario(place: Place)`,
//! and [`on_both_backends!`] runs it against SQLite always and against PostgreSQL where `initdb`
//! is found (under `CI=true` a missing PostgreSQL fails the test): `records` and `lifecycle`. What
//! only one backend has stays in `sqlite` (the file lock, file modes, a file that is not a
//! database) and `postgres` (URLs, passwords, TLS, sessions, replicas and the election).

mod lifecycle;
mod pg_cluster;
mod postgres;
mod records;
mod sqlite;

use std::path::PathBuf;

use jiff::Timestamp;
use permatoken_state::{CheckRecord, Error, PgOptions, Role, Status, Store, TokenKey, TokenRecord};

use crate::pg_cluster::{PgCluster, TRUSTED};

/// Each scenario named, run against both backends: `scenario` becomes the tests
/// `scenario::sqlite` and `scenario::postgres`. A scenario left out of the list is dead code,
/// which the lints refuse.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn sqlite() {
                super::$scenario(crate::Place::sqlite()).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(place) = crate::Place::postgres() {
                    super::$scenario(place).await;
                }
            }
        }
    )*};
}
pub(crate) use on_both_backends;

/// Where a test's state lives: an SQLite file in a temporary folder, or the database `state` (owned
/// by the `trusted` role) in a throwaway PostgreSQL cluster.
pub(crate) enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(PgCluster),
}

impl Place {
    pub(crate) fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    /// `None` (said) where PostgreSQL is not available.
    pub(crate) fn postgres() -> Option<Self> {
        let pg = PgCluster::start()?;
        pg.create_database("state", TRUSTED);
        Some(Self::Postgres(pg))
    }

    pub(crate) async fn open(&self) -> Store {
        self.try_open().await.unwrap()
    }

    pub(crate) async fn try_open(&self) -> Result<Store, Error> {
        match self {
            Self::Sqlite(dir) => Store::open(dir.path().join("state.db")).await,
            Self::Postgres(pg) => {
                let url = pg.url(TRUSTED, "state", "?sslmode=disable");
                Store::open_postgres(&url, PgOptions::default()).await
            }
        }
    }

    /// A second store on the same state, as a second replica sees it: PostgreSQL's opens its own
    /// session; SQLite's file is held by one store at a time, so it is a clone.
    pub(crate) async fn another(&self, store: &Store) -> Store {
        match self {
            Self::Sqlite(_) => store.clone(),
            Self::Postgres(_) => self.open().await,
        }
    }

    /// What [`Store::location`] says.
    pub(crate) fn location(&self) -> PathBuf {
        match self {
            Self::Sqlite(dir) => dir.path().join("state.db"),
            Self::Postgres(pg) => {
                format!("postgres://{TRUSTED}@127.0.0.1:{}/state", pg.port).into()
            }
        }
    }

    /// Runs `sql` on the state behind the store's back, as a person editing it would (open or
    /// not: SQLite's lock keeps out other stores, not other connections).
    pub(crate) fn raw(&self, sql: &str) {
        match self {
            Self::Sqlite(dir) => rusqlite::Connection::open(dir.path().join("state.db"))
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Self::Postgres(pg) => {
                pg.psql("state", &format!("SET ROLE {TRUSTED};\n{sql}"));
            }
        }
    }

    /// The one value `sql` selects, as text.
    pub(crate) fn raw_value(&self, sql: &str) -> String {
        match self {
            Self::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
                conn.query_row(sql, [], |r| r.get::<_, String>(0)).unwrap()
            }
            Self::Postgres(pg) => pg.psql("state", sql).trim().to_owned(),
        }
    }

    /// The backend's migrations 1 to 3 (before identities), as an older build applied them.
    pub(crate) fn migrations_to_3(&self) -> [&'static str; 3] {
        match self {
            Self::Sqlite(_) => [
                include_str!("../../migrations/sqlite/0001_init.sql"),
                include_str!("../../migrations/sqlite/0002_reminders.sql"),
                include_str!("../../migrations/sqlite/0003_claims.sql"),
            ],
            Self::Postgres(_) => [
                include_str!("../../migrations/postgres/0001_init.sql"),
                include_str!("../../migrations/postgres/0002_reminders.sql"),
                include_str!("../../migrations/postgres/0003_claims.sql"),
            ],
        }
    }

    /// Whether `err` is the database's own refusal: [`Error::Database`] from SQLite,
    /// [`Error::Postgres`] from PostgreSQL.
    pub(crate) fn refused(&self, err: &Error) -> bool {
        match self {
            Self::Sqlite(_) => matches!(err, Error::Database { .. }),
            Self::Postgres(_) => matches!(err, Error::Postgres { .. }),
        }
    }

    /// Everything the state keeps, by name, where a secret could be found: SQLite's files (the
    /// database, its WAL and shared memory), a `pg_dump` of PostgreSQL's. With it, the name of
    /// the part that holds what was just written (SQLite's WAL until a checkpoint).
    pub(crate) fn stored(&self) -> (Vec<(String, Vec<u8>)>, &'static str) {
        match self {
            Self::Sqlite(dir) => {
                let parts = ["state.db", "state.db-wal", "state.db-shm"]
                    .into_iter()
                    .filter_map(|f| Some((f.to_owned(), std::fs::read(dir.path().join(f)).ok()?)))
                    .collect();
                (parts, "state.db-wal")
            }
            Self::Postgres(pg) => (
                vec![("pg_dump".to_owned(), pg.dump("state").into_bytes())],
                "pg_dump",
            ),
        }
    }
}

/// The SHA-256 of `token`, as watch computes it before calling the store.
pub(crate) fn key_of(token: &str) -> TokenKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    TokenKey::parse(&hex).unwrap()
}

pub(crate) fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_790_000_000 + secs).unwrap()
}

pub(crate) fn token(name: &str, key: &TokenKey, seen: i64) -> TokenRecord {
    TokenRecord {
        key: key.clone(),
        name: name.to_owned(),
        role: Role::Primary,
        fingerprint: "EAAP…sZD sha256:1a2b3c4d".to_owned(),
        source_path: "/srv/orders/.env".to_owned(),
        source_key: Some("WHATSAPP_ACCESS_TOKEN".to_owned()),
        first_seen: at(seen),
        last_seen: at(seen),
        identity: None,
    }
}

pub(crate) fn check(key: &TokenKey, when: i64, status: Status) -> CheckRecord {
    CheckRecord {
        key: key.clone(),
        checked_at: at(when),
        status,
        alert_state: "ok".to_owned(),
        valid: Some(true),
        expires_at: Some(at(when + 86_400 * 30)),
        never_expires: false,
        kind: Some("system_user".to_owned()),
        missing_scopes: vec!["whatsapp_business_management".to_owned()],
        finding_codes: vec!["expires_soon".to_owned(), "missing_scope".to_owned()],
        elapsed_ms: 42,
    }
}
