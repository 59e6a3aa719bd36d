//! Delivering alerts: every delivery the state says is due (a new alert at once, a failed one after
//! its retry delay) is sent on its route; many due at once on one route go as one [`AlertGroup`]
//! (from [`GROUP_AT`]), so that when an app secret reset kills a fleet a person gets one message that
//! counts them, not thousands. Each attempt is settled in the state (delivered, or failed with the
//! next attempt's time), so delivery is at least once, retried across restarts.
//!
//! Must never: raise an alert (that is [`crate::announce`]'s), show a route's URL or secret (the
//! [`Sender`] redacts), or lose a delivery: an attempt whose outcome cannot be written stops the
//! round, and the delivery is tried again.

use jiff::{SignedDuration, Timestamp};
use permatoken_state as store;

use crate::alert::{AlertGroup, Delivered, DeliveryError, Sender};
use crate::config::Route;
use crate::metrics::Counters;
use crate::records::alert_from_store;

/// Deliveries tried per round.
const DELIVERIES_PER_ROUND: u32 = 20_000;

/// From this many alerts due on one route at once, they go as one [`AlertGroup`].
pub(crate) const GROUP_AT: usize = 10;

/// What a delivery needs: where to record it, how to send, what to count, and the routes.
pub(crate) struct Courier<'a> {
    /// The state, which holds the deliveries.
    pub(crate) store: &'a store::Store,
    /// Sends on a route.
    pub(crate) sender: &'a Sender,
    /// `permatoken_alerts_total`.
    pub(crate) counters: &'a Counters,
    /// The configured routes.
    pub(crate) routes: &'a [Route],
}

impl Courier<'_> {
    /// Tries every delivery due at `now` (new alerts at once; failed ones after their retry delay);
    /// returns how many were tried.
    pub(crate) async fn deliver_due(&self, now: Timestamp) -> Result<usize, store::Error> {
        let due = self.store.due_deliveries(now, DELIVERIES_PER_ROUND).await?;
        let tried = due.len();
        // By route, in the order they were raised: many at once on one route go as one group.
        let mut by_route: Vec<(String, Vec<store::Delivery>)> = Vec::new();
        for delivery in due {
            match by_route.iter_mut().find(|(r, _)| *r == delivery.route) {
                Some((_, list)) => list.push(delivery),
                None => by_route.push((delivery.route.clone(), vec![delivery])),
            }
        }
        for (route_name, deliveries) in by_route {
            let Some(route) = self.routes.iter().find(|r| r.name == route_name) else {
                let ids = deliveries.iter().map(|d| d.alert.id.clone()).collect();
                self.store
                    .settle_all(
                        &route_name,
                        ids,
                        now,
                        store::Settlement::Failed {
                            error: "the route is no longer in the configuration".into(),
                            next_attempt_at: None,
                        },
                    )
                    .await?;
                continue;
            };
            if deliveries.len() >= GROUP_AT {
                self.deliver_group(route, deliveries, now).await?;
                continue;
            }
            for delivery in deliveries {
                let alert = alert_from_store(&delivery.alert);
                let result = self.sender.deliver(route, &alert).await;
                self.settle(route, vec![delivery], &alert.id, result, now)
                    .await?;
            }
        }
        Ok(tried)
    }

    /// Sends `deliveries` (all due on `route`) as one [`AlertGroup`] and settles each alike. The
    /// group's id comes from its members', so a group sent again after a failure keeps it.
    async fn deliver_group(
        &self,
        route: &Route,
        deliveries: Vec<store::Delivery>,
        now: Timestamp,
    ) -> Result<(), store::Error> {
        let group = AlertGroup::new(
            deliveries
                .iter()
                .map(|d| alert_from_store(&d.alert))
                .collect(),
            now,
        );
        let result = self.sender.deliver_group(route, &group).await;
        self.settle(route, deliveries, &group.id, result, now).await
    }

    /// Records how one attempt on `route` ended for each of `deliveries`: one transaction, one log
    /// line, one count per alert.
    async fn settle(
        &self,
        route: &Route,
        deliveries: Vec<store::Delivery>,
        id: &str,
        result: Result<Delivered, DeliveryError>,
        now: Timestamp,
    ) -> Result<(), store::Error> {
        let count = deliveries.len();
        let what = if count == 1 {
            String::new()
        } else {
            format!(" ({count} alerts in one)")
        };
        // The fewest attempts among them sets the retry delay: the group waits for its newest member.
        let attempts = deliveries.iter().map(|d| d.attempts).min().unwrap_or(0);
        let ids: Vec<String> = deliveries.into_iter().map(|d| d.alert.id).collect();
        let settlement = match result {
            Ok(done) => {
                tracing::info!(route = %route.name, alert = %id, "alert delivered{what} ({})", done.status.map_or_else(|| "ok".to_owned(), |s| format!("HTTP {s}")));
                for _ in 0..count {
                    self.counters.alert(&route.name, "delivered");
                }
                store::Settlement::Delivered
            }
            Err(e) => {
                let next = e.retryable.then(|| {
                    now + SignedDuration::try_from(crate::alert::retry_delay(attempts + 1))
                        .unwrap_or(SignedDuration::from_hours(1))
                });
                tracing::warn!(route = %route.name, alert = %id, "alert delivery failed{what}{}: {}", if next.is_some() { " (will retry)" } else { "" }, e.reason);
                for _ in 0..count {
                    self.counters.alert(&route.name, "failed");
                }
                store::Settlement::Failed {
                    error: e.reason,
                    next_attempt_at: next,
                }
            }
        };
        self.store
            .settle_all(&route.name, ids, now, settlement)
            .await?;
        Ok(())
    }
}
