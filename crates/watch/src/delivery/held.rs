//! What the courier holds in memory while the state cannot take it: the alerts decided meanwhile
//! (delivered from here, with the ids they are recorded under later), and whether the state can be
//! written at all, with the `state_unwritable` alert that says it cannot.
//!
//! Must never: give an alert a second id (the decision's is kept until it is recorded), or forget
//! an attempt's outcome before the state has it (a delivered alert would be sent again).

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use permatoken_state as store;

use crate::alert::{Alert, AlertKind, STATE_ALERT_TOKEN};
use crate::states::State;

/// A delivery: its route and its alert's id.
pub(super) type Key = (String, String);

/// An attempt's outcome the state has not taken yet: what [`store::Store::settle_all`] is given.
pub(super) type Outcome = (Key, Timestamp, store::Settlement);

/// Since when the state cannot be written, and what it answered last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unwritable {
    /// The first failed write.
    pub(crate) since: Timestamp,
    /// The last failed write's error.
    pub(crate) reason: String,
}

/// An alert that is not in the state.
struct HeldAlert {
    alert: Alert,
    /// A token's alert is recorded once the state can be written; the state's own never is.
    recorded_later: bool,
    routes: Vec<HeldRoute>,
}

/// One route of a held alert.
struct HeldRoute {
    route: String,
    attempts: u32,
    /// When to try next: `None` once delivered or given up.
    next_at: Option<Timestamp>,
    /// The last attempt's end, for the state once it can take it.
    outcome: Option<(Timestamp, store::Settlement)>,
}

/// A held alert due on a route: what the courier sends.
pub(super) struct HeldDue {
    pub(super) route: String,
    pub(super) alert: Alert,
    pub(super) attempts: u32,
}

/// The alerts held and the state's health.
#[derive(Default)]
pub(super) struct Held {
    alerts: Vec<HeldAlert>,
    unwritable: Option<Unwritable>,
}

impl Held {
    /// Holds `alert` for each of `routes`, due at once.
    pub(super) fn hold(&mut self, alert: Alert, routes: &[String], recorded_later: bool) {
        // Without a route, a token's alert still waits to be recorded; the state's own is said
        // only in the log and on the page.
        let nowhere = routes.is_empty() && !recorded_later;
        if nowhere || self.alerts.iter().any(|h| h.alert.id == alert.id) {
            return;
        }
        let now = alert.time;
        self.alerts.push(HeldAlert {
            alert,
            recorded_later,
            routes: routes
                .iter()
                .map(|route| HeldRoute {
                    route: route.clone(),
                    attempts: 0,
                    next_at: Some(now),
                    outcome: None,
                })
                .collect(),
        });
    }

    /// The held deliveries due at `now`, but for those in `busy`.
    pub(super) fn due(&self, now: Timestamp, busy: impl Fn(&Key) -> bool) -> Vec<HeldDue> {
        let mut due = Vec::new();
        for held in &self.alerts {
            for r in &held.routes {
                let key = (r.route.clone(), held.alert.id.clone());
                if r.next_at.is_some_and(|at| at <= now) && !busy(&key) {
                    due.push(HeldDue {
                        route: r.route.clone(),
                        alert: held.alert.clone(),
                        attempts: r.attempts,
                    });
                }
            }
        }
        due
    }

    /// The ids of the alerts held here (their outcomes are kept here, not in the state).
    pub(super) fn ids(&self) -> HashSet<&str> {
        self.alerts.iter().map(|h| h.alert.id.as_str()).collect()
    }

    /// Keeps how one attempt at the deliveries `keys` (one alert, or a group's) ended for those
    /// held here; returns the others (the state has their alerts, and takes the outcome).
    pub(super) fn settled_all(
        &mut self,
        keys: &[Key],
        at: Timestamp,
        how: &store::Settlement,
    ) -> Vec<Key> {
        // By id once: a group after an outage may hold thousands.
        let index: HashMap<String, usize> = self
            .alerts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.alert.id.clone(), i))
            .collect();
        let mut others = Vec::new();
        for key in keys {
            let held = index.get(&key.1).map(|&i| &mut self.alerts[i]);
            let route = held.and_then(|h| h.routes.iter_mut().find(|r| r.route == key.0));
            match route {
                Some(route) => route.took(at, how),
                None => others.push(key.clone()),
            }
        }
        // The state's own alert is done once each route is: nothing records it.
        self.alerts
            .retain(|h| h.recorded_later || h.routes.iter().any(|r| r.next_at.is_some()));
        others
    }

    /// [`Held::settled_all`] of one delivery: whether it is held.
    #[cfg(test)]
    fn settled(&mut self, key: &Key, at: Timestamp, how: &store::Settlement) -> bool {
        self.settled_all(std::slice::from_ref(key), at, how)
            .is_empty()
    }

    /// Whether the delivery `key` is held.
    #[cfg(test)]
    fn holds(&self, key: &Key) -> bool {
        self.alerts
            .iter()
            .any(|h| h.alert.id == key.1 && h.routes.iter().any(|r| r.route == key.0))
    }
}

impl HeldRoute {
    /// An attempt ended at `at` as `how`.
    fn took(&mut self, at: Timestamp, how: &store::Settlement) {
        let route = self;
        route.attempts += 1;
        route.next_at = match how {
            store::Settlement::Delivered => None,
            store::Settlement::Failed {
                next_attempt_at, ..
            } => *next_attempt_at,
        };
        route.outcome = Some((at, how.clone()));
    }
}

impl Held {
    /// The alerts `ids` are in the state now: they are let go, and the outcomes of their attempts
    /// (but those still in flight, `busy`, whose task settles them in the state) are returned for
    /// the state to take.
    pub(super) fn recorded(
        &mut self,
        ids: &HashSet<String>,
        busy: impl Fn(&Key) -> bool,
    ) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        self.alerts.retain_mut(|held| {
            if !held.recorded_later || !ids.contains(&held.alert.id) {
                return true;
            }
            for r in held.routes.drain(..) {
                let key = (r.route, held.alert.id.clone());
                if let Some((at, how)) = r.outcome.filter(|_| !busy(&key)) {
                    outcomes.push((key, at, how));
                }
            }
            false
        });
        outcomes
    }

    /// Lets go of the token alerts held for the state (this replica stopped leading: the new
    /// leader decides again).
    pub(super) fn forget_unrecorded(&mut self) {
        self.alerts.retain(|h| !h.recorded_later);
    }

    /// How many token alerts wait to be recorded.
    pub(super) fn unrecorded(&self) -> usize {
        self.alerts.iter().filter(|h| h.recorded_later).count()
    }

    /// The state could not be written (`reason`) at `now`. The first failure of an outage holds
    /// a `state_unwritable` alert on every route of `routes` and returns it.
    pub(super) fn failed(
        &mut self,
        reason: String,
        now: Timestamp,
        routes: &[String],
    ) -> Option<Alert> {
        if let Some(unwritable) = &mut self.unwritable {
            unwritable.reason = reason;
            return None;
        }
        let alert = state_alert(&reason, now);
        self.unwritable = Some(Unwritable { since: now, reason });
        self.hold(alert.clone(), routes, false);
        Some(alert)
    }

    /// The state was written: the outage, if there was one, is over.
    pub(super) fn written(&mut self) -> Option<Unwritable> {
        self.unwritable.take()
    }

    /// Whether, and since when, the state cannot be written.
    pub(super) fn unwritable(&self) -> Option<&Unwritable> {
        self.unwritable.as_ref()
    }
}

/// The alert that says the state cannot be written since `since`: one id per outage.
fn state_alert(reason: &str, since: Timestamp) -> Alert {
    Alert {
        id: crate::states::alert_id("permatoken-state:unwritable", State::Critical, since, 0),
        token: STATE_ALERT_TOKEN.to_owned(),
        state: State::Critical,
        previous_state: None,
        message: format!(
            "watch cannot write its state ({reason}): tokens are still checked and alerts still \
             delivered, but what watch decides is kept only in its memory until it can be recorded"
        ),
        fix: Some(
            "free space on the disk of the state file, or make it writable again (for PostgreSQL, \
             bring the database back); do not restart watch meanwhile: what it decided would be \
             decided again"
                .to_owned(),
        ),
        time: since,
        kind: AlertKind::StateUnwritable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str, now: Timestamp) -> Alert {
        Alert {
            id: id.to_owned(),
            token: "orders".into(),
            state: State::Dead,
            previous_state: Some(State::Ok),
            message: "dead".into(),
            fix: None,
            time: now,
            kind: AlertKind::Change,
        }
    }

    #[test]
    fn a_held_alert_keeps_its_outcomes_until_recorded() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut held = Held::default();
        let routes = ["ops".to_owned(), "pager".to_owned()];
        held.hold(alert("a1", now), &routes, true);
        held.hold(alert("a1", now), &routes, true);
        assert_eq!(held.due(now, |_| false).len(), 2, "one alert, once a route");
        let ops = ("ops".to_owned(), "a1".to_owned());
        assert!(held.settled(&ops, now, &store::Settlement::Delivered));
        let due = held.due(now, |_| false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].route, "pager");
        let ids = HashSet::from(["a1".to_owned()]);
        // `pager` is in flight: its task settles it in the state.
        let outcomes = held.recorded(&ids, |k| k.0 == "pager");
        assert_eq!(outcomes, vec![(ops, now, store::Settlement::Delivered)]);
        assert!(held.due(now, |_| false).is_empty());
        assert!(!held.settled(
            &("pager".into(), "a1".into()),
            now,
            &store::Settlement::Delivered
        ));
    }

    #[test]
    fn an_outage_raises_one_state_alert_gone_once_delivered() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut held = Held::default();
        let routes = ["ops".to_owned()];
        let alert = held.failed("database or disk is full".into(), now, &routes);
        let alert = alert.expect("the first failure raises it");
        assert_eq!(alert.kind, AlertKind::StateUnwritable);
        assert!(held.failed("again".into(), now, &routes).is_none());
        assert_eq!(held.unwritable().unwrap().reason, "again");
        let key = ("ops".to_owned(), alert.id.clone());
        assert!(held.settled(&key, now, &store::Settlement::Delivered));
        assert!(!held.holds(&key));
        assert_eq!(held.written().unwrap().since, now);
        assert!(held.unwritable().is_none());
    }
}
