//! Whether this process is alive and ready, as the probes `/healthz` and `/readyz` ask: what the
//! loop, the election and the state's writes last said, shared between the daemon (who tells) and
//! the HTTP endpoint (who asks).
//!
//! `/healthz` fails ([`Health::problems`]) while:
//! - **stale**: the loop has made no progress (a pass ended: a leader's round, even with nothing
//!   due, or a standby's refresh; a window of a round ended; or it took in a settlement, a reload,
//!   a change of role) for longer than twice its period
//!   plus the last pass's duration. The period is the shortest interval of the tokens, but never
//!   under a minute: the loop sleeps up to [`LONGEST_SLEEP`] between passes whatever the intervals
//!   (an app waiting out a rate limit has nothing due), so a shorter one would call an idle loop
//!   stuck. Before the first pass ends it is measured from the first pass's start.
//! - **state_unreachable**: replicas share a PostgreSQL state and no poll of the election has
//!   answered for longer than the lease: a standby that cannot reach the database could not take
//!   over, and a leader cut off stands by (the leader's rule 8, [`crate::leadership`]).
//! - **waiting_for_state** and **state_unwritable**: read from the snapshot by the endpoint.
//!
//! `/readyz` is ready once the daemon has published its first snapshot from the state: the page is
//! served from then on, whatever happens to the database later (the last page stays up).
//!
//! Times here are the machine's monotonic clock, never the daemon's [`crate::daemon::Clock`]: a
//! probe asks whether this process is stuck in real time, and a test's simulated days must not
//! make it so.
//!
//! Must never: hold a secret (the election's error text is the store's, which holds none), or block
//! a probe behind the loop (one short lock, never held across an await).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::daemon::LONGEST_SLEEP;

/// What the daemon tells the probes. Cheap to clone: every clone is the same record.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    ready: bool,
    /// The shortest interval of the tokens configured; `None` with no token (or before the daemon
    /// says it): the loop's minute then.
    shortest_interval: Option<Duration>,
    first_pass: Option<Instant>,
    pass_began: Option<Instant>,
    /// When the loop last made progress, and how long its last whole pass took.
    progress: Option<Instant>,
    last_pass: Duration,
    election: Option<Election>,
}

#[derive(Debug)]
struct Election {
    lease: Duration,
    answered: Instant,
    error: Option<String>,
}

/// One reason `/healthz` fails.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// `stale`, `state_unreachable`, `waiting_for_state` or `state_unwritable`.
    pub reason: &'static str,
    /// One secret-free sentence: what is wrong and since when.
    pub message: String,
}

impl Health {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The daemon serves the page from the state: `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.inner().ready = true;
    }

    /// Whether the daemon has published a snapshot from the state.
    pub fn is_ready(&self) -> bool {
        self.inner().ready
    }

    /// The shortest interval of the tokens configured now (`None` with no token).
    pub fn set_shortest_interval(&self, interval: Option<Duration>) {
        self.inner().shortest_interval = interval;
    }

    /// A pass of the loop begins at `at`.
    pub fn pass_began(&self, at: Instant) {
        let mut inner = self.inner();
        inner.first_pass.get_or_insert(at);
        inner.pass_began = Some(at);
    }

    /// The pass under way ended at `at`.
    pub fn pass_ended(&self, at: Instant) {
        let mut inner = self.inner();
        let began = inner.pass_began.take().unwrap_or(at);
        inner.last_pass = at.saturating_duration_since(began);
        inner.progress = Some(at);
    }

    /// A window of a long round ended at `at`: the loop is not stuck.
    pub fn progressed(&self, at: Instant) {
        self.inner().progress = Some(at);
    }

    /// Replicas share the state from `at`: its election must answer within `lease`.
    pub fn election_started(&self, lease: Duration, at: Instant) {
        self.inner().election = Some(Election {
            lease,
            answered: at,
            error: None,
        });
    }

    /// A poll of the election, begun at `at`, answered (`Ok`) or failed with this text.
    pub fn election_polled(&self, at: Instant, result: Result<(), String>) {
        if let Some(election) = &mut self.inner().election {
            match result {
                Ok(()) => {
                    election.answered = election.answered.max(at);
                    election.error = None;
                }
                Err(why) => election.error = Some(why),
            }
        }
    }

    /// Why this process is not healthy at `now` by what the daemon told (the snapshot's reasons
    /// are the endpoint's); empty when it is.
    pub fn problems(&self, now: Instant) -> Vec<Problem> {
        let inner = self.inner();
        let mut problems = Vec::new();
        if let Some(since) = inner.progress.or(inner.first_pass) {
            // Without a token the loop still wakes every minute.
            let period = inner
                .shortest_interval
                .unwrap_or(LONGEST_SLEEP)
                .max(LONGEST_SLEEP);
            let allowed = period * 2 + inner.last_pass;
            let quiet = now.saturating_duration_since(since);
            if quiet > allowed {
                problems.push(Problem {
                    reason: "stale",
                    message: format!(
                        "the loop has made no progress for {} s (more than twice its period of {} s plus its last pass's {} s): a round is stuck; see the log",
                        quiet.as_secs(),
                        period.as_secs(),
                        inner.last_pass.as_secs()
                    ),
                });
            }
        }
        if let Some(election) = &inner.election {
            let silent = now.saturating_duration_since(election.answered);
            if silent > election.lease {
                let why = election
                    .error
                    .as_deref()
                    .unwrap_or("its calls do not answer");
                problems.push(Problem {
                    reason: "state_unreachable",
                    message: format!(
                        "the leader election has not reached the state database for {} s (the lease is {} s): {why}",
                        silent.as_secs(),
                        election.lease.as_secs()
                    ),
                });
            }
        }
        problems
    }
}
