//! What an `alertmanager` route sends: Alertmanager's own API body, a JSON array of
//! `{labels, annotations, startsAt, endsAt}` POSTed to `<url>/api/v2/alerts`, and the figures of its
//! lifecycle, which follow what Prometheus does as a client:
//!
//! - a token's alert is **firing** while the token is expiring, critical, dead, failed over or
//!   cannot be checked, with `endsAt` [`ENDS_AFTER`] ahead; the courier sends every active alert
//!   again each [`RESEND`] (`delivery/resend.rs`), so a `watch` that dies lets its alerts resolve by
//!   themselves within [`ENDS_AFTER`];
//! - a change of state resolves the previous state's alert (its labels, `endsAt` = the change's
//!   time) beside firing the new one; `recovered` only resolves;
//! - `set_shrunk` is an event, not a state: it fires for [`EVENT_LASTS`] and is not sent again.
//!
//! Labels name the alert (`alertname`, `token` or `token_set`, `state`, `severity`); Alertmanager
//! tells alerts apart by them, so they hold no time and no message. Annotations carry the words:
//! `summary`, `description` (the alert's message), `fix`, `alert_id`. Names only, never a secret, as
//! in every alert body.
//!
//! Must never: put a message, time or id in a label (each would make every resend a new alert), or
//! name anything the webhook body would not.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::alert::{Alert, AlertKind};
use crate::config::SecretUrl;
use crate::states::State;

/// How often the active alerts are sent again (Prometheus' `--rules.alert.resend-delay` default).
pub const RESEND: Duration = Duration::from_secs(60);
/// How far ahead of a send a firing alert's `endsAt` is: four resends, as Prometheus does, so three
/// lost in a row do not resolve it, and a `watch` that stopped lets it resolve within 4 minutes.
pub const ENDS_AFTER: Duration = Duration::from_secs(4 * 60);
/// How long an event (`set_shrunk`, a test alert) stays firing: it is sent once.
pub const EVENT_LASTS: Duration = Duration::from_secs(3600);
/// The path under a route's `url` alerts are POSTed to.
pub const API_PATH: &str = "api/v2/alerts";
/// The `alertname` of a token's alert.
pub const TOKEN_ALERT: &str = "PermatokenTokenState";
/// The `alertname` of a `set_shrunk` alert.
pub const SET_ALERT: &str = "PermatokenTokenSetShrunk";
/// The `alertname` of the `state_unwritable` alert.
pub const STATE_ALERT: &str = "PermatokenStateUnwritable";
/// The `alertname` of `watch --test-alert`.
pub const TEST_ALERT: &str = "PermatokenTest";
/// The most alerts in one POST: a fleet's resend is cut into several, each of a bounded size.
pub const PER_POST: usize = 1000;

/// One alert as Alertmanager's `postableAlert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Posted {
    /// What the alert is: Alertmanager's identity of it.
    pub labels: BTreeMap<&'static str, String>,
    /// What it says.
    pub annotations: BTreeMap<&'static str, String>,
    /// When the state began (RFC 3339).
    #[serde(rename = "startsAt")]
    pub starts_at: Timestamp,
    /// When it ends: ahead while firing, the recovery's time when resolved.
    #[serde(rename = "endsAt")]
    pub ends_at: Timestamp,
}

/// The `severity` label of a state.
pub fn severity(state: State) -> &'static str {
    match state {
        State::Critical | State::Dead => "critical",
        State::Ok | State::Recovered => "none",
        State::Expiring | State::FailedOver | State::CannotBeChecked | State::SetShrunk => {
            "warning"
        }
    }
}

/// Whether a token in `state` has a firing alert.
pub fn is_firing(state: State) -> bool {
    matches!(
        state,
        State::Expiring
            | State::Critical
            | State::Dead
            | State::FailedOver
            | State::CannotBeChecked
    )
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::from_hours(1)))
        .unwrap_or(t)
}

/// The labels of `token`'s alert in `state`.
pub fn token_labels(token: &str, state: State) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("alertname", TOKEN_ALERT.to_owned()),
        ("token", token.to_owned()),
        ("state", state.as_str().to_owned()),
        ("severity", severity(state).to_owned()),
    ])
}

fn annotations(alert: &Alert, summary: String) -> BTreeMap<&'static str, String> {
    let mut a = BTreeMap::from([
        ("summary", summary),
        ("description", alert.message.clone()),
        ("alert_id", alert.id.clone()),
    ]);
    if let Some(fix) = &alert.fix {
        a.insert("fix", fix.clone());
    }
    a
}

/// A token's alert `alert` firing since `since`, sent at `now`: it ends [`ENDS_AFTER`] later unless
/// sent again.
pub fn firing(alert: &Alert, since: Timestamp, now: Timestamp) -> Posted {
    Posted {
        labels: token_labels(&alert.token, alert.state),
        annotations: annotations(
            alert,
            format!(
                "permatoken: token `{}` is {}",
                alert.token,
                alert.state.label()
            ),
        ),
        starts_at: since.min(now),
        ends_at: after(now, ENDS_AFTER),
    }
}

/// `posted` resolved at `at`.
pub fn resolved(mut posted: Posted, at: Timestamp) -> Posted {
    posted.starts_at = posted.starts_at.min(at);
    posted.ends_at = at;
    posted
}

/// What `alert` (a change, reminder, event or test) comes to in Alertmanager, sent at `now`: the
/// alert firing, the previous state's alert resolved, or both.
pub fn of_alert(alert: &Alert, now: Timestamp) -> Vec<Posted> {
    let mut out = Vec::new();
    let event = |alertname: &str, labels: &[(&'static str, String)], summary: String| Posted {
        labels: [("alertname", alertname.to_owned())]
            .into_iter()
            .chain(labels.iter().cloned())
            .collect(),
        annotations: annotations(alert, summary),
        starts_at: alert.time.min(now),
        ends_at: after(now, EVENT_LASTS),
    };
    match (alert.kind, alert.state) {
        (AlertKind::Test, _) => out.push(event(
            TEST_ALERT,
            &[("severity", "none".into())],
            "permatoken: a test alert".into(),
        )),
        (AlertKind::StateUnwritable, _) => out.push(Posted {
            ends_at: after(now, ENDS_AFTER),
            ..event(
                STATE_ALERT,
                &[
                    ("state", "state_unwritable".into()),
                    ("severity", "critical".into()),
                ],
                "permatoken: watch cannot write its state".into(),
            )
        }),
        (_, State::SetShrunk) => out.push(event(
            SET_ALERT,
            &[
                ("token_set", alert.token.clone()),
                ("state", State::SetShrunk.as_str().into()),
                ("severity", severity(State::SetShrunk).into()),
            ],
            format!("permatoken: token set `{}` lost many members", alert.token),
        )),
        (_, state) => {
            if let Some(previous) = alert
                .previous_state
                .filter(|p| *p != state && is_firing(*p))
            {
                let was = Alert {
                    state: previous,
                    ..alert.clone()
                };
                out.push(resolved(firing(&was, alert.time, now), alert.time.min(now)));
            }
            if is_firing(state) {
                out.push(firing(alert, alert.time, now));
            }
        }
    }
    out
}

/// The `state_unwritable` alert firing since `since`, saying `reason`, sent at `now`.
pub fn state_unwritable(since: Timestamp, reason: &str, now: Timestamp) -> Posted {
    Posted {
        labels: BTreeMap::from([
            ("alertname", STATE_ALERT.to_owned()),
            ("state", "state_unwritable".to_owned()),
            ("severity", "critical".to_owned()),
        ]),
        annotations: BTreeMap::from([
            (
                "summary",
                "permatoken: watch cannot write its state".to_owned(),
            ),
            ("description", format!("the state store answered: {reason}")),
        ]),
        starts_at: since.min(now),
        ends_at: after(now, ENDS_AFTER),
    }
}

/// The JSON array Alertmanager takes.
pub fn body(posted: &[Posted]) -> Vec<u8> {
    serde_json::to_vec(posted).expect("alerts serialise")
}

/// Where a route whose `url` is `base` POSTs: `<base>/api/v2/alerts` (a path prefix kept, as for an
/// Alertmanager behind `--web.route-prefix`).
pub fn endpoint(base: &SecretUrl) -> SecretUrl {
    let mut url = base.expose_secret().clone();
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{path}/{API_PATH}"));
    // Still http(s) with the same host, so it parses.
    SecretUrl::parse(url.as_str()).unwrap_or_else(|_| base.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn alert(state: State, previous: Option<State>) -> Alert {
        Alert {
            id: "0123456789abcdef0123456789abcdef".into(),
            token: "orders".into(),
            state,
            previous_state: previous,
            message: "the token is dead".into(),
            fix: Some("run `permatoken refresh`".into()),
            time: at(0),
            kind: AlertKind::Change,
        }
    }

    #[test]
    fn a_change_fires_the_new_state_and_resolves_the_old() {
        let posted = of_alert(&alert(State::Dead, Some(State::Critical)), at(10));
        assert_eq!(posted.len(), 2);
        assert_eq!(posted[0].labels["state"], "critical");
        assert_eq!(posted[0].ends_at, at(0));
        assert_eq!(posted[1].labels, token_labels("orders", State::Dead));
        assert_eq!(posted[1].labels["severity"], "critical");
        assert_eq!(posted[1].starts_at, at(0));
        assert_eq!(posted[1].ends_at, at(10 + 240));
        assert_eq!(posted[1].annotations["fix"], "run `permatoken refresh`");
        let recovered = of_alert(&alert(State::Recovered, Some(State::Dead)), at(10));
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].labels, token_labels("orders", State::Dead));
        assert_eq!(recovered[0].ends_at, at(0));
    }

    #[test]
    fn the_body_is_alertmanagers_array() {
        let json: serde_json::Value =
            serde_json::from_slice(&body(&of_alert(&alert(State::Expiring, None), at(0)))).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "labels": {"alertname": "PermatokenTokenState", "severity": "warning",
                           "state": "expiring", "token": "orders"},
                "annotations": {"alert_id": "0123456789abcdef0123456789abcdef",
                                "description": "the token is dead",
                                "fix": "run `permatoken refresh`",
                                "summary": "permatoken: token `orders` is expiring"},
                "startsAt": "2027-01-15T08:00:00Z",
                "endsAt": "2027-01-15T08:04:00Z",
            }])
        );
    }

    #[test]
    fn a_set_and_the_state_have_labels_of_their_own() {
        let set = of_alert(&alert(State::SetShrunk, None), at(0));
        assert_eq!(set[0].labels["alertname"], SET_ALERT);
        assert_eq!(set[0].labels["token_set"], "orders");
        assert!(!set[0].labels.contains_key("token"));
        assert_eq!(set[0].ends_at, at(3600));
    }

    #[test]
    fn the_endpoint_keeps_a_prefix() {
        let url = |s: &str| {
            endpoint(&SecretUrl::parse(s).unwrap())
                .expose_secret()
                .to_string()
        };
        assert_eq!(url("http://am:9093"), "http://am:9093/api/v2/alerts");
        assert_eq!(
            url("https://am.example.com/alertmanager/"),
            "https://am.example.com/alertmanager/api/v2/alerts"
        );
    }
}
