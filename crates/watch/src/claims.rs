//! Claims: the renewal engine's [`Gate`] for replicas sharing one PostgreSQL state. Right before a
//! renewal or a failover, the leader inserts a row with a unique key into the shared `claims`
//! table through [`store::Election::claim`], on the session that holds the leader lock: the insert
//! lands only while this replica leads (a standby that fenced it ended exactly that session), and
//! only once per key (a second leader acting on the same change finds the row). After the engine
//! returns, the claims it took are marked done.
//!
//! The key is `<token SHA-256>:<renew|failover>:<UTC hour>`: the token names the state change (a
//! renewal replaces the token, a dead primary is replaced once), and the hour bounds what a claim
//! whose holder died half-way can block. Within the hour nobody repeats it, since the action may
//! have happened; the next hour's round tries again, with the whole renewal window still ahead.
//!
//! Must never: hold or store a token (keys are SHA-256 digests), or let an action through when the
//! claim could not be written.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use permatoken_renew::{Action, Gate};
use permatoken_secret::AccessToken;
use permatoken_state as store;

/// One check's gate: claims in the election's name at the round's time, and remembers what it
/// claimed so that the caller can mark it done.
pub struct ClaimGate {
    election: store::Election,
    at: Timestamp,
    claimed: Mutex<Vec<String>>,
}

impl std::fmt::Debug for ClaimGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimGate")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl ClaimGate {
    /// A gate for one token's check at `at`.
    pub fn new(election: store::Election, at: Timestamp) -> Arc<Self> {
        Arc::new(Self {
            election,
            at,
            claimed: Mutex::new(Vec::new()),
        })
    }

    /// The keys this gate claimed, taken out.
    pub fn take_claimed(&self) -> Vec<String> {
        std::mem::take(&mut *self.claimed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The claim key of `action` on the token whose SHA-256 is `key`, at `at`.
pub fn claim_key(key: &store::TokenKey, action: Action, at: Timestamp) -> String {
    let action = match action {
        Action::Renew => "renew",
        Action::FailOver => "failover",
    };
    let hour = at.as_second().div_euclid(3600);
    format!("{key}:{action}:{hour}")
}

impl Gate for ClaimGate {
    fn claim<'a>(
        &'a self,
        action: Action,
        token: &'a AccessToken,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let key = claim_key(&crate::records::sha256(token), action, self.at);
            match self.election.claim(&key, self.at).await {
                Ok(true) => {
                    self.claimed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(key);
                    true
                }
                Ok(false) => {
                    tracing::info!(
                        claim = %key,
                        "skipped: another replica has claimed this, or this one no longer leads"
                    );
                    false
                }
                Err(e) => {
                    tracing::warn!(claim = %key, "cannot claim ({e}): not acting");
                    false
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_the_token_the_action_and_the_hour() {
        let key = store::TokenKey::parse(&"ab".repeat(32)).unwrap();
        let at: Timestamp = "2026-11-26T07:59:59Z".parse().unwrap();
        let next: Timestamp = "2026-11-26T08:00:00Z".parse().unwrap();
        let renew = claim_key(&key, Action::Renew, at);
        assert!(renew.starts_with(&"ab".repeat(32)), "{renew}");
        assert!(renew.contains(":renew:"), "{renew}");
        assert_ne!(renew, claim_key(&key, Action::FailOver, at));
        assert_ne!(renew, claim_key(&key, Action::Renew, next));
        let earlier: Timestamp = "2026-11-26T07:00:00Z".parse().unwrap();
        assert_eq!(renew, claim_key(&key, Action::Renew, earlier));
    }
}
