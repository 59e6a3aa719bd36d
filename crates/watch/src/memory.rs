//! What this process remembers of each token between rounds, beside the shared state: the names of
//! the backups its last check found, the permissions it had and why it is not ok (all three for the
//! page), the key (SHA-256)
//! each name held, and each token's identity and verdict (so that a batched round asks `/me` only on
//! a first check or a change, [`crate::batch`]).
//!
//! The identities are filled from the state once per time this replica leads
//! ([`Memory::load_identities`]), so that a restart or a new leader does not ask `/me` of a whole
//! fleet again; a standby forgets them ([`Memory::forget_identities`]), since they would go stale.
//!
//! Must never: hold a token (only its SHA-256), or be the only place a fact lives: everything here
//! can be lost and learned again at the next check.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use permatoken_inspect::FindingCode;
use permatoken_renew::LastCheck;
use permatoken_state as store;

use crate::config::TokenConfig;
use crate::snapshot::{Reason, Words};
use crate::states::{Observation, Observed, State};

/// Distinct permission lists kept before those no token holds are let go.
const SCOPE_LISTS_KEPT: usize = 1024;
/// Distinct reasons' words kept before those no token holds are let go.
const WORDS_KEPT: usize = 1024;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Memory {
    /// Per configured token that has any: the names of the backups its last check found
    /// (`<name>/<VARIABLE>`). A token without backups has no entry: most of a fleet has none.
    backups: HashMap<String, Vec<String>>,
    /// Per token name (primaries and backups): the permissions its last check found, one of
    /// `scope_lists`.
    scopes: HashMap<String, Arc<[String]>>,
    /// The distinct lists of permissions seen: a fleet's tokens mostly have the same few, and a
    /// list of its own per token came to some 300 bytes a token.
    scope_lists: HashSet<Arc<[String]>>,
    /// The size of `scope_lists` at which those no token holds are let go: twice what was left
    /// last time (at least [`SCOPE_LISTS_KEPT`]). A fixed limit cost a pass over every list at each
    /// new one once more than that many were in use: work that grew with the square of the lists.
    scope_lists_limit: usize,
    /// Per token name: the key of the token it held at its last check. The store knows a token by
    /// its key under one name, and one token may stand under two names (the same spare in two
    /// `.env` files): the page finds each name's latest check through this.
    keys: HashMap<String, store::TokenKey>,
    /// Per token key (primaries and backups): the identity and verdict of its last check.
    identities: HashMap<String, LastCheck>,
    /// Whether `identities` was filled from the state since this replica began to lead.
    identities_loaded: bool,
    /// Per token name: why its last check found it not ok, or could not tell (its file unreadable,
    /// no token in it), for the page; none while it is ok, so most of a fleet has no entry.
    reasons: HashMap<String, Reason>,
    /// The distinct words of `reasons`: a fleet dead of one cause (an app secret reset) has one
    /// message and one fix, not one copy of them per token.
    words: HashSet<Arc<Words>>,
    /// The size of `words` at which those no token holds are let go: twice what was left last
    /// time (at least [`WORDS_KEPT`]), so that a fleet of distinct words (each expiring token's
    /// message names its own date) costs a pass over them now and then, not at every check.
    words_limit: usize,
}

impl Memory {
    /// The backups of `token` its last check found.
    pub(crate) fn backups(&self, token: &str) -> &[String] {
        self.backups.get(token).map_or(&[], Vec::as_slice)
    }

    /// The permissions `name` had at its last check, shared with this memory (for a snapshot).
    pub(crate) fn scope_list(&self, name: &str) -> Arc<[String]> {
        self.scopes
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// The key `name` held at its last check.
    pub(crate) fn key(&self, name: &str) -> Option<&store::TokenKey> {
        self.keys.get(name)
    }

    /// Why `name`'s last check found it not ok or could not tell; `None` while it is ok.
    pub(crate) fn reason(&self, name: &str) -> Option<&Reason> {
        self.reasons.get(name)
    }

    /// What the last check of `name`, at `at`, came to: its reason kept unless it was ok.
    pub(crate) fn told(&mut self, name: &str, observation: &Observation, at: Timestamp) {
        if observation.observed == Observed::Known(State::Ok) {
            self.reasons.remove(name);
            return;
        }
        let words = self.shared_words(Words {
            message: observation.message.clone(),
            fix: observation.fix.clone(),
        });
        let reason = Reason {
            words,
            tried_at: at.as_second(),
            unknown: observation.observed == Observed::Unknown,
        };
        self.reasons.insert(name.to_owned(), reason);
    }

    /// `words` as the copy already kept, as [`Memory::shared_scopes`] does for permissions.
    fn shared_words(&mut self, words: Words) -> Arc<Words> {
        if let Some(kept) = self.words.get(&words) {
            return kept.clone();
        }
        if self.words.len() >= self.words_limit.max(WORDS_KEPT) {
            self.words.retain(|w| Arc::strong_count(w) > 1);
            self.words_limit = self.words.len().saturating_mul(2);
        }
        let words = Arc::new(words);
        self.words.insert(words.clone());
        words
    }

    /// The identities by token key, for the batches.
    pub(crate) fn identities(&self) -> &HashMap<String, LastCheck> {
        &self.identities
    }

    /// What one check of `name` saw: its key, its permissions and its identity (`None`: `/me` did
    /// not answer, so it is asked again next time).
    pub(crate) fn saw(
        &mut self,
        name: &str,
        key: Option<&store::TokenKey>,
        scopes: Vec<String>,
        identity: Option<LastCheck>,
    ) {
        if let Some(key) = key {
            match identity {
                Some(last) => self.identities.insert(key.as_str().to_owned(), last),
                None => self.identities.remove(key.as_str()),
            };
            self.keys.insert(name.to_owned(), key.clone());
        }
        let scopes = self.shared_scopes(scopes);
        self.scopes.insert(name.to_owned(), scopes);
    }

    /// `scopes` as one of the lists already seen. Lists no token holds any more are let go once
    /// there are many, so that tokens whose permissions keep changing cannot grow it without bound.
    fn shared_scopes(&mut self, scopes: Vec<String>) -> Arc<[String]> {
        if let Some(list) = self.scope_lists.get(scopes.as_slice()) {
            return list.clone();
        }
        if self.scope_lists.len() >= self.scope_lists_limit.max(SCOPE_LISTS_KEPT) {
            self.scope_lists.retain(|list| Arc::strong_count(list) > 1);
            self.scope_lists_limit = self.scope_lists.len().saturating_mul(2);
        }
        let list: Arc<[String]> = scopes.into();
        self.scope_lists.insert(list.clone());
        list
    }

    /// The backups a check of `token` found.
    pub(crate) fn found_backups(&mut self, token: &str, backups: Vec<String>) {
        if backups.is_empty() {
            self.backups.remove(token);
        } else {
            self.backups.insert(token.to_owned(), backups);
        }
    }

    /// Keeps the backups of the tokens `keep` says are still configured.
    pub(crate) fn retain_tokens(&mut self, keep: impl Fn(&str) -> bool) {
        self.backups.retain(|name, _| keep(name));
        self.reasons.retain(|name, _| {
            keep(name.rsplit_once('/').map_or(name, |(primary, _)| primary)) || keep(name)
        });
    }

    /// Fills the identities from the state, once per time this replica leads: each token whose
    /// latest check (before a restart, or by another replica) saw its `/me` answer, with that
    /// check's verdict. `dead` is read from the check's finding codes as
    /// [`permatoken_inspect::Report::is_dead`] reads the findings; what this process saw itself is
    /// kept. A state that cannot be read leaves every token to be asked. The reasons of the tokens'
    /// announced states are read with them ([`Memory::load_reasons`]).
    pub(crate) async fn load_identities(&mut self, store: &store::Store) {
        if self.identities_loaded {
            return;
        }
        self.identities_loaded = true;
        self.load_reasons(store).await;
        let stored = match store.identities().await {
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
                .or_insert_with(|| LastCheck {
                    identity: permatoken_inspect::Identity {
                        id: s.id,
                        name: s.name,
                    },
                    status: crate::records::status_from_store(s.status),
                    dead,
                });
        }
    }

    /// Takes in the words of the alert that announced each token's state, for the tokens not
    /// checked by this process yet: after a restart, a dead token's card says why before its next
    /// check, which may be hours away. Not `cannot_be_checked`: its words (why a file could not be
    /// read) go stale fastest, and its "last tried" would be the alert's time. What this process
    /// saw itself is kept; a state that cannot be read leaves the page without them until then.
    async fn load_reasons(&mut self, store: &store::Store) {
        let stored = match store
            .announced_reasons(State::CannotBeChecked.as_str())
            .await
        {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(
                    "cannot read why the tokens are in their states ({e}): the page says it after their next checks"
                );
                return;
            }
        };
        for r in stored {
            if self.reasons.contains_key(&r.token_name) {
                continue;
            }
            let words = self.shared_words(Words {
                message: r.message,
                fix: r.fix,
            });
            let reason = Reason {
                words,
                tried_at: r.at.as_second(),
                unknown: false,
            };
            self.reasons.insert(r.token_name, reason);
        }
    }

    /// Forgets every identity (this replica stands by: they would go stale); the next time it
    /// leads, they are read from the state again.
    pub(crate) fn forget_identities(&mut self) {
        self.identities.clear();
        self.identities_loaded = false;
    }

    /// Makes the next [`Memory::load_identities`] read the state again (a new leader).
    pub(crate) fn reload_identities(&mut self) {
        self.identities_loaded = false;
    }

    /// Forgets the identities of tokens no longer configured (a renewed token's old value, a
    /// removed file).
    pub(crate) fn forget_unused_identities(&mut self, tokens: &[TokenConfig]) {
        let live: HashSet<&str> = tokens
            .iter()
            .flat_map(|t| std::iter::once(&t.name).chain(self.backups(&t.name)))
            .filter_map(|name| self.keys.get(name))
            .map(store::TokenKey::as_str)
            .collect();
        self.identities.retain(|key, _| live.contains(key.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(observed: Observed, message: &str) -> Observation {
        Observation {
            observed,
            message: message.to_owned(),
            fix: Some("generate a new token".to_owned()),
        }
    }

    #[test]
    fn reasons_are_kept_while_not_ok_and_their_words_shared() {
        let mut memory = Memory::default();
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let dead = seen(Observed::Known(State::Dead), "the password was changed");
        memory.told("a", &dead, at);
        memory.told("b", &dead, at);
        let (a, b) = (memory.reason("a").unwrap(), memory.reason("b").unwrap());
        // A fleet dead of one cause holds its words once.
        assert!(Arc::ptr_eq(&a.words, &b.words));
        assert_eq!(a.words.message, "the password was changed");
        assert_eq!((a.tried_at, a.unknown), (1_800_000_000, false));
        let gone = seen(Observed::Unknown, "cannot read `/srv/x/.env`: No such file");
        memory.told("a", &gone, at);
        assert!(memory.reason("a").unwrap().unknown);
        memory.told("b", &seen(Observed::Known(State::Ok), "ok"), at);
        assert!(memory.reason("b").is_none());
        // Words no token holds are let go, and those held are kept.
        for i in 0..3 * WORDS_KEPT {
            let expiring = seen(
                Observed::Known(State::Expiring),
                &format!("expires in {i} s"),
            );
            memory.told(&format!("t{}", i % 10), &expiring, at);
        }
        assert!(
            memory.words.len() <= 2 * WORDS_KEPT,
            "{}",
            memory.words.len()
        );
        assert!(
            memory
                .reason("a")
                .unwrap()
                .words
                .message
                .starts_with("cannot read")
        );
    }
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    fn list(i: usize) -> Vec<String> {
        vec![
            "whatsapp_business_messaging".to_owned(),
            format!("scope_{i}"),
        ]
    }

    #[test]
    fn distinct_permission_lists_in_use_are_kept_and_swept_only_as_they_double() {
        let mut memory = Memory::default();
        // More distinct lists than the floor, each held by a token: none can be let go.
        let n = 3 * SCOPE_LISTS_KEPT;
        let mut limits = Vec::new();
        for i in 0..n {
            memory.saw(&format!("t{i}"), None, list(i), None);
            if limits.last() != Some(&memory.scope_lists_limit) {
                limits.push(memory.scope_lists_limit);
            }
        }
        assert_eq!(memory.scope_lists.len(), n);
        // One pass at the floor, then one each time the lists in use doubled: not one per list.
        assert_eq!(limits, [0, 2 * SCOPE_LISTS_KEPT, 4 * SCOPE_LISTS_KEPT]);
        // The same list is shared, not copied.
        memory.saw("again", None, list(7), None);
        assert!(Arc::ptr_eq(
            &memory.scope_list("again"),
            &memory.scope_list("t7")
        ));
        // Lists no token holds any more are let go at the next pass.
        for i in 0..n {
            memory.saw(&format!("t{i}"), None, list(0), None);
        }
        for i in 0..memory.scope_lists_limit {
            memory.saw("changing", None, list(n + i), None);
        }
        assert!(memory.scope_lists.len() < n, "{}", memory.scope_lists.len());
    }
}

#[cfg(test)]
mod restart_tests {
    use super::*;

    fn alert(id: &str, name: &str, state: &str, message: &str, at: i64) -> store::Alert {
        store::Alert {
            id: id.to_owned(),
            token_name: name.to_owned(),
            state: state.to_owned(),
            previous_state: None,
            message: message.to_owned(),
            fix: Some("generate a new token".to_owned()),
            time: Timestamp::from_second(at).unwrap(),
        }
    }

    #[tokio::test]
    async fn after_a_restart_the_announcing_alerts_say_why_until_the_next_check() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::Store::open(dir.path().join("state.db"))
            .await
            .unwrap();
        let routes = vec!["ops".to_owned()];
        for a in [
            alert("1", "legacy", "dead", "the password was changed", 100),
            alert("2", "gone", "cannot_be_checked", "cannot read `x`", 200),
            alert("3", "seen", "dead", "an old reason", 300),
        ] {
            store.record_alert(a, routes.clone()).await.unwrap();
        }
        let mut memory = Memory::default();
        let now = Timestamp::from_second(400).unwrap();
        let fresh = Observation {
            observed: Observed::Known(State::Dead),
            message: "a reason of this process".to_owned(),
            fix: None,
        };
        memory.told("seen", &fresh, now);
        memory.load_identities(&store).await;
        let legacy = memory.reason("legacy").expect("the dead token's reason");
        assert_eq!(legacy.words.message, "the password was changed");
        assert_eq!(legacy.words.fix.as_deref(), Some("generate a new token"));
        assert_eq!((legacy.tried_at, legacy.unknown), (100, false));
        // A file's words go stale fastest: its next check says them.
        assert!(memory.reason("gone").is_none());
        // What this process saw itself stays.
        assert_eq!(
            memory.reason("seen").unwrap().words.message,
            "a reason of this process"
        );
    }
}
