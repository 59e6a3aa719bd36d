//! Which state a token is in, and when that is worth telling a person: pure logic, no I/O, no clock
//! of its own (every function takes `now`), so each rule is a unit test.
//!
//! A check ([`permatoken_inspect::Report`]) and what the engine did ([`Engine`]) give an
//! [`Observation`]: a [`State`], or [`Observed::Unknown`] when the check could not tell (a network
//! error, an outage, a rate limit). [`decide`] then compares it with what was last announced
//! ([`Announced`], which the caller keeps in the state store) and says whether to alert:
//!
//! - one alert per change of state (`kind = "change"`); the first check of a token alerts only when
//!   it is not ok;
//! - a reminder (`kind = "reminder"`) every `remind_every` while critical or dead;
//! - `unknown` never changes an announced state by itself: it is alerted, as `cannot_be_checked`,
//!   only once it has lasted `unknown_after`, so a single transient error never alerts;
//! - how long an unknown run or a state since its last alert has lasted is measured by the caller on
//!   the monotonic clock ([`Lasted`]), never by subtracting wall times: a step of the wall clock
//!   neither hastens nor holds back `cannot_be_checked` or a reminder. `now` is only recorded;
//! - back to ok from a bad state is announced as `recovered` (the announced state becomes `ok`),
//!   except after `failed_over`, whose alert already said the backup took over;
//! - given back the same [`Announced`] after a restart, nothing new is sent.
//!
//! Must never: look at a secret, read a clock, or decide how an alert is delivered.

use std::time::Duration;

use jiff::Timestamp;
use permatoken_inspect::{Report, Status};
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, AlertKind};

/// A token's state, as alerts and the state store name it (`snake_case` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Valid, and not expiring within the warning window.
    Ok,
    /// Valid, but expiring within the warning window.
    Expiring,
    /// Expiring within the critical window, or missing a required permission.
    Critical,
    /// Expired, invalidated or invalid, by the API's own word.
    Dead,
    /// Dead, and a backup was promoted in its place.
    FailedOver,
    /// Unknown for longer than `unknown_after`.
    CannotBeChecked,
    /// Back to ok from a bad state. Only ever an alert's `state`: the state announced is then `ok`.
    Recovered,
    /// A `[[token_set]]` lost more than a tenth of its members in one listing. Only ever the
    /// `state` of an alert about a set (its `token` is the set's name), never a token's.
    SetShrunk,
}

impl State {
    /// Every state a token can be announced in, in the order of severity shown on the page
    /// (`recovered` is only ever an alert's state).
    pub const ALL: [State; 6] = [
        Self::Ok,
        Self::Expiring,
        Self::Critical,
        Self::Dead,
        Self::FailedOver,
        Self::CannotBeChecked,
    ];

    /// The words the page shows (never colour alone).
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Expiring => "expiring",
            Self::Critical => "critical",
            Self::Dead => "dead",
            Self::FailedOver => "failed over",
            Self::CannotBeChecked => "cannot be checked",
            Self::Recovered => "recovered",
            Self::SetShrunk => "set shrunk",
        }
    }

    /// The name used in JSON, metrics and the state store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Expiring => "expiring",
            Self::Critical => "critical",
            Self::Dead => "dead",
            Self::FailedOver => "failed_over",
            Self::CannotBeChecked => "cannot_be_checked",
            Self::Recovered => "recovered",
            Self::SetShrunk => "set_shrunk",
        }
    }

    /// Reads a name written by [`State::as_str`] (from the state store).
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Ok,
            Self::Expiring,
            Self::Critical,
            Self::Dead,
            Self::FailedOver,
            Self::CannotBeChecked,
            Self::Recovered,
            Self::SetShrunk,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// Whether a person is reminded of it every `remind_every`.
    pub fn is_reminded(self) -> bool {
        matches!(self, Self::Critical | Self::Dead)
    }

    /// Whether going back to ok from it is news.
    fn is_bad(self) -> bool {
        !matches!(self, Self::Ok | Self::Recovered)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one check said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A state the API's answers support.
    Known(State),
    /// The check could not tell (network, outage, rate limit, missing app credentials).
    Unknown,
}

/// What the renewal engine did in the round the report belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Nothing, or nothing that changes the state.
    #[default]
    Nothing,
    /// The token was renewed (the report is of the token now in place).
    Renewed,
    /// The token was dead and a backup was promoted in its place.
    FailedOver,
}

/// One check turned into a state, with the words an alert would carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The state, or unknown.
    pub observed: Observed,
    /// One sentence: what is the matter (the report's worst finding).
    pub message: String,
    /// What to do, if something is to be done.
    pub fix: Option<String>,
}

/// The state a report and the engine's outcome show.
///
/// Dead only when the API said so ([`Report::is_dead`]); an unknown verdict stays unknown here and
/// becomes `cannot_be_checked` only through [`decide`], with time.
pub fn observe(report: &Report, engine: Engine) -> Observation {
    let first = report.findings.first();
    let mut message = first.map(|f| f.message.clone()).unwrap_or_default();
    let mut fix = first.and_then(|f| f.fix.clone());
    let observed = if engine == Engine::FailedOver {
        Observed::Known(State::FailedOver)
    } else if report.is_dead() {
        Observed::Known(State::Dead)
    } else {
        match report.status {
            Status::Ok => Observed::Known(State::Ok),
            Status::Warning => Observed::Known(State::Expiring),
            Status::Critical => Observed::Known(State::Critical),
            Status::Unknown => Observed::Unknown,
        }
    };
    const FAILOVER_FIX: &str = "put a new backup token in the env file (the promoted one no longer has a backup); `permatoken check` shows the new primary";
    if engine == Engine::FailedOver {
        message = if message.is_empty() {
            "the token was dead and a backup took its place".into()
        } else {
            format!("the token was dead and a backup took its place: {message}")
        };
        fix = Some(FAILOVER_FIX.into());
    } else if message.is_empty() {
        message = match observed {
            Observed::Known(state) => format!("the token is {state}"),
            Observed::Unknown => "the token could not be checked".into(),
        };
    }
    if engine == Engine::Renewed && observed == Observed::Known(State::Ok) {
        message = format!("the token was renewed: {message}");
    }
    Observation {
        observed,
        message,
        fix,
    }
}

/// What was last announced about a token: the caller keeps it in the state store and hands it back
/// unchanged after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announced {
    /// The state announced (or, for a token first seen ok, silently recorded); `None` while every
    /// check so far was unknown.
    pub state: Option<State>,
    /// Since when it has been in that state.
    pub since: Timestamp,
    /// When the last alert about it (change or reminder) was made.
    pub last_alert: Option<Timestamp>,
    /// How many reminders were made for this state.
    pub reminders: u32,
    /// When the current run of unknown checks began; `None` after a check that could tell.
    pub unknown_since: Option<Timestamp>,
}

/// The time rules of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long unknown may last before it is alerted as `cannot_be_checked`.
    pub unknown_after: Duration,
    /// How often a person is reminded while critical or dead.
    pub remind_every: Duration,
}

/// How long what an [`Announced`] records has lasted at the time of a decision, measured by the
/// caller on the monotonic clock (`crate::lasted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lasted {
    /// Since `unknown_since` (nothing when that is `None`).
    pub unknown: Duration,
    /// Since the last alert about the state (`last_alert`, or `since` before any).
    pub since_alert: Duration,
}

/// What to do after a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The alert to send, if any (at least once: keep it in the store until delivered).
    pub alert: Option<Alert>,
    /// What to keep as announced; equal to the previous one when nothing changed.
    pub next: Announced,
}

/// The token a decision is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Its name in the configuration (the alert's `token`).
    pub name: &'a str,
    /// A stable key for it (the configuration name or the store's key): part of each alert's `id`.
    pub key: &'a str,
}

/// Whether `observation`, made at `now`, is worth an alert given what was `announced` (`None` for a
/// token never seen) and how long that has `lasted`, and what is announced next.
pub fn decide(
    subject: Subject<'_>,
    announced: Option<&Announced>,
    observation: &Observation,
    now: Timestamp,
    lasted: Lasted,
    timing: Timing,
) -> Decision {
    let previous = announced.and_then(|a| a.state);
    let state = match observation.observed {
        Observed::Known(state) => state,
        Observed::Unknown => {
            let mut next = announced.cloned().unwrap_or(Announced {
                state: None,
                since: now,
                last_alert: None,
                reminders: 0,
                unknown_since: None,
            });
            // A run of unknown checks that begins now has lasted nothing yet.
            let unknown_for = match next.unknown_since {
                Some(_) => lasted.unknown,
                None => Duration::ZERO,
            };
            next.unknown_since.get_or_insert(now);
            if previous == Some(State::CannotBeChecked) || unknown_for < timing.unknown_after {
                // Reminders go on while unknown: the token was critical or dead when last seen.
                return remind_or_keep(subject, next, observation, now, lasted, timing);
            }
            State::CannotBeChecked
        }
    };
    let unknown_since = match observation.observed {
        Observed::Unknown => announced.and_then(|a| a.unknown_since).or(Some(now)),
        Observed::Known(_) => None,
    };
    if previous == Some(state) {
        let mut next = announced.cloned().expect("a previous state was announced");
        next.unknown_since = unknown_since;
        return remind_or_keep(subject, next, observation, now, lasted, timing);
    }
    let (alert_state, next_state) = match (previous, state) {
        (Some(p), State::Ok) if p.is_bad() => (Some(State::Recovered), State::Ok),
        (None, State::Ok) => (None, State::Ok),
        _ => (Some(state), state),
    };
    // The failover alert already said the backup took over; the backup being ok is no news.
    let alert_state =
        alert_state.filter(|_| previous != Some(State::FailedOver) || state != State::Ok);
    let since = now;
    let next = Announced {
        state: Some(next_state),
        since,
        last_alert: alert_state
            .map(|_| now)
            .or(announced.and_then(|a| a.last_alert)),
        reminders: 0,
        unknown_since,
    };
    let alert = alert_state.map(|alert_state| Alert {
        id: alert_id(subject.key, alert_state, since, 0),
        token: subject.name.to_owned(),
        state: alert_state,
        previous_state: previous,
        message: observation.message.clone(),
        fix: observation.fix.clone(),
        time: now,
        kind: AlertKind::Change,
    });
    Decision { alert, next }
}

fn remind_or_keep(
    subject: Subject<'_>,
    mut next: Announced,
    observation: &Observation,
    now: Timestamp,
    lasted: Lasted,
    timing: Timing,
) -> Decision {
    let Some(state) = next.state.filter(|s| s.is_reminded()) else {
        return Decision { alert: None, next };
    };
    if lasted.since_alert < timing.remind_every || timing.remind_every.is_zero() {
        return Decision { alert: None, next };
    }
    next.reminders += 1;
    next.last_alert = Some(now);
    let alert = Alert {
        id: alert_id(subject.key, state, next.since, next.reminders),
        token: subject.name.to_owned(),
        state,
        previous_state: Some(state),
        message: observation.message.clone(),
        fix: observation.fix.clone(),
        time: now,
        kind: AlertKind::Reminder,
    };
    Decision {
        alert: Some(alert),
        next,
    }
}

/// The stable id of an alert: 32 hex digits of SHA-256 over the token's key, the state, when the
/// state began and the reminder's number (0 for the change itself). The same facts give the same id,
/// so a receiver can drop an alert sent again after a restart or a retry.
pub fn alert_id(token_key: &str, state: State, since: Timestamp, reminder: u32) -> String {
    let text = format!(
        "permatoken-alert\n{token_key}\n{}\n{}\n{reminder}",
        state.as_str(),
        since.as_second()
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        unknown_after: Duration::from_secs(6 * 3600),
        remind_every: Duration::from_secs(24 * 3600),
    };
    const SUBJECT: Subject<'static> = Subject {
        name: "orders",
        key: "orders",
    };

    fn at(hours: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + hours * 3600).unwrap()
    }

    fn seen(state: State) -> Observation {
        Observation {
            observed: Observed::Known(state),
            message: format!("the token is {state}"),
            fix: None,
        }
    }

    fn unknown() -> Observation {
        Observation {
            observed: Observed::Unknown,
            message: "the Graph API could not be reached".into(),
            fix: None,
        }
    }

    /// How long `announced` has lasted at `now` when the wall clock never steps: what the daemon
    /// measures on the monotonic clock then.
    fn by_wall(announced: Option<&Announced>, now: Timestamp) -> Lasted {
        let since = |t: Timestamp| Duration::try_from(now.duration_since(t)).unwrap_or_default();
        Lasted {
            unknown: announced
                .and_then(|a| a.unknown_since)
                .map_or(Duration::ZERO, since),
            since_alert: announced
                .map_or(Duration::ZERO, |a| since(a.last_alert.unwrap_or(a.since))),
        }
    }

    /// `decide` with the wall clock never stepping.
    fn decide_at(
        announced: Option<&Announced>,
        obs: &Observation,
        now: Timestamp,
        timing: Timing,
    ) -> Decision {
        decide(
            SUBJECT,
            announced,
            obs,
            now,
            by_wall(announced, now),
            timing,
        )
    }

    /// An alert as (hour, kind, state, previous).
    type Said = (i64, AlertKind, State, Option<State>);

    /// Runs observations one an hour from hour 0 and returns the alerts made.
    fn run(start: Option<Announced>, seq: &[Observation]) -> (Vec<Said>, Option<Announced>) {
        let mut announced = start;
        let mut alerts = Vec::new();
        for (hour, obs) in seq.iter().enumerate() {
            let d = decide_at(announced.as_ref(), obs, at(hour as i64), TIMING);
            if let Some(a) = d.alert {
                alerts.push((hour as i64, a.kind, a.state, a.previous_state));
            }
            announced = Some(d.next);
        }
        (alerts, announced)
    }

    #[test]
    fn a_first_ok_is_silent_and_a_first_bad_state_alerts() {
        let (alerts, next) = run(None, &[seen(State::Ok)]);
        assert!(alerts.is_empty());
        assert_eq!(next.unwrap().state, Some(State::Ok));
        let (alerts, _) = run(None, &[seen(State::Dead)]);
        assert_eq!(alerts, [(0, AlertKind::Change, State::Dead, None)]);
    }

    #[test]
    fn one_alert_per_change_of_state() {
        let seq = [
            seen(State::Ok),
            seen(State::Expiring),
            seen(State::Expiring),
            seen(State::Critical),
            seen(State::Critical),
            seen(State::Dead),
        ];
        let (alerts, _) = run(None, &seq);
        assert_eq!(
            alerts,
            [
                (1, AlertKind::Change, State::Expiring, Some(State::Ok)),
                (3, AlertKind::Change, State::Critical, Some(State::Expiring)),
                (5, AlertKind::Change, State::Dead, Some(State::Critical)),
            ]
        );
    }

    #[test]
    fn back_to_ok_is_recovered_but_not_after_a_failover() {
        let (alerts, next) = run(
            None,
            &[seen(State::Critical), seen(State::Ok), seen(State::Ok)],
        );
        assert_eq!(
            alerts[1],
            (
                1,
                AlertKind::Change,
                State::Recovered,
                Some(State::Critical)
            )
        );
        assert_eq!(alerts.len(), 2);
        assert_eq!(next.unwrap().state, Some(State::Ok));
        let (alerts, _) = run(
            None,
            &[seen(State::Ok), seen(State::FailedOver), seen(State::Ok)],
        );
        assert_eq!(
            alerts,
            [(1, AlertKind::Change, State::FailedOver, Some(State::Ok))]
        );
    }

    #[test]
    fn reminders_come_every_remind_every_while_critical_or_dead_only() {
        let mut seq = vec![seen(State::Critical); 50];
        seq.extend(vec![seen(State::Expiring); 50]);
        let (alerts, _) = run(None, &seq);
        let hours: Vec<_> = alerts.iter().map(|a| (a.0, a.1)).collect();
        assert_eq!(
            hours,
            [
                (0, AlertKind::Change),
                (24, AlertKind::Reminder),
                (48, AlertKind::Reminder),
                (50, AlertKind::Change),
            ]
        );
    }

    #[test]
    fn remind_every_zero_means_no_reminders() {
        let timing = Timing {
            remind_every: Duration::ZERO,
            ..TIMING
        };
        let mut announced = None;
        let mut alerts = 0;
        for hour in 0..100 {
            let d = decide_at(announced.as_ref(), &seen(State::Dead), at(hour), timing);
            alerts += usize::from(d.alert.is_some());
            announced = Some(d.next);
        }
        assert_eq!(alerts, 1);
    }

    #[test]
    fn a_single_unknown_never_alerts_nor_changes_the_state() {
        let seq = [
            seen(State::Ok),
            unknown(),
            seen(State::Ok),
            unknown(),
            unknown(),
            seen(State::Ok),
        ];
        let (alerts, next) = run(None, &seq);
        assert!(alerts.is_empty(), "{alerts:?}");
        let next = next.unwrap();
        assert_eq!((next.state, next.unknown_since), (Some(State::Ok), None));
        assert_eq!(next.since, at(0));
    }

    #[test]
    fn unknown_for_unknown_after_is_cannot_be_checked_once() {
        let mut seq = vec![seen(State::Ok)];
        seq.extend(vec![unknown(); 30]);
        seq.push(seen(State::Ok));
        let (alerts, _) = run(None, &seq);
        // Unknown from hour 1; six hours later, at hour 7, and never again while it lasts.
        assert_eq!(
            alerts,
            [
                (
                    7,
                    AlertKind::Change,
                    State::CannotBeChecked,
                    Some(State::Ok)
                ),
                (
                    31,
                    AlertKind::Change,
                    State::Recovered,
                    Some(State::CannotBeChecked)
                ),
            ]
        );
        // Never seen at all: still alerted after six hours, with no previous state.
        let (alerts, _) = run(None, &vec![unknown(); 8]);
        assert_eq!(
            alerts,
            [(6, AlertKind::Change, State::CannotBeChecked, None)]
        );
    }

    #[test]
    fn reminders_of_a_dead_token_go_on_while_it_cannot_be_checked() {
        let mut seq = vec![seen(State::Dead)];
        seq.extend(vec![unknown(); 5]);
        seq.extend(vec![seen(State::Dead); 20]);
        let (alerts, _) = run(None, &seq);
        assert_eq!(
            alerts.iter().map(|a| (a.0, a.1)).collect::<Vec<_>>(),
            [(0, AlertKind::Change), (24, AlertKind::Reminder)]
        );
    }

    #[test]
    fn a_jump_of_the_wall_clock_neither_hastens_nor_holds_back_an_alert() {
        const MINUTE: Duration = Duration::from_secs(60);
        let unknown_since = Announced {
            state: Some(State::Ok),
            since: at(0),
            last_alert: None,
            reminders: 0,
            unknown_since: Some(at(0)),
        };
        // The wall clock jumped ten hours on after a minute of unknown: a minute it is.
        let lasted = Lasted {
            unknown: MINUTE,
            since_alert: MINUTE,
        };
        let d = decide(
            SUBJECT,
            Some(&unknown_since),
            &unknown(),
            at(10),
            lasted,
            TIMING,
        );
        assert_eq!(d.alert, None);
        assert_eq!(
            d.next, unknown_since,
            "the recorded times stay as they were"
        );
        // Back ten hours, after six hours of unknown: six hours it is.
        let lasted = Lasted {
            unknown: TIMING.unknown_after,
            since_alert: TIMING.unknown_after,
        };
        let d = decide(
            SUBJECT,
            Some(&unknown_since),
            &unknown(),
            at(-4),
            lasted,
            TIMING,
        );
        let alert = d.alert.expect("cannot_be_checked");
        assert_eq!(alert.state, State::CannotBeChecked);
        // Recorded on the wall clock, for people.
        assert_eq!((alert.time, d.next.since), (at(-4), at(-4)));

        let dead = Announced {
            state: Some(State::Dead),
            since: at(0),
            last_alert: Some(at(0)),
            reminders: 0,
            unknown_since: None,
        };
        // Two days on by the wall clock, a minute since the alert: no reminder.
        let lasted = Lasted {
            unknown: Duration::ZERO,
            since_alert: MINUTE,
        };
        let d = decide(
            SUBJECT,
            Some(&dead),
            &seen(State::Dead),
            at(48),
            lasted,
            TIMING,
        );
        assert_eq!(d.alert, None);
        // A day since the alert, whatever the wall clock says: the reminder.
        let lasted = Lasted {
            unknown: Duration::ZERO,
            since_alert: TIMING.remind_every,
        };
        let d = decide(
            SUBJECT,
            Some(&dead),
            &seen(State::Dead),
            at(-1),
            lasted,
            TIMING,
        );
        assert_eq!(d.alert.map(|a| a.kind), Some(AlertKind::Reminder));
        // A run of unknown that begins now has lasted nothing, whatever the caller measured.
        let lasted = Lasted {
            unknown: TIMING.unknown_after * 2,
            since_alert: Duration::ZERO,
        };
        let d = decide(SUBJECT, None, &unknown(), at(0), lasted, TIMING);
        assert_eq!((d.alert, d.next.unknown_since), (None, Some(at(0))));
    }

    #[test]
    fn a_restart_given_the_announced_state_sends_nothing_again() {
        let (alerts, announced) = run(None, &[seen(State::Dead)]);
        assert_eq!(alerts.len(), 1);
        let stored = serde_json::to_string(&announced).unwrap();
        let restored: Option<Announced> = serde_json::from_str(&stored).unwrap();
        let d = decide_at(restored.as_ref(), &seen(State::Dead), at(1), TIMING);
        assert_eq!(d.alert, None);
        assert_eq!(Some(d.next), restored);
    }

    #[test]
    fn ids_are_stable_and_tell_changes_and_reminders_apart() {
        let a = decide_at(None, &seen(State::Dead), at(0), TIMING)
            .alert
            .unwrap();
        let b = decide_at(None, &seen(State::Dead), at(0), TIMING)
            .alert
            .unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(a.id.len(), 32);
        assert_eq!(a.id, alert_id("orders", State::Dead, at(0), 0));
        assert_ne!(a.id, alert_id("orders", State::Dead, at(0), 1));
        assert_ne!(a.id, alert_id("billing", State::Dead, at(0), 0));
        assert_ne!(a.id, alert_id("orders", State::Dead, at(1), 0));
    }

    fn report(status: Status, codes: &[permatoken_inspect::FindingCode]) -> Report {
        use permatoken_inspect::{Finding, Kind, Severity, TokenFacts};
        Report {
            status,
            token: TokenFacts {
                source: ".env".into(),
                variable: None,
                fingerprint: "EAAT…xyz".into(),
                token_type: None,
                kind: Kind::Unknown,
                app_id: None,
                embedded_app_id: None,
                application: None,
                valid: None,
                never_expires: None,
                issued_at: None,
                expires_at: None,
                data_access_expires_at: None,
                scopes: None,
                missing_scopes: Vec::new(),
                granular_scopes: Vec::new(),
            },
            identity: None,
            findings: codes
                .iter()
                .map(|&code| Finding {
                    code,
                    severity: Severity::Critical,
                    message: format!("{code:?} happened"),
                    fix: Some(format!("fix {code:?}")),
                    trace_id: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_report_gives_its_state_and_dead_only_by_the_api_word() {
        use permatoken_inspect::FindingCode as F;
        let cases = [
            (
                Status::Ok,
                vec![],
                Engine::Nothing,
                Observed::Known(State::Ok),
            ),
            (
                Status::Warning,
                vec![F::TokenExpiring],
                Engine::Nothing,
                Observed::Known(State::Expiring),
            ),
            (
                Status::Critical,
                vec![F::TokenExpiresSoon],
                Engine::Nothing,
                Observed::Known(State::Critical),
            ),
            (
                Status::Critical,
                vec![F::MissingPermission],
                Engine::Nothing,
                Observed::Known(State::Critical),
            ),
            (
                Status::Critical,
                vec![F::TokenExpired],
                Engine::Nothing,
                Observed::Known(State::Dead),
            ),
            (
                Status::Critical,
                vec![F::TokenInvalidated],
                Engine::Nothing,
                Observed::Known(State::Dead),
            ),
            (
                Status::Critical,
                vec![F::TokenExpired],
                Engine::FailedOver,
                Observed::Known(State::FailedOver),
            ),
            (
                Status::Unknown,
                vec![F::GraphUnreachable],
                Engine::Nothing,
                Observed::Unknown,
            ),
            (
                Status::Unknown,
                vec![F::RateLimited],
                Engine::Nothing,
                Observed::Unknown,
            ),
            (
                Status::Ok,
                vec![],
                Engine::Renewed,
                Observed::Known(State::Ok),
            ),
        ];
        for (status, codes, engine, expected) in cases {
            let o = observe(&report(status, &codes), engine);
            assert_eq!(o.observed, expected, "{status:?} {codes:?} {engine:?}");
            assert!(!o.message.is_empty());
        }
        let o = observe(
            &report(Status::Critical, &[F::TokenExpired]),
            Engine::Nothing,
        );
        assert_eq!(o.message, "TokenExpired happened");
        assert_eq!(o.fix.as_deref(), Some("fix TokenExpired"));
        let o = observe(&report(Status::Ok, &[]), Engine::Renewed);
        assert_eq!(o.message, "the token was renewed: the token is ok");
    }

    #[test]
    fn states_round_trip_their_names() {
        for s in [
            State::Ok,
            State::FailedOver,
            State::CannotBeChecked,
            State::Recovered,
        ] {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
