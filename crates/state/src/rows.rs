//! What both backends read and write alike: the columns of a token and of a check, and the
//! conversions of stored values (times, JSON lists) with the error a malformed one gives.

use std::path::Path;

use jiff::Timestamp;

use crate::{Error, TokenIdentity};

/// The columns of `tokens t`, in the order the backends' `token_from_row` reads them.
pub(crate) const TOKEN_COLS: &str = "t.token_sha256, t.name, t.role, t.backup_of, t.fingerprint, \
    t.source_path, t.source_key, t.first_seen, t.last_seen, t.identity_id, t.identity_name, t.identity_at";
/// The columns of `checks c`, in the order the backends' `check_from_row` reads them.
pub(crate) const CHECK_COLS: &str = "c.token_sha256, c.checked_at, c.status, c.alert_state, c.valid, \
    c.expires_at, c.never_expires, c.kind, c.missing_scopes, c.finding_codes, c.elapsed_ms";
/// How many columns [`TOKEN_COLS`] names.
pub(crate) const TOKEN_WIDTH: usize = 12;

/// The `ON CONFLICT … DO UPDATE` assignments of the identity columns: a record without an identity
/// keeps the stored one (all three columns go together: a name may rightly be NULL).
pub(crate) const KEEP_IDENTITY: &str = "identity_name = CASE WHEN excluded.identity_id IS NULL \
    THEN tokens.identity_name ELSE excluded.identity_name END, \
    identity_at = CASE WHEN excluded.identity_id IS NULL THEN tokens.identity_at \
    ELSE excluded.identity_at END, \
    identity_id = COALESCE(excluded.identity_id, tokens.identity_id)";

/// [`crate::Store::identities`]: a token's identity goes with its latest check only when that
/// check saw it (same time); the others are left out, so that `/me` is asked of them.
pub(crate) const IDENTITIES: &str = "SELECT t.token_sha256, t.identity_id, t.identity_name, \
    c.status, c.finding_codes FROM tokens t JOIN checks c ON c.id = t.last_check_id \
    WHERE t.identity_id IS NOT NULL AND t.identity_at = c.checked_at ORDER BY t.token_sha256";

/// The stored identity columns as a [`TokenIdentity`]; none without an id.
pub(crate) fn identity(
    path: &Path,
    id: Option<String>,
    name: Option<String>,
    at: Option<i64>,
) -> Result<Option<TokenIdentity>, Error> {
    let Some(id) = id else { return Ok(None) };
    let at = at.ok_or_else(|| corrupt(path, "tokens.identity_at"))?;
    Ok(Some(TokenIdentity {
        id,
        name,
        seen_at: ts(path, "tokens.identity_at", at)?,
    }))
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
