//! Who acts: the leader's rules, in one place.
//!
//! A single `watch` on an SQLite state always leads: the state file's lock already makes it the
//! only one. Replicas sharing one PostgreSQL state elect a leader ([`store::Election`]: an advisory
//! lock held on a session of the leader's own, and a heartbeat row with a lease). The rules:
//!
//! 1. **Only the leader acts**: it checks, renews, fails over, writes checks and announcements, and
//!    delivers alerts. A standby writes nothing to the shared state; it rebuilds its status page
//!    from that state every few seconds.
//! 2. **A replica starts as a standby** and leads from the first poll that wins the election.
//! 3. **The heartbeat never waits for a round**: a task of its own polls the election each second
//!    ([`Leadership::heartbeat`]), so a long round does not let the lease lapse.
//! 4. **Before each round** the daemon asks [`Leadership::ensure_leading`] again: a leader stopped
//!    past its lease (a paused VM, a stepped clock) finds itself fenced before it does anything.
//! 5. **During a round**, each renewal and failover is claimed first ([`Leadership::gate`],
//!    [`crate::claims`]), on the session that holds the leader lock: a fenced leader's claim cannot
//!    land, even between two polls, so an action is never done by two replicas.
//! 6. **After a round's checks**, before anything is announced, `ensure_leading` is asked once
//!    more: a leader fenced during the round leaves its announcements to the new leader (who checks
//!    again), so a change is never alerted twice.
//! 7. **Taking over**, a new leader takes up the schedule and the identities from the shared state
//!    ([`Turn::Became`]); **standing down**, it forgets what it remembers of the tokens
//!    ([`Turn::Lost`]), which would go stale.
//! 8. An error of the election (the database unreachable) means standing by until a poll wins;
//!    once no poll has answered for the lease, `/healthz` fails (`state_unreachable`,
//!    [`crate::health`]), on a leader cut off as on a standby.
//! 9. **`permatoken_leader` tells the truth**: it is 1 only until the lease has passed since the
//!    start of the last poll that held the lock and wrote the heartbeat ([`crate::metrics::LeaderGauge`]), read
//!    at each scrape: a replica whose polls hang or fail (the database down, the network cut)
//!    says 0 within the lease, when a standby may take over, whatever the snapshot still says.
//!
//! `watch --once` on a shared state takes no part in the election ([`store::Store::claims_only`]):
//! it always "leads", but claims each action through the store, so it never repeats one a leader
//! claimed.
//!
//! Must never: act on its own (it says who may; the daemon acts), or treat an unanswered poll as
//! leading.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use permatoken_state as store;

use crate::claims::ClaimGate;
use crate::health::Health;
use crate::metrics::Counters;

/// How often the heartbeat renews the lease (leader) or tries the lock (standby).
pub const ELECTION_POLL: Duration = Duration::from_secs(1);

/// A change of role seen by [`Leadership::ensure_leading`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// This replica now leads: take up the schedule from the shared state.
    Became,
    /// This replica stands by now: forget what would go stale.
    Lost,
}

/// Whether this replica leads, and the election that says so.
pub struct Leadership {
    election: Option<store::Election>,
    leading: bool,
    counters: Counters,
    /// Told of each poll: `/healthz` fails when none has answered for the lease.
    health: Health,
    /// The election's last error, so that an outage is logged once per change, not every poll.
    failing: Option<String>,
}

impl Default for Leadership {
    fn default() -> Self {
        Self::alone()
    }
}

impl Leadership {
    /// No election: this daemon always leads.
    pub fn alone() -> Self {
        Self {
            election: None,
            leading: true,
            counters: Counters::default(),
            health: Health::default(),
            failing: None,
        }
    }

    /// One of several replicas: stands by until `election` says it leads; each poll's word goes
    /// to `counters`' [`crate::metrics::LeaderGauge`].
    pub fn elected(election: store::Election, counters: Counters) -> Self {
        counters.leader_until(None);
        Self {
            election: Some(election),
            leading: false,
            counters,
            health: Health::default(),
            failing: None,
        }
    }

    /// Tells `health` of each poll from now on (an election without a lease, `watch --once`'s
    /// claims, tells nothing).
    pub fn set_health(&mut self, health: Health) {
        if let Some(election) = &self.election
            && !election.lease().is_zero()
        {
            health.election_started(election.lease(), std::time::Instant::now());
        }
        self.health = health;
    }

    /// Whether this replica led at the last poll.
    pub fn leads(&self) -> bool {
        self.leading
    }

    /// Whether there is an election (replicas share the state).
    pub fn is_elected(&self) -> bool {
        self.election.is_some()
    }

    /// Asks the election now (rules 4 and 6): whether this replica leads, and the change of role
    /// if there was one (logged here, once per change).
    pub async fn ensure_leading(&mut self) -> (bool, Option<Turn>) {
        let Some(election) = &self.election else {
            return (true, None);
        };
        let leading = match poll(election, &self.counters, &self.health).await {
            Ok(leading) => {
                if self.failing.take().is_some() {
                    tracing::info!("leader election: the state database answers again");
                }
                leading
            }
            Err(e) => {
                let why = e.to_string();
                if self.failing.as_deref() != Some(why.as_str()) {
                    tracing::warn!("leader election: {why}; standing by");
                    self.failing = Some(why);
                }
                false
            }
        };
        let turn = match (self.leading, leading) {
            (false, true) => {
                tracing::info!("this replica now leads: it checks, renews, fails over and alerts");
                Some(Turn::Became)
            }
            (true, false) => {
                tracing::warn!("this replica stands by: another one leads");
                Some(Turn::Lost)
            }
            _ => None,
        };
        self.leading = leading;
        (leading, turn)
    }

    /// Starts the heartbeat (rule 3): a task polling the election every [`ELECTION_POLL`], whose
    /// receiver changes when the role does. `None` without an election. The task ends when the
    /// returned [`Heartbeat`] is dropped.
    pub fn heartbeat(&self) -> Option<Heartbeat> {
        let election = self.election.clone()?;
        let counters = self.counters.clone();
        let health = self.health.clone();
        let (tx, rx) = tokio::sync::watch::channel(self.leading);
        let task = tokio::spawn(async move {
            loop {
                let leading = poll(&election, &counters, &health).await.unwrap_or(false);
                tx.send_if_modified(|old| std::mem::replace(old, leading) != leading);
                tokio::time::sleep(ELECTION_POLL).await;
            }
        });
        Some(Heartbeat { rx, task })
    }

    /// The claims gate of one token's check at `now` (rule 5); `None` without an election.
    pub fn gate(&self, now: Timestamp) -> Option<Arc<ClaimGate>> {
        self.election
            .as_ref()
            .map(|election| ClaimGate::new(election.clone(), now))
    }
}

/// Polls `election`, and tells `counters` until when this replica may say it leads (rule 9): the
/// lease from the poll's start, since the heartbeat it wrote was written after that; and `health`
/// whether the database answered.
async fn poll(
    election: &store::Election,
    counters: &Counters,
    health: &Health,
) -> Result<bool, store::Error> {
    let start = std::time::Instant::now();
    let polled = election.poll().await;
    health.election_polled(
        start,
        polled.as_ref().map(drop).map_err(ToString::to_string),
    );
    // An election without a lease (`watch --once`'s claims) says nothing of who leads.
    if !election.lease().is_zero() {
        let until = matches!(polled, Ok(true)).then(|| start + election.lease());
        counters.leader_until(until);
    }
    polled
}

/// The running heartbeat task: [`Heartbeat::changed`] resolves when the role changes.
pub struct Heartbeat {
    rx: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Resolves at the next change of role the heartbeat saw; never, once the task is gone.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}
