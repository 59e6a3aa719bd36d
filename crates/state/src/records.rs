//! The records the state keeps and gives back, as its callers see them: tokens (by the SHA-256 of
//! the token, never the token), checks, announcements, alerts and their deliveries, events, and
//! the sizes of the state. Plain data: how each is stored is `rows`' and the queries' business.
//!
//! Must never: hold a secret (a token, an app secret, a route's URL), or repeat a value refused
//! as a [`TokenKey`] (it may be a token handed over by mistake).

use jiff::Timestamp;
use serde::Serialize;

use crate::Error;
#[cfg(doc)]
use crate::Store;

/// A token's key: the full SHA-256 of the token as 64 lowercase hex digits. The caller hashes; the
/// store never sees a token.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TokenKey(String);

impl TokenKey {
    /// Accepts 64 hex digits (either case; kept lowercase). Anything else is refused without
    /// repeating the value, which might be a token handed over by mistake.
    pub fn parse(hex: &str) -> Result<Self, Error> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(hex.to_ascii_lowercase()))
        } else {
            Err(Error::InvalidKey { len: hex.len() })
        }
    }

    /// The 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({})", &self.0)
    }
}

impl std::fmt::Display for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a token is the one in use or a backup standing by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "role", content = "of")]
pub enum Role {
    /// The token the application uses.
    Primary,
    /// A backup of the token with this configuration name.
    Backup(String),
}

/// A token as watch knows it. Written with [`Store::upsert_tokens`]; `first_seen` is kept from the
/// first write, everything else is replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// The token's SHA-256.
    pub key: TokenKey,
    /// Configuration name, e.g. `orders` or `orders/WHATSAPP_ACCESS_TOKEN_BACKUP`.
    pub name: String,
    /// Primary, or backup of which name.
    pub role: Role,
    /// The short fingerprint permatoken prints (`EAAT…sZD sha256:1a2b3c4d`).
    pub fingerprint: String,
    /// The file the token is read from (never the value).
    pub source_path: String,
    /// The variable in that file, if the file holds several.
    pub source_key: Option<String>,
    /// When this token was first seen (ignored on update).
    pub first_seen: Timestamp,
    /// When this token was last seen in its source.
    pub last_seen: Timestamp,
    /// What `/me` said of it, if the check written with this record asked or knew it. `None` keeps
    /// the identity already stored (a check without an answer does not make a token a stranger).
    pub identity: Option<TokenIdentity>,
}

/// A token's `/me` answer: who it acts as. Not a secret; the text is cleaned and cut to
/// [`MAX_TEXT`] when written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The user or system-user id.
    pub id: String,
    /// Its name, if `/me` gave one.
    pub name: Option<String>,
    /// When the check that saw it was made (its [`CheckRecord::checked_at`]).
    pub seen_at: Timestamp,
}

/// A token whose latest check saw its identity: [`Store::identities`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityCheck {
    /// The token.
    pub key: TokenKey,
    /// The user or system-user id `/me` gave.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// The latest check's status.
    pub status: Status,
    /// The latest check's finding codes.
    pub finding_codes: Vec<String>,
}

/// One past check as a chart draws it: when, and its status ([`Store::history_points`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusPoint {
    /// When the check was made.
    pub checked_at: Timestamp,
    /// What it said.
    pub status: Status,
}

/// A check's overall status, as `permatoken check` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Valid, not expiring soon.
    Ok,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
    /// Could not be checked (network, outage, rate limit).
    Unknown,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Unknown => "unknown",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => Self::Ok,
            "warning" => Self::Warning,
            "critical" => Self::Critical,
            "unknown" => Self::Unknown,
            _ => return None,
        })
    }
}

/// One check's result, for [`Store::record_checks`] and read back by the queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRecord {
    /// The token checked (it must have been written with [`Store::upsert_tokens`] first).
    pub key: TokenKey,
    /// When the check ended.
    pub checked_at: Timestamp,
    /// The overall status.
    pub status: Status,
    /// The alert state it maps to: `ok`, `expiring`, `critical`, `dead`, `failed_over`,
    /// `cannot_be_checked`, … (the alerts module owns the list; stored as given).
    pub alert_state: String,
    /// Whether the API called the token valid; `None` when the check could not tell.
    pub valid: Option<bool>,
    /// When the token expires, if it does.
    pub expires_at: Option<Timestamp>,
    /// The API said it never expires.
    pub never_expires: bool,
    /// The token's kind as reported (e.g. `system_user`), if known.
    pub kind: Option<String>,
    /// Required permissions the token lacks.
    pub missing_scopes: Vec<String>,
    /// The finding codes of the check.
    pub finding_codes: Vec<String>,
    /// How long the check took.
    pub elapsed_ms: u64,
}

/// [`LatestCheck`] reduced to what the status page shows: [`Store::latest_statuses`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestStatus {
    /// The token's name.
    pub name: String,
    /// The token's key.
    pub key: TokenKey,
    /// The token's short fingerprint.
    pub fingerprint: String,
    /// Its latest check; `None` before any.
    pub check: Option<CheckStatus>,
}

/// What the status page shows of a check: [`CheckRecord`]'s fields of the same names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckStatus {
    /// When.
    pub checked_at: Timestamp,
    /// The overall status.
    pub status: Status,
    /// Whether the API said it is valid; `None` without an answer.
    pub valid: Option<bool>,
    /// When it expires.
    pub expires_at: Option<Timestamp>,
    /// Whether the API said it never expires.
    pub never_expires: bool,
    /// The token's kind.
    pub kind: Option<String>,
    /// Required permissions it lacks.
    pub missing_scopes: Vec<String>,
}

/// A token with its latest check, for the page and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestCheck {
    /// The token.
    pub token: TokenRecord,
    /// Its latest check, `None` if it was never checked.
    pub check: Option<CheckRecord>,
}

/// What one decision about a token name leaves: the arguments of [`Store::announce`], for
/// [`Store::announce_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The token name.
    pub token_name: String,
    /// The announcement exactly as given (`None`: nothing announced yet; any earlier one is kept).
    pub announcement: Option<Announcement>,
    /// Since when the token has been unknown.
    pub unknown_since: Option<Timestamp>,
    /// The alert, if any, with the routes it goes to. Boxed: most decisions hold none (a round's
    /// first `ok`s), and a fleet's first round keeps 100,000 decisions until it writes them.
    pub alert: Option<Box<(Alert, Vec<String>)>>,
}

/// Why a token stands in the state announced for it: the words of the alert that announced it.
/// The status page shows them after a restart, until the token's next check says it anew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnouncedReason {
    /// The token name.
    pub token_name: String,
    /// The state announced.
    pub state: String,
    /// The alert's message.
    pub message: String,
    /// The alert's fix.
    pub fix: Option<String>,
    /// When the alert was raised.
    pub at: Timestamp,
}

/// What watch last said about one token name, and how long it has not been able to check it.
/// Survives restarts, so that a restarted watch does not announce a state again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    /// The token's configuration name.
    pub token_name: String,
    /// The state last announced, `None` if none was yet.
    pub announcement: Option<Announcement>,
    /// Since when the token has been `unknown` without a break, `None` if it is not.
    pub unknown_since: Option<Timestamp>,
}

/// A state that was announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The alert state, e.g. `expiring`.
    pub state: String,
    /// When it was announced.
    pub since: Timestamp,
    /// The id of the alert that announced it, `None` if it was taken in silently (e.g. a first `ok`).
    pub alert_id: Option<String>,
    /// When the last reminder for it went, if any.
    pub last_reminder_at: Option<Timestamp>,
    /// How many reminders went for it (each reminder's id depends on its number).
    pub reminders: u32,
}

/// An alert, as sent to every route (documented JSON: the same fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// Stable id chosen by the caller; a receiver drops a repeat by it.
    pub id: String,
    /// The token's configuration name.
    pub token_name: String,
    /// The new state.
    pub state: String,
    /// The state before, if one was announced.
    pub previous_state: Option<String>,
    /// One secret-free sentence.
    pub message: String,
    /// What to do, if known.
    pub fix: Option<String>,
    /// When the alert was raised.
    pub time: Timestamp,
}

/// Where one alert stands on one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not tried yet.
    Pending,
    /// The route accepted it.
    Delivered,
    /// The last attempt failed; it is tried again at `next_attempt_at`, or never if that is `None`.
    Failed,
}

impl DeliveryStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// One alert on one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The alert (whole, so the sender needs nothing else).
    pub alert: Alert,
    /// The route's configuration name.
    pub route: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When to try next; `None` once delivered or given up.
    pub next_attempt_at: Option<Timestamp>,
    /// The last failure's text (secret-free, capped), if any.
    pub last_error: Option<String>,
}

/// How one route is doing, for the page and the log: a failing route is itself shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteHealth {
    /// The route's configuration name.
    pub route: String,
    /// Deliveries not yet tried.
    pub pending: u64,
    /// Deliveries accepted.
    pub delivered: u64,
    /// Deliveries whose last attempt failed (retrying or given up).
    pub failed: u64,
    /// The most recent failure's text, if the latest attempt on this route failed.
    pub last_error: Option<String>,
    /// When a delivery on this route was last settled (delivered or failed).
    pub last_at: Option<Timestamp>,
    /// While the latest attempt failed: the earliest failure since the last delivery, as far as the
    /// deliveries still kept tell (a retried delivery keeps its latest attempt's time).
    pub failing_since: Option<Timestamp>,
}

/// How one attempt on a route ended, for [`Store::settle_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// The receiver took it.
    Delivered,
    /// It failed; `error` as for [`Store::mark_failed`], and the next attempt (`None`: give up).
    Failed {
        /// What went wrong, without any URL or secret.
        error: String,
        /// When to try again.
        next_attempt_at: Option<Timestamp>,
    },
}

impl Settlement {
    /// What the attempt writes for each delivery it settles.
    pub(crate) fn attempt(&self, at: Timestamp) -> Attempt<'_> {
        match self {
            Self::Delivered => Attempt {
                status: DeliveryStatus::Delivered,
                at,
                error: None,
                next: None,
            },
            Self::Failed {
                error,
                next_attempt_at,
            } => Attempt {
                status: DeliveryStatus::Failed,
                at,
                error: Some(error),
                next: *next_attempt_at,
            },
        }
    }
}

/// One attempt on one delivery, as [`crate::queries::settle`] writes it.
#[derive(Clone, Copy)]
pub(crate) struct Attempt<'a> {
    pub(crate) status: DeliveryStatus,
    pub(crate) at: Timestamp,
    pub(crate) error: Option<&'a str>,
    pub(crate) next: Option<Timestamp>,
}

/// What an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A token was renewed.
    Renewal,
    /// A renewal was attempted and failed.
    RenewalFailed,
    /// A backup was promoted in place of a dead primary.
    Failover,
    /// The application's reload command ran.
    Reload,
    /// The configuration was reloaded (SIGHUP).
    ConfigReload,
    /// watch started.
    Start,
    /// An alert was raised (written with the alert itself).
    Alert,
}

impl EventKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Renewal => "renewal",
            Self::RenewalFailed => "renewal_failed",
            Self::Failover => "failover",
            Self::Reload => "reload",
            Self::ConfigReload => "config_reload",
            Self::Start => "start",
            Self::Alert => "alert",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "renewal" => Self::Renewal,
            "renewal_failed" => Self::RenewalFailed,
            "failover" => Self::Failover,
            "reload" => Self::Reload,
            "config_reload" => Self::ConfigReload,
            "start" => Self::Start,
            "alert" => Self::Alert,
            _ => return None,
        })
    }
}

/// Something that happened, for the page's recent events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When.
    pub at: Timestamp,
    /// Which token, if it concerns one.
    pub token_name: Option<String>,
    /// What.
    pub kind: EventKind,
    /// A short secret-free detail (capped when stored).
    pub detail: String,
}

/// Sizes of the state, for the page and the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tokens known.
    pub tokens: u64,
    /// Checks kept.
    pub checks: u64,
    /// Events kept.
    pub events: u64,
    /// Alerts kept.
    pub alerts: u64,
    /// Deliveries not yet delivered nor given up.
    pub deliveries_outstanding: u64,
}

/// What [`Store::prune`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Checks removed.
    pub checks: u64,
    /// Events removed.
    pub events: u64,
    /// Alerts removed (all their deliveries settled, and not the one behind an announced state).
    pub alerts: u64,
}

/// The longest error or detail text kept; longer ones are cut (a receiver's body is not ours to keep).
pub const MAX_TEXT: usize = 500;
