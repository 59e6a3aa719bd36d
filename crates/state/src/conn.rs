//! What every query is written over, so that each is written once for both backends.
//!
//! A [`Session`] runs a statement ([`Sql`], written once with PostgreSQL's `$N` placeholders) with
//! [`Arg`]s, and hands each row over as a [`Row`], whose getters hide how the two store a column:
//! a flag is SQLite's INTEGER 0/1 and PostgreSQL's BOOLEAN, an INTEGER column is `i64` in SQLite
//! and `i32` in PostgreSQL. A [`Conn`] is a session that also opens transactions and does what
//! truly differs: the two bulk writes of a round (one `UNNEST` statement in PostgreSQL, a prepared
//! statement in a loop in SQLite, each the fastest its backend has), and the lock migrations take
//! (each backend keeps out a second migrating replica its own way).
//!
//! The traits are `async`: PostgreSQL's session waits on the network. SQLite's never waits
//! (rusqlite blocks), so its futures are ready at their first poll: the SQLite backend polls them
//! once on the blocking thread that holds its connection (`sqlite::Sqlite::run`). One body per
//! query, and no SQLite call on an async worker thread.
//!
//! Must never: put a value into SQL text (every value is an [`Arg`], bound by the driver), or
//! panic on a value read back (a getter returns the backend's error instead).

use std::path::Path;
use std::sync::OnceLock;

use jiff::Timestamp;

use crate::{CheckRecord, Error, Status, TokenKey, TokenRecord};

/// One SQL statement, written once with `$N` placeholders.
///
/// SQLite reads `$1` as a *named* parameter, numbered by its first appearance, so `… = $2 WHERE
/// … = $1` would bind the values the wrong way round; its text is rewritten to `?N` (numbered by
/// N) once, at its first use, and kept.
pub(crate) struct Sql {
    postgres: &'static str,
    sqlite_source: &'static str,
    sqlite: OnceLock<Box<str>>,
}

impl Sql {
    /// A statement both dialects read alike.
    pub(crate) const fn new(text: &'static str) -> Self {
        Self::dialects(text, text)
    }

    /// A statement whose text differs between the dialects (a list parameter: see
    /// [`Arg::Texts`]); both still written with `$N`.
    pub(crate) const fn dialects(postgres: &'static str, sqlite: &'static str) -> Self {
        Self {
            postgres,
            sqlite_source: sqlite,
            sqlite: OnceLock::new(),
        }
    }

    pub(crate) fn postgres(&self) -> &str {
        self.postgres
    }

    pub(crate) fn sqlite(&self) -> &str {
        self.sqlite
            .get_or_init(|| numbered(self.sqlite_source).into_boxed_str())
    }
}

/// `$N` as `?N`. Only a `$` before a digit is a placeholder (no statement here has a `$` in a
/// string literal).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let placeholder = c == '$' && chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if placeholder { '?' } else { c });
    }
    out
}

/// A value bound to a placeholder: every value the shared queries write is one of these.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    /// BIGINT: times as unix seconds, counts, limits.
    Int(Option<i64>),
    /// TEXT.
    Text(Option<&'a str>),
    /// A list of texts to match with the statement's dialect form: PostgreSQL binds a `text[]`
    /// (`= ANY($N)`); SQLite, which has no arrays, binds the list as a JSON array (`IN (SELECT
    /// value FROM json_each($N))`), as lists are stored.
    Texts(&'a [String]),
}

/// The [`Arg`]s of a statement, from the values as the records hold them.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        &[$($crate::conn::Arg::from($value)),*]
    };
}
pub(crate) use args;

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Self::Int(Some(i64::from(v)))
    }
}

impl From<Timestamp> for Arg<'_> {
    fn from(t: Timestamp) -> Self {
        Self::Int(Some(t.as_second()))
    }
}

impl From<Option<Timestamp>> for Arg<'_> {
    fn from(t: Option<Timestamp>) -> Self {
        Self::Int(t.map(|t| t.as_second()))
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Self::Text(Some(s))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(s: &'a String) -> Self {
        Self::Text(Some(s))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(s: Option<&'a str>) -> Self {
        Self::Text(s)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(s: &'a Option<String>) -> Self {
        Self::Text(s.as_deref())
    }
}

impl<'a> From<&'a [String]> for Arg<'a> {
    fn from(list: &'a [String]) -> Self {
        Self::Texts(list)
    }
}

/// One row being read. The getters return the backend's own error for a NULL where a value must
/// be, or a column of another type; the provided ones turn a stored value into a record's field,
/// or [`Error::Corrupt`] naming the column.
pub(crate) trait Row {
    /// Where the state lives, for errors.
    fn location(&self) -> &Path;
    fn text(&self, i: usize) -> Result<&str, Error>;
    fn opt_text(&self, i: usize) -> Result<Option<&str>, Error>;
    fn int(&self, i: usize) -> Result<i64, Error>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Error>;
    fn flag(&self, i: usize) -> Result<bool, Error>;
    fn opt_flag(&self, i: usize) -> Result<Option<bool>, Error>;

    fn string(&self, i: usize) -> Result<String, Error> {
        self.text(i).map(str::to_owned)
    }

    fn opt_string(&self, i: usize) -> Result<Option<String>, Error> {
        Ok(self.opt_text(i)?.map(str::to_owned))
    }

    /// A count: never below zero.
    fn count(&self, i: usize) -> Result<u64, Error> {
        Ok(self.int(i)?.max(0) as u64)
    }

    fn time(&self, i: usize, what: &'static str) -> Result<Timestamp, Error> {
        crate::rows::ts(self.location(), what, self.int(i)?)
    }

    fn opt_time(&self, i: usize, what: &'static str) -> Result<Option<Timestamp>, Error> {
        crate::rows::opt_ts(self.location(), what, self.opt_int(i)?)
    }

    fn key(&self, i: usize, what: &'static str) -> Result<TokenKey, Error> {
        TokenKey::parse(self.text(i)?).map_err(|_| crate::rows::corrupt(self.location(), what))
    }

    fn status(&self, i: usize, what: &'static str) -> Result<Status, Error> {
        Status::parse(self.text(i)?).ok_or_else(|| crate::rows::corrupt(self.location(), what))
    }

    /// A JSON array of strings, as lists are stored.
    fn list(&self, i: usize, what: &'static str) -> Result<Vec<String>, Error> {
        crate::rows::list(self.location(), what, self.text(i)?)
    }
}

/// Where statements run: the store's connection, in a transaction or not. A query that needs
/// nothing more takes a `Session`; one that opens a transaction takes a [`Conn`].
pub(crate) trait Session {
    /// Where the state lives, for errors.
    fn location(&self) -> &Path;

    /// Runs a statement; how many rows it changed.
    async fn execute(&mut self, sql: &Sql, args: &[Arg<'_>]) -> Result<u64, Error>;

    /// Runs statements without arguments (a migration).
    async fn batch(&mut self, sql: &str) -> Result<(), Error>;

    /// Hands each row of a query to `each`, in order.
    async fn query(
        &mut self,
        sql: &Sql,
        args: &[Arg<'_>],
        each: impl FnMut(&dyn Row) -> Result<(), Error>,
    ) -> Result<(), Error>;

    /// Each row of a query, decoded, in a vector allocated once for them all when `count` (a
    /// statement giving their number) is given: grown by doubling, a fleet's rows would leave the
    /// larger half of a copy behind. PostgreSQL has every row in hand before decoding the first,
    /// so it sizes from them and need not ask.
    async fn collect<T>(
        &mut self,
        sql: &Sql,
        args: &[Arg<'_>],
        count: Option<&Sql>,
        decode: impl FnMut(&dyn Row) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error>;

    /// The first row of a query, decoded, if there is one.
    async fn query_opt<T>(
        &mut self,
        sql: &Sql,
        args: &[Arg<'_>],
        mut decode: impl FnMut(&dyn Row) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        let mut first = None;
        self.query(sql, args, |row| {
            if first.is_none() {
                first = Some(decode(row)?);
            }
            Ok(())
        })
        .await?;
        Ok(first)
    }

    /// The row of a query that always gives one (an aggregate); `what` names it should it not.
    async fn query_one<T>(
        &mut self,
        sql: &Sql,
        args: &[Arg<'_>],
        what: &'static str,
        decode: impl FnMut(&dyn Row) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let row = self.query_opt(sql, args, decode).await?;
        row.ok_or_else(|| crate::rows::corrupt(self.location(), what))
    }
}

/// A connection: a [`Session`] that opens transactions, and what each backend does its own way.
///
/// A transaction is a state of the connection, not a value borrowed from it: a borrowed
/// transaction type (a generic associated type) held across an `.await` keeps rustc from proving
/// the caller's future `Send`, which watch needs. While one is open, dropping the connection (a
/// caller that stopped waiting, a panic) rolls it back: SQLite at once, PostgreSQL by ending the
/// session (the server rolls back; the next call opens a new one).
pub(crate) trait Conn: Session {
    async fn begin(&mut self) -> Result<(), Error>;

    /// [`Conn::begin`], holding the backend's migration lock until the end of the transaction, so
    /// that replicas starting together apply each migration once.
    async fn begin_migration(&mut self) -> Result<(), Error>;

    async fn commit(&mut self) -> Result<(), Error>;

    async fn rollback(&mut self) -> Result<(), Error>;

    /// Ends the open transaction as `done` says: committed if it is `Ok`, rolled back if not (the
    /// error is `done`'s; a failed rollback is left to the drop).
    async fn finish<T>(&mut self, done: Result<T, Error>) -> Result<T, Error> {
        match done {
            Ok(value) => {
                self.commit().await?;
                Ok(value)
            }
            Err(e) => {
                let _ = self.rollback().await;
                Err(e)
            }
        }
    }

    /// [`crate::Store::upsert_tokens`] in one transaction: the same rows whichever way.
    async fn upsert_tokens(&mut self, tokens: &[TokenRecord]) -> Result<(), Error>;

    /// [`crate::Store::record_checks`] in one transaction: each check inserted, and each token's
    /// newest among them made its latest unless it already has a newer one (ties go to the later
    /// check).
    async fn record_checks(&mut self, checks: &[CheckRecord]) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_sqlite_and_nothing_else_moves() {
        let sql = Sql::new("UPDATE a SET b = $2, c = '$x' WHERE d = $10 AND e = $1");
        assert_eq!(
            sql.sqlite(),
            "UPDATE a SET b = ?2, c = '$x' WHERE d = ?10 AND e = ?1"
        );
        assert_eq!(
            sql.postgres(),
            "UPDATE a SET b = $2, c = '$x' WHERE d = $10 AND e = $1"
        );
        // Kept: the same text each time.
        assert!(std::ptr::eq(sql.sqlite(), sql.sqlite()));
    }
}
