//! How each record is read from a row, once for both backends: the columns a query selects for it
//! (as macros, so that statements are built with `concat!` at compile time) and the decoder that
//! reads them in that order through [`Row`]. Also what the two bulk writes share: the columns a
//! token and a check are written with, and how a field becomes a stored value.
//!
//! Must never: panic on a stored value, or let one through that this build would not write (an
//! unknown status, a time out of range, a malformed list): that is [`Error::Corrupt`], naming the
//! column.

use std::path::Path;

use jiff::Timestamp;

use crate::conn::Row;
use crate::{
    Alert, Announced, AnnouncedReason, Announcement, CheckRecord, CheckStatus, Counts, Delivery,
    DeliveryStatus, Error, Event, EventKind, IdentityCheck, Role, RouteHealth, StatusPoint,
    TokenIdentity, TokenRecord,
};

/// The columns of `tokens t` that [`token`] reads.
macro_rules! token_cols {
    () => {
        "t.token_sha256, t.name, t.role, t.backup_of, t.fingerprint, t.source_path, t.source_key, \
         t.first_seen, t.last_seen, t.identity_id, t.identity_name, t.identity_at"
    };
}
/// The columns of `checks c` that [`check`] reads.
macro_rules! check_cols {
    () => {
        "c.token_sha256, c.checked_at, c.status, c.alert_state, c.valid, c.expires_at, \
         c.never_expires, c.kind, c.missing_scopes, c.finding_codes, c.elapsed_ms"
    };
}
/// The columns of `deliveries d JOIN alerts a` that [`delivery`] reads.
macro_rules! delivery_cols {
    () => {
        "d.route, d.status, d.attempts, d.next_attempt_at, d.last_error, \
         a.id, a.token_name, a.state, a.previous_state, a.message, a.fix, a.created_at"
    };
}
/// The columns of `announced` that [`announced`] reads.
macro_rules! announced_cols {
    () => {
        "token_name, state, since, alert_id, last_reminder_at, unknown_since, reminders"
    };
}
/// A token's columns as both bulk writes insert them, in the order they bind them.
macro_rules! token_insert {
    () => {
        "INSERT INTO tokens (token_sha256, name, role, backup_of, fingerprint, source_path, \
         source_key, first_seen, last_seen, identity_id, identity_name, identity_at) "
    };
}
/// What writing a known token changes: everything but `first_seen`, and the identity only when
/// one is given (all three identity columns go together: a name may rightly be NULL).
macro_rules! token_update {
    () => {
        " ON CONFLICT (token_sha256) DO UPDATE SET name = excluded.name, \
         role = excluded.role, backup_of = excluded.backup_of, \
         fingerprint = excluded.fingerprint, source_path = excluded.source_path, \
         source_key = excluded.source_key, last_seen = excluded.last_seen, \
         identity_name = CASE WHEN excluded.identity_id IS NULL \
            THEN tokens.identity_name ELSE excluded.identity_name END, \
         identity_at = CASE WHEN excluded.identity_id IS NULL THEN tokens.identity_at \
            ELSE excluded.identity_at END, \
         identity_id = COALESCE(excluded.identity_id, tokens.identity_id)"
    };
}
/// A check's columns as both bulk writes insert them, in the order they bind them.
macro_rules! check_insert {
    () => {
        "INSERT INTO checks (token_sha256, checked_at, status, alert_state, valid, \
         expires_at, never_expires, kind, missing_scopes, finding_codes, elapsed_ms) "
    };
}
pub(crate) use {
    announced_cols, check_cols, check_insert, delivery_cols, token_cols, token_insert, token_update,
};

/// How many columns [`token_cols`] names: a check's columns follow them.
pub(crate) const TOKEN_WIDTH: usize = 12;

/// A token as [`token_cols`] selects it, from column `at` on.
pub(crate) fn token(r: &dyn Row, at: usize) -> Result<TokenRecord, Error> {
    let role = match (r.text(at + 2)?, r.opt_string(at + 3)?) {
        ("primary", _) => Role::Primary,
        ("backup", Some(of)) => Role::Backup(of),
        _ => return Err(corrupt(r.location(), "tokens.role")),
    };
    Ok(TokenRecord {
        key: r.key(at, "tokens.token_sha256")?,
        name: r.string(at + 1)?,
        role,
        fingerprint: r.string(at + 4)?,
        source_path: r.string(at + 5)?,
        source_key: r.opt_string(at + 6)?,
        first_seen: r.time(at + 7, "tokens.first_seen")?,
        last_seen: r.time(at + 8, "tokens.last_seen")?,
        identity: identity(r, at + 9)?,
    })
}

/// The stored identity columns as a [`TokenIdentity`]; none without an id.
fn identity(r: &dyn Row, at: usize) -> Result<Option<TokenIdentity>, Error> {
    let Some(id) = r.opt_string(at)? else {
        return Ok(None);
    };
    let seen_at = r
        .opt_time(at + 2, "tokens.identity_at")?
        .ok_or_else(|| corrupt(r.location(), "tokens.identity_at"))?;
    Ok(Some(TokenIdentity {
        id,
        name: r.opt_string(at + 1)?,
        seen_at,
    }))
}

/// A check as [`check_cols`] selects it, from column `at` on.
pub(crate) fn check(r: &dyn Row, at: usize) -> Result<CheckRecord, Error> {
    let elapsed = r.int(at + 10)?;
    Ok(CheckRecord {
        key: r.key(at, "checks.token_sha256")?,
        checked_at: r.time(at + 1, "checks.checked_at")?,
        status: r.status(at + 2, "checks.status")?,
        alert_state: r.string(at + 3)?,
        valid: r.opt_flag(at + 4)?,
        expires_at: r.opt_time(at + 5, "checks.expires_at")?,
        never_expires: r.flag(at + 6)?,
        kind: r.opt_string(at + 7)?,
        missing_scopes: r.list(at + 8, "checks.missing_scopes")?,
        finding_codes: r.list(at + 9, "checks.finding_codes")?,
        elapsed_ms: u64::try_from(elapsed)
            .map_err(|_| corrupt(r.location(), "checks.elapsed_ms"))?,
    })
}

/// What the status page shows of a check: `c.checked_at, c.status, c.valid, c.expires_at,
/// c.never_expires, c.kind, c.missing_scopes` from column `at` on; `None` before any check.
pub(crate) fn check_status(r: &dyn Row, at: usize) -> Result<Option<CheckStatus>, Error> {
    let Some(checked_at) = r.opt_time(at, "checks.checked_at")? else {
        return Ok(None);
    };
    Ok(Some(CheckStatus {
        checked_at,
        status: r.status(at + 1, "checks.status")?,
        valid: r.opt_flag(at + 2)?,
        expires_at: r.opt_time(at + 3, "checks.expires_at")?,
        never_expires: r.flag(at + 4)?,
        kind: r.opt_string(at + 5)?,
        missing_scopes: r.list(at + 6, "checks.missing_scopes")?,
    }))
}

/// `t.token_sha256, t.identity_id, t.identity_name, c.status, c.finding_codes`.
pub(crate) fn identity_check(r: &dyn Row) -> Result<IdentityCheck, Error> {
    Ok(IdentityCheck {
        key: r.key(0, "tokens.token_sha256")?,
        id: r.string(1)?,
        name: r.opt_string(2)?,
        status: r.status(3, "checks.status")?,
        finding_codes: r.list(4, "checks.finding_codes")?,
    })
}

/// A row of `(name, checked_at, status)` added to `out`, grouped by name: the rows come by name, so
/// a name is allocated once, not once per row.
pub(crate) fn add_point(
    out: &mut Vec<(String, Vec<StatusPoint>)>,
    r: &dyn Row,
) -> Result<(), Error> {
    let point = StatusPoint {
        checked_at: r.time(1, "checks.checked_at")?,
        status: r.status(2, "checks.status")?,
    };
    let name = r.text(0)?;
    match out.last_mut() {
        Some((last, points)) if last == name => points.push(point),
        _ => out.push((name.to_owned(), vec![point])),
    }
    Ok(())
}

/// A delivery as [`delivery_cols`] selects it.
pub(crate) fn delivery(r: &dyn Row) -> Result<Delivery, Error> {
    let loc = r.location();
    let status = DeliveryStatus::parse(r.text(1)?);
    Ok(Delivery {
        route: r.string(0)?,
        status: status.ok_or_else(|| corrupt(loc, "deliveries.status"))?,
        attempts: u32::try_from(r.int(2)?).map_err(|_| corrupt(loc, "deliveries.attempts"))?,
        next_attempt_at: r.opt_time(3, "deliveries.next_attempt_at")?,
        last_error: r.opt_string(4)?,
        alert: Alert {
            id: r.string(5)?,
            token_name: r.string(6)?,
            state: r.string(7)?,
            previous_state: r.opt_string(8)?,
            message: r.string(9)?,
            fix: r.opt_string(10)?,
            time: r.time(11, "alerts.created_at")?,
        },
    })
}

/// An announced row as [`announced_cols`] selects it.
pub(crate) fn announced(r: &dyn Row) -> Result<Announced, Error> {
    let announcement = match (r.opt_string(1)?, r.opt_int(2)?) {
        (Some(state), Some(since)) => Some(Announcement {
            state,
            since: ts(r.location(), "announced.since", since)?,
            alert_id: r.opt_string(3)?,
            last_reminder_at: r.opt_time(4, "announced.last_reminder_at")?,
            reminders: u32::try_from(r.int(6)?).unwrap_or(0),
        }),
        (None, _) => None,
        (Some(_), None) => return Err(corrupt(r.location(), "announced.since")),
    };
    Ok(Announced {
        token_name: r.string(0)?,
        announcement,
        unknown_since: r.opt_time(5, "announced.unknown_since")?,
    })
}

/// `a.token_name, a.state, al.message, al.fix, al.created_at` of `announced` and `alerts`.
pub(crate) fn announced_reason(r: &dyn Row) -> Result<AnnouncedReason, Error> {
    Ok(AnnouncedReason {
        token_name: r.string(0)?,
        state: r.string(1)?,
        message: r.string(2)?,
        fix: r.opt_string(3)?,
        at: r.time(4, "alerts.created_at")?,
    })
}

/// `at, token_name, kind, detail` of `events`.
pub(crate) fn event(r: &dyn Row) -> Result<Event, Error> {
    Ok(Event {
        at: r.time(0, "events.at")?,
        token_name: r.opt_string(1)?,
        kind: EventKind::parse(r.text(2)?).ok_or_else(|| corrupt(r.location(), "events.kind"))?,
        detail: r.string(3)?,
    })
}

/// A route's row of [`crate::Store::route_health`]'s query. Its two times are deliveries'
/// `updated_at`: one out of range is reported, as everywhere, not dropped.
pub(crate) fn route_health(r: &dyn Row) -> Result<RouteHealth, Error> {
    Ok(RouteHealth {
        route: r.string(0)?,
        pending: r.count(1)?,
        delivered: r.count(2)?,
        failed: r.count(3)?,
        last_error: r.opt_string(4)?,
        last_at: r.opt_time(5, "deliveries.updated_at")?,
        failing_since: r.opt_time(6, "deliveries.updated_at")?,
    })
}

/// The five counts of [`crate::Store::counts`]' query.
pub(crate) fn counts(r: &dyn Row) -> Result<Counts, Error> {
    Ok(Counts {
        tokens: r.count(0)?,
        checks: r.count(1)?,
        events: r.count(2)?,
        alerts: r.count(3)?,
        deliveries_outstanding: r.count(4)?,
    })
}

/// A token's role as its two columns.
pub(crate) fn role_columns(role: &Role) -> (&'static str, Option<&str>) {
    match role {
        Role::Primary => ("primary", None),
        Role::Backup(of) => ("backup", Some(of.as_str())),
    }
}

/// A check's duration as stored (BIGINT): beyond it, the largest.
pub(crate) fn elapsed(check: &CheckRecord) -> i64 {
    i64::try_from(check.elapsed_ms).unwrap_or(i64::MAX)
}

/// A stored unix second as a time; out of range is a corrupt state.
pub(crate) fn ts(path: &Path, what: &'static str, secs: i64) -> Result<Timestamp, Error> {
    Timestamp::from_second(secs).map_err(|_| corrupt(path, what))
}

/// [`ts`] of a nullable column.
pub(crate) fn opt_ts(
    path: &Path,
    what: &'static str,
    secs: Option<i64>,
) -> Result<Option<Timestamp>, Error> {
    secs.map(|s| ts(path, what, s)).transpose()
}

/// The error of a value the state should not hold.
pub(crate) fn corrupt(path: &Path, what: &'static str) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        what,
    }
}

/// A JSON array of strings, as lists are stored.
pub(crate) fn list(path: &Path, what: &'static str, json: &str) -> Result<Vec<String>, Error> {
    serde_json::from_str(json).map_err(|_| corrupt(path, what))
}

/// A list as it is stored.
pub(crate) fn to_json(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}
