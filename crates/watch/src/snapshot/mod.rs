//! The plain, serialisable picture of what `watch` knows, which the HTTP endpoint serves: `/api/tokens`
//! as JSON, `/metrics`' gauges, and the status page.
//!
//! How to publish: make a channel with [`channel`], hand the [`Publisher`] to the scheduler and the
//! [`Subscriber`] to [`crate::http::AppState::new`]. After each check (or each round) the scheduler
//! builds a whole new [`Snapshot`] and calls [`Publisher::publish`]; readers always see one complete
//! snapshot, never a half-updated one, and a slow scrape never blocks the scheduler.
//!
//! It holds no token's check history: 200 chart points for each of 10,000 tokens made some 32 MB per
//! snapshot, two of them alive while a new one is built. `/api/tokens` reads the history of the page
//! it answers from the store instead.
//!
//! `build` (`snapshot/build.rs`) makes a snapshot from the state store and what the daemon remembers.
//!
//! Must never: hold a secret. There is no field for a token, an app secret or an alert route's URL;
//! a token appears only by its name and short fingerprint.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod build;

pub(crate) use build::{Sources, build};

/// A shared list as a JSON array (serde's `Arc` support is a feature this workspace does not enable).
fn shared_list<S: serde::Serializer>(list: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter())
}

fn owned_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<[String]>, D::Error> {
    Vec::<String>::deserialize(d).map(Arc::from)
}

/// Unix seconds (UTC), as the page's JavaScript and Prometheus take them.
pub type UnixSeconds = i64;

/// Everything the endpoint shows, at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When this snapshot was made.
    pub generated_at: UnixSeconds,
    /// When the process started.
    pub started_at: UnixSeconds,
    /// Whether this process is the one that acts (issue 10 runs several; until then always `true`).
    pub leader: bool,
    /// Whether at least one round of checks has finished since start: `/healthz` says so.
    pub round_finished: bool,
    /// When the last round finished.
    pub last_round_at: Option<UnixSeconds>,
    /// Why the state cannot be opened yet, while `watch` waits for its database at start
    /// ([`crate::startup`]): `/healthz` answers 503 and the page says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_state: Option<String>,
    /// Every token watched, primaries and backups, in the configuration's order.
    pub tokens: Vec<TokenView>,
    /// Recent events, newest first (the scheduler keeps a bounded number).
    pub events: Vec<Event>,
    /// The alert routes and how their last deliveries went.
    pub routes: Vec<RouteHealth>,
    /// Set while the state cannot be written: `/healthz` fails, and the page says so.
    #[serde(default)]
    pub state_unwritable: Option<StateProblem>,
}

/// The state cannot be written: alerts are delivered from memory, and what watch decides waits
/// there to be recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateProblem {
    /// Since when.
    pub since: UnixSeconds,
    /// What the state answered last (secret-free: the store's own error text).
    pub reason: String,
}

/// A token's place in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "of", rename_all = "snake_case")]
pub enum Role {
    /// The token an application uses.
    Primary,
    /// A backup of the named primary token.
    Backup(String),
}

/// A token's announced state: the same enum the alert logic decides on.
pub use crate::states::State as TokenState;

/// The check's verdict, as `permatoken check` reports it (`ok`, `warning`, `critical`, `unknown`).
pub use permatoken_inspect::Status;

/// One token, as the page and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenView {
    /// Its name in the configuration (untrusted text: escaped wherever it is shown).
    pub name: String,
    /// Primary, or backup of which primary.
    pub role: Role,
    /// Its announced state.
    pub state: TokenState,
    /// Whether a state was decided for it at all: `false` while no check could tell yet (never
    /// checked, or unknown for less than `unknown_after`), when `state` reads `cannot_be_checked`
    /// and `/metrics` says `unknown`.
    #[serde(default)]
    pub announced: bool,
    /// The last check's status.
    pub status: Status,
    /// Whether the API said it is valid at the last check that got an answer.
    pub valid: bool,
    /// `System user`, `User`, `Page`, … as the check reports it; empty when unknown.
    pub kind: String,
    /// The short fingerprint (`permatoken_secret`'s), never the token.
    pub fingerprint: String,
    /// When it expires; `None` when it never does or is not known.
    pub expires_at: Option<UnixSeconds>,
    /// Whether the API said it never expires (then `expires_at` is `None` and `/metrics` has no
    /// expiration sample for it).
    pub never_expires: bool,
    /// Required permissions it lacks.
    pub missing_permissions: Vec<String>,
    /// The permissions it has: the list the daemon remembers, shared, not copied into each
    /// snapshot (two snapshots of 100,000 tokens held some 45 MB of copies).
    #[serde(serialize_with = "shared_list", deserialize_with = "owned_list")]
    pub scopes: Arc<[String]>,
    /// When it was last checked.
    pub last_check: Option<UnixSeconds>,
    /// When it will be checked next.
    pub next_check: Option<UnixSeconds>,
    /// Why it is not ok, as its last check said: the worst finding's message and fix, or why the
    /// check could not tell (its file unreadable, no token in it), and when that check was made.
    /// In JSON its fields sit beside the token's (`reason`, `fix`, `tried_at`, `unknown`), absent
    /// while the last check found it ok.
    #[serde(default, flatten)]
    pub reason: Option<Reason>,
}

/// What a token's last check found wrong. The words are shared with the daemon's memory (tokens
/// dead of one cause share one copy), not copied into each snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The message and the fix.
    pub words: Arc<Words>,
    /// When that check was made: a check that could not tell writes no check record, so this is
    /// the only word of when the token was last tried.
    pub tried_at: UnixSeconds,
    /// Whether that check could not tell (the token's status is then unknown).
    pub unknown: bool,
}

/// The words of a [`Reason`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Words {
    /// One secret-free sentence: what is the matter (naming the file when it could not be read).
    pub message: String,
    /// What to do, if something is to be done.
    pub fix: Option<String>,
}

/// A [`Reason`] as JSON, borrowed.
#[derive(Serialize)]
struct ReasonOut<'a> {
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<&'a str>,
    tried_at: UnixSeconds,
    unknown: bool,
}

/// A [`Reason`] read back from JSON.
#[derive(Deserialize)]
struct ReasonIn {
    reason: String,
    #[serde(default)]
    fix: Option<String>,
    tried_at: UnixSeconds,
    #[serde(default)]
    unknown: bool,
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ReasonOut {
            reason: &self.words.message,
            fix: self.words.fix.as_deref(),
            tried_at: self.tried_at,
            unknown: self.unknown,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = ReasonIn::deserialize(d)?;
        Ok(Self {
            words: Arc::new(Words {
                message: r.reason,
                fix: r.fix,
            }),
            tried_at: r.tried_at,
            unknown: r.unknown,
        })
    }
}

/// One past check, for the chart. Never in a [`Snapshot`]: `/api/tokens` reads the points of the
/// tokens it answers with from the store, when asked ([`crate::page::view::TokenPage::read_history`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// When.
    pub at: UnixSeconds,
    /// What it said.
    pub status: Status,
}

/// What happened: a renewal, a failover, an alert, a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A token was renewed.
    Renewal,
    /// A backup replaced a primary.
    Failover,
    /// An alert was sent (or failed to be).
    Alert,
    /// An application's reload command ran, or the configuration was reloaded.
    Reload,
}

/// One recent event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When.
    pub at: UnixSeconds,
    /// Which kind.
    pub kind: EventKind,
    /// The token's name, when it concerns one.
    pub token: Option<String>,
    /// One secret-free sentence.
    pub text: String,
}

/// How an alert route's deliveries go. Never its URL: a route's URL is a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteHealth {
    /// The route's name in the configuration.
    pub name: String,
    /// The last delivery's result in a few words (`delivered`, `HTTP 503`, …); `None` before any.
    pub last_result: Option<String>,
    /// When the last delivery was tried.
    pub last_at: Option<UnixSeconds>,
    /// Since when deliveries have failed; `None` while they succeed.
    pub failing_since: Option<UnixSeconds>,
}

/// The scheduler's end of the channel.
#[derive(Debug, Clone)]
pub struct Publisher(Arc<tokio::sync::watch::Sender<Arc<Snapshot>>>);

/// The endpoint's end: always the newest snapshot.
pub type Subscriber = tokio::sync::watch::Receiver<Arc<Snapshot>>;

/// A channel holding `first` until something newer is published.
pub fn channel(first: Snapshot) -> (Publisher, Subscriber) {
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(first));
    (Publisher(Arc::new(tx)), rx)
}

impl Publisher {
    /// Replaces the snapshot every reader sees.
    pub fn publish(&self, snapshot: Snapshot) {
        // `send_replace`: publishing must work even while no reader is subscribed.
        self.0.send_replace(Arc::new(snapshot));
    }

    /// Another reader, for a second server or a test.
    pub fn subscribe(&self) -> Subscriber {
        self.0.subscribe()
    }
}
