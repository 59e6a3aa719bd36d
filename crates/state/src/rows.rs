//! What both backends read and write alike: the columns of a token and of a check, and the
//! conversions of stored values (times, JSON lists) with the error a malformed one gives.

use std::path::Path;

use jiff::Timestamp;

use crate::Error;

/// The columns of `tokens t`, in the order the backends' `token_from_row` reads them.
pub(crate) const TOKEN_COLS: &str = "t.token_sha256, t.name, t.role, t.backup_of, t.fingerprint, \
    t.source_path, t.source_key, t.first_seen, t.last_seen";
/// The columns of `checks c`, in the order the backends' `check_from_row` reads them.
pub(crate) const CHECK_COLS: &str = "c.token_sha256, c.checked_at, c.status, c.alert_state, c.valid, \
    c.expires_at, c.never_expires, c.kind, c.missing_scopes, c.finding_codes, c.elapsed_ms";
/// How many columns [`TOKEN_COLS`] names.
pub(crate) const TOKEN_WIDTH: usize = 9;

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
