//! What was announced of each token, and what a round decides to announce: [`crate::states::decide`]
//! asked for each observation against what the state store says was announced, its decisions kept
//! until the round ends and then written in one transaction ([`Announcer::flush`]): a crash leaves
//! all of a round's alerts, their deliveries and the announced states, or none of them (an alert
//! announced but never queued would never be sent), and a round of thousands of tokens costs one
//! commit, not one per token. How long what was announced has lasted is measured on the monotonic
//! clock ([`crate::lasted`]), never by subtracting the wall times the store keeps.
//!
//! Decisions the state cannot take (a full disk) are kept, **unrecorded**: each later round decides
//! against them as if they were written (so a dead token is not alerted again under a new id), and
//! writes them again, first, with its own. Their alerts are handed to the courier meanwhile
//! ([`Courier::hold`]), which delivers them with the ids they are recorded under.
//!
//! Must never: deliver an alert (that is [`crate::delivery`]'s), or write before the round's end:
//! a leader fenced during the round discards its decisions ([`Announcer::discard`]) and leaves them
//! to the new leader.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use jiff::Timestamp;
use permatoken_state as store;

use crate::delivery::Courier;
use crate::lasted::Stopwatches;
use crate::records::{alert_from_store, alert_to_store, announced_from_store, announced_to_store};
use crate::states::{self, Observation, State, Subject, Timing};

/// What was announced, per token name, and the round's decisions not yet written.
#[derive(Default)]
pub(crate) struct Announcer {
    announced: HashMap<String, store::Announced>,
    decisions: Vec<store::Decision>,
    /// Kept across rounds, unlike what was announced: how long it has lasted.
    stopwatches: Stopwatches,
    /// Decisions of earlier rounds the state could not take, in the order they were made.
    unrecorded: Vec<store::Decision>,
    /// `--no-alerts`: the states the last round decided, kept for the page and `--once`'s output
    /// though never recorded ([`Announcer::drop_decisions`]).
    looked: HashMap<String, State>,
}

impl Announcer {
    /// Reads what was announced, once per round (not once per token), with the unrecorded
    /// decisions over it; forgets decisions a failed round left unwritten: they are made again.
    pub(crate) async fn load(&mut self, store: &store::Store) -> Result<(), store::Error> {
        self.decisions.clear();
        self.announced = store
            .all_announced()
            .await?
            .into_iter()
            .map(|a| (a.token_name.clone(), a))
            .collect();
        for decision in &self.unrecorded {
            apply(&mut self.announced, decision);
        }
        Ok(())
    }

    /// Decides on `observation` of `name` against what is announced for it, and keeps the
    /// decision (the alert with its `routes`, and the new announced state) for [`Announcer::flush`].
    /// `now` is recorded; `mono`, the same moment on the monotonic clock, measures. Returns whether
    /// an alert was raised.
    pub(crate) fn announce(
        &mut self,
        name: &str,
        observation: &Observation,
        timing: Timing,
        routes: &[String],
        now: Timestamp,
        mono: Instant,
    ) -> bool {
        let stored = self.announced.get(name);
        let previous = stored.map(announced_from_store);
        let lasted = self.stopwatches.measure(name, previous.as_ref(), now, mono);
        let decision = states::decide(
            Subject { name, key: name },
            previous.as_ref(),
            observation,
            now,
            lasted,
            timing,
        );
        self.stopwatches
            .measure(name, Some(&decision.next), now, mono);
        let mut alert_id = stored
            .and_then(|s| s.announcement.as_ref())
            .and_then(|a| a.alert_id.clone());
        let mut record = None;
        if let Some(alert) = &decision.alert {
            tracing::warn!(
                token = %name,
                alert = %alert.id,
                "state {} -> {}: {}",
                alert.previous_state.map_or("none", State::as_str),
                alert.state,
                alert.message
            );
            alert_id = Some(alert.id.clone());
            record = Some(Box::new((alert_to_store(alert), routes.to_vec())));
        }
        let alerted = record.is_some();
        if previous.as_ref() != Some(&decision.next) || alerted {
            let (announcement, unknown_since) = announced_to_store(&decision.next, alert_id);
            let decision = store::Decision {
                token_name: name.to_owned(),
                announcement,
                unknown_since,
                alert: record,
            };
            apply(&mut self.announced, &decision);
            self.decisions.push(decision);
        }
        alerted
    }

    /// Writes the unrecorded decisions and the round's in one transaction. What was announced is
    /// let go: the next round reads it again, and a fleet's (some 8 MB at 10,000 tokens) would
    /// otherwise be held while the round's snapshot is built, the daemon's peak.
    ///
    /// When the state cannot take them, they are all kept unrecorded, and the round's new alerts
    /// handed to `courier` to deliver from memory; once written, the courier is told which of the
    /// alerts it holds are recorded now. Returns how many unrecorded decisions were written.
    pub(crate) async fn flush(
        &mut self,
        store: &store::Store,
        courier: &Courier,
    ) -> Result<usize, store::Error> {
        self.announced = HashMap::new();
        let new = std::mem::take(&mut self.decisions);
        if new.is_empty() && self.unrecorded.is_empty() {
            return Ok(0);
        }
        let earlier = self.unrecorded.len();
        // Neither copied nor moved when nothing waits (a fleet's first round: 100,000 of them).
        let all = if earlier == 0 {
            new
        } else {
            let mut all = std::mem::take(&mut self.unrecorded);
            all.extend(new);
            all
        };
        let recorded: HashSet<String> = all[..earlier]
            .iter()
            .filter_map(|d| Some(d.alert.as_ref()?.0.id.clone()))
            .collect();
        match store.announce_all(all).await {
            Ok(()) => {
                courier.recorded(&recorded);
                Ok(earlier)
            }
            Err(store::Refused {
                error: e,
                decisions: all,
            }) => {
                courier.hold(all[earlier..].iter().filter_map(|d| {
                    let (alert, routes) = &**d.alert.as_ref()?;
                    Some((alert_from_store(alert), routes.clone()))
                }));
                self.unrecorded = compact(all);
                Err(e)
            }
        }
    }

    /// Forgets the tokens `keep` says are no longer configured.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.stopwatches.retain(keep);
    }

    /// Decisions made outside a round's windows (a set that shrank) that the state refused: kept
    /// with the unrecorded ones and written first at the next flush, their alerts held by
    /// `courier` meanwhile, as a round's own.
    pub(crate) fn keep_refused(&mut self, decisions: Vec<store::Decision>, courier: &Courier) {
        courier.hold(decisions.iter().filter_map(|d| {
            let (alert, routes) = &**d.alert.as_ref()?;
            Some((alert_from_store(alert), routes.clone()))
        }));
        self.unrecorded.extend(decisions);
        self.unrecorded = compact(std::mem::take(&mut self.unrecorded));
    }

    /// How many decisions wait to be recorded.
    pub(crate) fn unrecorded(&self) -> usize {
        self.unrecorded.len()
    }

    /// The announced state of each token whose latest decision is unrecorded: the page shows it.
    pub(crate) fn unrecorded_states(&self) -> HashMap<String, State> {
        let mut states = self.looked.clone();
        states.extend(self.unrecorded.iter().filter_map(|d| {
            let state = State::parse(&d.announcement.as_ref()?.state)?;
            Some((d.token_name.clone(), state))
        }));
        states
    }

    /// Drops the round's decisions unwritten and their alerts unsent (`watch --once --no-alerts`),
    /// keeping only the states they decided, for the page and the output: what is recorded as
    /// announced stays as it was, so a later round decides (and alerts) the same again.
    pub(crate) fn drop_decisions(&mut self) {
        self.announced = HashMap::new();
        self.looked = std::mem::take(&mut self.decisions)
            .into_iter()
            .filter_map(|d| {
                let state = State::parse(&d.announcement?.state)?;
                Some((d.token_name, state))
            })
            .collect();
    }

    /// Drops the round's decisions and the unrecorded ones (this replica stopped leading during
    /// the round: the new leader decides again).
    pub(crate) fn discard(&mut self) {
        self.announced = HashMap::new();
        self.decisions = Vec::new();
        self.unrecorded = Vec::new();
    }
}

/// What `decision` leaves announced of its token in `announced`, as the state would have it.
fn apply(announced: &mut HashMap<String, store::Announced>, decision: &store::Decision) {
    let name = &decision.token_name;
    let entry = announced
        .entry(name.clone())
        .or_insert_with(|| store::Announced {
            token_name: name.clone(),
            announcement: None,
            unknown_since: None,
        });
    if decision.announcement.is_some() {
        entry.announcement.clone_from(&decision.announcement);
    }
    entry.unknown_since = decision.unknown_since;
}

/// Unrecorded decisions, fewer: each alert is kept (each must be recorded), but a decision without
/// one is dropped when a later decision of its token announces anew (writing it would change
/// nothing the later one does not), so a long outage costs a decision per alert, not per round.
fn compact(decisions: Vec<store::Decision>) -> Vec<store::Decision> {
    let mut announced_later: HashSet<String> = HashSet::new();
    let mut kept: Vec<store::Decision> = decisions
        .into_iter()
        .rev()
        .filter(|d| {
            let keep = d.alert.is_some() || !announced_later.contains(&d.token_name);
            if d.announcement.is_some() {
                announced_later.insert(d.token_name.clone());
            }
            keep
        })
        .collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(name: &str, state: &str, alert: Option<&str>) -> store::Decision {
        let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        store::Decision {
            token_name: name.into(),
            announcement: Some(store::Announcement {
                state: state.into(),
                since: at,
                alert_id: alert.map(str::to_owned),
                last_reminder_at: None,
                reminders: 0,
            }),
            unknown_since: None,
            alert: alert.map(|id| {
                let alert = store::Alert {
                    id: id.into(),
                    token_name: name.into(),
                    state: state.into(),
                    previous_state: None,
                    message: "m".into(),
                    fix: None,
                    time: at,
                };
                Box::new((alert, vec!["ops".to_owned()]))
            }),
        }
    }

    #[tokio::test]
    async fn an_unrecorded_decision_is_decided_against_and_not_alerted_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::Store::open(dir.path().join("state.db"))
            .await
            .unwrap();
        let dead = Observation {
            observed: crate::states::Observed::Known(State::Dead),
            message: "the token was invalidated".into(),
            fix: None,
        };
        let timing = Timing {
            unknown_after: std::time::Duration::from_secs(600),
            remind_every: std::time::Duration::from_secs(86_400),
        };
        let routes = ["ops".to_owned()];
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let mono = Instant::now();
        let mut announcer = Announcer::default();
        announcer.load(&store).await.unwrap();
        assert!(announcer.announce("orders", &dead, timing, &routes, now, mono));
        // As a flush the state refused leaves it.
        announcer.unrecorded = compact(std::mem::take(&mut announcer.decisions));
        let later = now + jiff::SignedDuration::from_mins(5);
        announcer.load(&store).await.unwrap();
        assert!(
            !announcer.announce(
                "orders",
                &dead,
                timing,
                &routes,
                later,
                mono + std::time::Duration::from_secs(300)
            ),
            "no second alert under a new id"
        );
        assert_eq!(
            announcer.unrecorded_states().get("orders"),
            Some(&State::Dead)
        );
    }

    #[test]
    fn unrecorded_decisions_keep_every_alert_and_the_latest_announcement() {
        let kept = compact(vec![
            decision("a", "ok", None),
            decision("a", "dead", Some("a1")),
            decision("b", "ok", None),
            decision("a", "dead", None),
            decision("b", "expiring", None),
        ]);
        let names: Vec<(&str, &str)> = kept
            .iter()
            .map(|d| {
                let state = d.announcement.as_ref().unwrap().state.as_str();
                (d.token_name.as_str(), state)
            })
            .collect();
        assert_eq!(
            names,
            [("a", "dead"), ("a", "dead"), ("b", "expiring")],
            "the alert kept, then each token's latest"
        );
        assert!(kept[0].alert.is_some());
    }
}
