//! The round's writes when the state may refuse them (a full disk, a database gone): a write that
//! fails stops nothing. The round's decisions are kept unrecorded and their alerts delivered from
//! memory ([`crate::announce`], [`crate::delivery`]); a record of history that cannot be written
//! (a check, an event) is dropped, said in the log; the first failure of an outage raises the
//! `state_unwritable` alert and fails `/healthz` until a write succeeds again.
//!
//! Must never: stop the daemon, or skip a round's checks, because the state cannot be written.

use jiff::Timestamp;
use permatoken_state as store;

use super::Daemon;

impl Daemon {
    /// `result` of writing `what`: its value, or `None` after telling the courier the state
    /// cannot be written (what was not written is lost: history, not a decision).
    pub(super) fn written<T>(
        &self,
        what: &str,
        now: Timestamp,
        result: Result<T, store::Error>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                // Once per outage in words: a fleet's windows would say it forty times a round.
                if self.courier.unwritable().is_none() {
                    tracing::warn!("cannot record {what} ({e}): it is left out of the history");
                } else {
                    tracing::debug!("cannot record {what} ({e}): it is left out of the history");
                }
                self.courier.state_failed(&e, now);
                None
            }
        }
    }

    /// The round's end, leading: its decisions written with those left unrecorded before (kept
    /// again if the state still refuses them), and, while the state has been unwritable, a probe:
    /// an event saying the outage is over, which ends it once written.
    pub(super) async fn record_decisions(&mut self, now: Timestamp) {
        self.courier.set_routes(&self.config.routes);
        let recorded = match self.announcer.flush(&self.store, &self.courier).await {
            Ok(recorded) => recorded,
            Err(e) => {
                let held = self.courier.unrecorded();
                tracing::warn!(
                    "cannot record the round's decisions ({e}): kept in memory and written at the next round; {held} alert(s) delivered meanwhile"
                );
                self.courier.state_failed(&e, now);
                return;
            }
        };
        let Some(outage) = self.courier.unwritable() else {
            return;
        };
        let text = format!(
            "the state can be written again: it could not from {} ({}); {recorded} decision(s) made meanwhile are recorded now",
            outage.since, outage.reason
        );
        let probe = self
            .store
            .record_event(store::Event {
                at: now,
                token_name: None,
                kind: store::EventKind::Alert,
                detail: text.clone(),
            })
            .await;
        if self.written("the end of the outage", now, probe).is_some() {
            self.courier.state_written();
            tracing::info!("{text}");
        }
    }

    /// After the loop: the decisions still unrecorded get a last try, then deliveries under way
    /// their grace ([`crate::delivery::STOP_GRACE`]).
    pub(super) async fn wind_down(&mut self) {
        if self.announcer.unrecorded() > 0 && self.leadership.leads() {
            let now = self.clock.now();
            self.record_decisions(now).await;
            let lost = self.announcer.unrecorded();
            if lost > 0 {
                tracing::error!(
                    "stopping with {lost} decision(s) the state could not record: their tokens are decided again at the next start"
                );
            }
        }
        self.courier.stop().await;
    }
}
