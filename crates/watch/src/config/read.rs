//! The file as written, read into the raw structs that `check.rs` checks. The TOML is parsed once
//! into a tree that keeps the place of every key and value; the policy keys of `[defaults]`,
//! `[[token]]` and `[[token_set]]` are read by the key table (`keys.rs`), every other key by serde
//! (`deny_unknown_fields`, `Spanned` values). Only types and bounds are checked here.
//!
//! Why not serde alone: a derived struct names its keys in its fields, so each table would repeat
//! the policy keys (and serde's `flatten` loses both the places and `deny_unknown_fields`). Taking
//! them out of the tree first lets serde read the rest as before, with the same words for the same
//! mistakes; an unknown key's error then lists the table's own keys (serde's list) followed by the
//! policy keys that table accepts (the key table's).
//!
//! Must never: drop a key silently; every key is read by the key table or by serde, which refuses
//! what it does not know.

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::Problem;
use super::keys::{self, Given, Place};

/// The whole file, read.
pub(super) struct RawConfig {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) state: Option<Spanned<String>>,
    pub(super) state_password_file: Option<Spanned<String>>,
    pub(super) defaults: Option<Spanned<Given>>,
    pub(super) tokens: Vec<Spanned<Table<RawToken>>>,
    pub(super) routes: Vec<Spanned<RawRoute>>,
    pub(super) token_sets: Vec<Spanned<Table<RawTokenSet>>>,
}

/// A table of policy keys: its own keys, read by serde, and the policy keys written in it.
pub(super) struct Table<T> {
    pub(super) own: T,
    pub(super) policy: Given,
}

/// Reads `text`: its TOML, then each table's keys and the types of their values.
pub(super) fn read(text: &str) -> Result<RawConfig, Problem> {
    let root = DeTable::parse(text).map_err(|e| problem(&e, &[]))?;
    let span = root.span();
    let mut root = root.into_inner();
    let defaults = match root.remove("defaults") {
        Some(value) => {
            let table = table::<RawPolicy>(value, Place::Defaults)?;
            Some(Spanned::new(table.span(), table.into_inner().policy))
        }
        None => None,
    };
    let tokens = tables::<RawToken>(root.remove("token"), Place::Token)?;
    let token_sets = tables::<RawTokenSet>(root.remove("token_set"), Place::Set)?;
    let top: RawTop = typed(Spanned::new(span, DeValue::Table(root)), &[])?;
    Ok(RawConfig {
        listen: top.listen,
        state: top.state,
        state_password_file: top.state_password_file,
        defaults,
        tokens,
        routes: top.alert,
        token_sets,
    })
}

/// `value` as a `T`, read by serde. `more` are the policy keys allowed where `value` stands, which
/// an unknown key's error lists after serde's.
pub(super) fn typed<'i, T: Deserialize<'i>>(
    value: Spanned<DeValue<'i>>,
    more: &[&str],
) -> Result<T, Problem> {
    T::deserialize(ValueDeserializer::from(value)).map_err(|e| problem(&e, more))
}

/// A `[defaults]`, `[[token]]` or `[[token_set]]`: the policy keys `place` accepts are read by the
/// key table, the rest by serde as a `T`.
fn table<'i, T: Deserialize<'i>>(
    value: Spanned<DeValue<'i>>,
    place: Place,
) -> Result<Spanned<Table<T>>, Problem> {
    let span = value.span();
    let entries = match value.into_inner() {
        DeValue::Table(entries) => entries,
        other => return Err(not_a_table::<T>(Spanned::new(span, other))),
    };
    let mut own = DeTable::new();
    let mut policy = Given::default();
    for (key, value) in entries {
        match keys::find(key.get_ref(), place) {
            Some(k) => policy.read(k, value)?,
            None => {
                own.insert(key, value);
            }
        }
    }
    let own = Spanned::new(span.clone(), DeValue::Table(own));
    // The policy keys are listed only in an error, so only an error lists them.
    let own = T::deserialize(ValueDeserializer::from(own))
        .map_err(|e| problem(&e, &keys::names_at(place)))?;
    Ok(Spanned::new(span, Table { own, policy }))
}

/// `[[token]]` or `[[token_set]]`, if written: an array of tables.
fn tables<'i, T: Deserialize<'i>>(
    value: Option<Spanned<DeValue<'i>>>,
    place: Place,
) -> Result<Vec<Spanned<Table<T>>>, Problem> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items.into_iter().map(|t| table(t, place)).collect(),
        other => Err(not_a_table::<Vec<IgnoredAny>>(Spanned::new(span, other))),
    }
}

/// The error for a value of the wrong shape (`defaults = 3`): serde's, as it would have said it had
/// it read the value as a `T` itself.
fn not_a_table<'i, T: Deserialize<'i>>(value: Spanned<DeValue<'i>>) -> Problem {
    let span = value.span();
    typed::<T>(value, &[])
        .err()
        .unwrap_or_else(|| Problem::new(span, "invalid type: expected a table"))
}

fn problem(e: &toml::de::Error, more: &[&str]) -> Problem {
    Problem::new(e.span().unwrap_or(0..0), explain(e.message(), more))
}

/// serde's words made ours: "unknown key …; allowed: …; did you mean …", the keys allowed being
/// serde's list (the table's own keys) and then `more`.
fn explain(message: &str, more: &[&str]) -> String {
    let message = message.trim();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.replace("missing field", "missing key");
    };
    let Some((key, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    // `app_secret` is read only to be refused with its own message.
    let allowed: Vec<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|k| *k != "app_secret")
        .chain(more.iter().copied())
        .collect();
    let mut text = format!("unknown key `{key}`");
    if allowed.is_empty() {
        text.push_str("; no key is allowed here");
        return text;
    }
    text.push_str(&format!("; allowed: `{}`", allowed.join("`, `")));
    if let Some(near) = nearest(key, &allowed) {
        text.push_str(&format!("; did you mean `{near}`?"));
    }
    text
}

/// The allowed word closest to `word`, if it is a near miss (a typo or two).
pub(super) fn nearest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (distance(word, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// The top level, as serde reads it. The three tables of policy keys are taken out of the tree
/// before; they are fields here only so that an unknown key's error lists them where they stand.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    listen: Option<Spanned<String>>,
    state: Option<Spanned<String>>,
    state_password_file: Option<Spanned<String>>,
    #[serde(rename = "defaults")]
    _defaults: Option<IgnoredAny>,
    #[serde(rename = "token")]
    _token: Option<IgnoredAny>,
    #[serde(default)]
    alert: Vec<Spanned<RawRoute>>,
    #[serde(rename = "token_set")]
    _token_set: Option<IgnoredAny>,
}

/// `[defaults]`'s own keys: none, every key there is a policy key. (Named as before, since serde
/// names it in the error for a `defaults` that is no table.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {}

/// A `[[token]]`'s own keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) name: Spanned<String>,
    pub(super) env_file: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) env: Option<Spanned<String>>,
    pub(super) app_id: Option<Spanned<String>>,
    pub(super) app_secret_file: Option<Spanned<String>>,
    pub(super) app_secret_env: Option<Spanned<String>>,
    /// Refused with its own message: the secret is never written here.
    pub(super) app_secret: Option<Spanned<toml::Value>>,
    pub(super) backups: Option<Vec<Spanned<String>>>,
    pub(super) reload: Option<String>,
    #[serde(default)]
    pub(super) alerts: Vec<Spanned<String>>,
}

/// A `[[token_set]]`'s own keys: its pattern, and a `[[token]]`'s keys but `env`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokenSet {
    pub(super) name: Spanned<String>,
    pub(super) env_files: Option<Spanned<String>>,
    pub(super) token_files: Option<Spanned<String>>,
    pub(super) alert_route_key: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) app_id: Option<Spanned<String>>,
    pub(super) app_secret_file: Option<Spanned<String>>,
    pub(super) app_secret_env: Option<Spanned<String>>,
    pub(super) app_secret: Option<Spanned<toml::Value>>,
    pub(super) backups: Option<Vec<Spanned<String>>>,
    pub(super) reload: Option<String>,
    #[serde(default)]
    pub(super) alerts: Vec<Spanned<String>>,
}

impl RawTokenSet {
    /// What each of its tokens is, the pattern standing for the file.
    pub(super) fn into_token(self) -> RawToken {
        RawToken {
            name: self.name,
            env_file: self.env_files,
            key: self.key,
            token_file: self.token_files,
            env: None,
            app_id: self.app_id,
            app_secret_file: self.app_secret_file,
            app_secret_env: self.app_secret_env,
            app_secret: self.app_secret,
            backups: self.backups,
            reload: self.reload,
            alerts: self.alerts,
        }
    }
}

/// An `[[alert]]`'s keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Spanned<String>,
    pub(super) kind: Spanned<String>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) url_file: Option<Spanned<String>>,
    pub(super) command: Option<Spanned<String>>,
    pub(super) secret_file: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) headers: Option<Spanned<toml::Table>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(
            nearest("intervl", &["interval", "jitter"]),
            Some("interval")
        );
        assert_eq!(nearest("zzz", &["interval", "jitter"]), None);
        let m = explain(
            "unknown field `intervl`, expected one of `interval`, `jitter`",
            &[],
        );
        assert_eq!(
            m,
            "unknown key `intervl`; allowed: `interval`, `jitter`; did you mean `interval`?"
        );
        // serde's list, then the policy keys the table accepts.
        let m = explain("unknown field `x`, there are no fields", &["interval"]);
        assert_eq!(m, "unknown key `x`; allowed: `interval`");
    }
}
