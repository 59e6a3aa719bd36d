//! Which tokens are watched now: the configured `[[token]]`s, and a token for each file a
//! `[[token_set]]` matches at this moment ([`crate::sets::expand`], looked for again before each
//! round); and the permits of each set's reload commands.
//!
//! Must never: forget a token because its folder could not be listed this once (the tokens stay as
//! they were), or report one problem of a set twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::{Config, TokenConfig};

/// A problem of a set: the token it concerns (if one), and the text.
pub(crate) type SetProblem = (Option<String>, String);

/// See the module docs.
pub(crate) struct Fleet {
    /// The configured `[[token]]`s, kept only when there is a set to expand: a fleet of 10,000
    /// `[[token]]`s would otherwise hold its configuration twice.
    fixed: Vec<TokenConfig>,
    /// Per set (`None`: the `[[token]]`s), the permits of its reload commands.
    reload_slots: HashMap<Option<String>, Arc<Semaphore>>,
    /// Problems of the sets already reported, so that each is reported once.
    reported: HashSet<SetProblem>,
}

/// What an expansion changed.
pub(crate) struct Expanded {
    /// Whether the list of tokens changed (a set's file came or went).
    pub(crate) changed: bool,
    /// Problems of the sets not reported before.
    pub(crate) problems: Vec<SetProblem>,
}

impl Fleet {
    /// The fleet of `config`.
    pub(crate) fn new(config: &Config) -> Self {
        let mut reload_slots = HashMap::new();
        reload_slots.insert(
            None,
            Arc::new(Semaphore::new(config.max_concurrent_reloads)),
        );
        for set in &config.token_sets {
            reload_slots.insert(
                Some(set.name.clone()),
                Arc::new(Semaphore::new(set.max_concurrent_reloads)),
            );
        }
        Self {
            fixed: if config.token_sets.is_empty() {
                Vec::new()
            } else {
                config.tokens.clone()
            },
            reload_slots,
            reported: HashSet::new(),
        }
    }

    /// The permits of the reload commands of `set`'s tokens (`None`: the `[[token]]`s).
    pub(crate) fn reload_slots(&self, set: &Option<String>) -> Option<Arc<Semaphore>> {
        self.reload_slots.get(set).cloned()
    }

    /// Makes `config.tokens` the `[[token]]`s and the files each set matches now. Listing a
    /// fleet's folders can take a while (a network file system): it runs on the blocking pool, not
    /// on the thread that runs the election's heartbeat.
    pub(crate) async fn expand(&mut self, config: &mut Config) -> Expanded {
        let unchanged = Expanded {
            changed: false,
            problems: Vec::new(),
        };
        if config.token_sets.is_empty() {
            return unchanged;
        }
        let (sets, routes) = (config.token_sets.clone(), config.routes.clone());
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
                return unchanged;
            }
        };
        // The new list is built to its size, a set's list moved in when it is the first: at
        // 100,000 tokens, growing by doubling held a third copy of the fleet's configuration
        // (the old list, the set's, and the new one) with room for 31,000 more.
        let size = self.fixed.len() + expansions.iter().map(|e| e.tokens.len()).sum::<usize>();
        let mut tokens = Vec::new();
        let mut problems = Vec::new();
        for expansion in expansions {
            if tokens.is_empty() && self.fixed.is_empty() {
                tokens = expansion.tokens;
                tokens.reserve_exact(size - tokens.len());
            } else {
                if tokens.is_empty() {
                    tokens.reserve_exact(size);
                    tokens.extend(self.fixed.iter().cloned());
                }
                tokens.extend(expansion.tokens);
            }
            problems.extend(expansion.problems);
        }
        let changed = tokens.len() != config.tokens.len()
            || tokens
                .iter()
                .zip(&config.tokens)
                .any(|(a, b)| a.name != b.name);
        config.tokens = tokens;
        Expanded { changed, problems }
    }

    /// Whether `problem` is reported for the first time (and remembers that it was).
    pub(crate) fn first_report(&mut self, problem: &SetProblem) -> bool {
        self.reported.insert(problem.clone())
    }
}

/// The names of `tokens`, and whether `name` is one of them or a backup of one
/// (`<token>/<VARIABLE>`): a set of names, not [`Config::token`], since a fleet's round must not
/// cost tokens² lookups.
pub(crate) struct Names<'a>(HashSet<&'a str>);

impl<'a> Names<'a> {
    /// The names of `tokens`.
    pub(crate) fn of(tokens: &'a [TokenConfig]) -> Self {
        Self(tokens.iter().map(|t| t.name.as_str()).collect())
    }

    /// Whether `name` is a configured token.
    pub(crate) fn is_token(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// Whether `name` is a configured token or a backup of one.
    pub(crate) fn knows(&self, name: &str) -> bool {
        self.0.contains(name)
            || name
                .rsplit_once('/')
                .is_some_and(|(primary, _)| self.0.contains(primary))
    }
}
