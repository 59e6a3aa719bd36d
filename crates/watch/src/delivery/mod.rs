//! Delivering alerts: every delivery the state says is due (a new alert at once, a failed one after
//! its retry delay) is sent on its route; many due at once on one route go as one [`AlertGroup`]
//! (from [`GROUP_AT`]), so that when an app secret reset kills a fleet a person gets one message that
//! counts them, not thousands. Each attempt is settled in the state (delivered, or failed with the
//! next attempt's time), so delivery is at least once, retried across restarts.
//!
//! The [`Courier`] runs beside the rounds on a task of its own ([`Courier::start`]): each attempt is
//! a task, at most [`PER_ROUTE`] at once on a route, so a receiver that never answers holds up its
//! own route's next attempts and nothing else: no check, renewal or round waits for a delivery.
//! Without that task (`watch --once`, tests on a simulated clock) [`Courier::deliver_due`] sends
//! what is due and waits for it. On a stop, attempts under way get [`STOP_GRACE`]; what is not
//! settled by then stays due in the state for the next start.
//!
//! While the state cannot be written (a full disk), the alerts the round decided are **held**
//! here (`held.rs`) and delivered from memory with the ids they are recorded under later; the
//! outage raises one `state_unwritable` alert on every route; once the decisions are recorded,
//! what was delivered meanwhile is settled as such and not sent again.
//!
//! The task also keeps the alerts of `alertmanager` routes alive while they are active, and resolves
//! those no longer active (`resend.rs`), as Prometheus does as Alertmanager's client; without the
//! task (`watch --once`) they end by themselves [`crate::alertmanager::ENDS_AFTER`] after their
//! delivery.
//!
//! Must never: raise a token's alert (that is [`crate::announce`]'s), show a route's URL or
//! secret (the [`Sender`] redacts), send a delivery that is in flight or whose outcome the state
//! has not taken yet, or lose a delivery: an outcome the state cannot take is kept and written
//! again, and the delivery is not read as due meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use permatoken_state as store;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::task::JoinSet;

mod held;
mod resend;

pub(crate) use held::Unwritable;
use held::{Held, Key, Outcome};

use crate::alert::{Alert, AlertGroup, Delivered, DeliveryError, Sender};
use crate::config::Route;
use crate::daemon::Clock;
use crate::metrics::Counters;
use crate::records::alert_from_store;

/// Deliveries read from the state at once.
const DUE_AT_ONCE: u32 = 20_000;

/// From this many alerts due on one route at once, they go as one [`AlertGroup`].
pub(crate) const GROUP_AT: usize = 10;

/// Attempts in flight at once on one route.
pub(crate) const PER_ROUTE: usize = 4;

/// How often the courier's task looks for deliveries due (retries come due on their own) when
/// nothing wakes it.
const TICK: Duration = Duration::from_secs(5);

/// How long attempts under way may go on after a stop is asked for.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// Delivers alerts: cheap to clone (all clones are one courier).
#[derive(Clone)]
pub(crate) struct Courier(Arc<Inner>);

struct Inner {
    store: store::Store,
    sender: Sender,
    counters: Counters,
    clock: Arc<dyn Clock>,
    routes: Mutex<Arc<[Route]>>,
    book: Mutex<Book>,
    /// Per route: its [`PER_ROUTE`] permits.
    permits: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Something may be due now (a round recorded alerts, the state failed).
    wake: Notify,
    /// Something the page shows changed (an attempt settled, the state's health).
    changed: Notify,
    /// The task, while it runs: how to stop it, and its handle.
    task: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
    /// Whether this replica leads: a standby delivers nothing (the leader does).
    leading: AtomicBool,
    /// What the `alertmanager` routes were sent last (`resend.rs`); held by the one resend running.
    resends: tokio::sync::Mutex<resend::Resends>,
    /// The tokens watched now, while an `alertmanager` route wants them: a token gone from the
    /// configuration is not sent again. `None`: not known yet, or no such route.
    watched: Mutex<Option<Arc<HashSet<String>>>>,
}

/// What the courier keeps between its passes.
#[derive(Default)]
struct Book {
    /// Attempts under way, `true` once finished. A finished one is forgotten only at the next
    /// pass's start, before the state is read again, so a settled delivery is never read as due
    /// from a read made before it was settled.
    in_flight: HashMap<Key, bool>,
    /// Outcomes the state could not take yet, written at the next pass.
    unsettled: Vec<Outcome>,
    held: Held,
}

/// One delivery to attempt.
struct Due {
    route: String,
    alert: Alert,
    attempts: u32,
}

impl Due {
    fn key(&self) -> Key {
        (self.route.clone(), self.alert.id.clone())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // What a panicked holder left is still the best knowledge there is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Courier {
    /// A courier over `store`, sending with `sender` on `routes`.
    pub(crate) fn new(
        store: store::Store,
        sender: Sender,
        counters: Counters,
        clock: Arc<dyn Clock>,
        routes: &[Route],
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            sender,
            counters,
            clock,
            routes: Mutex::new(routes.into()),
            book: Mutex::default(),
            permits: Mutex::default(),
            wake: Notify::new(),
            changed: Notify::new(),
            task: Mutex::new(None),
            leading: AtomicBool::new(true),
            resends: tokio::sync::Mutex::default(),
            watched: Mutex::default(),
        }))
    }

    /// The routes from now on (a reload may have changed them).
    pub(crate) fn set_routes(&self, routes: &[Route]) {
        let mut current = lock(&self.0.routes);
        if **current != *routes {
            *current = routes.into();
        }
    }

    /// Whether this replica leads, as the election said last: only a leader delivers.
    pub(crate) fn set_leading(&self, leading: bool) {
        self.0.leading.store(leading, Ordering::Relaxed);
    }

    /// Starts the courier's own task: deliveries go on beside the rounds until [`Courier::stop`].
    pub(crate) fn start(&self) {
        let mut task = lock(&self.0.task);
        if task.is_some() {
            return;
        }
        let (stop, stopped) = oneshot::channel();
        let courier = self.clone();
        *task = Some((stop, tokio::spawn(courier.serve(stopped))));
    }

    /// Whether the courier's own task delivers.
    pub(crate) fn is_running(&self) -> bool {
        lock(&self.0.task).is_some()
    }

    /// Stops the task: attempts under way get [`STOP_GRACE`]; what they have not settled stays due
    /// in the state for the next start.
    pub(crate) async fn stop(&self) {
        let task = lock(&self.0.task).take();
        if let Some((stop, handle)) = task {
            let _ = stop.send(());
            let _ = handle.await;
        }
    }

    /// Asks the task to look for due deliveries now.
    pub(crate) fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// Resolves when something the page shows changed (an attempt settled, the state's health).
    pub(crate) async fn changed(&self) {
        self.0.changed.notified().await;
    }

    /// Sends every delivery due at `now` and waits for the attempts (without the courier's task:
    /// `watch --once`, tests); returns how many were tried.
    pub(crate) async fn deliver_due(&self, now: Timestamp) -> Result<usize, store::Error> {
        let mut tasks = JoinSet::new();
        let read = self.pass(now, &mut tasks).await;
        let tried = tasks.len();
        while tasks.join_next().await.is_some() {}
        read.map(|()| tried)
    }

    /// The task: a pass when woken or every [`TICK`], until stopped.
    async fn serve(self, mut stop: oneshot::Receiver<()>) {
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            if let Err(e) = self.pass(self.0.clock.now(), &mut tasks).await {
                tracing::warn!("cannot read the alert deliveries due ({e}): trying again soon");
            }
            if self.resend_due() {
                let courier = self.clone();
                tasks.spawn(async move { courier.resend().await });
            }
            tokio::select! {
                _ = &mut stop => break,
                () = self.0.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
        let grace = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                () = &mut grace => {
                    tracing::warn!(
                        "stopping: {} alert deliveries still under way are left for the next start",
                        tasks.len()
                    );
                    tasks.abort_all();
                    break;
                }
            }
        }
        let unsettled = std::mem::take(&mut lock(&self.0.book).unsettled);
        self.write_outcomes(unsettled).await;
    }

    /// One pass: writes the outcomes the state could not take before, reads what is due, and
    /// starts an attempt (a task in `tasks`) for each, grouped by route.
    async fn pass(&self, now: Timestamp, tasks: &mut JoinSet<()>) -> Result<(), store::Error> {
        if !self.0.leading.load(Ordering::Relaxed) {
            return Ok(());
        }
        let unsettled = {
            let mut book = lock(&self.0.book);
            book.in_flight.retain(|_, finished| !*finished);
            std::mem::take(&mut book.unsettled)
        };
        self.write_outcomes(unsettled).await;
        let read = self.0.store.due_deliveries(now, DUE_AT_ONCE).await;
        let due = {
            let mut book = lock(&self.0.book);
            let stored = read.as_ref().map(Vec::as_slice).unwrap_or_default();
            // Each looked up once, not once per delivery: after an outage both may be thousands.
            let unsettled: HashSet<&Key> = book.unsettled.iter().map(|(k, _, _)| k).collect();
            let busy = |k: &Key| book.in_flight.contains_key(k) || unsettled.contains(k);
            let held_ids = book.held.ids();
            let mut due: Vec<Due> = stored
                .iter()
                .filter(|d| !held_ids.contains(d.alert.id.as_str()))
                .map(|d| Due {
                    route: d.route.clone(),
                    alert: alert_from_store(&d.alert),
                    attempts: d.attempts,
                })
                .filter(|d| !busy(&d.key()))
                .collect();
            let held = book.held.due(now, busy);
            due.extend(held.into_iter().map(|h| Due {
                route: h.route,
                alert: h.alert,
                attempts: h.attempts,
            }));
            for d in &due {
                book.in_flight.insert(d.key(), false);
            }
            due
        };
        self.dispatch(due, now, tasks);
        read.map(drop)
    }

    /// Starts the attempts of `due`: by route, in the order they were raised; many at once on one
    /// route as one group.
    fn dispatch(&self, due: Vec<Due>, now: Timestamp, tasks: &mut JoinSet<()>) {
        let mut by_route: Vec<(String, Vec<Due>)> = Vec::new();
        for d in due {
            match by_route.iter_mut().find(|(r, _)| *r == d.route) {
                Some((_, list)) => list.push(d),
                None => by_route.push((d.route.clone(), vec![d])),
            }
        }
        let routes = lock(&self.0.routes).clone();
        for (name, list) in by_route {
            let route = routes.iter().find(|r| r.name == name).cloned();
            let batches = match &route {
                Some(_) if list.len() >= GROUP_AT => vec![list],
                _ => list.into_iter().map(|d| vec![d]).collect(),
            };
            for batch in batches {
                let courier = self.clone();
                let route = route.clone();
                let name = name.clone();
                tasks.spawn(async move {
                    match route {
                        Some(route) => courier.attempt(&route, batch).await,
                        None => courier.unroutable(&name, batch, now).await,
                    }
                });
            }
        }
    }

    /// A route no longer configured: its deliveries are given up, saying why.
    async fn unroutable(&self, route: &str, batch: Vec<Due>, now: Timestamp) {
        let how = store::Settlement::Failed {
            error: "the route is no longer in the configuration".into(),
            next_attempt_at: None,
        };
        self.settle(route, batch, now, how).await;
    }

    /// One attempt on `route` of `batch` (one alert, or a group), once the route has a permit.
    async fn attempt(&self, route: &Route, batch: Vec<Due>) {
        let permits = lock(&self.0.permits)
            .entry(route.name.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_ROUTE)))
            .clone();
        let Ok(_permit) = permits.acquire_owned().await else {
            return;
        };
        let (id, result) = if let [one] = batch.as_slice() {
            let result = self.0.sender.deliver(route, &one.alert).await;
            (one.alert.id.clone(), result)
        } else {
            // The group's id comes from its members': sent again after a failure, it keeps it.
            let alerts = batch.iter().map(|d| d.alert.clone()).collect();
            let group = AlertGroup::new(alerts, self.0.clock.now());
            let result = self.0.sender.deliver_group(route, &group).await;
            (group.id, result)
        };
        let now = self.0.clock.now();
        let how = self.judged(route, &batch, &id, result, now);
        self.settle(&route.name, batch, now, how).await;
    }

    /// How one attempt ended, as the state keeps it: one log line, one count per alert.
    fn judged(
        &self,
        route: &Route,
        batch: &[Due],
        id: &str,
        result: Result<Delivered, DeliveryError>,
        now: Timestamp,
    ) -> store::Settlement {
        let count = batch.len();
        let what = if count == 1 {
            String::new()
        } else {
            format!(" ({count} alerts in one)")
        };
        match result {
            Ok(done) => {
                let status = done
                    .status
                    .map_or_else(|| "ok".to_owned(), |s| format!("HTTP {s}"));
                tracing::info!(route = %route.name, alert = %id, "alert delivered{what} ({status})");
                for _ in 0..count {
                    self.0.counters.alert(&route.name, "delivered");
                }
                store::Settlement::Delivered
            }
            Err(e) => {
                // The fewest attempts among them sets the delay: the group waits for its newest.
                let attempts = batch.iter().map(|d| d.attempts).min().unwrap_or(0);
                let next = e.retryable.then(|| {
                    now + SignedDuration::try_from(crate::alert::retry_delay(attempts + 1))
                        .unwrap_or(SignedDuration::from_hours(1))
                });
                let again = if next.is_some() { " (will retry)" } else { "" };
                tracing::warn!(route = %route.name, alert = %id, "alert delivery failed{what}{again}: {}", e.reason);
                for _ in 0..count {
                    self.0.counters.alert(&route.name, "failed");
                }
                store::Settlement::Failed {
                    error: e.reason,
                    next_attempt_at: next,
                }
            }
        }
    }

    /// Keeps `how` for each of `batch` on `route`: in memory for a held alert, in the state
    /// otherwise (kept to be written again if the state cannot take it); then the attempts are
    /// finished.
    async fn settle(&self, route: &str, batch: Vec<Due>, at: Timestamp, how: store::Settlement) {
        let keys: Vec<Key> = batch.iter().map(Due::key).collect();
        let stored: Vec<Key> = { lock(&self.0.book).held.settled_all(&keys, at, &how) };
        let mut unsettled = Vec::new();
        if !stored.is_empty() {
            let ids = stored.iter().map(|(_, id)| id.clone()).collect();
            if let Err(e) = self.0.store.settle_all(route, ids, at, how.clone()).await {
                tracing::warn!(
                    route,
                    "cannot record how an alert delivery went ({e}): kept to record later, not sent again meanwhile"
                );
                self.state_failed(&e, at);
                unsettled = stored.into_iter().map(|k| (k, at, how.clone())).collect();
            }
        }
        let mut book = lock(&self.0.book);
        book.unsettled.extend(unsettled);
        for key in keys {
            book.in_flight.insert(key, true);
        }
        drop(book);
        self.0.changed.notify_one();
    }

    /// Writes outcomes the state could not take before, alike ones (a group's members) in one
    /// transaction: after an outage thousands may wait. Those it still cannot take are kept.
    async fn write_outcomes(&self, outcomes: Vec<Outcome>) {
        let mut alike: Vec<(String, Timestamp, store::Settlement, Vec<String>)> = Vec::new();
        for ((route, id), at, how) in outcomes {
            match alike
                .iter_mut()
                .find(|(r, a, h, _)| *r == route && *a == at && *h == how)
            {
                Some((_, _, _, ids)) => ids.push(id),
                None => alike.push((route, at, how, vec![id])),
            }
        }
        let mut kept = Vec::new();
        for (route, at, how, ids) in alike {
            let store = &self.0.store;
            let result = match store.settle_all(&route, ids.clone(), at, how.clone()).await {
                // One was pruned meanwhile (or never recorded): the others, one at a time.
                Err(store::Error::UnknownDelivery { .. }) if ids.len() > 1 => {
                    let mut last = Ok(());
                    for id in &ids {
                        match store
                            .settle_all(&route, vec![id.clone()], at, how.clone())
                            .await
                        {
                            Err(store::Error::UnknownDelivery { .. }) => {}
                            other => last = last.and(other),
                        }
                    }
                    last
                }
                Err(store::Error::UnknownDelivery { .. }) => Ok(()),
                other => other,
            };
            if let Err(e) = result {
                self.state_failed(&e, at);
                let key = |id: String| ((route.clone(), id), at, how.clone());
                kept.extend(ids.into_iter().map(key));
            }
        }
        if !kept.is_empty() {
            lock(&self.0.book).unsettled.extend(kept);
        }
    }

    /// Holds `alerts` (each with its routes): decided, but not in the state, which cannot be
    /// written. They are delivered from memory until [`Courier::recorded`].
    pub(crate) fn hold(&self, alerts: impl IntoIterator<Item = (Alert, Vec<String>)>) {
        let mut book = lock(&self.0.book);
        for (alert, routes) in alerts {
            book.held.hold(alert, &routes, true);
        }
        drop(book);
        self.wake();
    }

    /// The held alerts `ids` are in the state now: what was delivered meanwhile is settled as such
    /// (never sent again), the rest is due from the state.
    pub(crate) fn recorded(&self, ids: &HashSet<String>) {
        if ids.is_empty() {
            return;
        }
        let mut book = lock(&self.0.book);
        let in_flight: HashSet<Key> = book.in_flight.keys().cloned().collect();
        let outcomes = book.held.recorded(ids, |k| in_flight.contains(k));
        book.unsettled.extend(outcomes);
        drop(book);
        self.wake();
    }

    /// Lets go of the held token alerts (this replica stopped leading).
    pub(crate) fn forget_unrecorded(&self) {
        lock(&self.0.book).held.forget_unrecorded();
    }

    /// A write failed with `error` at `now`: the first failure of an outage is logged and alerted
    /// (`state_unwritable`, on every route), and `/healthz` fails until [`Courier::state_written`].
    pub(crate) fn state_failed(&self, error: &store::Error, now: Timestamp) {
        let routes: Vec<String> = lock(&self.0.routes)
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let raised = lock(&self.0.book)
            .held
            .failed(error.to_string(), now, &routes);
        if let Some(alert) = raised {
            tracing::error!(
                alert = %alert.id,
                "the state cannot be written ({error}): alerts are delivered from memory and recorded once it can be written"
            );
            self.wake();
            self.0.changed.notify_one();
        }
    }

    /// The state was written: an outage, if there was one, ends, and is returned.
    pub(crate) fn state_written(&self) -> Option<Unwritable> {
        let ended = lock(&self.0.book).held.written();
        if ended.is_some() {
            self.0.changed.notify_one();
        }
        ended
    }

    /// Whether, and since when, the state cannot be written.
    pub(crate) fn unwritable(&self) -> Option<Unwritable> {
        lock(&self.0.book).held.unwritable().cloned()
    }

    /// How many token alerts wait to be recorded.
    pub(crate) fn unrecorded(&self) -> usize {
        lock(&self.0.book).held.unrecorded()
    }
}
