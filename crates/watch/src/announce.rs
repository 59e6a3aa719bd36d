//! What was announced of each token, and what a round decides to announce: [`crate::states::decide`]
//! asked for each observation against what the state store says was announced, its decisions kept
//! until the round ends and then written in one transaction ([`Announcer::flush`]): a crash leaves
//! all of a round's alerts, their deliveries and the announced states, or none of them (an alert
//! announced but never queued would never be sent), and a round of thousands of tokens costs one
//! commit, not one per token. How long what was announced has lasted is measured on the monotonic
//! clock ([`crate::lasted`]), never by subtracting the wall times the store keeps.
//!
//! Must never: deliver an alert (that is [`crate::delivery`]'s), or write before the round's end:
//! a leader fenced during the round discards its decisions ([`Announcer::discard`]) and leaves them
//! to the new leader.

use std::collections::HashMap;
use std::time::Instant;

use jiff::Timestamp;
use permatoken_state as store;

use crate::lasted::Stopwatches;
use crate::records::{alert_to_store, announced_from_store, announced_to_store};
use crate::states::{self, Observation, State, Subject, Timing};

/// What was announced, per token name, and the round's decisions not yet written.
#[derive(Default)]
pub(crate) struct Announcer {
    announced: HashMap<String, store::Announced>,
    decisions: Vec<store::Decision>,
    /// Kept across rounds, unlike what was announced: how long it has lasted.
    stopwatches: Stopwatches,
}

impl Announcer {
    /// Reads what was announced, once per round (not once per token), and forgets decisions a
    /// failed round left unwritten: they are made again from the store.
    pub(crate) async fn load(&mut self, store: &store::Store) -> Result<(), store::Error> {
        self.decisions.clear();
        self.announced = store
            .all_announced()
            .await?
            .into_iter()
            .map(|a| (a.token_name.clone(), a))
            .collect();
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
            record = Some((alert_to_store(alert), routes.to_vec()));
        }
        let alerted = record.is_some();
        if previous.as_ref() != Some(&decision.next) || alerted {
            let (announcement, unknown_since) = announced_to_store(&decision.next, alert_id);
            self.decisions.push(store::Decision {
                token_name: name.to_owned(),
                announcement: announcement.clone(),
                unknown_since,
                alert: record,
            });
            let entry = self
                .announced
                .entry(name.to_owned())
                .or_insert_with(|| store::Announced {
                    token_name: name.to_owned(),
                    announcement: None,
                    unknown_since: None,
                });
            if announcement.is_some() {
                entry.announcement = announcement;
            }
            entry.unknown_since = unknown_since;
        }
        alerted
    }

    /// Writes the round's decisions in one transaction. What was announced is let go: the next
    /// round reads it again, and a fleet's (some 8 MB at 10,000 tokens) would otherwise be held
    /// while the round's snapshot is built, the daemon's peak.
    pub(crate) async fn flush(&mut self, store: &store::Store) -> Result<(), store::Error> {
        self.announced = HashMap::new();
        store
            .announce_all(std::mem::take(&mut self.decisions))
            .await
    }

    /// Forgets the tokens `keep` says are no longer configured.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.stopwatches.retain(keep);
    }

    /// Drops the round's decisions unwritten (this replica stopped leading during the round).
    pub(crate) fn discard(&mut self) {
        self.announced = HashMap::new();
        self.decisions = Vec::new();
    }
}
