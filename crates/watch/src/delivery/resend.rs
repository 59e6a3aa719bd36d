//! What keeps an `alertmanager` route's alerts alive: every [`RESEND`], one POST per route (cut in
//! [`PER_POST`]s for a fleet) carrying every alert still active on it, with `endsAt`
//! [`crate::alertmanager::ENDS_AFTER`] ahead, as Prometheus resends its firing alerts. An alert
//! sent before and no longer active (its token back to ok, or gone from the configuration, the
//! state writable again) is sent once more resolved, until a POST of it succeeds.
//!
//! Active is what the state says was announced: each token watched now in a firing state, with the latest
//! alert recorded about it (for its words, and the routes it went to). Those are looked up once per
//! alert and kept while it is the latest. While the state cannot be read, what was sent last is
//! sent again. The transitions themselves (fire, resolve) are deliveries like any other alert's, at
//! least once; this is only their keep-alive, so a resend that fails is simply made again at the
//! next period.
//!
//! Must never: send anything on a route of another kind, run two resends at once, or send a
//! token's alert on a route its alerts do not go to.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;

use super::Courier;
use crate::alert::Alert;
use crate::alertmanager::{self, PER_POST, Posted, RESEND};
use crate::config::{Route, RouteKind, TokenConfig};
use crate::records::alert_from_store;
use crate::states::State;

/// An alert's identity in Alertmanager.
type Labels = BTreeMap<&'static str, String>;

/// What the resends remember.
#[derive(Default)]
pub(super) struct Resends {
    /// When the last one began.
    last: Option<Instant>,
    /// Per route: what was last sent firing (or resolved, and not yet taken).
    sent: HashMap<String, BTreeMap<Labels, Posted>>,
    /// Per alert id: the alert and the routes it went to (`None`: not in the state).
    known: HashMap<String, Option<(Alert, Vec<String>)>>,
    /// The routes whose last resend failed: said once, not at every period.
    failing: HashSet<String>,
}

/// A token's active alert: the alert, its routes, since when.
type Active = (Alert, Vec<String>, Timestamp);

impl Courier {
    /// The tokens watched now (`tokens`, after the sets' expansion): kept only while `routes` has
    /// an `alertmanager` one, since a fleet's names are some megabytes.
    pub(crate) fn set_watched(&self, tokens: &[TokenConfig], routes: &[Route]) {
        let wanted = routes.iter().any(|r| r.kind == RouteKind::Alertmanager);
        let names = wanted.then(|| Arc::new(tokens.iter().map(|t| t.name.clone()).collect()));
        *super::lock(&self.0.watched) = names;
    }

    /// Whether the announced `name` (a token, a backup `<token>/<VARIABLE>`, a checklist item
    /// `<token>/doctor/<item>`) is of a token watched now.
    fn is_watched(watched: Option<&HashSet<String>>, name: &str) -> bool {
        let Some(watched) = watched else {
            return true;
        };
        watched.contains(name)
            || name
                .rsplit_once('/')
                .is_some_and(|(primary, _)| watched.contains(primary))
            || name
                .rsplit_once("/doctor/")
                .is_some_and(|(token, _)| watched.contains(token))
    }

    /// Whether a resend is due (the period has passed, this replica leads, a route wants it).
    pub(super) fn resend_due(&self) -> bool {
        let Ok(resends) = self.0.resends.try_lock() else {
            return false;
        };
        let wanted = lock_routes(self)
            .iter()
            .any(|r| r.kind == RouteKind::Alertmanager);
        let now = self.0.clock.instant();
        wanted
            && self.0.leading.load(std::sync::atomic::Ordering::Relaxed)
            && resends
                .last
                .is_none_or(|last| now.saturating_duration_since(last) >= RESEND)
    }

    /// Sends every active alert again on each `alertmanager` route, and once more resolved those
    /// that are no longer active.
    pub(super) async fn resend(&self) {
        let Ok(mut resends) = self.0.resends.try_lock() else {
            return;
        };
        resends.last = Some(self.0.clock.instant());
        let routes: Vec<Route> = lock_routes(self)
            .iter()
            .filter(|r| r.kind == RouteKind::Alertmanager)
            .cloned()
            .collect();
        let names: HashSet<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        resends
            .sent
            .retain(|route, _| names.contains(route.as_str()));
        let active = match self.active(&mut resends).await {
            Ok(active) => Some(active),
            Err(e) => {
                tracing::warn!(
                    "cannot read the active alerts ({e}): Alertmanager routes are sent what they were sent last"
                );
                None
            }
        };
        let now = self.0.clock.now();
        let unwritable = self
            .unwritable()
            .map(|u| alertmanager::state_unwritable(u.since, &u.reason, now));
        for route in routes {
            let previous = resends.sent.remove(&route.name).unwrap_or_default();
            let mut firing: BTreeMap<Labels, Posted> = match &active {
                Some(active) => active
                    .iter()
                    .filter(|(_, routes, _)| routes.contains(&route.name))
                    .map(|(alert, _, since)| alertmanager::firing(alert, *since, now))
                    .map(|p| (p.labels.clone(), p))
                    .collect(),
                None => previous
                    .iter()
                    .filter(|(_, p)| p.ends_at > now)
                    .map(|(l, p)| (l.clone(), refreshed(p, now)))
                    .collect(),
            };
            if let Some(u) = &unwritable {
                firing.insert(u.labels.clone(), u.clone());
            }
            let gone: BTreeMap<Labels, Posted> = previous
                .into_iter()
                .filter(|(l, _)| !firing.contains_key(l))
                .collect();
            let posted: Vec<Posted> = firing
                .values()
                .cloned()
                .chain(
                    gone.values()
                        .map(|p| alertmanager::resolved(p.clone(), now)),
                )
                .collect();
            let ok = self.post(&route, &posted, &mut resends.failing).await;
            if !ok {
                // Resolved again at the next period.
                firing.extend(gone);
            }
            resends.sent.insert(route.name.clone(), firing);
        }
    }

    /// The tokens in a firing state, each with its latest alert and that alert's routes.
    async fn active(&self, resends: &mut Resends) -> Result<Vec<Active>, permatoken_state::Error> {
        let announced = self.0.store.all_announced().await?;
        let watched = super::lock(&self.0.watched).clone();
        let mut out = Vec::new();
        let mut ids = HashSet::new();
        for a in announced {
            if !Self::is_watched(watched.as_deref(), &a.token_name) {
                continue;
            }
            let Some(announcement) = a.announcement else {
                continue;
            };
            let state = State::parse(&announcement.state).filter(|s| alertmanager::is_firing(*s));
            let (Some(state), Some(id)) = (state, announcement.alert_id) else {
                continue;
            };
            if !resends.known.contains_key(&id) {
                let deliveries = self.0.store.deliveries(&id).await?;
                let found = deliveries.first().map(|d| {
                    let routes = deliveries.iter().map(|d| d.route.clone()).collect();
                    (alert_from_store(&d.alert), routes)
                });
                resends.known.insert(id.clone(), found);
            }
            if let Some(Some((alert, routes))) = resends.known.get(&id) {
                let alert = Alert {
                    state,
                    token: a.token_name,
                    ..alert.clone()
                };
                out.push((alert, routes.clone(), announcement.since));
            }
            ids.insert(id);
        }
        resends.known.retain(|id, _| ids.contains(id));
        Ok(out)
    }

    /// POSTs `posted` on `route`, [`PER_POST`] at a time; whether all were taken.
    async fn post(&self, route: &Route, posted: &[Posted], failing: &mut HashSet<String>) -> bool {
        for chunk in posted.chunks(PER_POST) {
            let body = alertmanager::body(chunk);
            if let Err(e) = self.0.sender.post_alertmanager(route, body).await {
                if failing.insert(route.name.clone()) {
                    tracing::warn!(route = %route.name, "cannot send the active alerts again (tried again every minute): {}", e.reason);
                }
                return false;
            }
        }
        if failing.remove(&route.name) {
            tracing::info!(route = %route.name, "the active alerts are sent again");
        }
        true
    }
}

fn lock_routes(courier: &Courier) -> Arc<[Route]> {
    super::lock(&courier.0.routes).clone()
}

/// `posted` sent again at `now`.
fn refreshed(posted: &Posted, now: Timestamp) -> Posted {
    let mut p = posted.clone();
    p.ends_at = now
        .checked_add(alertmanager::ENDS_AFTER)
        .unwrap_or(posted.ends_at);
    p
}
