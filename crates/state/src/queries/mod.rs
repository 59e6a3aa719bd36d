//! Every query both backends run, written once over [`Session`] and [`Conn`]: the statement, its
//! arguments and how its rows are read. A backend only connects, migrates with its own files and
//! does the two bulk writes (see [`crate::conn`]); [`crate::Store`] runs these on whichever it has.
//!
//! The SQL keeps to what both dialects read alike: integer unix seconds for times, TEXT ids, JSON
//! arrays in TEXT, `ON CONFLICT … DO UPDATE` upserts, window functions. Writes that belong together
//! are one transaction, so a crash leaves all of them or none.
//!
//! Must never: write a secret (a token, an app secret, a route's URL: none is ever given), or a
//! text the caller has not cleaned (the [`crate::Store`] methods clean what comes from outside).

mod alerts;
mod checks;

pub(crate) use alerts::*;
pub(crate) use checks::*;

use jiff::Timestamp;

use crate::Error;
use crate::conn::{Conn, Session, Sql, args};

static CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    applied_at BIGINT NOT NULL
)";
static SCHEMA_FOUND: Sql = Sql::new("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
static SCHEMA_APPLIED: Sql =
    Sql::new("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)");
static MAX_VERSION: Sql = Sql::new("SELECT MAX(version) FROM schema_migrations");

/// Applies the backend's `migrations` not applied yet, in one transaction under its migration
/// lock: the schema's version is the number applied. A schema newer than this build knows is
/// refused ([`Error::NewerSchema`]) before anything is written.
pub(crate) async fn migrate(c: &mut impl Conn, migrations: &[&str]) -> Result<(), Error> {
    c.begin_migration().await?;
    let done = async {
        let known = migrations.len() as i64;
        c.batch(CREATE_SCHEMA_MIGRATIONS).await?;
        let found = c
            .query_one(&SCHEMA_FOUND, &[], "schema_migrations.version", |r| {
                r.int(0)
            })
            .await?;
        if found > known {
            return Err(Error::NewerSchema {
                path: c.location().to_path_buf(),
                found,
                known,
            });
        }
        let now = Timestamp::now();
        for (version, sql) in (1_i64..).zip(migrations).skip(found as usize) {
            c.batch(sql).await?;
            c.execute(&SCHEMA_APPLIED, args![version, now]).await?;
        }
        Ok(())
    }
    .await;
    c.finish(done).await
}

pub(crate) async fn schema_version(c: &mut impl Session) -> Result<i64, Error> {
    c.query_one(&MAX_VERSION, &[], "schema_migrations.version", |r| r.int(0))
        .await
}
