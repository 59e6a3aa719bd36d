//! The one place the store's shapes and the daemon's meet: a check's [`Report`] as the token and
//! check records the state keeps, statuses, announced states and alerts both ways.
//!
//! Must never: put a secret in a record (a token is known by its SHA-256, [`sha256`], and its short
//! fingerprint), or do I/O.

use jiff::Timestamp;
use permatoken_config::Sourced;
use permatoken_inspect::{Report, Status};
use permatoken_secret::AccessToken;
use permatoken_state as store;

use crate::alert::{Alert, AlertKind};
use crate::snapshot::Role;
use crate::states::{self, Announced, Engine, Observed, State};

pub(crate) fn status_str(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Warning => "warning",
        Status::Critical => "critical",
        Status::Unknown => "unknown",
    }
}

pub(crate) fn status_to_store(status: Status) -> store::Status {
    match status {
        Status::Ok => store::Status::Ok,
        Status::Warning => store::Status::Warning,
        Status::Critical => store::Status::Critical,
        Status::Unknown => store::Status::Unknown,
    }
}

pub(crate) fn status_from_store(status: store::Status) -> Status {
    match status {
        store::Status::Ok => Status::Ok,
        store::Status::Warning => Status::Warning,
        store::Status::Critical => Status::Critical,
        store::Status::Unknown => Status::Unknown,
    }
}

pub(crate) fn sha256(token: &AccessToken) -> store::TokenKey {
    store::TokenKey::parse(&crate::batch::digest(token)).expect("64 hex digits")
}

pub(crate) fn token_record(
    key: &store::TokenKey,
    name: &str,
    role: &Role,
    sourced: &Sourced<AccessToken>,
    report: &Report,
    now: Timestamp,
) -> store::TokenRecord {
    store::TokenRecord {
        key: key.clone(),
        name: name.to_owned(),
        role: match role {
            Role::Primary => store::Role::Primary,
            Role::Backup(of) => store::Role::Backup(of.clone()),
        },
        fingerprint: report.token.fingerprint.clone(),
        source_path: match &sourced.source {
            permatoken_config::Source::EnvFile(p) | permatoken_config::Source::TokenFile(p) => {
                p.display().to_string()
            }
            other => other.to_string(),
        },
        source_key: sourced.var.clone(),
        first_seen: now,
        last_seen: now,
        identity: report.identity.as_ref().map(|i| store::TokenIdentity {
            id: i.id.clone(),
            name: i.name.clone(),
            seen_at: now,
        }),
    }
}

pub(crate) fn check_record(
    key: &store::TokenKey,
    report: &Report,
    engine: Engine,
    now: Timestamp,
) -> store::CheckRecord {
    let observation = states::observe(report, engine);
    store::CheckRecord {
        key: key.clone(),
        checked_at: now,
        status: status_to_store(report.status),
        alert_state: match observation.observed {
            Observed::Known(s) => s.as_str().to_owned(),
            Observed::Unknown => "unknown".to_owned(),
        },
        valid: report.token.valid,
        expires_at: report.expires_at(),
        never_expires: report.token.never_expires == Some(true),
        kind: Some(report.token.kind.describe().to_owned()),
        missing_scopes: report.token.missing_scopes.clone(),
        finding_codes: report
            .findings
            .iter()
            .map(|f| {
                serde_json::to_value(f.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect(),
        elapsed_ms: 0,
    }
}

/// What the store keeps, as [`states::decide`] takes it: with [`announced_to_store`], the one place
/// the two shapes meet.
pub(crate) fn announced_from_store(stored: &store::Announced) -> Announced {
    match &stored.announcement {
        Some(a) => Announced {
            state: State::parse(&a.state),
            since: a.since,
            last_alert: a
                .last_reminder_at
                .or_else(|| a.alert_id.as_ref().map(|_| a.since)),
            reminders: a.reminders,
            unknown_since: stored.unknown_since,
        },
        None => Announced {
            state: None,
            since: stored.unknown_since.unwrap_or(Timestamp::UNIX_EPOCH),
            last_alert: None,
            reminders: 0,
            unknown_since: stored.unknown_since,
        },
    }
}

/// The inverse of [`announced_from_store`]: the announcement (none while nothing is known) and
/// since when the token has been unknown. `alert_id` is the latest alert about the state.
pub(crate) fn announced_to_store(
    announced: &Announced,
    alert_id: Option<String>,
) -> (Option<store::Announcement>, Option<Timestamp>) {
    let announcement = announced.state.map(|state| store::Announcement {
        state: state.as_str().to_owned(),
        since: announced.since,
        alert_id,
        last_reminder_at: announced.last_alert,
        reminders: announced.reminders,
    });
    (announcement, announced.unknown_since)
}

pub(crate) fn alert_to_store(alert: &Alert) -> store::Alert {
    store::Alert {
        id: alert.id.clone(),
        token_name: alert.token.clone(),
        state: alert.state.as_str().to_owned(),
        previous_state: alert.previous_state.map(|s| s.as_str().to_owned()),
        message: alert.message.clone(),
        fix: alert.fix.clone(),
        time: alert.time,
    }
}

pub(crate) fn alert_from_store(alert: &store::Alert) -> Alert {
    let state = State::parse(&alert.state).unwrap_or(State::CannotBeChecked);
    let previous_state = alert.previous_state.as_deref().and_then(State::parse);
    Alert {
        id: alert.id.clone(),
        token: alert.token_name.clone(),
        state,
        previous_state,
        message: alert.message.clone(),
        fix: alert.fix.clone(),
        time: alert.time,
        kind: if previous_state == Some(state) {
            AlertKind::Reminder
        } else {
            AlertKind::Change
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    #[test]
    fn announced_state_survives_the_store_round_trip() {
        let since = Timestamp::from_second(1_800_000_000).unwrap();
        let announced = Announced {
            state: Some(State::Critical),
            since,
            last_alert: Some(since + SignedDuration::from_hours(24)),
            reminders: 3,
            unknown_since: Some(since + SignedDuration::from_hours(30)),
        };
        let (announcement, unknown_since) = announced_to_store(&announced, Some("a1".repeat(16)));
        let stored = store::Announced {
            token_name: "orders".into(),
            announcement,
            unknown_since,
        };
        assert_eq!(announced_from_store(&stored), announced);
        let nothing = Announced {
            state: None,
            since,
            last_alert: None,
            reminders: 0,
            unknown_since: Some(since),
        };
        let (announcement, unknown_since) = announced_to_store(&nothing, None);
        assert!(announcement.is_none());
        let stored = store::Announced {
            token_name: "orders".into(),
            announcement,
            unknown_since,
        };
        assert_eq!(announced_from_store(&stored), nothing);
    }
}
