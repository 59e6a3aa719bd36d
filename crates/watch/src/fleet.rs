//! Which tokens are watched now: the configured `[[token]]`s, and a token for each file a
//! `[[token_set]]` matches at this moment ([`crate::sets::expand`], looked for again before each
//! round); and the permits of each set's reload commands.
//!
//! A member not found again is gone only when its file's folder could be looked into: under a
//! folder that could not (`crate::sets::Expansion::blocked`) it stays, and its check says why it
//! cannot be read. A member gone for real is returned to be told (an event and a log line), and a
//! set that lost more than a tenth of its members in one listing to be alerted (`set_shrunk`).
//!
//! Must never: forget a token because its folder could not be listed this once (the tokens stay as
//! they were), or report one problem of a set twice.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::{Config, TokenConfig, TokenSource};

/// A problem of a set: the token it concerns (if one), and the text.
pub(crate) type SetProblem = (Option<String>, String);

/// See the module docs.
pub(crate) struct Fleet {
    /// The configured `[[token]]`s, kept only when there is a set to expand: a fleet of 10,000
    /// `[[token]]`s would otherwise hold its configuration twice.
    fixed: Vec<TokenConfig>,
    /// Per set (`None`: the `[[token]]`s), the permits of its reload commands.
    reload_slots: HashMap<Option<Arc<str>>, Arc<Semaphore>>,
    /// Problems of the sets already reported, so that each is reported once.
    reported: HashSet<SetProblem>,
}

/// What an expansion changed.
pub(crate) struct Expanded {
    /// Whether the list of tokens changed (a set's file came or went).
    pub(crate) changed: bool,
    /// Problems of the sets not reported before.
    pub(crate) problems: Vec<SetProblem>,
    /// The members gone for real since the last listing (their file is not there), with their file.
    pub(crate) removed: Vec<(String, PathBuf)>,
    /// The sets that lost more than a tenth of their members in this listing.
    pub(crate) shrunk: Vec<Shrunk>,
}

/// A set that lost more than [`SHRINK_ALERT_SHARE`] of its members in one listing.
pub(crate) struct Shrunk {
    /// The set's name.
    pub(crate) set: String,
    /// How many members it had.
    pub(crate) before: usize,
    /// How many of them are gone.
    pub(crate) gone: usize,
    /// The set's alert routes.
    pub(crate) routes: Vec<String>,
}

/// More than this share of a set gone in one listing is alerted (a volume not mounted, a deploy
/// that emptied the folder): a tenth.
pub(crate) const SHRINK_ALERT_SHARE: (usize, usize) = (1, 10);

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
                Some(set.name.as_str().into()),
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
    pub(crate) fn reload_slots(&self, set: &Option<Arc<str>>) -> Option<Arc<Semaphore>> {
        self.reload_slots.get(set).cloned()
    }

    /// Makes `config.tokens` the `[[token]]`s and the files each set matches now. Listing a
    /// fleet's folders can take a while (a network file system): it runs on the blocking pool, not
    /// on the thread that runs the election's heartbeat.
    pub(crate) async fn expand(&mut self, config: &mut Config) -> Expanded {
        let unchanged = Expanded {
            changed: false,
            problems: Vec::new(),
            removed: Vec::new(),
            shrunk: Vec::new(),
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
        // The new list takes the first set's list as it is when there are no `[[token]]`s, and
        // grows by what each set adds: at 100,000 tokens, growing by doubling held a third copy of
        // the fleet's configuration (the old list, the set's, and the new one) with room for
        // 31,000 more.
        let mut tokens: Vec<TokenConfig> = Vec::new();
        let mut expanded = unchanged;
        for (set, expansion) in config.token_sets.iter().zip(expansions) {
            let previous: Vec<&TokenConfig> = config
                .tokens
                .iter()
                .filter(|t| t.set.as_deref() == Some(set.name.as_str()))
                .collect();
            let (members, removed) = carry_over(&previous, expansion.tokens, &expansion.blocked);
            let (before, gone) = (previous.len(), removed.len());
            let (share, of) = SHRINK_ALERT_SHARE;
            if gone * of > before * share {
                expanded.shrunk.push(Shrunk {
                    set: set.name.clone(),
                    before,
                    gone,
                    routes: set.template.alerts.to_vec(),
                });
            }
            if tokens.is_empty() && self.fixed.is_empty() {
                tokens = members;
            } else {
                if tokens.is_empty() {
                    tokens.reserve_exact(self.fixed.len() + members.len());
                    tokens.extend(self.fixed.iter().cloned());
                }
                tokens.reserve_exact(members.len());
                tokens.extend(members);
            }
            expanded.removed.extend(removed);
            expanded.problems.extend(expansion.problems);
        }
        expanded.changed = tokens.len() != config.tokens.len()
            || tokens
                .iter()
                .zip(&config.tokens)
                .any(|(a, b)| a.name != b.name);
        config.tokens = tokens;
        expanded
    }

    /// Whether `problem` is reported for the first time (and remembers that it was).
    pub(crate) fn first_report(&mut self, problem: &SetProblem) -> bool {
        self.reported.insert(problem.clone())
    }
}

/// A set's members now: what its listing `found`, and the `previous` members it did not find whose
/// file lies under a folder that could not be looked into (`blocked`): out of sight, not gone, so
/// they stay (their checks say what is wrong). The others not found are gone: returned with their
/// file.
fn carry_over(
    previous: &[&TokenConfig],
    found: Vec<TokenConfig>,
    blocked: &[PathBuf],
) -> (Vec<TokenConfig>, Vec<(String, PathBuf)>) {
    let names: HashSet<&str> = found.iter().map(|t| t.name.as_str()).collect();
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for token in previous.iter().filter(|t| !names.contains(t.name.as_str())) {
        let file = match &token.source {
            TokenSource::EnvFile { path, .. } | TokenSource::TokenFile { path } => path.clone(),
            TokenSource::Environment { .. } => continue,
        };
        if blocked.iter().any(|folder| file.starts_with(folder)) {
            kept.push((*token).clone());
        } else {
            removed.push((token.name.clone(), file));
        }
    }
    if kept.is_empty() {
        return (found, removed);
    }
    let mut members = found;
    members.extend(kept);
    members.sort_by(|a, b| a.name.cmp(&b.name));
    (members, removed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn member(name: &str, file: &str) -> TokenConfig {
        let text = "[[token]]\nname = \"x\"\nenv_file = \"/x/.env\"\n";
        let mut token = crate::config::parse(text, Path::new("/etc/permatoken.toml"))
            .unwrap()
            .config
            .tokens
            .remove(0);
        token.name = name.to_owned();
        token.set = Some("clients".into());
        token.source = TokenSource::EnvFile {
            path: file.into(),
            key: "WHATSAPP_ACCESS_TOKEN".into(),
        };
        token
    }

    #[test]
    fn members_out_of_sight_stay_and_members_gone_are_returned() {
        let a = member("clients/a", "/srv/a/.env");
        let b = member("clients/b", "/srv/b/.env");
        let c = member("clients/c", "/mnt/c/.env");
        let previous = [&a, &b, &c];
        // Found only `a`; `/mnt` could not be looked into: `c` stays, `b` is gone.
        let (members, removed) = carry_over(&previous, vec![a.clone()], &["/mnt".into()]);
        let names: Vec<&str> = members.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["clients/a", "clients/c"]);
        assert_eq!(removed, [("clients/b".to_owned(), "/srv/b/.env".into())]);
        // Nothing blocked: whatever was not found is gone.
        let (members, removed) = carry_over(&previous, Vec::new(), &[]);
        assert!(members.is_empty());
        assert_eq!(removed.len(), 3);
    }
}
