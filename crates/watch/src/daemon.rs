//! The scheduler that joins the parts of `watch`: for each configured token, when its check is due,
//! it loads the token and its app credentials afresh, runs the renewal engine
//! ([`permatoken_renew::refresh_all`]: renewal window, failover, reload), turns each check into a
//! state ([`crate::states`]), records what it saw and what it announced in the state store, delivers
//! alerts (at least once, retried across restarts), and publishes a new [`Snapshot`]. With
//! `batch_checks` (the default), a round first asks the due tokens' `/debug_token` (and a first
//! check's `/me`) in Graph batches per app ([`crate::batch`]), and the engine judges each token from
//! those answers; the checks of an app waiting out a rate limit are deferred. A round goes a window
//! of 250 tokens at a time (files read on the blocking pool, batches asked, checks run, records
//! written), so its memory is one window's; a stop ends it at the next window. The checks of up to
//! 16 tokens run at once; everything after them (states, alerts, the store) is taken in one token at
//! a time in the configuration's order. Each renewal and failover is claimed first when replicas
//! share the state ([`crate::claims`]), and a new leader takes up the schedule and the identities
//! from the shared state.
//!
//! Time comes from a [`Clock`] only: [`Daemon::run_due`] takes `now`, so a test drives simulated
//! days deterministically; [`Daemon::run`] sleeps (tokio time) until the next due check.
//!
//! With an election ([`Daemon::set_election`], replicas on one PostgreSQL state), only the leader
//! checks, renews, fails over and alerts; a standby rebuilds its snapshot from the shared state every
//! few seconds. The election is polled each second by a task of its own (the heartbeat goes on during
//! a long round) and once more right before each round, so a leader stopped past its lease finds
//! itself fenced before it acts.
//!
//! Must never: print or store a secret (tokens are known by their SHA-256 and short fingerprint), stop
//! because one token's file cannot be read (that token's check is unknown), or call a token dead
//! unless the API said so (the engine and [`crate::states::observe`] ensure it).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use permatoken_config::Sourced;
use permatoken_graph::{Budget, Client, RequestCounts};
use permatoken_inspect::{AppCredentials, FindingCode, Report, Status};
use permatoken_renew::{
    Ctx, Decision as RenewDecision, FailoverOutcome, RefreshOptions, RefreshReport, RenewPolicy,
    TokenSource as EngineSource, TokenSpec,
};
use permatoken_secret::{AccessToken, AppSecret, AppToken};
use permatoken_state as store;
use permatoken_state::Store;

use crate::alert::{Alert, AlertGroup, AlertKind, Sender, random_unit};
use crate::claims::ClaimGate;
use crate::config::{AppSource, Backups, Config, Route, SecretFrom, TokenConfig, TokenSource};
use crate::metrics::Counters;
use crate::snapshot::{self, Publisher, Role, Snapshot, TokenView};
use crate::states::{self, Announced, Engine, Observation, Observed, State, Subject};

/// Where the daemon reads the time. Every decision (due checks, windows, alert timing, what is
/// stored) uses it, never the system clock directly.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The state file unless told otherwise: `$XDG_STATE_HOME/permatoken/state.db`, else
/// `$HOME/.local/state/permatoken/state.db`; `None` when neither is set (or not UTF-8, or relative).
/// `environment` is the process environment (`std::env::vars_os()`).
pub fn default_state_path(
    environment: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Option<PathBuf> {
    let mut xdg = None;
    let mut home = None;
    for (name, value) in environment {
        let slot = match name.to_str() {
            Some("XDG_STATE_HOME") => &mut xdg,
            Some("HOME") => &mut home,
            _ => continue,
        };
        *slot = value
            .into_string()
            .ok()
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
    }
    let base = xdg.or_else(|| home.map(|h| h.join(".local").join("state")))?;
    Some(base.join("permatoken").join("state.db"))
}

/// The shortest wait between two checks of a token.
const MIN_GAP: Duration = Duration::from_secs(60);
/// Events on the page.
const RECENT_EVENTS: u32 = 50;
/// Deliveries tried per step.
const DELIVERIES_PER_STEP: u32 = 20_000;
/// From this many alerts due on one route at once, they go as one [`AlertGroup`]: when an app secret
/// reset kills a fleet, a person gets one message that counts them, not thousands.
pub const GROUP_AT: usize = 10;

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

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepSummary {
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

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] store::Error),
    /// The Graph client could not be set up.
    #[error("cannot set up the Graph API client: {0}")]
    Graph(String),
}

/// Tokens checked together in a round: read, asked in batches (a few `POST`s each), checked and
/// written before the next window, so that a round's memory stays that of one window.
const ROUND_WINDOW: usize = crate::batch::CHUNK;

/// Checks whose Graph calls run at once: enough to hide round trips, few enough to stay far below
/// an app's rate limit within a round.
const CHECKS_IN_FLIGHT: usize = 16;

/// Everything one token's check needs, owned, so that it can run on its own task.
struct Job {
    spec: TokenSpec,
    source: EngineSource,
    app: AppCredentials,
    client: Client,
    thresholds: permatoken_inspect::Thresholds,
    options: RefreshOptions,
    /// The claims gate of this check (replicas only), for marking its claims done.
    claims: Option<Arc<ClaimGate>>,
    /// The round's batch answers, shared by its checks.
    known: Option<Arc<permatoken_renew::Known>>,
}

/// Why a check could not run, and what to do: the engine's failure, as text.
type CheckFailure = (String, String);

impl Job {
    /// Runs the renewal engine for this token (its Graph calls, any write, failover and reload).
    async fn run(self, now: Timestamp) -> Checked {
        let budget = Budget::new(Duration::from_secs(120));
        let ctx = Ctx {
            client: &self.client,
            app: &self.app,
            thresholds: self.thresholds,
            budget: &budget,
            now,
            known: self.known.as_deref(),
        };
        let result = permatoken_renew::refresh_all(&ctx, &self.spec, &self.options)
            .await
            .map_err(|failure| (failure.to_string(), failure.hint()));
        Checked::Ran(Box::new((self, result)))
    }
}

/// A token's check, done.
enum Checked {
    /// The token could not be read: why.
    Unreadable(String),
    /// The engine ran.
    Ran(Box<(Job, Result<RefreshReport, CheckFailure>)>),
}

/// A token's check, running or done.
enum Pending {
    Running(tokio::task::JoinHandle<Checked>),
    Done(Checked),
}

impl Pending {
    async fn finish(self) -> Checked {
        match self {
            Pending::Done(checked) => checked,
            Pending::Running(task) => task.await.unwrap_or_else(|e| {
                Checked::Unreadable(format!("the check stopped before it finished ({e})"))
            }),
        }
    }
}

/// What one step writes at its end.
#[derive(Default)]
struct Round {
    tokens: Vec<store::TokenRecord>,
    checks: Vec<store::CheckRecord>,
}

struct Due {
    at: Timestamp,
    unknown_streak: u32,
}

/// How often a replica renews its heartbeat (leader) or tries the lock (standby).
const ELECTION_POLL: Duration = Duration::from_secs(1);

/// How often a standby rebuilds its snapshot from the shared state.
const STANDBY_REFRESH: Duration = Duration::from_secs(3);

/// Ends the heartbeat task with the loop that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `watch` scheduler. See the module docs.
pub struct Daemon {
    config: Config,
    store: Store,
    publisher: Publisher,
    counters: Counters,
    sender: Sender,
    graph: permatoken_graph::Config,
    clock: Arc<dyn Clock>,
    backup_dir: Option<PathBuf>,
    /// A Graph client per app id: the secret's fingerprint it was made with, the client, and its
    /// request counts already added to the metrics.
    clients: HashMap<String, (String, Client, RequestCounts)>,
    due: HashMap<String, Due>,
    started_at: Timestamp,
    last_round_at: Option<Timestamp>,
    last_prune: Option<Timestamp>,
    /// Per configured token: the names of the backups its last check found (`<name>/<VARIABLE>`).
    backups: HashMap<String, Vec<String>>,
    /// What is announced, per name: read once per step.
    announced: HashMap<String, store::Announced>,
    /// Per configured token with `doctor = true`: when its checklist runs next.
    doctor_due: HashMap<String, Timestamp>,
    /// Per token name (primaries and backups): the permissions its last check found, for the page.
    scopes: HashMap<String, Vec<String>>,
    /// Per token name: the key of the token it held at its last check. The store knows a token by
    /// its key under one name, and one token may stand under two names (the same spare in two
    /// `.env` files): the page finds each name's latest check through this.
    keys: HashMap<String, store::TokenKey>,
    /// The step's decisions, written together at its end.
    decisions: Vec<store::Decision>,
    /// The configured `[[token]]`s; `config.tokens` is these and the sets' tokens of this step.
    fixed_tokens: Vec<TokenConfig>,
    /// Per set (`None`: the `[[token]]`s), the permits of its reload commands.
    reload_slots: HashMap<Option<String>, Arc<tokio::sync::Semaphore>>,
    /// Problems of the sets already reported, so that each is recorded once.
    set_problems: std::collections::HashSet<(Option<String>, String)>,
    /// The election among replicas sharing the state; `None`: this daemon always leads.
    election: Option<store::Election>,
    /// Whether this replica leads: only the leader checks, renews, fails over and alerts.
    leading: bool,
    /// Set when a stop is asked for during a round: the round ends at its next window.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Per token digest (primaries and backups): the identity and verdict of its last check, so
    /// that a batched round asks `/me` only on a change or a first check. Filled from the state
    /// before a leader's first round ([`Daemon::load_identities`]), so that a restart or a new
    /// leader does not ask `/me` again for the whole fleet.
    identities: HashMap<String, permatoken_renew::LastCheck>,
    /// Whether `identities` was filled from the state since this replica began to lead.
    identities_loaded: bool,
    /// Per app id: the rate-limit pause of its batches.
    budgets: crate::batch::Budgets,
}

impl Daemon {
    /// A daemon that has checked nothing yet: every token is due at once.
    pub fn new(options: Options) -> Self {
        let started_at = options.clock.now();
        let mut config = options.config;
        // Parsing grew the list by doubling: 10,000 tokens left room for 6,000 more (2 MB).
        config.tokens.shrink_to_fit();
        let fixed_tokens = fixed_tokens(&config);
        let mut daemon = Self {
            config,
            store: options.store,
            publisher: options.publisher,
            counters: options.counters,
            sender: options.sender,
            graph: options.graph,
            clock: options.clock,
            backup_dir: options.backup_dir,
            clients: HashMap::new(),
            due: HashMap::new(),
            started_at,
            last_round_at: None,
            last_prune: None,
            backups: HashMap::new(),
            scopes: HashMap::new(),
            keys: HashMap::new(),
            doctor_due: HashMap::new(),
            announced: HashMap::new(),
            decisions: Vec::new(),
            fixed_tokens,
            reload_slots: HashMap::new(),
            set_problems: std::collections::HashSet::new(),
            election: None,
            leading: true,
            stopping: Arc::default(),
            identities: HashMap::new(),
            identities_loaded: false,
            budgets: crate::batch::Budgets::default(),
        };
        daemon.make_reload_slots();
        daemon
    }

    fn make_reload_slots(&mut self) {
        self.reload_slots.clear();
        self.reload_slots.insert(
            None,
            Arc::new(tokio::sync::Semaphore::new(
                self.config.max_concurrent_reloads,
            )),
        );
        for set in &self.config.token_sets {
            self.reload_slots.insert(
                Some(set.name.clone()),
                Arc::new(tokio::sync::Semaphore::new(set.max_concurrent_reloads)),
            );
        }
    }

    /// Makes `config.tokens` the `[[token]]`s and the files each `[[token_set]]` matches now;
    /// forgets the schedule of tokens whose file is gone, and records each new problem of a set
    /// once (as an event of its token, or a warning).
    /// Returns whether the tokens changed.
    async fn expand_sets(&mut self, now: Timestamp) -> Result<bool, Error> {
        if self.config.token_sets.is_empty() {
            return Ok(false);
        }
        let mut tokens = self.fixed_tokens.clone();
        let mut problems = Vec::new();
        // Listing a fleet's folders can take a while (a network file system): not on the thread
        // that runs the election's heartbeat.
        let (sets, routes) = (self.config.token_sets.clone(), self.config.routes.clone());
        let expansions = tokio::task::spawn_blocking(move || {
            sets.iter()
                .map(|set| crate::sets::expand(set, &routes))
                .collect::<Vec<_>>()
        })
        .await;
        let expansions = match expansions {
            Ok(expansions) => expansions,
            Err(e) => {
                // The tokens as they were: a failed listing is no reason to forget any.
                tracing::warn!("the token sets could not be listed ({e}); kept as they were");
                return Ok(false);
            }
        };
        for expansion in expansions {
            tokens.extend(expansion.tokens);
            problems.extend(expansion.problems);
        }
        let changed = tokens.len() != self.config.tokens.len()
            || tokens
                .iter()
                .zip(&self.config.tokens)
                .any(|(a, b)| a.name != b.name);
        self.config.tokens = tokens;
        // A set of names, not `Config::token`: a fleet's step must not cost tokens² lookups.
        let names: std::collections::HashSet<&str> =
            self.config.tokens.iter().map(|t| t.name.as_str()).collect();
        let known = |name: &str| {
            names.contains(name)
                || name
                    .rsplit_once('/')
                    .is_some_and(|(primary, _)| names.contains(primary))
        };
        self.due.retain(|name, _| known(name));
        self.backups.retain(|name, _| names.contains(name.as_str()));
        for problem in problems {
            // A standby writes nothing to the shared state: the leader records the problem.
            if !self.leading {
                continue;
            }
            if !self.set_problems.insert(problem.clone()) {
                continue;
            }
            let (token, text) = problem;
            tracing::warn!(token = token.as_deref().unwrap_or(""), "{text}");
            if let Some(token) = token {
                self.event(now, &token, store::EventKind::ConfigReload, &text)
                    .await?;
            }
        }
        Ok(changed)
    }

    /// Makes this daemon one of several replicas: [`Daemon::run`] acts only while `election` says
    /// it leads, and stands by otherwise (serving the shared state, `permatoken_leader` 0).
    pub fn set_election(&mut self, election: store::Election) {
        self.election = Some(election);
        self.leading = false;
    }

    /// Whether this replica leads (always, without an election).
    pub fn is_leader(&self) -> bool {
        self.leading
    }

    /// Asks the election (right before acting, too: a leader stopped for longer than the lease
    /// must find itself fenced before it does anything). Logs each change of role.
    async fn confirm_leader(&mut self) -> bool {
        let Some(election) = &self.election else {
            return true;
        };
        let leading = match election.poll().await {
            Ok(leading) => leading,
            Err(e) => {
                tracing::warn!("leader election: {e}; standing by");
                false
            }
        };
        if leading != self.leading {
            if leading {
                tracing::info!("this replica now leads: it checks, renews, fails over and alerts");
                self.resume_schedule().await;
            } else {
                tracing::warn!("this replica stands by: another one leads");
                // A standby's memory would go stale: should it lead again, it reads the state anew.
                self.identities.clear();
                self.identities_loaded = false;
            }
            self.leading = leading;
        }
        leading
    }

    /// A new leader takes up the schedule where the shared state leaves it: each token is next due
    /// an interval after its latest check, by whichever replica made it, so that a takeover does
    /// not check a whole fleet again at once (nor any token twice within its interval). A token
    /// never checked, or whose last check could not tell, is due now; so is everything when the
    /// state cannot be read.
    async fn resume_schedule(&mut self) {
        self.due.clear();
        self.identities_loaded = false;
        self.load_identities().await;
        // A standby has not expanded the sets lately: their tokens are scheduled from here too.
        if let Err(e) = self.expand_sets(self.clock.now()).await {
            tracing::warn!("cannot expand the token sets ({e}): their tokens are due now");
        }
        let latest = match self.store.latest_checks().await {
            Ok(latest) => latest,
            Err(e) => {
                tracing::warn!("cannot read the last checks ({e}): every token is due now");
                return;
            }
        };
        let mut last: HashMap<String, &store::CheckRecord> = HashMap::new();
        for entry in &latest {
            let (store::Role::Primary, Some(check)) = (&entry.token.role, &entry.check) else {
                continue;
            };
            let newer = last
                .get(&entry.token.name)
                .is_none_or(|seen| seen.checked_at < check.checked_at);
            if newer {
                last.insert(entry.token.name.clone(), check);
            }
        }
        let tokens: Vec<(String, crate::config::Policy)> = self
            .config
            .tokens
            .iter()
            .map(|t| (t.name.clone(), t.policy))
            .collect();
        for (name, policy) in tokens {
            let Some(check) = last.get(&name) else {
                continue;
            };
            if check.status == store::Status::Unknown {
                continue;
            }
            let (expires_at, at) = (check.expires_at, check.checked_at);
            self.schedule(&name, policy, expires_at, false, at);
        }
    }

    /// Fills `identities` from the state, once per time this replica leads: each token whose latest
    /// check (before a restart, or by another replica) saw its `/me` answer, with that check's
    /// verdict, so that the first batched round asks `/me` only of tokens never answered or whose
    /// verdict changed, as if this process had made those checks. `dead` is read from the
    /// check's finding codes as [`Report::is_dead`] reads the findings; what this process saw
    /// itself is kept. A state that cannot be read leaves every token to be asked.
    async fn load_identities(&mut self) {
        if self.identities_loaded || !self.config.batch_checks {
            return;
        }
        self.identities_loaded = true;
        let stored = match self.store.identities().await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!("cannot read the tokens' identities ({e}): `/me` is asked again");
                return;
            }
        };
        // The stored codes are `Report::is_dead`'s: the same list, as the state spells it.
        let dead_codes: Vec<String> = FindingCode::DEAD
            .iter()
            .filter_map(|code| serde_json::to_value(code).ok()?.as_str().map(str::to_owned))
            .collect();
        self.identities.reserve(stored.len());
        for s in stored {
            let dead = s.finding_codes.iter().any(|c| dead_codes.contains(c));
            self.identities
                .entry(s.key.as_str().to_owned())
                .or_insert_with(|| permatoken_renew::LastCheck {
                    identity: permatoken_inspect::Identity {
                        id: s.id,
                        name: s.name,
                    },
                    status: status_from_store(s.status),
                    dead,
                });
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Takes in a new configuration (SIGHUP): new tokens are due at once, removed ones are
    /// forgotten by the schedule, and a `config_reload` event is recorded.
    pub async fn replace_config(&mut self, config: Config) -> Result<(), Error> {
        let now = self.clock.now();
        self.due.retain(|name, _| name_in(&config, name).is_some());
        let count = config.tokens.len() + config.token_sets.len();
        self.fixed_tokens = fixed_tokens(&config);
        self.config = config;
        self.make_reload_slots();
        self.set_problems.clear();
        self.expand_sets(now).await?;
        self.backups
            .retain(|name, _| self.config.token(name).is_some());
        self.store
            .record_event(store::Event {
                at: now,
                token_name: None,
                kind: store::EventKind::ConfigReload,
                detail: format!("configuration reloaded: {count} token(s) and set(s)"),
            })
            .await?;
        tracing::info!("configuration reloaded: {count} token(s) and set(s)");
        self.publish(now).await
    }

    /// When the next check is due (`None` with no token).
    pub fn next_due(&self) -> Option<Timestamp> {
        self.config
            .tokens
            .iter()
            .map(|t| self.due.get(&t.name).map_or(self.started_at, |d| d.at))
            .min()
    }

    /// Checks every token whose check is due at `now`, delivers due alerts, prunes once a day and
    /// publishes a new snapshot.
    pub async fn run_due(&mut self, now: Timestamp) -> Result<StepSummary, Error> {
        let changed = self.expand_sets(now).await?;
        let due: Vec<usize> = self
            .config
            .tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| self.due.get(&t.name).is_none_or(|d| d.at <= now))
            .map(|(i, _)| i)
            .collect();
        let summary = self.check_tokens(&due, now).await?;
        // A set's file gone with nothing due: the page must not keep showing it.
        if changed && due.is_empty() {
            self.publish(now).await?;
        }
        Ok(summary)
    }

    /// Checks every token now, whatever its schedule (`watch --once`).
    pub async fn run_all(&mut self, now: Timestamp) -> Result<StepSummary, Error> {
        self.confirm_leader().await;
        self.expand_sets(now).await?;
        let all: Vec<usize> = (0..self.config.tokens.len()).collect();
        self.check_tokens(&all, now).await
    }

    /// Runs until `shutdown` resolves: sleeps until the next due check, runs [`Daemon::run_due`], and
    /// takes in each configuration sent on `reloads`. An in-flight step finishes before it returns.
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
        mut reloads: tokio::sync::mpsc::UnboundedReceiver<Config>,
    ) -> Result<(), Error> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut reloads_open = true;
        // The heartbeat goes on while a long round runs: a task of its own, polling each second.
        let (role_tx, mut role_rx) = tokio::sync::watch::channel(self.leading);
        let heartbeat = self.election.clone().map(|election| {
            tokio::spawn(async move {
                loop {
                    let leading = election.poll().await.unwrap_or(false);
                    role_tx.send_if_modified(|old| std::mem::replace(old, leading) != leading);
                    tokio::time::sleep(ELECTION_POLL).await;
                }
            })
        });
        let _stop_heartbeat = heartbeat.map(AbortOnDrop);
        // The sets' tokens are due at once too: without them the first wait would go by the
        // `[[token]]`s alone (an hour's, for a configuration of sets only).
        if let Err(e) = self.expand_sets(self.clock.now()).await {
            tracing::warn!("cannot expand the token sets yet: {e}");
        }
        self.confirm_leader().await;
        self.publish(self.clock.now()).await?;
        loop {
            let now = self.clock.now();
            let wait = if self.leading {
                let next = self
                    .next_due()
                    .unwrap_or(now + SignedDuration::from_hours(1));
                // Deliveries waiting for a retry wake the loop too; a minute is their finest grain.
                let wait = next
                    .duration_since(now)
                    .clamp(SignedDuration::ZERO, SignedDuration::from_mins(1));
                Duration::try_from(wait).unwrap_or_default()
            } else {
                // A standby rebuilds its picture from the shared state every few seconds.
                STANDBY_REFRESH
            };
            tokio::select! {
                changed = role_rx.changed(), if self.election.is_some() => {
                    if changed.is_err() {
                        continue;
                    }
                    let was = self.leading;
                    self.confirm_leader().await;
                    if was != self.leading {
                        let now = self.clock.now();
                        if let Err(e) = self.publish(now).await {
                            tracing::error!("cannot rebuild the status: {e}");
                        }
                    }
                }
                () = &mut shutdown => return Ok(()),
                config = reloads.recv(), if reloads_open => {
                    match config {
                        Some(config) => self.replace_config(config).await?,
                        // No more reloads can come; never poll a closed channel again.
                        None => reloads_open = false,
                    }
                }
                () = tokio::time::sleep(wait) => {
                    let now = self.clock.now();
                    let mut stop = false;
                    let result = if self.confirm_leader().await {
                        // A stop asked for during a round ends it at the next window: a fleet's
                        // round can outlast a service manager's grace period.
                        let stopping = self.stopping.clone();
                        let round = self.run_due(now);
                        tokio::pin!(round);
                        tokio::select! {
                            result = &mut round => result.map(drop),
                            () = &mut shutdown => {
                                tracing::info!("stopping: the round ends after the tokens being checked now");
                                stopping.store(true, std::sync::atomic::Ordering::Relaxed);
                                stop = true;
                                round.await.map(drop)
                            }
                        }
                    } else {
                        // A standby shows the set files as they are now, as the leader will.
                        match self.expand_sets(now).await {
                            Ok(_) => self.publish(now).await,
                            Err(e) => Err(e),
                        }
                    };
                    if let Err(e) = result {
                        tracing::error!("a round failed: {e}");
                    }
                    if stop {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Checks the tokens at positions `window` of the configuration: reads them, asks their batches,
    /// runs their checks (up to [`CHECKS_IN_FLIGHT`] at once), takes each in, in order, and writes
    /// their records.
    async fn check_window(
        &mut self,
        window: &[usize],
        now: Timestamp,
        summary: &mut StepSummary,
    ) -> Result<(), Error> {
        let mut round = Round {
            tokens: Vec::with_capacity(window.len()),
            checks: Vec::with_capacity(window.len()),
        };
        // Reading a fleet's files can take a while (a network file system): they are read on the
        // blocking pool, so that the election's heartbeat, on this thread, goes on meanwhile.
        let configs: Vec<TokenConfig> = window
            .iter()
            .map(|&i| self.config.tokens[i].clone())
            .collect();
        let count = configs.len();
        let reads = tokio::task::spawn_blocking(move || {
            let reads: Vec<_> = configs.iter().map(read_token).collect();
            (configs, reads)
        })
        .await;
        let (configs, reads) = match reads {
            Ok(done) => done,
            Err(e) => {
                let why = format!("the token files could not be read ({e})");
                let configs = window
                    .iter()
                    .map(|&i| self.config.tokens[i].clone())
                    .collect();
                (configs, (0..count).map(|_| Err(why.clone())).collect())
            }
        };
        let mut jobs = Vec::with_capacity(window.len());
        for (token, read) in configs.iter().zip(reads) {
            jobs.push(match read {
                Ok(read) => Ok(self.prepare(token, read)?),
                Err(reason) => Err(reason),
            });
        }
        let (known, deferred) = self.prefetch(&jobs, now).await;
        // The Graph calls of up to CHECKS_IN_FLIGHT tokens overlap; what follows each check
        // (states, alerts, the store) is taken in one token at a time, in the configuration's
        // order, so a round decides as it did sequentially.
        let mut in_flight: VecDeque<(TokenConfig, Pending)> = VecDeque::new();
        for (n, (&i, job)) in window.iter().zip(jobs).enumerate() {
            let token = self.config.tokens[i].clone();
            if let Some(until) = deferred.get(&n) {
                // Its app is rate-limited: not a failed check, only a later one; but not a check
                // made either (`watch --once` must not exit 0 on it).
                summary.deferred += 1;
                summary.worst = Some(worst(summary.worst, Status::Unknown));
                self.due
                    .entry(token.name.clone())
                    .or_insert(Due {
                        at: now,
                        unknown_streak: 0,
                    })
                    .at = *until;
                continue;
            }
            let pending = match job {
                Ok(mut job) => {
                    job.known = known.clone();
                    if let Some(election) = &self.election {
                        let gate = ClaimGate::new(election.clone(), now);
                        job.options.gate = Some(gate.clone());
                        job.claims = Some(gate);
                    }
                    Pending::Running(tokio::spawn(job.run(now)))
                }
                Err(reason) => Pending::Done(Checked::Unreadable(reason)),
            };
            // Should a step fail below, checks still in flight finish on their own (a write the
            // engine began is completed, never cut); the next step reads what they left.
            in_flight.push_back((token, pending));
            if in_flight.len() >= CHECKS_IN_FLIGHT
                && let Some((token, pending)) = in_flight.pop_front()
            {
                let checked = pending.finish().await;
                self.check_one(&token, checked, now, summary, &mut round)
                    .await?;
            }
        }
        while let Some((token, pending)) = in_flight.pop_front() {
            let checked = pending.finish().await;
            self.check_one(&token, checked, now, summary, &mut round)
                .await?;
        }
        // Tokens and checks are written once per window: a call per check would cost a
        // transaction each.
        if !round.checks.is_empty() {
            self.store.upsert_tokens(round.tokens).await?;
            self.store.record_checks(round.checks).await?;
        }
        Ok(())
    }

    async fn check_tokens(
        &mut self,
        tokens: &[usize],
        now: Timestamp,
    ) -> Result<StepSummary, Error> {
        let mut summary = StepSummary::default();
        // Decisions a failed step left unwritten are made again from the store.
        self.decisions.clear();
        self.load_identities().await;
        // One read of what was announced per step, not one per token.
        self.announced = self
            .store
            .all_announced()
            .await?
            .into_iter()
            .map(|a| (a.token_name.clone(), a))
            .collect();
        // A fleet's round goes a window at a time: its jobs, batch answers and records live only
        // while their window is checked, so a round's memory does not grow with the fleet.
        for window in tokens.chunks(ROUND_WINDOW) {
            if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                // What is left is due at the next start, which has no schedule yet.
                break;
            }
            self.check_window(window, now, &mut summary).await?;
        }
        self.forget_identities();
        // A leader fenced during the round (a standby took over) leaves what it saw to the new
        // leader: announcing it here could alert a change twice.
        if !self.confirm_leader().await {
            tracing::warn!(
                "this replica stopped leading during the round: its announcements are left to the new leader"
            );
            self.decisions.clear();
            return Ok(summary);
        }
        self.store
            .announce_all(std::mem::take(&mut self.decisions))
            .await?;
        let delivered = self.deliver_due(now).await?;
        if self
            .last_prune
            .is_none_or(|at| now.duration_since(at) >= SignedDuration::from_hours(24))
        {
            let keep =
                SignedDuration::try_from(self.config.retention).unwrap_or(SignedDuration::MAX);
            let cutoff = now.checked_sub(keep).unwrap_or(Timestamp::MIN);
            self.store.prune(cutoff).await?;
            self.store.prune_claims(cutoff).await?;
            self.last_prune = Some(now);
        }
        if !tokens.is_empty() {
            self.last_round_at = Some(now);
        }
        // Building a snapshot reads the whole store: only when something may have changed.
        self.count_graph_requests();
        if !tokens.is_empty() || delivered > 0 {
            self.publish(now).await?;
        }
        Ok(summary)
    }

    fn client_for(&mut self, app: &AppCredentials) -> Result<Client, Error> {
        let id = app.app_id.clone().unwrap_or_default();
        let print = app
            .app_secret
            .as_ref()
            .map(AppSecret::fingerprint)
            .unwrap_or_default();
        if let Some((p, client, _)) = self.clients.get(&id)
            && *p == print
        {
            return Ok(client.clone());
        }
        // A client about to be replaced (the app secret changed) has its last requests counted first.
        self.count_graph_requests();
        let mut config = self.graph.clone();
        config.app_secret = app.app_secret.clone();
        let client = Client::new(config).map_err(|e| Error::Graph(e.to_string()))?;
        self.clients
            .insert(id, (print, client.clone(), RequestCounts::default()));
        Ok(client)
    }

    /// With `batch_checks`, asks the batches for `jobs` (see [`crate::batch`]): the round's known
    /// answers, and the checks deferred (by index) until their app's rate limit has passed.
    async fn prefetch(
        &mut self,
        jobs: &[Result<Job, String>],
        now: Timestamp,
    ) -> (
        Option<Arc<permatoken_renew::Known>>,
        HashMap<usize, Timestamp>,
    ) {
        if !self.config.batch_checks {
            return (None, HashMap::new());
        }
        let due = jobs
            .iter()
            .enumerate()
            .filter_map(|(i, job)| {
                let job = job.as_ref().ok()?;
                let (Some(id), Some(secret)) = (&job.app.app_id, &job.app.app_secret) else {
                    return None;
                };
                // A token of another app is checked alone, by itself (`check`'s mismatch).
                let tokens: Vec<AccessToken> = std::iter::once(&job.spec.primary)
                    .chain(&job.spec.backups)
                    .map(|s| &s.value)
                    .filter(|t| t.embedded_app_id().is_none_or(|e| e.to_string() == *id))
                    .cloned()
                    .collect();
                let app = AppToken::new(id.clone(), secret.clone());
                (!tokens.is_empty()).then(|| {
                    let client = job.client.clone();
                    (
                        i,
                        crate::batch::Due {
                            app,
                            client,
                            tokens,
                        },
                    )
                })
            })
            .collect();
        let fetched = crate::batch::prefetch(
            due,
            &self.identities,
            &mut self.budgets,
            &self.counters,
            now,
        )
        .await;
        (Some(Arc::new(fetched.known)), fetched.deferred)
    }

    /// Forgets the identities of tokens no longer configured (a renewed token's old value, a
    /// removed file).
    fn forget_identities(&mut self) {
        let live: std::collections::HashSet<&str> = self
            .config
            .tokens
            .iter()
            .flat_map(|t| {
                std::iter::once(&t.name).chain(self.backups.get(&t.name).into_iter().flatten())
            })
            .filter_map(|name| self.keys.get(name))
            .map(store::TokenKey::as_str)
            .collect();
        self.identities.retain(|key, _| live.contains(key.as_str()));
    }

    /// Adds the Graph requests made since the last call to `permatoken_graph_requests_total`.
    fn count_graph_requests(&mut self) {
        for (_, client, counted) in self.clients.values_mut() {
            let now = client.request_counts();
            for ((outcome, total), (_, before)) in
                now.by_outcome().into_iter().zip(counted.by_outcome())
            {
                self.counters
                    .graph_requests(outcome, total.saturating_sub(before));
            }
            *counted = now;
        }
    }

    /// A check of `token` from what [`read_token`] read: the Graph client for its app and the
    /// engine's options.
    fn prepare(&mut self, token: &TokenConfig, read: Read) -> Result<Job, Error> {
        let policy = token.policy;
        let Read { spec, source, app } = read;
        let client = self.client_for(&app)?;
        let options = RefreshOptions {
            policy: RenewPolicy {
                renew_window: SignedDuration::from_hours(i64::from(policy.renew_days) * 24),
                try_user_token: policy.try_user_token,
            },
            failover: policy.failover,
            write: permatoken_renew::WriteOptions {
                reload: token.reload.clone(),
                lock_timeout: Duration::from_secs(30),
                dry_run: false,
                backup_dir: self.backup_dir.clone(),
                on_lock_held: None,
                reload_args: token.reload_args.iter().map(|p| p.into()).collect(),
                reload_slots: self.reload_slots.get(&token.set).cloned(),
            },
            gate: None,
        };
        Ok(Job {
            spec,
            source,
            app,
            client,
            thresholds: policy.thresholds(),
            options,
            claims: None,
            known: None,
        })
    }

    async fn check_one(
        &mut self,
        token: &TokenConfig,
        checked: Checked,
        now: Timestamp,
        summary: &mut StepSummary,
        round: &mut Round,
    ) -> Result<(), Error> {
        let policy = token.policy;
        let (job, result) = match checked {
            Checked::Unreadable(reason) => {
                tracing::warn!(token = %token.name, "cannot read the token: {reason}");
                let observation = Observation {
                    observed: Observed::Unknown,
                    message: format!("the token could not be read: {reason}"),
                    fix: Some("check the file named in the message and its permissions".into()),
                };
                self.counters.check(&token.name, "error");
                summary.checked += 1;
                summary.worst = Some(worst(summary.worst, Status::Unknown));
                self.announce(token, &token.name, &observation, now, summary)
                    .await?;
                self.schedule(&token.name, policy, None, true, now);
                return Ok(());
            }
            Checked::Ran(ran) => *ran,
        };
        // Done, whatever came of it: the action ran its course (a claim left open would say it
        // may still be under way).
        for key in job.claims.iter().flat_map(|gate| gate.take_claimed()) {
            self.store.claim_done(&key, now).await?;
        }
        let report = match result {
            Ok(report) => report,
            Err((reason, hint)) => {
                tracing::warn!(token = %token.name, "the check could not run: {reason}");
                let observation = Observation {
                    observed: Observed::Unknown,
                    message: format!("the token could not be checked: {reason}"),
                    fix: Some(hint),
                };
                self.counters.check(&token.name, "error");
                summary.checked += 1;
                summary.worst = Some(worst(summary.worst, Status::Unknown));
                self.announce(token, &token.name, &observation, now, summary)
                    .await?;
                self.schedule(&token.name, policy, None, true, now);
                return Ok(());
            }
        };
        self.take_in(token, &job.spec, &report, now, summary, round)
            .await?;
        if policy.doctor && self.doctor_due.get(&token.name).is_none_or(|at| *at <= now) {
            self.doctor(token, &job.source, &job.app, &job.client, now, summary)
                .await?;
            let every = SignedDuration::try_from(policy.doctor_interval)
                .unwrap_or(SignedDuration::from_hours(6));
            self.doctor_due.insert(token.name.clone(), now + every);
        }
        Ok(())
    }

    /// Runs the doctor checklist for `token` (its current primary, read again after any write) and
    /// treats each item that is not skipped like a token named `<name>/doctor/<item>`: a change of
    /// its state is alerted (`warning` shows as `expiring`, e.g. the webhook certificate's expiry).
    async fn doctor(
        &mut self,
        token: &TokenConfig,
        source: &EngineSource,
        app: &AppCredentials,
        client: &Client,
        now: Timestamp,
        summary: &mut StepSummary,
    ) -> Result<(), Error> {
        let Ok(spec) = TokenSpec::load(source, Some(&[])) else {
            // The token's own check already said why it cannot be read.
            return Ok(());
        };
        let vars = match doctor_vars(&token.source) {
            Ok(vars) => vars,
            Err(reason) => {
                tracing::warn!(token = %token.name, "doctor: {reason}");
                return Ok(());
            }
        };
        let inputs = permatoken_doctor::Inputs {
            token: spec.primary.value.clone(),
            source: spec.primary.source.to_string(),
            app: app.clone(),
            waba: vars.waba_id.map(|s| s.value),
            phone: vars.phone_number_id.map(|s| s.value),
            webhook_url: vars.webhook_url.map(|s| s.value),
            verify_token: vars.verify_token.map(|s| s.value),
            webhook: permatoken_doctor::WebhookCheck {
                allow_private: false,
                ca_pem: self.graph.extra_roots_pem.clone(),
                no_post: false,
            },
            subscribe: false,
        };
        let budget = Budget::new(Duration::from_secs(120));
        let checklist = permatoken_doctor::doctor(client, &inputs, &budget).await;
        for item in checklist.items {
            use permatoken_doctor::ItemStatus;
            let observed = match item.status {
                ItemStatus::Skipped => continue,
                ItemStatus::Ok => Observed::Known(State::Ok),
                ItemStatus::Warning => Observed::Known(State::Expiring),
                ItemStatus::Critical => Observed::Known(State::Critical),
                ItemStatus::Unknown => Observed::Unknown,
            };
            let message = match item.evidence.first() {
                Some(first) => format!("{}: {first}", item.title),
                None => item.title.to_owned(),
            };
            let observation = Observation {
                observed,
                message,
                fix: item.fix,
            };
            let name = format!("{}/doctor/{}", token.name, item.id);
            self.announce(token, &name, &observation, now, summary)
                .await?;
        }
        Ok(())
    }

    /// Everything that follows one engine round: events, token records, checks, states, alerts.
    async fn take_in(
        &mut self,
        token: &TokenConfig,
        spec: &TokenSpec,
        report: &RefreshReport,
        now: Timestamp,
        summary: &mut StepSummary,
        round: &mut Round,
    ) -> Result<(), Error> {
        let mut observed: Vec<(String, Report, Engine)> = Vec::new();
        let promoted = match &report.failover {
            Some(FailoverOutcome::Promoted {
                variable, report, ..
            }) => Some((variable.clone(), report.clone())),
            _ => None,
        };
        for (i, outcome) in report.tokens.iter().enumerate() {
            let sourced = if i == 0 {
                &spec.primary
            } else {
                &spec.backups[i - 1]
            };
            let (name, role) = if i == 0 {
                (token.name.clone(), Role::Primary)
            } else {
                let var = outcome.variable.clone().unwrap_or_default();
                (
                    format!("{}/{var}", token.name),
                    Role::Backup(token.name.clone()),
                )
            };
            let (secret_key, check_report, engine) = if i == 0 {
                match (&promoted, &outcome.renewed) {
                    (Some((variable, promoted_report)), _) => {
                        let key = spec
                            .backups
                            .iter()
                            .find(|b| b.var.as_deref() == Some(variable))
                            .map(|b| sha256(&b.value));
                        (key, promoted_report.clone(), Engine::FailedOver)
                    }
                    (None, Some(renewed)) => (
                        Some(sha256(&renewed.token)),
                        renewed.report.clone(),
                        Engine::Renewed,
                    ),
                    (None, None) => (
                        Some(sha256(&sourced.value)),
                        outcome.before.clone(),
                        Engine::Nothing,
                    ),
                }
            } else {
                (
                    Some(sha256(&sourced.value)),
                    outcome.before.clone(),
                    Engine::Nothing,
                )
            };
            if outcome.decision == RenewDecision::Renewed {
                tracing::info!(token = %name, "renewed: {}", outcome.message);
                self.counters.renewal(&name);
                self.event(now, &name, store::EventKind::Renewal, &outcome.message)
                    .await?;
            }
            if let Some(key) = &secret_key {
                match permatoken_renew::LastCheck::of(&check_report) {
                    Some(last) => self.identities.insert(key.as_str().to_owned(), last),
                    None => self.identities.remove(key.as_str()),
                };
                self.keys.insert(name.clone(), key.clone());
                round
                    .tokens
                    .push(token_record(key, &name, &role, sourced, &check_report, now));
                round
                    .checks
                    .push(check_record(key, &check_report, engine, now));
            }
            observed.push((name, check_report, engine));
        }
        if let Some(outcome) = &report.failover {
            let text = outcome.message();
            if promoted.is_some() {
                tracing::warn!(token = %token.name, "failover: {text}");
                self.counters.failover(&token.name);
                self.event(now, &token.name, store::EventKind::Failover, &text)
                    .await?;
            }
        }
        if let Some(reload) = &report.reload {
            let text = if reload.ok {
                "the reload command ran and succeeded".to_owned()
            } else {
                format!(
                    "the reload command failed (exit code {})",
                    reload
                        .exit_code
                        .map_or_else(|| "none".to_owned(), |c| c.to_string())
                )
            };
            tracing::info!(token = %token.name, "reload: {text}");
            self.event(now, &token.name, store::EventKind::Reload, &text)
                .await?;
        }
        let backups = observed
            .iter()
            .skip(1)
            .map(|(name, ..)| name.clone())
            .collect();
        self.backups.insert(token.name.clone(), backups);
        // The token and its backups are checked together: the soonest expiry among them and any
        // unknown check set when they are checked next.
        let mut soonest: Option<Timestamp> = None;
        let mut any_unknown = false;
        for (name, check_report, engine) in observed {
            let status = check_report.status;
            self.scopes.insert(
                name.clone(),
                check_report.token.scopes.clone().unwrap_or_default(),
            );
            self.counters.check(&name, status_str(status));
            summary.checked += 1;
            summary.worst = Some(worst(summary.worst, status));
            let observation = states::observe(&check_report, engine);
            self.announce(token, &name, &observation, now, summary)
                .await?;
            any_unknown |= observation.observed == Observed::Unknown;
            // Only an expiry still ahead brings the next check nearer: a token already expired is
            // dead by the API's word and stays so until its file changes, which the interval notices.
            if let Some(at) = check_report.expires_at().filter(|at| *at > now) {
                soonest = Some(soonest.map_or(at, |s| s.min(at)));
            }
        }
        self.schedule(&token.name, token.policy, soonest, any_unknown, now);
        Ok(())
    }

    async fn event(
        &self,
        now: Timestamp,
        token: &str,
        kind: store::EventKind,
        text: &str,
    ) -> Result<(), Error> {
        self.store
            .record_event(store::Event {
                at: now,
                token_name: Some(token.to_owned()),
                kind,
                detail: text.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Decides on `observation` against what is announced for `name`, records the alert with its
    /// routes and the new announced state.
    async fn announce(
        &mut self,
        token: &TokenConfig,
        name: &str,
        observation: &Observation,
        now: Timestamp,
        summary: &mut StepSummary,
    ) -> Result<(), Error> {
        let stored = self.announced.get(name).cloned();
        let previous = stored.as_ref().map(announced_from_store);
        let decision = states::decide(
            Subject { name, key: name },
            previous.as_ref(),
            observation,
            now,
            token.policy.timing(),
        );
        let mut alert_id = stored
            .as_ref()
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
            record = Some((alert_to_store(alert), token.alerts.clone()));
            summary.alerts += 1;
        }
        if previous.as_ref() != Some(&decision.next) || record.is_some() {
            let (announcement, unknown_since) = announced_to_store(&decision.next, alert_id);
            // The alert, its deliveries and what is announced are written with the step's other
            // decisions, in one transaction at its end: a crash leaves all or none (an alert
            // announced but never queued would never be sent), and a round of thousands of tokens
            // costs one commit, not one per token.
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
        Ok(())
    }

    fn schedule(
        &mut self,
        name: &str,
        policy: crate::config::Policy,
        expires_at: Option<Timestamp>,
        unknown: bool,
        now: Timestamp,
    ) {
        let entry = self.due.entry(name.to_owned()).or_insert(Due {
            at: now,
            unknown_streak: 0,
        });
        entry.unknown_streak = if unknown { entry.unknown_streak + 1 } else { 0 };
        let mut wait = policy.interval + policy.jitter.mul_f64(random_unit());
        if let Some(expires) = expires_at {
            let left = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
            wait = wait.min(left / 4);
        }
        if entry.unknown_streak > 0 {
            // Back off from a minute, doubling, never beyond the interval.
            let backoff = MIN_GAP.saturating_mul(1 << (entry.unknown_streak - 1).min(16));
            wait = wait.min(backoff);
        }
        let wait = wait.max(MIN_GAP);
        entry.at = now + SignedDuration::try_from(wait).unwrap_or(SignedDuration::from_hours(1));
    }

    /// Tries every delivery due at `now` (new alerts at once; failed ones after their retry delay);
    /// returns how many were tried.
    pub async fn deliver_due(&mut self, now: Timestamp) -> Result<usize, Error> {
        let due = self.store.due_deliveries(now, DELIVERIES_PER_STEP).await?;
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
            let Some(route) = self.config.route(&route_name).cloned() else {
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
                self.deliver_group(&route, deliveries, now).await?;
                continue;
            }
            for delivery in deliveries {
                let alert = alert_from_store(&delivery.alert);
                let result = self.sender.deliver(&route, &alert).await;
                self.settle(&route, vec![delivery], &alert.id, result, now)
                    .await?;
            }
        }
        Ok(tried)
    }

    /// Sends `deliveries` (all due on `route`) as one [`AlertGroup`] and settles each alike. The
    /// group's id comes from its members', so a group sent again after a failure keeps it.
    async fn deliver_group(
        &mut self,
        route: &Route,
        deliveries: Vec<store::Delivery>,
        now: Timestamp,
    ) -> Result<(), Error> {
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
        &mut self,
        route: &Route,
        deliveries: Vec<store::Delivery>,
        id: &str,
        result: Result<crate::alert::Delivered, crate::alert::DeliveryError>,
        now: Timestamp,
    ) -> Result<(), Error> {
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

    /// Builds a snapshot from the store and publishes it.
    pub async fn publish(&mut self, now: Timestamp) -> Result<(), Error> {
        let snapshot = self.snapshot(now).await?;
        self.publisher.publish(snapshot);
        Ok(())
    }

    /// The picture the endpoint serves, from the store.
    pub async fn snapshot(&self, now: Timestamp) -> Result<Snapshot, Error> {
        // A fleet's snapshot is built while the previous one is still served: what is read for it
        // is taken apart as it is used, and each store read is dropped before the next one comes
        // in (10,000 tokens' checks, announcements and histories all at once made most of the
        // daemon's peak memory).
        // No history: `/api/tokens` reads the chart points of the page it answers from the store
        // when asked, so that no snapshot holds 200 points of each of 10,000 tokens.
        let tokens = self.token_views().await?;
        let events = self
            .store
            .recent_events(RECENT_EVENTS)
            .await?
            .into_iter()
            .map(|e| snapshot::Event {
                at: e.at.as_second(),
                kind: match e.kind {
                    store::EventKind::Renewal | store::EventKind::RenewalFailed => {
                        snapshot::EventKind::Renewal
                    }
                    store::EventKind::Failover => snapshot::EventKind::Failover,
                    store::EventKind::Alert => snapshot::EventKind::Alert,
                    _ => snapshot::EventKind::Reload,
                },
                token: e.token_name,
                text: e.detail,
            })
            .collect();
        let health = self.store.route_health().await?;
        let routes = self
            .config
            .routes
            .iter()
            .map(|r| {
                let h = health.iter().find(|h| h.route == r.name);
                snapshot::RouteHealth {
                    name: r.name.clone(),
                    last_result: h.map(|h| match &h.last_error {
                        Some(e) if h.failed > 0 || h.pending > 0 => e.clone(),
                        _ => "delivered".to_owned(),
                    }),
                    last_at: h.and_then(|h| h.last_at).map(|t| t.as_second()),
                    // Failing only while the latest attempt failed.
                    failing_since: h
                        .filter(|h| h.last_error.is_some())
                        .and_then(|h| h.failing_since)
                        .map(|t| t.as_second()),
                }
            })
            .collect();
        Ok(Snapshot {
            generated_at: now.as_second(),
            started_at: self.started_at.as_second(),
            leader: self.leading,
            round_finished: self.last_round_at.is_some(),
            last_round_at: self.last_round_at.map(|t| t.as_second()),
            tokens,
            events,
            routes,
        })
    }

    /// Every watched token, primaries each followed by its backups: from the
    /// latest checks and the announced states.
    async fn token_views(&self) -> Result<Vec<TokenView>, Error> {
        let announced: HashMap<String, State> = self
            .store
            .all_announced()
            .await?
            .into_iter()
            .filter_map(|a| {
                let state = State::parse(&a.announcement?.state)?;
                Some((a.token_name, state))
            })
            .collect();
        let latest = self.store.latest_statuses().await?;
        let mut newest: HashMap<&str, &store::LatestStatus> = HashMap::with_capacity(latest.len());
        for l in &latest {
            let Some(check) = &l.check else { continue };
            let slot = newest.entry(l.name.as_str()).or_insert(l);
            if slot
                .check
                .as_ref()
                .is_none_or(|c| c.checked_at < check.checked_at)
            {
                *slot = l;
            }
        }
        let by_key: HashMap<&store::TokenKey, &store::LatestStatus> =
            latest.iter().map(|l| (&l.key, l)).collect();
        let count = self.config.tokens.len()
            + self
                .config
                .tokens
                .iter()
                .filter_map(|t| self.backups.get(&t.name))
                .map(Vec::len)
                .sum::<usize>();
        let mut tokens = Vec::with_capacity(count);
        let view = |name: &str, role: Role| {
            let state = announced
                .get(name)
                .copied()
                .unwrap_or(State::CannotBeChecked);
            let latest = self
                .keys
                .get(name)
                .and_then(|key| by_key.get(key))
                .or_else(|| newest.get(name));
            let check = latest.and_then(|l| l.check.as_ref());
            let primary_name = match &role {
                Role::Primary => name,
                Role::Backup(of) => of.as_str(),
            };
            TokenView {
                state,
                status: check.map_or(Status::Unknown, |c| status_from_store(c.status)),
                valid: check.and_then(|c| c.valid).unwrap_or(false),
                kind: check.and_then(|c| c.kind.clone()).unwrap_or_default(),
                fingerprint: latest.map(|l| l.fingerprint.clone()).unwrap_or_default(),
                expires_at: check.and_then(|c| c.expires_at).map(|t| t.as_second()),
                never_expires: check.is_some_and(|c| c.never_expires),
                missing_permissions: check.map(|c| c.missing_scopes.clone()).unwrap_or_default(),
                scopes: self.scopes.get(name).cloned().unwrap_or_default(),
                last_check: check.map(|c| c.checked_at.as_second()),
                next_check: self.due.get(primary_name).map(|d| d.at.as_second()),
                name: name.to_owned(),
                role,
            }
        };
        for t in &self.config.tokens {
            tokens.push(view(&t.name, Role::Primary));
            for b in self.backups.get(&t.name).into_iter().flatten() {
                tokens.push(view(b, Role::Backup(t.name.clone())));
            }
        }
        Ok(tokens)
    }
}

/// The `[[token]]`s a set's expansion is added to, kept only when there is a set to expand: a
/// fleet of 10,000 `[[token]]`s would otherwise hold its configuration twice.
fn fixed_tokens(config: &Config) -> Vec<TokenConfig> {
    if config.token_sets.is_empty() {
        Vec::new()
    } else {
        config.tokens.clone()
    }
}

/// The configured token `name` is, or is a backup of (`<token>/<VARIABLE>`; a set's token is
/// itself named `<set>/<match>`).
fn name_in<'a>(config: &'a Config, name: &str) -> Option<&'a TokenConfig> {
    config.token(name).or_else(|| {
        let primary = name.rsplit_once('/').map_or(name, |(p, _)| p);
        config.token(primary)
    })
}

fn worst(a: Option<Status>, b: Status) -> Status {
    a.map_or(b, |a| a.worst(b))
}

fn status_str(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Warning => "warning",
        Status::Critical => "critical",
        Status::Unknown => "unknown",
    }
}

fn status_to_store(status: Status) -> store::Status {
    match status {
        Status::Ok => store::Status::Ok,
        Status::Warning => store::Status::Warning,
        Status::Critical => store::Status::Critical,
        Status::Unknown => store::Status::Unknown,
    }
}

fn status_from_store(status: store::Status) -> Status {
    match status {
        store::Status::Ok => Status::Ok,
        store::Status::Warning => Status::Warning,
        store::Status::Critical => Status::Critical,
        store::Status::Unknown => Status::Unknown,
    }
}

/// What a check reads from files: the token and its backups, and its app's credentials.
struct Read {
    spec: TokenSpec,
    source: EngineSource,
    app: AppCredentials,
}

/// Reads `token`'s files (blocking: run on the blocking pool); `Err` says why it cannot be read.
/// App credentials that cannot be read are logged and left out: the check then says what they
/// would have told.
fn read_token(token: &TokenConfig) -> Result<Read, String> {
    let source = token.source.clone();
    let backups = match &token.backups {
        Backups::Series => None,
        Backups::Keys(keys) => Some(keys.as_slice()),
    };
    let spec = TokenSpec::load(&source, backups).map_err(|e| e.to_string())?;
    let app = app_credentials(&token.app).unwrap_or_else(|reason| {
        tracing::warn!(token = %token.name, "cannot read the app credentials: {reason}");
        AppCredentials::default()
    });
    Ok(Read { spec, source, app })
}

/// The doctor's variables (`WHATSAPP_BUSINESS_ACCOUNT_ID`, `WHATSAPP_PHONE_NUMBER_ID`,
/// `WHATSAPP_WEBHOOK_URL`, `WHATSAPP_WEBHOOK_VERIFY_TOKEN`): from the token's env file first, then the
/// process environment.
fn doctor_vars(source: &TokenSource) -> Result<permatoken_config::Credentials, String> {
    let env_file = match source {
        TokenSource::EnvFile { path, .. } => Some(path.clone()),
        TokenSource::TokenFile { .. } | TokenSource::Environment { .. } => None,
    };
    let Some(env_file) = env_file else {
        let get = |name: &str| {
            std::env::vars_os()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.into_string().ok())
                .filter(|v| !v.trim().is_empty())
                .map(|value| Sourced {
                    value,
                    source: permatoken_config::Source::Environment,
                    var: Some(name.to_owned()),
                })
        };
        return Ok(permatoken_config::Credentials {
            waba_id: get(permatoken_config::WABA_VAR),
            phone_number_id: get(permatoken_config::PHONE_VAR),
            webhook_url: get(permatoken_config::WEBHOOK_URL_VAR),
            verify_token: get(permatoken_config::VERIFY_TOKEN_VAR).map(|s| Sourced {
                value: permatoken_secret::VerifyToken::new(s.value.as_str()),
                source: s.source,
                var: s.var,
            }),
            ..Default::default()
        });
    };
    let request = permatoken_config::Request {
        env_file: Some(env_file),
        ..Default::default()
    };
    permatoken_config::resolve(&request, std::env::vars_os()).map_err(|e| e.to_string())
}

/// The most bytes read of an `app_secret_file`.
const MAX_SECRET_FILE: u64 = 8 * 1024;

/// A token's app credentials, read afresh. Missing ones are `None` (the check then says what is
/// missing); an unreadable file is an error naming it.
fn app_credentials(source: &AppSource) -> Result<AppCredentials, String> {
    let env = |name: &str| {
        std::env::vars_os()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.into_string().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    match source {
        AppSource::EnvFile(path) => Ok(permatoken_renew::load_app(path)
            .map_err(|e| e.to_string())?
            .map(|app| permatoken_renew::app_credentials(&app))
            .unwrap_or_default()),
        AppSource::Environment => Ok(AppCredentials {
            app_id: env(permatoken_config::APP_ID_VAR),
            app_secret: env(permatoken_config::APP_SECRET_VAR).map(|s| AppSecret::new(s.as_str())),
        }),
        AppSource::Given { app_id, secret } => {
            let secret = match secret {
                None => None,
                Some(SecretFrom::Env(name)) => env(name),
                Some(SecretFrom::File(path)) => {
                    use std::io::Read;
                    let file = std::fs::File::open(path)
                        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                    let mut text = String::new();
                    file.take(MAX_SECRET_FILE)
                        .read_to_string(&mut text)
                        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                    Some(zeroize::Zeroizing::new(text).trim().to_owned())
                }
            };
            let app = secret.map(|s| AppToken::new(app_id.clone(), AppSecret::new(s.as_str())));
            Ok(match app {
                Some(app) => permatoken_renew::app_credentials(&app),
                None => AppCredentials {
                    app_id: Some(app_id.clone()),
                    app_secret: None,
                },
            })
        }
    }
}

pub(crate) fn sha256(token: &AccessToken) -> store::TokenKey {
    store::TokenKey::parse(&crate::batch::digest(token)).expect("64 hex digits")
}

fn token_record(
    key: &store::TokenKey,
    name: &str,
    role: &Role,
    sourced: &Sourced<AccessToken>,
    report: &Report,
    now: Timestamp,
) -> store::TokenRecord {
    store::TokenRecord {
        key: key.clone(),
        name: name.to_owned(),
        role: match role {
            Role::Primary => store::Role::Primary,
            Role::Backup(of) => store::Role::Backup(of.clone()),
        },
        fingerprint: report.token.fingerprint.clone(),
        source_path: match &sourced.source {
            permatoken_config::Source::EnvFile(p) | permatoken_config::Source::TokenFile(p) => {
                p.display().to_string()
            }
            other => other.to_string(),
        },
        source_key: sourced.var.clone(),
        first_seen: now,
        last_seen: now,
        identity: report.identity.as_ref().map(|i| store::TokenIdentity {
            id: i.id.clone(),
            name: i.name.clone(),
            seen_at: now,
        }),
    }
}

fn check_record(
    key: &store::TokenKey,
    report: &Report,
    engine: Engine,
    now: Timestamp,
) -> store::CheckRecord {
    let observation = states::observe(report, engine);
    store::CheckRecord {
        key: key.clone(),
        checked_at: now,
        status: status_to_store(report.status),
        alert_state: match observation.observed {
            Observed::Known(s) => s.as_str().to_owned(),
            Observed::Unknown => "unknown".to_owned(),
        },
        valid: report.token.valid,
        expires_at: report.expires_at(),
        never_expires: report.token.never_expires == Some(true),
        kind: Some(report.token.kind.describe().to_owned()),
        missing_scopes: report.token.missing_scopes.clone(),
        finding_codes: report
            .findings
            .iter()
            .map(|f| {
                serde_json::to_value(f.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect(),
        elapsed_ms: 0,
    }
}

/// What the store keeps, as [`states::decide`] takes it: with [`announced_to_store`], the one place
/// the two shapes meet.
pub fn announced_from_store(stored: &store::Announced) -> Announced {
    match &stored.announcement {
        Some(a) => Announced {
            state: State::parse(&a.state),
            since: a.since,
            last_alert: a
                .last_reminder_at
                .or_else(|| a.alert_id.as_ref().map(|_| a.since)),
            reminders: a.reminders,
            unknown_since: stored.unknown_since,
        },
        None => Announced {
            state: None,
            since: stored.unknown_since.unwrap_or(Timestamp::UNIX_EPOCH),
            last_alert: None,
            reminders: 0,
            unknown_since: stored.unknown_since,
        },
    }
}

/// The inverse of [`announced_from_store`]: the announcement (none while nothing is known) and
/// since when the token has been unknown. `alert_id` is the latest alert about the state.
pub fn announced_to_store(
    announced: &Announced,
    alert_id: Option<String>,
) -> (Option<store::Announcement>, Option<Timestamp>) {
    let announcement = announced.state.map(|state| store::Announcement {
        state: state.as_str().to_owned(),
        since: announced.since,
        alert_id,
        last_reminder_at: announced.last_alert,
        reminders: announced.reminders,
    });
    (announcement, announced.unknown_since)
}

fn alert_to_store(alert: &Alert) -> store::Alert {
    store::Alert {
        id: alert.id.clone(),
        token_name: alert.token.clone(),
        state: alert.state.as_str().to_owned(),
        previous_state: alert.previous_state.map(|s| s.as_str().to_owned()),
        message: alert.message.clone(),
        fix: alert.fix.clone(),
        time: alert.time,
    }
}

fn alert_from_store(alert: &store::Alert) -> Alert {
    let state = State::parse(&alert.state).unwrap_or(State::CannotBeChecked);
    let previous_state = alert.previous_state.as_deref().and_then(State::parse);
    Alert {
        id: alert.id.clone(),
        token: alert.token_name.clone(),
        state,
        previous_state,
        message: alert.message.clone(),
        fix: alert.fix.clone(),
        time: alert.time,
        kind: if previous_state == Some(state) {
            AlertKind::Reminder
        } else {
            AlertKind::Change
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn the_state_file_follows_xdg_then_home_and_needs_one() {
        assert_eq!(
            default_state_path(env(&[("HOME", "/home/a"), ("XDG_STATE_HOME", "/x")])),
            Some(PathBuf::from("/x/permatoken/state.db"))
        );
        assert_eq!(
            default_state_path(env(&[("HOME", "/home/a"), ("XDG_STATE_HOME", "rel")])),
            Some(PathBuf::from("/home/a/.local/state/permatoken/state.db"))
        );
        assert_eq!(default_state_path(env(&[("PATH", "/bin")])), None);
    }

    #[test]
    fn announced_state_survives_the_store_round_trip() {
        let since = Timestamp::from_second(1_800_000_000).unwrap();
        let announced = Announced {
            state: Some(State::Critical),
            since,
            last_alert: Some(since + SignedDuration::from_hours(24)),
            reminders: 3,
            unknown_since: Some(since + SignedDuration::from_hours(30)),
        };
        let (announcement, unknown_since) = announced_to_store(&announced, Some("a1".repeat(16)));
        let stored = store::Announced {
            token_name: "orders".into(),
            announcement,
            unknown_since,
        };
        assert_eq!(announced_from_store(&stored), announced);
        let nothing = Announced {
            state: None,
            since,
            last_alert: None,
            reminders: 0,
            unknown_since: Some(since),
        };
        let (announcement, unknown_since) = announced_to_store(&nothing, None);
        assert!(announcement.is_none());
        let stored = store::Announced {
            token_name: "orders".into(),
            announcement,
            unknown_since,
        };
        assert_eq!(announced_from_store(&stored), nothing);
    }
}
