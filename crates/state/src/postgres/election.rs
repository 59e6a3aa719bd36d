//! Leader election among the `watch` replicas sharing one PostgreSQL state (see
//! [`crate::Election`] for the rules): the leader holds [`LEADER_LOCK`] on a session of its own and
//! beats a heartbeat row on it; a standby that finds the heartbeat older than the lease ends the
//! leader's session and takes the lock. A leader whose session is gone is fenced until it wins the
//! lock again. The heartbeat's times are the server's, since replicas' clocks may disagree.
//!
//! Every call of the election is bounded (a third of the lease, from 1 s to 10 s: a tokio timeout
//! around the call, and the session's `statement_timeout`; opening a session, while not leading,
//! 10 s at least), and its connection has TCP keepalive:
//! a leader cut off from the server without a word (a blackholing firewall) drops its session and
//! stands by well within the lease, instead of waiting on a socket for the kernel's minutes.
//!
//! Must never: act on the store's query session (its reconnects would drop the lock unseen), or
//! end a session that does not hold the leader lock.

use std::time::Duration;

use jiff::Timestamp;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::{Postgres, pg};
use crate::Error;

/// The advisory lock key the leader holds on its own session (ASCII "permlead").
pub const LEADER_LOCK: i64 = 0x7065_726d_6c65_6164;

/// The longest a new session of the election may take to open (connect, authenticate, prepare).
const CONNECT_BOUND: Duration = Duration::from_secs(10);

/// One replica's side of the leader election: a session of its own (never the store's query
/// session, whose reconnects would drop the lock unseen), the lock on it, and the heartbeat row.
pub(crate) struct Election {
    db: Postgres,
    replica: String,
    lease: Duration,
    client: Option<Client>,
    leading: bool,
}

impl Election {
    pub(crate) fn new(db: Postgres, replica: String, lease: Duration) -> Self {
        Self {
            db,
            replica,
            lease,
            client: None,
            leading: false,
        }
    }

    /// How long one call of the election may take: well within the lease, so that a leader whose
    /// heartbeat hangs stands by before a standby may take over.
    fn bound(&self) -> Duration {
        (self.lease / 3).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    /// What a call that did not end within [`Election::bound`] says.
    fn timed_out(&self, bound: Duration) -> Error {
        Error::PostgresUnreachable {
            location: self.db.location().display().to_string(),
            reason: format!(
                "the leader election had no answer within {} ms: the server or the network to it \
                 hangs; this replica stands by until it answers",
                bound.as_millis()
            ),
        }
    }

    /// Leads, stands by or takes over; see [`crate::Election::poll`].
    pub(crate) async fn poll(&mut self) -> Result<bool, Error> {
        match self.try_poll().await {
            Ok(leading) => {
                self.leading = leading;
                Ok(leading)
            }
            Err(e) => {
                // Dropping the session ends it on the server, and the lock with it: whoever takes
                // over next does not wait for a lease.
                self.leading = false;
                self.client = None;
                Err(e)
            }
        }
    }

    async fn try_poll(&mut self) -> Result<bool, Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            if self.leading {
                // The session that held the lock is gone (ended by a standby, or the network):
                // this replica is fenced and must not act before it wins the lock again.
                self.client = None;
                self.leading = false;
                return Ok(false);
            }
            // Not leading while it connects: the connection (a handshake, SCRAM's hashing) gets
            // the longer bound, the calls that keep a lease the shorter.
            let bound = self.bound().max(CONNECT_BOUND);
            self.client = Some(
                tokio::time::timeout(bound, self.open_session())
                    .await
                    .map_err(|_| self.timed_out(bound))??,
            );
        }
        let Some(client) = self.client.as_ref() else {
            return Err(Error::Worker);
        };
        let leading = self.leading;
        let calls = async {
            if !leading && !self.try_lock(client).await? && !self.take_over(client).await? {
                return Ok(false);
            }
            self.beat(client).await?;
            Ok(true)
        };
        tokio::time::timeout(self.bound(), calls)
            .await
            .map_err(|_| self.timed_out(self.bound()))?
    }

    /// The election's own session, with the heartbeat's table (a state of schema 2 lacks it).
    async fn open_session(&self) -> Result<Client, Error> {
        let client = self.db.connect().await?;
        // The server ends a statement stuck past the bound too (a lock wait, a slow disk).
        let bound = u64::try_from(self.bound().as_millis()).unwrap_or(u64::MAX);
        client
            .batch_execute(&format!("SET statement_timeout = {bound}"))
            .await
            .map_err(pg(self.db.location()))?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS leader_heartbeat (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    replica TEXT NOT NULL,
                    pid INTEGER NOT NULL,
                    beat_at BIGINT NOT NULL
                )",
            )
            .await
            .or_else(|err| {
                // Two replicas creating it at once: one wins, the other sees it exists.
                if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    Ok(())
                } else {
                    Err(err)
                }
            })
            .map_err(pg(self.db.location()))?;
        Ok(client)
    }

    /// When the leader's heartbeat is older than the lease, ends its session and takes the lock:
    /// whether this replica now holds it.
    async fn take_over(&self, client: &Client) -> Result<bool, Error> {
        let e = pg(self.db.location());
        let lease = i64::try_from(self.lease.as_secs()).unwrap_or(i64::MAX);
        // The server's clock on both sides: replicas' clocks may disagree.
        let stale = client
            .query_opt(
                "SELECT pid FROM leader_heartbeat WHERE id = 1 \
                 AND beat_at < EXTRACT(EPOCH FROM clock_timestamp())::BIGINT - $1",
                &[&lease],
            )
            .await
            .map_err(&e)?;
        let Some(row) = stale else { return Ok(false) };
        let pid: i32 = row.try_get(0).map_err(&e)?;
        let (class, object) = lock_ids(LEADER_LOCK);
        // Only a session that holds the leader lock is ended: a pid the row names may since
        // have been given to another session.
        let ended = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
                 AND granted AND pid = $1 AND classid::BIGINT = $2 AND objid::BIGINT = $3 \
                 AND objsubid = 1",
                &[&pid, &class, &object],
            )
            .await
            .map_err(&e)?;
        if ended.is_empty() {
            return Ok(false);
        }
        // The lock goes when that backend has exited; the next poll takes it if this one
        // cannot yet.
        self.try_lock(client).await
    }

    /// Inserts the claim on the lock's session, only while that session holds the lock; see
    /// [`crate::Election::claim`].
    pub(crate) async fn claim(&mut self, key: &str, at: Timestamp) -> Result<bool, Error> {
        let client = match self.client.as_ref() {
            Some(client) if self.leading && !client.is_closed() => client,
            _ => return Ok(false),
        };
        let (class, object) = lock_ids(LEADER_LOCK);
        let claimed_at = at.as_second();
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&key, &self.replica, &claimed_at, &class, &object];
        let insert = client.execute(
            "INSERT INTO claims (key, replica, claimed_at) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM pg_locks \
                   WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() \
                   AND classid::BIGINT = $4 AND objid::BIGINT = $5 AND objsubid = 1) \
                 ON CONFLICT (key) DO NOTHING",
            &args,
        );
        let inserted = match tokio::time::timeout(self.bound(), insert).await {
            Ok(inserted) => inserted.map_err(pg(self.db.location())),
            Err(_) => Err(self.timed_out(self.bound())),
        };
        match inserted {
            Ok(n) => Ok(n == 1),
            Err(err) => {
                // The lock's session failed: fenced, as a failed heartbeat is.
                self.leading = false;
                self.client = None;
                Err(err)
            }
        }
    }

    async fn try_lock(&self, client: &Client) -> Result<bool, Error> {
        let loc = self.db.location();
        client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(pg(loc))
    }

    /// Writes the heartbeat on the lock's session: it fails once that session is gone.
    async fn beat(&self, client: &Client) -> Result<(), Error> {
        let loc = self.db.location();
        client
            .execute(
                "INSERT INTO leader_heartbeat (id, replica, pid, beat_at) \
                 VALUES (1, $1, pg_backend_pid(), EXTRACT(EPOCH FROM clock_timestamp())::BIGINT) \
                 ON CONFLICT (id) DO UPDATE SET replica = EXCLUDED.replica, pid = EXCLUDED.pid, \
                 beat_at = EXCLUDED.beat_at",
                &[&self.replica],
            )
            .await
            .map_err(pg(loc))?;
        Ok(())
    }
}

/// How `pg_locks` shows a bigint advisory key: its high and low 32 bits.
fn lock_ids(key: i64) -> (i64, i64) {
    let key = key as u64;
    ((key >> 32) as i64, (key & 0xffff_ffff) as i64)
}
