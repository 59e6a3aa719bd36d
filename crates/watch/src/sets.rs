//! `[[token_set]]` made into tokens: [`expand`] lists the files matching a set's pattern (a `*`
//! matches within one path segment, never across `/`, and not a leading `.`, as in the shell) and
//! makes each one a [`TokenConfig`] named `<set>/<what the wildcards matched>`, with the set's
//! policy, reload and routes, plus the route its env file names under `alert_route_key`.
//!
//! The daemon (`fleet.rs`) calls it before each round, so files that appear or disappear are
//! taken in at the next round. The walk is bounded: its depth is the pattern's (no `**`, so a symlink loop cannot make
//! it deeper), and it looks at most [`MAX_ENTRIES`] folder entries per set.
//!
//! A file the pattern names that is there in any form (a folder, a link to nothing) is a token, so
//! that its check says what is wrong instead of the token vanishing; a folder that is there but
//! cannot be looked into is reported and returned as blocked, so the members found under it before
//! stay ([`crate::fleet`]).
//!
//! Must never: fail as a whole because one file or folder cannot be read (that file's token is
//! checked and found unreadable; a folder is reported), read a file's token (only
//! `alert_route_key`'s variable is read here), or splice a path into a shell command (the reload
//! gets the file and folder as `$1` and `$2`, see [`TokenConfig::reload_args`]).

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use crate::config::{AppSource, Route, TokenConfig, TokenSet, TokenSource};

/// The most folder entries one set's walk looks at: ten times a fleet of 100,000 tokens, so such a
/// fleet is far from the edge, while a pattern pointed at a whole disk by mistake still stops.
pub const MAX_ENTRIES: usize = 1_000_000;
/// The most bytes read of an env file for its `alert_route_key`.
const MAX_ENV_FILE: u64 = 1024 * 1024;

/// What a set is now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// One per matching file, sorted by name.
    pub tokens: Vec<TokenConfig>,
    /// What a person should know, with the token it is about (`None`: about the set).
    pub problems: Vec<(Option<String>, String)>,
    /// Folders that are there but could not be looked into (a folder that cannot be listed, a link
    /// to nothing where a folder should be): the members a previous listing found under them are
    /// not gone, only out of sight, and stay ([`crate::fleet`]).
    pub blocked: Vec<PathBuf>,
}

/// One set's walk: what it found so far, and how many folder entries it may still look at.
struct Walk<'a> {
    set: &'a TokenSet,
    budget: Budget,
    matches: Vec<(String, PathBuf)>,
    problems: Vec<(Option<String>, String)>,
    blocked: Vec<PathBuf>,
}

/// The files matching `set` now, each as a token. `routes` are the configured routes, to check the
/// names `alert_route_key` reads.
pub fn expand(set: &TokenSet, routes: &[Route]) -> Expansion {
    expand_within(set, routes, MAX_ENTRIES)
}

/// What is left of a set's walk: an entry found once none is left makes it `exceeded`, so a
/// folder of exactly the cap is not said to be more.
struct Budget {
    left: usize,
    exceeded: bool,
}

/// [`expand`] looking at most `max_entries` folder entries.
fn expand_within(set: &TokenSet, routes: &[Route], max_entries: usize) -> Expansion {
    let components: Vec<Component<'_>> = set.pattern.components().collect();
    // The literal start of the pattern, then the rest segment by segment.
    let first_wild = components
        .iter()
        .position(|c| c.as_os_str().to_string_lossy().contains('*'))
        .unwrap_or(components.len());
    let base: PathBuf = components[..first_wild].iter().collect();
    let mut walk = Walk {
        set,
        budget: Budget {
            left: max_entries,
            exceeded: false,
        },
        matches: Vec::new(),
        problems: Vec::new(),
        blocked: Vec::new(),
    };
    walk.walk(&base, &components[first_wild..], Vec::new());
    let Walk {
        budget,
        mut matches,
        problems,
        blocked,
        ..
    } = walk;
    let mut out = Expansion {
        tokens: Vec::new(),
        problems,
        blocked,
    };
    if budget.exceeded {
        out.problems.push((
            None,
            format!(
                "token set `{}`: more than {max_entries} folder entries under `{}`; only those seen are added (narrow the pattern)",
                set.name,
                base.display()
            ),
        ));
        // Entries past the cap were not looked at: the members found among them before stay.
        out.blocked.push(base.clone());
    }
    if matches.is_empty() && out.blocked.is_empty() {
        out.problems.push((
            None,
            format!(
                "token set `{}` matches no file yet (`{}`); files that appear are taken in at the next round",
                set.name,
                set.pattern.display()
            ),
        ));
    }
    matches.sort();
    matches.dedup_by(|a, b| a.0 == b.0);
    // Exactly the matches: growing by doubling left room for 31,000 more tokens at 100,000.
    out.tokens.reserve_exact(matches.len());
    for (suffix, file) in matches {
        let name = format!("{}/{suffix}", set.name);
        if name.chars().count() > 200 || name.chars().any(char::is_control) {
            out.problems.push((
                None,
                format!(
                    "token set `{}`: `{}` is skipped: its name would be longer than 200 characters or hold control characters",
                    set.name,
                    file.display()
                ),
            ));
            continue;
        }
        let mut token = set.template.clone();
        token.name = name;
        token.source = match &token.source {
            TokenSource::EnvFile { key, .. } => TokenSource::EnvFile {
                path: file.clone(),
                key: key.clone(),
            },
            _ => TokenSource::TokenFile { path: file.clone() },
        };
        if let AppSource::EnvFile(_) = token.app {
            token.app = AppSource::EnvFile(file.clone());
        }
        if let Some(key) = &set.alert_route_key {
            match route_of(&file, key) {
                Ok(Some(route)) if routes.iter().any(|r| r.name == route) => {
                    if !token.alerts.contains(&route) {
                        let mut alerts = token.alerts.to_vec();
                        alerts.push(route);
                        token.alerts = alerts.into();
                    }
                }
                Ok(Some(route)) => out.problems.push((
                    Some(token.name.clone()),
                    format!(
                        "`{key}` in `{}` names route `{}`, and no [[alert]] has that name; its alerts go to the set's routes only",
                        file.display(),
                        sanitise(&route)
                    ),
                )),
                // No variable: the set's routes. An unreadable file is reported by its check.
                Ok(None) | Err(()) => {}
            }
        }
        out.tokens.push(token);
    }
    out
}

/// The value of `key` in the env file, if set and not empty; `Err` if the file cannot be read (or
/// holds more than [`MAX_ENV_FILE`]: no env file is that large).
fn route_of(file: &Path, key: &str) -> Result<Option<String>, ()> {
    let bytes = permatoken_fs::read_capped(file, MAX_ENV_FILE).map_err(|_| ())?;
    let text = String::from_utf8(bytes).map_err(|_| ())?;
    let doc = permatoken_dotenv::parse(&text).map_err(|_| ())?;
    Ok(doc
        .get(key)
        .map(|e| e.value.trim().to_owned())
        .filter(|v| !v.is_empty()))
}

/// A route name read from a file, for a message: shown only if it cannot be a secret put in the
/// wrong variable (a token starts with `EAA` and is long; an app secret is 32 hex digits), and
/// without control characters.
fn sanitise(text: &str) -> String {
    let hex32 = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
    if text.chars().count() > 40 || text.starts_with("EAA") || hex32 {
        return "(a value that is no route name, not shown)".into();
    }
    text.chars().filter(|c| !c.is_control()).collect()
}

/// Why `path`, there in its folder's listing, cannot be entered or read (`None` when it can, or is
/// not there at all): a link to nothing, a loop of links, a folder this user may not search.
fn out_of_sight(path: &Path) -> Option<std::io::Error> {
    match std::fs::metadata(path) {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::symlink_metadata(path).is_ok().then_some(e)
        }
        Err(e) => Some(e),
    }
}

impl Walk<'_> {
    fn walk(&mut self, at: &Path, rest: &[Component<'_>], captured: Vec<String>) {
        let Some((segment, rest)) = rest.split_first() else {
            // A folder where a wildcard ends the pattern is not a token file.
            if !at.is_dir() && !captured.is_empty() {
                self.matches.push((captured.join("/"), at.to_owned()));
            }
            return;
        };
        let segment = segment.as_os_str();
        let Some(pattern) = segment.to_str().filter(|s| s.contains('*')) else {
            let next = at.join(segment);
            if rest.is_empty() {
                // The file the pattern names: a token when it is there in any form (a folder, a
                // link to nothing, a file that cannot be read), so that its check says what is
                // wrong with it instead of the token vanishing.
                let there = match std::fs::symlink_metadata(&next) {
                    Ok(_) => true,
                    Err(e) => e.kind() != std::io::ErrorKind::NotFound,
                };
                if there && !captured.is_empty() {
                    self.matches.push((captured.join("/"), next));
                }
            } else if next.is_dir() {
                self.walk(&next, rest, captured);
            } else if let Some(why) = out_of_sight(&next) {
                self.cannot_enter(&next, rest, captured, &why);
            }
            return;
        };
        let entries = match std::fs::read_dir(at) {
            Ok(entries) => entries,
            Err(e) => {
                // Not there at all: nothing matches (its members, if any, are gone). There but
                // not listable: its members are out of sight, not gone.
                if std::fs::symlink_metadata(at).is_ok() {
                    self.problems.push((
                        None,
                        format!(
                            "token set `{}`: cannot list `{}`: {e}; the tokens found there before stay, unknown until it can be read",
                            self.set.name,
                            at.display()
                        ),
                    ));
                    self.blocked.push(at.to_owned());
                }
                return;
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            if self.budget.left == 0 {
                self.budget.exceeded = true;
                break;
            }
            self.budget.left -= 1;
            let Ok(entry) = entry else { continue };
            names.push(entry.file_name());
        }
        names.sort();
        for name in names {
            let Some(parts) = matches(pattern, &name) else {
                continue;
            };
            let next = at.join(&name);
            let mut captured = captured.clone();
            captured.extend(parts);
            if rest.is_empty() || next.is_dir() {
                self.walk(&next, rest, captured);
            } else if let Some(why) = out_of_sight(&next) {
                self.cannot_enter(&next, rest, captured, &why);
            }
        }
    }

    /// `folder` matched the pattern so far but cannot be entered (`why`). When the rest of the
    /// pattern is literal, the one file it would name there is a token (its check says why it
    /// cannot be read); otherwise what lies under it is out of sight, and the members found there
    /// before stay.
    fn cannot_enter(
        &mut self,
        folder: &Path,
        rest: &[Component<'_>],
        captured: Vec<String>,
        why: &std::io::Error,
    ) {
        let literal = rest
            .iter()
            .all(|c| !c.as_os_str().to_string_lossy().contains('*'));
        if literal && !captured.is_empty() {
            let file: PathBuf = rest.iter().fold(folder.to_owned(), |p, c| p.join(c));
            self.matches.push((captured.join("/"), file));
            return;
        }
        self.problems.push((
            None,
            format!(
                "token set `{}`: cannot look into `{}`: {why}; the tokens found there before stay, unknown until it can be read",
                self.set.name,
                folder.display()
            ),
        ));
        self.blocked.push(folder.to_owned());
    }
}

/// What each `*` of `pattern` matched in `name`, if it matches: the literal parts are found left
/// to right, the last anchored at the end (linear in the name). A name that is not UTF-8 never
/// matches, nor a leading `.` under a leading `*`.
fn matches(pattern: &str, name: &OsStr) -> Option<Vec<String>> {
    let name = name.to_str()?;
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if first.is_empty() && name.starts_with('.') {
        return None;
    }
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return None;
    }
    let end = name.len() - last.len();
    let mut at = first.len();
    let mut captured = Vec::with_capacity(parts.len() - 1);
    for part in &parts[1..parts.len() - 1] {
        let found = name.get(at..end)?.find(part)?;
        captured.push(name[at..at + found].to_owned());
        at += found + part.len();
    }
    captured.push(name.get(at..end)?.to_owned());
    Some(captured)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> Option<Vec<String>> {
        matches(pattern, OsStr::new(name))
    }

    #[test]
    fn a_star_matches_within_a_name_and_captures_it() {
        assert_eq!(m("*", "c0007"), Some(vec!["c0007".into()]));
        assert_eq!(m("*.env", "acme.env"), Some(vec!["acme".into()]));
        assert_eq!(
            m("c*-*.env", "c12-wa.env"),
            Some(vec!["12".into(), "wa".into()])
        );
        assert_eq!(m("*.env", "acme.txt"), None);
        assert_eq!(m("*", ".hidden"), None);
        assert_eq!(m("ab*ba", "aba"), None);
        assert_eq!(m("a*", "a"), Some(vec![String::new()]));
    }

    #[test]
    fn a_set_that_matches_nothing_yet_is_said_and_not_fatal() {
        let text = "[[token_set]]\nname = \"c\"\ntoken_files = \"/nonexistent-permatoken/*/t\"\n";
        let config = crate::config::parse(text, Path::new("/etc/permatoken.toml"))
            .unwrap()
            .config;
        let e = expand(&config.token_sets[0], &[]);
        assert!(e.tokens.is_empty());
        assert!(e.problems[0].1.contains("matches no file yet"), "{e:?}");
    }

    #[test]
    fn a_set_past_its_entry_cap_says_so_and_one_at_the_cap_does_not() {
        let dir = std::env::temp_dir().join(format!("permatoken-sets-cap-{}", std::process::id()));
        for i in 0..3 {
            std::fs::create_dir_all(dir.join(format!("c{i}"))).unwrap();
            std::fs::write(dir.join(format!("c{i}/t")), "PERMATOKENTEST").unwrap();
        }
        let text = format!(
            "[[token_set]]\nname = \"c\"\ntoken_files = \"{}/*/t\"\n",
            dir.display()
        );
        let config = crate::config::parse(&text, Path::new("/etc/permatoken.toml"))
            .unwrap()
            .config;
        let set = &config.token_sets[0];
        let at_cap = expand_within(set, &[], 3);
        assert_eq!(at_cap.tokens.len(), 3, "{at_cap:?}");
        assert!(at_cap.problems.is_empty(), "{at_cap:?}");
        let past = expand_within(set, &[], 2);
        assert_eq!(past.tokens.len(), 2, "{past:?}");
        assert!(
            past.problems[0].1.contains("more than 2 folder entries"),
            "{past:?}"
        );
        // The entries past the cap were not looked at: what was found there before stays.
        assert_eq!(past.blocked, std::slice::from_ref(&dir));
        assert_eq!(expand(set, &[]).tokens.len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_is_there_but_cannot_be_read_is_a_token_or_a_blocked_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("one/a/.env")).unwrap(); // a folder where the file goes
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("one/b")).unwrap();
        std::fs::create_dir_all(root.join("one/c")).unwrap(); // no file: no token
        std::fs::create_dir_all(root.join("two")).unwrap();
        std::os::unix::fs::symlink(root.join("two/x"), root.join("two/x")).unwrap();
        let set = |pattern: &str| {
            let text = format!(
                "[[token_set]]\nname = \"s\"\nenv_files = \"{}\"\n",
                root.join(pattern).display()
            );
            let config = crate::config::parse(&text, Path::new("/etc/permatoken.toml"))
                .unwrap()
                .config;
            expand(&config.token_sets[0], &[])
        };
        let one = set("one/*/.env");
        let names: Vec<&str> = one.tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["s/a", "s/b"]);
        assert!(one.blocked.is_empty());
        // Under `two/x` (a loop of links) the rest of the pattern cannot be followed: blocked.
        let two = set("two/*/*/.env");
        assert!(two.tokens.is_empty());
        assert_eq!(two.blocked, [root.join("two/x")]);
        assert!(two.problems[0].1.contains("cannot look into"), "{two:?}");
    }

    #[test]
    fn a_route_name_that_may_be_a_secret_is_not_shown() {
        assert_eq!(sanitise("client-7\u{1b}"), "client-7");
        for secret in ["EAAPERMATOKENTEST", &"ab12".repeat(8), &"x".repeat(41)] {
            assert!(!sanitise(secret).contains(secret), "{secret}");
        }
    }
}
