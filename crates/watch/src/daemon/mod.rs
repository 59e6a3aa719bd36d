//! The loop and the round of `watch`: the room that joins the others.
//!
//! [`Daemon::run`] sleeps until a token is due (or a minute, for deliveries waiting to be retried),
//! then runs a **round** over the due tokens, in the configuration's order, a **window** of
//! [`ROUND_WINDOW`] tokens at a time, so that a round's memory is one window's. For each window
//! (`daemon/window.rs`):
//!
//! 1. the tokens' files are read on the blocking pool ([`crate::sources`]);
//! 2. with `batch_checks`, their `/debug_token` (and a first check's `/me`) are asked in Graph
//!    batches per app (`batch.rs`); the checks of an app waiting out a rate limit are deferred;
//! 3. the checks run, up to [`CHECKS_IN_FLIGHT`] at once (`check.rs`: the renewal engine, with
//!    each renewal and failover claimed first when replicas share the state, [`crate::claims`]);
//! 4. each is taken in, one at a time in order (`outcome.rs`): events, the states observed
//!    and decided on (`announce.rs`), the next check ([`crate::schedule`]), the doctor
//!    checklist when due (`checklist.rs`);
//! 5. the window's token and check records are written in one transaction each.
//!
//! After the windows, if this replica still leads ([`crate::leadership`] holds the rules of who
//! acts), the round's decisions are written in one transaction (`daemon/writes.rs`: a state that
//! refuses them stops nothing), the courier woken to deliver due alerts beside the rounds
//! (`delivery/`), old history pruned once a day, and a new snapshot published
//! (`snapshot::build`). A stop asked for during a round ends it at the next window.
//!
//! Time comes from a [`Clock`] only: [`Daemon::run_due`] takes `now`, so a test drives simulated days
//! deterministically. Two clocks: the wall clock's `now` is what is recorded and shown (the state,
//! the page, alerts); the monotonic clock ([`Clock::instant`]) is what every "when" is decided on
//! (due checks, retries, deferrals, the daily prune, how long a state has lasted), so a step of the
//! wall clock changes no schedule and raises no alert. Wall times read from the shared state are
//! converted once (`Schedule::resume`, `crate::lasted`).
//!
//! Must never: print or store a secret (tokens are known by their SHA-256 and short fingerprint),
//! stop because one token's file cannot be read (that token's check is unknown), or call a token
//! dead unless the API said so (the engine and [`crate::states::observe`] ensure it).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use permatoken_inspect::Status;
use permatoken_state as store;
use permatoken_state::Store;

mod window;
mod writes;

use crate::alert::{Sender, random_unit};
use crate::announce::Announcer;
use crate::clients::{ClientError, Clients};
use crate::config::Config;
use crate::delivery::Courier;
use crate::fleet::{Expanded, Fleet, Names};
use crate::health::Health;
use crate::leadership::{Heartbeat, Leadership, Turn};
use crate::memory::Memory;
use crate::metrics::Counters;
use crate::notify::Notifier;
use crate::schedule::{Schedule, wall_time};
use crate::snapshot::{self, Publisher, Snapshot};
use crate::states::State;

/// Where the daemon reads the time. Every decision (due checks, windows, alert timing, what is
/// stored) uses it, never the system clock directly.
pub trait Clock: Send + Sync {
    /// Now on the wall clock: what is recorded and shown.
    fn now(&self) -> Timestamp;

    /// Now on the monotonic clock: what due times, retries and how long a state has lasted are
    /// measured on, since the wall clock may step.
    ///
    /// The default suits a clock that is the machine's shifted by a constant (a test's simulated
    /// days): the machine's monotonic clock, shifted as far. [`SystemClock`] is the machine's.
    fn instant(&self) -> Instant {
        let shift = self.now().duration_since(Timestamp::now());
        let base = Instant::now();
        let by = shift.unsigned_abs();
        let shifted = if shift.is_negative() {
            base.checked_sub(by)
        } else {
            base.checked_add(by)
        };
        shifted.unwrap_or(base)
    }
}

/// The machine's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// One moment on both clocks: the wall clock's to record, the monotonic one's to decide when.
#[derive(Debug, Clone, Copy)]
struct Moment {
    wall: Timestamp,
    mono: Instant,
}

/// Tokens checked together in a round: read, asked in batches (a few `POST`s each), checked and
/// written before the next window, so that a round's memory stays that of one window.
pub const ROUND_WINDOW: usize = crate::batch::CHUNK;

/// Checks whose Graph calls run at once: enough to hide round trips, few enough to stay far below
/// an app's rate limit within a round.
pub const CHECKS_IN_FLIGHT: usize = 16;

/// How often a standby rebuilds its snapshot from the shared state.
const STANDBY_REFRESH: Duration = Duration::from_secs(3);

/// The most events kept while the state cannot record them: a reload loop during a long outage
/// must not grow memory.
const UNRECORDED_EVENTS: usize = 16;

/// The longest sleep of the loop: deliveries waiting for a retry wake it too.
pub const LONGEST_SLEEP: Duration = Duration::from_secs(60);

/// How often old history is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// What a daemon is built from.
pub struct Options {
    /// The configuration.
    pub config: Config,
    /// The open state store.
    pub store: Store,
    /// Where snapshots go (the HTTP endpoint's subscriber reads them).
    pub publisher: Publisher,
    /// The counters `/metrics` reads.
    pub counters: Counters,
    /// Sends alerts.
    pub sender: Sender,
    /// The Graph client's settings (base URL, version, CA, proxy); each app's secret is added per app.
    pub graph: permatoken_graph::Config,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Where previous env-file contents go before a write; `None` keeps none.
    pub backup_dir: Option<PathBuf>,
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundSummary {
    /// Tokens (primaries and backups) checked.
    pub checked: usize,
    /// Alerts made.
    pub alerts: usize,
    /// The worst status of the checks, as `permatoken check` reports it; `None` if nothing was due.
    /// A check deferred for a rate limit counts as unknown: it was not made.
    pub worst: Option<Status>,
    /// Checks deferred past their app's rate-limit regain time.
    pub deferred: usize,
}

impl RoundSummary {
    fn note(&mut self, status: Status) {
        self.worst = Some(self.worst.map_or(status, |w| w.worst(status)));
    }

    fn checked(&mut self, status: Status) {
        self.checked += 1;
        self.note(status);
    }
}

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] store::Error),
    /// The Graph client could not be set up.
    #[error(transparent)]
    Graph(#[from] ClientError),
}

/// The `watch` scheduler. See the module docs.
pub struct Daemon {
    config: Config,
    store: Store,
    publisher: Publisher,
    counters: Counters,
    /// Delivers alerts, beside the rounds once [`Daemon::run`] starts it.
    courier: Courier,
    clock: Arc<dyn Clock>,
    backup_dir: Option<PathBuf>,
    clients: Clients,
    fleet: Fleet,
    schedule: Schedule,
    memory: Memory,
    announcer: Announcer,
    leadership: Leadership,
    /// What the probes are told: the loop's passes, the election's answers, readiness.
    health: Health,
    /// Per app id: the rate-limit pause of its batches.
    budgets: crate::batch::Budgets,
    /// `watch --once --no-alerts`: decide, never send nor record an alert ([`Daemon::without_alerts`]).
    alerts_off: bool,
    started_at: Timestamp,
    /// The `now` of the round under way, or of the last one, on both clocks: due times, retries and
    /// deferrals are set from its monotonic side.
    round_at: Moment,
    last_round_at: Option<Timestamp>,
    last_prune: Option<Instant>,
    /// Set when a stop is asked for during a round: the round ends at its next window.
    stopping: Arc<AtomicBool>,
    /// Events not yet recorded, the state having failed (see [`Daemon::record_unrecorded`]).
    unrecorded: Vec<store::Event>,
    /// The state's last error recording them, so that it is logged once per change.
    unrecorded_failing: Option<String>,
    /// systemd's `READY=1` and watchdog: pinged from the loop and the rounds, never from a timer
    /// of its own (`notify.rs`).
    notifier: Notifier,
}

impl Daemon {
    /// A daemon that has checked nothing yet: every token is due at once.
    pub fn new(options: Options) -> Self {
        let started_at = options.clock.now();
        let round_at = Moment {
            wall: started_at,
            mono: options.clock.instant(),
        };
        let mut config = options.config;
        // Parsing grew the list by doubling: 10,000 tokens left room for 6,000 more (2 MB).
        config.tokens.shrink_to_fit();
        // So that a first round that never ends shows as one on `/metrics`.
        options
            .counters
            .shortest_interval(shortest_interval(&config));
        let courier = Courier::new(
            options.store.clone(),
            options.sender,
            options.counters.clone(),
            options.clock.clone(),
            &config.routes,
        );
        Self {
            fleet: Fleet::new(&config),
            config,
            store: options.store,
            publisher: options.publisher,
            counters: options.counters,
            courier,
            clock: options.clock,
            backup_dir: options.backup_dir,
            clients: Clients::new(options.graph),
            schedule: Schedule::new(round_at.mono),
            memory: Memory::default(),
            announcer: Announcer::default(),
            leadership: Leadership::alone(),
            health: Health::default(),
            budgets: crate::batch::Budgets::default(),
            alerts_off: false,
            started_at,
            round_at,
            last_round_at: None,
            last_prune: None,
            stopping: Arc::default(),
            unrecorded: Vec::new(),
            unrecorded_failing: None,
            notifier: Notifier::none(),
        }
    }

    /// Tells the service manager through `notifier` ([`Daemon::run`]): `READY=1` as the first
    /// round begins, `WATCHDOG=1` from the loop and between checks, `STOPPING=1` on a stop.
    pub fn set_notifier(&mut self, notifier: Notifier) {
        self.notifier = notifier;
    }

    /// Makes this daemon one of several replicas: [`Daemon::run`] acts only while `election` says
    /// it leads, and stands by otherwise (serving the shared state, `permatoken_leader` 0).
    pub fn set_election(&mut self, election: store::Election) {
        self.leadership = Leadership::elected(election, self.counters.clone());
        self.leadership.set_health(self.health.clone());
        // Not before the election says so: the courier's task may pass before the first poll.
        self.courier.set_leading(false);
    }

    /// Tells `health` (the endpoint's, [`crate::http::AppState::health`]) how the loop and the
    /// election go, and when the page is first served.
    pub fn set_health(&mut self, health: Health) {
        self.leadership.set_health(health.clone());
        self.health = health;
        self.tell_intervals();
    }

    /// The shortest interval configured, for `/healthz`'s staleness.
    fn tell_intervals(&self) {
        let tokens = self.config.tokens.iter().map(|t| t.policy.interval);
        let sets = self.config.token_sets.iter();
        let shortest = tokens.chain(sets.map(|s| s.template.policy.interval)).min();
        self.health.set_shortest_interval(shortest);
    }

    /// Whether this replica leads (always, without an election).
    pub fn is_leader(&self) -> bool {
        self.leadership.leads()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Looks without alerting (`watch --once --no-alerts`, on a copy of the state, say): rounds check,
    /// renew and fail over as always and record their checks, but the alerts they decide are
    /// logged only, neither sent nor recorded, and no earlier alert waiting in the state is
    /// delivered. What was announced is left as it was, so a later round alerts the same change.
    pub fn without_alerts(&mut self) {
        self.alerts_off = true;
    }

    /// When the next check is due, on the wall clock as the last round read it (`None` with no
    /// token).
    pub fn next_due(&self) -> Option<Timestamp> {
        let Moment { wall, mono } = self.round_at;
        self.soonest_due().map(|at| wall_time(at, mono, wall))
    }

    fn soonest_due(&self) -> Option<Instant> {
        self.schedule
            .soonest(self.config.tokens.iter().map(|t| t.name.as_str()))
    }

    /// Both clocks now, read together.
    fn moment(&self) -> Moment {
        Moment {
            wall: self.clock.now(),
            mono: self.clock.instant(),
        }
    }

    /// Asks the election whether this replica leads, and takes in a change of role: a new leader
    /// takes up the schedule and the identities from the shared state; a replica standing down
    /// forgets what would go stale. See [`crate::leadership`].
    async fn ensure_leading(&mut self) -> bool {
        let (leading, turn) = self.leadership.ensure_leading().await;
        self.courier.set_leading(leading);
        match turn {
            Some(Turn::Became) => self.resume_schedule().await,
            Some(Turn::Lost) => self.memory.forget_identities(),
            None => {}
        }
        leading
    }

    /// A new leader takes up the schedule where the shared state leaves it ([`Schedule::resume`]):
    /// a token never checked, or whose last check could not tell, is due now; so is everything
    /// when the state cannot be read.
    async fn resume_schedule(&mut self) {
        self.memory.reload_identities();
        if self.config.batch_checks {
            self.memory.load_identities(&self.store).await;
        }
        // A standby has not expanded the sets lately: their tokens are scheduled from here too.
        self.expand_sets(self.clock.now()).await;
        let latest = match self.store.latest_checks().await {
            Ok(latest) => crate::schedule::last_known_checks(&latest),
            Err(e) => {
                tracing::warn!("cannot read the last checks ({e}): every token is due now");
                HashMap::new()
            }
        };
        let tokens = self
            .config
            .tokens
            .iter()
            .map(|t| (t.name.as_str(), &*t.policy));
        let Moment { wall, mono } = self.moment();
        self.schedule
            .resume(tokens, &latest, wall, mono, random_unit);
    }

    /// Makes the configuration's tokens the `[[token]]`s and the files each set matches now
    /// ([`Fleet::expand`]); forgets the schedule and memory of tokens gone, and records each new
    /// problem of a set once (a standby writes nothing: the leader records it). Returns whether
    /// the tokens changed.
    async fn expand_sets(&mut self, now: Timestamp) -> bool {
        let expanded = self.fleet.expand(&mut self.config).await;
        if expanded.changed {
            self.forget_unconfigured();
        }
        if self.leadership.leads() {
            self.set_changes(&expanded, now).await;
        }
        for problem in expanded.problems {
            if !self.leadership.leads() || !self.fleet.first_report(&problem) {
                continue;
            }
            let (token, text) = problem;
            tracing::warn!(token = token.as_deref().unwrap_or(""), "{text}");
            if let Some(token) = token {
                self.set_event(now, &token, store::EventKind::ConfigReload, &text)
                    .await;
            }
        }
        expanded.changed
    }

    /// Records each member a set lost for real (its file gone) as an event of that token, and
    /// alerts a set that lost more than a tenth of its members in one listing (`set_shrunk`, on
    /// the set's routes): a volume not mounted or a folder emptied by a deploy is not silence.
    async fn set_changes(&mut self, expanded: &Expanded, now: Timestamp) {
        for (token, file) in &expanded.removed {
            let text = format!(
                "left its set: `{}` is gone, so the token is no longer watched",
                file.display()
            );
            tracing::warn!(token = %token, "{text}");
            self.set_event(now, token, store::EventKind::ConfigReload, &text)
                .await;
        }
        let mut decisions = Vec::new();
        for shrunk in &expanded.shrunk {
            let alert = crate::alert::Alert {
                id: crate::states::alert_id(
                    &format!("set:{}", shrunk.set),
                    State::SetShrunk,
                    now,
                    0,
                ),
                token: shrunk.set.clone(),
                state: State::SetShrunk,
                previous_state: None,
                message: format!(
                    "token set `{}` lost {} of its {} members in one listing: their files are gone",
                    shrunk.set, shrunk.gone, shrunk.before
                ),
                fix: Some("check that the set's folder is mounted and its files are in place (the page's events name each file gone); members come back at the next listing once their files are there".into()),
                time: now,
                kind: crate::alert::AlertKind::Change,
            };
            tracing::warn!(set = %shrunk.set, alert = %alert.id, "{}", alert.message);
            if !self.alerts_off {
                self.set_event(now, &shrunk.set, store::EventKind::Alert, &alert.message)
                    .await;
            }
            decisions.push(store::Decision {
                token_name: shrunk.set.clone(),
                announcement: None,
                unknown_since: None,
                alert: Some(Box::new((
                    crate::records::alert_to_store(&alert),
                    shrunk.routes.clone(),
                ))),
            });
        }
        if self.alerts_off {
            return;
        }
        if let Err(refused) = self.store.announce_all(decisions).await {
            // As a round's refused decisions: delivered from memory, written with the next ones.
            self.courier.state_failed(&refused.error, now);
            self.announcer
                .keep_refused(refused.decisions, &self.courier);
        }
    }

    /// Records an event of a set's listing; a state that refuses it costs the history that line,
    /// never the round (the log has said it).
    async fn set_event(&self, now: Timestamp, token: &str, kind: store::EventKind, text: &str) {
        let result = self
            .store
            .record_event(store::Event {
                at: now,
                token_name: Some(token.to_owned()),
                kind,
                detail: text.to_owned(),
            })
            .await;
        self.written("an event of a token set", now, result);
    }

    /// Forgets the schedule and the memory of tokens no longer configured.
    fn forget_unconfigured(&mut self) {
        let names = Names::of(&self.config.tokens);
        self.schedule.retain(|name| names.knows(name));
        self.announcer.retain(|name| {
            names.knows(name)
                || name
                    .rsplit_once("/doctor/")
                    .is_some_and(|(token, _)| names.is_token(token))
        });
        self.memory.retain_tokens(|name| names.is_token(name));
        self.courier
            .set_watched(&self.config.tokens, &self.config.routes);
    }

    /// Takes in a new configuration (SIGHUP): new tokens are due at once, removed ones are
    /// forgotten by the schedule, and a `config_reload` event is recorded. Never fails: the new
    /// configuration is in force whatever the state says (a `systemctl reload` during a database
    /// outage must not stop the fleet); an event that cannot be recorded is logged, and tried
    /// again before each later round ([`Daemon::record_unrecorded`]).
    pub async fn replace_config(&mut self, config: Config) {
        let now = self.clock.now();
        let count = config.tokens.len() + config.token_sets.len();
        self.fleet = Fleet::new(&config);
        self.config = config;
        // A set's tokens that are still there keep their schedule: a reload does not make a whole
        // fleet due at once.
        self.expand_sets(now).await;
        self.forget_unconfigured();
        self.tell_intervals();
        let text = format!("configuration reloaded: {count} token(s) and set(s)");
        tracing::info!("{text}");
        self.unrecorded.push(store::Event {
            at: now,
            token_name: None,
            kind: store::EventKind::ConfigReload,
            detail: text,
        });
        // Each reload says so when it cannot be recorded.
        self.unrecorded_failing = None;
        self.record_unrecorded().await;
        if let Err(e) = self.publish(now).await {
            tracing::warn!("cannot rebuild the status after the reload: {e}");
        }
    }

    /// Records the events that could not be recorded when they happened (reloads during a
    /// database outage), oldest first; what still cannot be is kept for the next try, the
    /// newest [`UNRECORDED_EVENTS`] at most.
    async fn record_unrecorded(&mut self) {
        while let Some(event) = self.unrecorded.first() {
            if let Err(e) = self.store.record_event(event.clone()).await {
                if self.unrecorded_failing.as_deref() != Some(&*e.to_string()) {
                    tracing::warn!(
                        "the reload cannot be recorded in the state ({e}); the new configuration is in force, and the record is tried again before the next round"
                    );
                    self.unrecorded_failing = Some(e.to_string());
                }
                let extra = self.unrecorded.len().saturating_sub(UNRECORDED_EVENTS);
                self.unrecorded.drain(..extra);
                return;
            }
            if self.unrecorded_failing.take().is_some() {
                tracing::info!("the reload that could not be recorded is recorded now");
            }
            self.unrecorded.remove(0);
        }
    }

    /// Checks every token whose check is due at `now`, delivers due alerts, prunes once a day and
    /// publishes a new snapshot.
    pub async fn run_due(&mut self, now: Timestamp) -> Result<RoundSummary, Error> {
        self.round_at = Moment {
            wall: now,
            mono: self.clock.instant(),
        };
        let changed = self.expand_sets(now).await;
        let mono = self.round_at.mono;
        let due: Vec<usize> = (0..self.config.tokens.len())
            .filter(|&i| self.schedule.is_due(&self.config.tokens[i].name, mono))
            .collect();
        let summary = self.round(&due, now).await?;
        // A set's file gone with nothing due: the page must not keep showing it.
        if changed && due.is_empty() {
            self.publish(now).await?;
        }
        Ok(summary)
    }

    /// Checks every token now, whatever its schedule (`watch --once`).
    pub async fn run_all(&mut self, now: Timestamp) -> Result<RoundSummary, Error> {
        self.round_at = Moment {
            wall: now,
            mono: self.clock.instant(),
        };
        self.ensure_leading().await;
        self.expand_sets(now).await;
        let all: Vec<usize> = (0..self.config.tokens.len()).collect();
        self.round(&all, now).await
    }

    /// Runs until `shutdown` resolves: sleeps until the next due check, runs [`Daemon::run_due`], and
    /// takes in each configuration sent on `reloads`. An in-flight round ends at its next window.
    /// Alerts are delivered meanwhile on a task of their own (`delivery/`); at the end, the
    /// deliveries under way get a short grace.
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
        reloads: tokio::sync::mpsc::UnboundedReceiver<Config>,
    ) -> Result<(), Error> {
        self.courier.start();
        let result = self.run_rounds(shutdown, reloads).await;
        self.notifier.stopping();
        self.wind_down().await;
        result
    }

    async fn run_rounds(
        &mut self,
        shutdown: impl Future<Output = ()>,
        mut reloads: tokio::sync::mpsc::UnboundedReceiver<Config>,
    ) -> Result<(), Error> {
        let courier = self.courier.clone();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut reloads_open = true;
        let mut heartbeat = self.leadership.heartbeat();
        // The machine's clock, not `self.clock`: see `crate::health`.
        self.health.pass_began(Instant::now());
        // The sets' tokens are due at once too: without them the first wait would go by the
        // `[[token]]`s alone (an hour's, for a configuration of sets only).
        self.expand_sets(self.clock.now()).await;
        self.courier
            .set_watched(&self.config.tokens, &self.config.routes);
        self.ensure_leading().await;
        // The state may have gone since it was opened: the loop keeps trying at each wake.
        if let Err(e) = self.publish(self.clock.now()).await {
            tracing::error!("cannot build the status: {e}");
        }
        self.health.pass_ended(Instant::now());
        loop {
            // Each turn of the loop is progress: the watchdog is pinged here (when due), and the
            // branch below only wakes the loop for it.
            self.notifier.alive();
            tokio::select! {
                () = watchdog_due(self.notifier.ping_in()) => {}
                () = role_changed(&mut heartbeat) => {
                    let was = self.leadership.leads();
                    if self.ensure_leading().await != was
                        && let Err(e) = self.publish(self.clock.now()).await
                    {
                        tracing::error!("cannot rebuild the status: {e}");
                    }
                }
                () = &mut shutdown => return Ok(()),
                // A delivery settled, or the state's health changed: the page shows both.
                () = courier.changed() => {
                    if let Err(e) = self.publish(self.clock.now()).await {
                        tracing::error!("cannot rebuild the status: {e}");
                    }
                }
                config = reloads.recv(), if reloads_open => match config {
                    Some(config) => self.replace_config(config).await,
                    // No more reloads can come; never poll a closed channel again.
                    None => reloads_open = false,
                },
                () = tokio::time::sleep(self.sleep()) => {
                    if self.wake(shutdown.as_mut()).await {
                        return Ok(());
                    }
                }
            }
            // Whatever woke it, the loop runs: settlements and reloads arriving faster than its
            // sleep put a round off, and that is not a stuck loop.
            self.health.progressed(Instant::now());
        }
    }

    /// How long the loop sleeps: until the next due check (at most a minute) when leading; a
    /// standby's refresh period otherwise.
    fn sleep(&self) -> Duration {
        if !self.leadership.leads() {
            return STANDBY_REFRESH;
        }
        self.soonest_due().map_or(LONGEST_SLEEP, |next| {
            next.saturating_duration_since(self.clock.instant())
                .min(LONGEST_SLEEP)
        })
    }

    /// What the loop does when it wakes: a leader's round (ended at its next window when
    /// `shutdown` comes meanwhile), or a standby's refresh. Returns whether to stop.
    async fn wake(&mut self, mut shutdown: Pin<&mut impl Future<Output = ()>>) -> bool {
        let now = self.clock.now();
        self.health.pass_began(Instant::now());
        self.record_unrecorded().await;
        let mut stop = false;
        let leading = self.ensure_leading().await;
        if !self.notifier.is_ready() {
            let role = if leading {
                "the first round begins"
            } else {
                "standby"
            };
            let count = self.config.tokens.len();
            self.notifier
                .ready(&format!("watching {count} token(s): {role}"));
        }
        let result = if leading {
            // A fleet's round can outlast a service manager's grace period.
            let stopping = self.stopping.clone();
            let round = self.run_due(now);
            tokio::pin!(round);
            tokio::select! {
                result = &mut round => result.map(Some),
                () = &mut shutdown => {
                    tracing::info!("stopping: the round ends after the tokens being checked now");
                    stopping.store(true, Ordering::Relaxed);
                    stop = true;
                    round.await.map(Some)
                }
            }
        } else {
            // A standby shows the set files as they are now, as the leader will.
            self.expand_sets(now).await;
            self.publish(now).await.map(|()| None)
        };
        match result {
            Err(e) => {
                tracing::error!("a round failed: {e}");
                self.notifier.status(&format!("a round failed: {e}"));
            }
            Ok(summary) => {
                if let Some(line) = self.status_line(summary) {
                    self.notifier.status(&line);
                }
            }
        }
        self.health.pass_ended(Instant::now());
        stop
    }

    /// The line `systemctl status` shows after a wake; `None` keeps the last round's, when
    /// nothing was due.
    fn status_line(&self, summary: Option<RoundSummary>) -> Option<String> {
        let count = self.config.tokens.len();
        match summary {
            None => Some(format!(
                "standby: watching {count} token(s), another replica leads"
            )),
            Some(RoundSummary { worst: None, .. }) => None,
            Some(RoundSummary {
                checked,
                worst: Some(worst),
                ..
            }) => Some(format!(
                "watching {count} token(s): last round checked {checked}, worst {}",
                crate::records::status_str(worst)
            )),
        }
    }

    /// Checks the tokens at positions `tokens` of the configuration, a window at a time, then
    /// announces, delivers, prunes and publishes (see the module docs).
    async fn round(&mut self, tokens: &[usize], now: Timestamp) -> Result<RoundSummary, Error> {
        let began = self.clock.instant();
        let mut summary = RoundSummary::default();
        if self.config.batch_checks {
            self.memory.load_identities(&self.store).await;
        }
        self.announcer.load(&self.store).await?;
        // A window's jobs, batch answers and records live only while it is checked, so a round's
        // memory does not grow with the fleet.
        for window in tokens.chunks(ROUND_WINDOW) {
            if self.stopping.load(Ordering::Relaxed) {
                // What is left is due at the next start, which has no schedule yet.
                break;
            }
            self.window(window, now, &mut summary).await?;
            self.health.progressed(Instant::now());
            self.notifier.alive();
        }
        self.memory.forget_unused_identities(&self.config.tokens);
        if !self.ensure_leading().await {
            tracing::warn!(
                "this replica stopped leading during the round: its announcements are left to the new leader"
            );
            self.announcer.discard();
            self.courier.forget_unrecorded();
            return Ok(summary);
        }
        let delivered = if self.alerts_off {
            self.announcer.drop_decisions();
            if summary.alerts > 0 {
                tracing::info!(
                    "{} alert(s) decided and not sent nor recorded (--no-alerts): a later round alerts them",
                    summary.alerts
                );
            }
            0
        } else {
            self.record_decisions(now).await;
            self.deliver_due(now).await?
        };
        let pruned = self.prune(now).await;
        self.written("the pruning of old history", now, pruned);
        if !tokens.is_empty() {
            self.last_round_at = Some(now);
            let took = self.clock.instant().saturating_duration_since(began);
            self.counters.round(took);
            self.counters
                .shortest_interval(shortest_interval(&self.config));
        }
        self.clients.count_requests(&self.counters);
        // Building a snapshot reads the whole store: only when something may have changed.
        if !tokens.is_empty() || delivered > 0 {
            self.publish(now).await?;
        }
        Ok(summary)
    }

    /// Retention, once a day: checks, events and settled alerts older than `retention`, and done
    /// claims.
    async fn prune(&mut self, now: Timestamp) -> Result<(), store::Error> {
        let mono = self.round_at.mono;
        if self
            .last_prune
            .is_some_and(|at| mono.saturating_duration_since(at) < PRUNE_EVERY)
        {
            return Ok(());
        }
        let keep = SignedDuration::try_from(self.config.retention).unwrap_or(SignedDuration::MAX);
        let cutoff = now.checked_sub(keep).unwrap_or(Timestamp::MIN);
        self.store.prune(cutoff).await?;
        self.store.prune_claims(cutoff).await?;
        self.last_prune = Some(mono);
        Ok(())
    }

    /// Tries every delivery due at `now` (new alerts at once; failed ones after their retry delay)
    /// and returns how many were tried; while [`Daemon::run`] runs, wakes the courier's task
    /// instead (returning 0). See `delivery/`.
    pub async fn deliver_due(&mut self, now: Timestamp) -> Result<usize, Error> {
        if self.courier.is_running() {
            self.courier.wake();
            return Ok(0);
        }
        self.courier.set_routes(&self.config.routes);
        Ok(self.courier.deliver_due(now).await?)
    }

    /// Builds a snapshot from the store and publishes it.
    pub async fn publish(&mut self, now: Timestamp) -> Result<(), Error> {
        let snapshot = self.snapshot(now).await?;
        self.publisher.publish(snapshot);
        self.health.set_ready();
        Ok(())
    }

    /// The picture the endpoint serves, from the store (`snapshot::build`).
    pub async fn snapshot(&self, now: Timestamp) -> Result<Snapshot, Error> {
        let sources = snapshot::Sources {
            clocks: (self.clock.now(), self.clock.instant()),
            store: &self.store,
            tokens: &self.config.tokens,
            routes: &self.config.routes,
            memory: &self.memory,
            schedule: &self.schedule,
            started_at: self.started_at,
            leader: self.leadership.leads(),
            last_round_at: self.last_round_at,
            unwritable: self.courier.unwritable(),
            unrecorded: self.announcer.unrecorded_states(),
        };
        Ok(snapshot::build(&sources, now).await?)
    }
}

/// The shortest check interval of the tokens watched: a leader runs a round at least that often.
fn shortest_interval(config: &Config) -> Option<Duration> {
    config.tokens.iter().map(|t| t.policy.interval).min()
}

/// Resolves when the watchdog's next ping is due (`in`); never without a watchdog.
async fn watchdog_due(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the heartbeat saw a change of role; never without an election.
async fn role_changed(heartbeat: &mut Option<Heartbeat>) {
    match heartbeat {
        Some(heartbeat) => heartbeat.changed().await,
        None => std::future::pending().await,
    }
}
