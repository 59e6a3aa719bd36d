//! Tokens and their checks: what the page, the metrics and a restarted watch read back. The two
//! bulk writes (a round's tokens and checks) are the backends' own: see [`crate::conn::Conn`].
//!
//! Must never: read more than the caller asked for. A fleet holds months of checks for thousands
//! of tokens, so a page's charts are cut in SQL (a window function), and the page's latest
//! statuses read only the columns it shows, into a vector sized once.

use jiff::Timestamp;

use crate::conn::{Session, Sql, args};
use crate::rows::{self, TOKEN_WIDTH, check_cols, token_cols};
use crate::{
    CheckRecord, Counts, Error, IdentityCheck, LatestCheck, LatestStatus, StatusPoint, TokenRecord,
};

static TOKENS: Sql = Sql::new(concat!(
    "SELECT ",
    token_cols!(),
    " FROM tokens t ORDER BY t.name, t.token_sha256"
));
static COUNT_TOKENS: Sql = Sql::new("SELECT COUNT(*) FROM tokens");
static FORGET_TOKENS: Sql = Sql::new("DELETE FROM tokens WHERE last_seen < $1");
static LATEST_CHECKS: Sql = Sql::new(concat!(
    "SELECT ",
    token_cols!(),
    ", ",
    check_cols!(),
    " FROM tokens t LEFT JOIN checks c ON c.id = t.last_check_id ORDER BY t.name, t.token_sha256"
));
static LATEST_STATUSES: Sql = Sql::new(
    "SELECT t.name, t.token_sha256, t.fingerprint, c.checked_at, c.status, c.valid,
        c.expires_at, c.never_expires, c.kind, c.missing_scopes
     FROM tokens t LEFT JOIN checks c ON c.id = t.last_check_id
     ORDER BY t.name, t.token_sha256",
);
/// A token's identity goes with its latest check only when that check saw it (same time); the
/// others are left out, so that `/me` is asked of them.
static IDENTITIES: Sql = Sql::new(
    "SELECT t.token_sha256, t.identity_id, t.identity_name, c.status, c.finding_codes
     FROM tokens t JOIN checks c ON c.id = t.last_check_id
     WHERE t.identity_id IS NOT NULL AND t.identity_at = c.checked_at ORDER BY t.token_sha256",
);
static HISTORY: Sql = Sql::new(concat!(
    "SELECT ",
    check_cols!(),
    " FROM checks c JOIN tokens t ON t.token_sha256 = c.token_sha256
     WHERE t.name = $1 AND c.checked_at >= $2 AND c.checked_at < $3
     ORDER BY c.checked_at, c.id"
));

/// The newest `$3` checks of each name with `$1 <= checked_at < $2` (and `$filter`), by name, each
/// name's oldest first: chosen in SQL with a window function, so that months of history are never
/// all brought out to be cut. Selects `r.tname` then the given columns of `checks c`.
macro_rules! newest_per_name {
    ($filter:literal, $($columns:tt)+) => {
        concat!(
            "WITH ranked AS (
                SELECT c.id AS cid, t.name AS tname, ROW_NUMBER() OVER (
                    PARTITION BY t.name ORDER BY c.checked_at DESC, c.id DESC) AS rn
                FROM checks c JOIN tokens t ON t.token_sha256 = c.token_sha256
                WHERE c.checked_at >= $1 AND c.checked_at < $2",
            $filter,
            ")
             SELECT r.tname, ",
            $($columns)+,
            " FROM ranked r JOIN checks c ON c.id = r.cid
             WHERE r.rn <= $3 ORDER BY r.tname, c.checked_at, c.id"
        )
    };
}
static HISTORIES: Sql = Sql::new(newest_per_name!("", check_cols!()));
static POINTS: Sql = Sql::new(newest_per_name!("", "c.checked_at, c.status"));
/// [`POINTS`] of only the names in `$4`, a list ([`crate::conn::Arg::Texts`]): one parameter
/// however many names.
static POINTS_OF: Sql = Sql::dialects(
    newest_per_name!(" AND t.name = ANY($4)", "c.checked_at, c.status"),
    newest_per_name!(
        " AND t.name IN (SELECT value FROM json_each($4))",
        "c.checked_at, c.status"
    ),
);
static COUNTS: Sql = Sql::new(
    "SELECT (SELECT COUNT(*) FROM tokens), (SELECT COUNT(*) FROM checks),
        (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM alerts),
        (SELECT COUNT(*) FROM deliveries WHERE next_attempt_at IS NOT NULL)",
);

pub(crate) async fn tokens(c: &mut impl Session) -> Result<Vec<TokenRecord>, Error> {
    c.collect(&TOKENS, &[], None, |r| rows::token(r, 0)).await
}

pub(crate) async fn forget_tokens(c: &mut impl Session, cutoff: Timestamp) -> Result<u64, Error> {
    c.execute(&FORGET_TOKENS, args![cutoff]).await
}

pub(crate) async fn latest_checks(c: &mut impl Session) -> Result<Vec<LatestCheck>, Error> {
    c.collect(&LATEST_CHECKS, &[], Some(&COUNT_TOKENS), |r| {
        let token = rows::token(r, 0)?;
        let check = match r.opt_text(TOKEN_WIDTH)? {
            Some(_) => Some(rows::check(r, TOKEN_WIDTH)?),
            None => None,
        };
        Ok(LatestCheck { token, check })
    })
    .await
}

pub(crate) async fn latest_statuses(c: &mut impl Session) -> Result<Vec<LatestStatus>, Error> {
    c.collect(&LATEST_STATUSES, &[], Some(&COUNT_TOKENS), |r| {
        Ok(LatestStatus {
            name: r.string(0)?,
            key: r.key(1, "tokens.token_sha256")?,
            fingerprint: r.string(2)?,
            check: rows::check_status(r, 3)?,
        })
    })
    .await
}

pub(crate) async fn identities(c: &mut impl Session) -> Result<Vec<IdentityCheck>, Error> {
    c.collect(&IDENTITIES, &[], None, rows::identity_check)
        .await
}

pub(crate) async fn history(
    c: &mut impl Session,
    name: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<CheckRecord>, Error> {
    c.collect(&HISTORY, args![name, from, to], None, |r| rows::check(r, 0))
        .await
}

pub(crate) async fn histories(
    c: &mut impl Session,
    from: Timestamp,
    to: Timestamp,
    per_name: u32,
) -> Result<Vec<(String, Vec<CheckRecord>)>, Error> {
    let mut out: Vec<(String, Vec<CheckRecord>)> = Vec::new();
    c.query(&HISTORIES, args![from, to, per_name], |r| {
        let check = rows::check(r, 1)?;
        let name = r.text(0)?;
        match out.last_mut() {
            Some((last, checks)) if last == name => checks.push(check),
            _ => out.push((name.to_owned(), vec![check])),
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

/// [`histories`] with only what a chart draws, of every name or only of `names`.
pub(crate) async fn history_points(
    c: &mut impl Session,
    names: Option<&[String]>,
    from: Timestamp,
    to: Timestamp,
    per_name: u32,
) -> Result<Vec<(String, Vec<StatusPoint>)>, Error> {
    let mut out = Vec::new();
    let add = |r: &dyn crate::conn::Row| rows::add_point(&mut out, r);
    match names {
        None => c.query(&POINTS, args![from, to, per_name], add).await?,
        Some(names) => {
            c.query(&POINTS_OF, args![from, to, per_name, names], add)
                .await?
        }
    }
    Ok(out)
}

pub(crate) async fn counts(c: &mut impl Session) -> Result<Counts, Error> {
    c.query_one(&COUNTS, &[], "counts", rows::counts).await
}
