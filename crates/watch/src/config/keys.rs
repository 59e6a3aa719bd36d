//! The policy keys, each defined once, in [`KEYS`]: how often a token is checked, its windows, what
//! is tried for it, and the few settings of the whole process that `[defaults]` holds.
//!
//! An entry is the whole of a key: its name, the tables it may stand in ([`Scope`]), its built-in
//! value ([`Builtin`]), how its value is read and checked and which setting it sets ([`Value`]), and
//! the line the README's table shows. From the table follow the policy keys each table accepts (so
//! an unknown key's error lists exactly those), the built-in defaults ([`builtin`]), the merge of a
//! table's values over the ones it inherits ([`merge`]: a token's or a set's over `[defaults]`,
//! `[defaults]` over the built-in ones), and the README's rows (a test compares them). Adding a
//! key is one entry, plus its field on [`Policy`] (and that field's zero in [`Settings::UNSET`],
//! which the compiler asks for).
//!
//! Two keys follow another unless written (`jitter` is a tenth of `interval`, `renew_days` is
//! `warn_days`), and two must hold together (`crit_days` ≤ `warn_days`): those are relations, not
//! keys, so they are written once below the table ([`follow`], [`windows`]).
//!
//! Must never: accept a value outside its bounds, or a key where its entry does not allow it.

use std::ops::Range;
use std::sync::LazyLock;
use std::time::Duration;

use toml::Spanned;
use toml::de::DeValue;

use super::read::typed;
use super::{Policy, Problem};

/// Every policy key, in the order the allowed-key lists and the README show them.
pub(super) static KEYS: &[Key] = &[
    Key {
        name: "interval",
        scope: Scope::Everywhere,
        builtin: Builtin::Value(r#""1h""#),
        value: Value::Duration(Least::Positive, |s| &mut s.policy.interval),
        doc: "between checks, from `\"1s\"` (`\"30s\"`, `\"5m\"`, `\"1h\"`, `\"2d\"`, `\"1h 30m\"`; under five minutes, a warning at start says the `/debug_token` calls an hour it costs against the app's allowance); sooner as expiry nears (never later than a quarter of the time left, nor sooner than a minute or the interval), and after an unknown check from a minute or the interval, whichever is shorter, doubling, never beyond the interval",
    },
    Key {
        name: "jitter",
        scope: Scope::Everywhere,
        builtin: Builtin::Follows("a tenth of `interval`"),
        value: Value::Duration(Least::Zero, |s| &mut s.policy.jitter),
        doc: "random spread added to each wait, so many tokens do not fire together",
    },
    Key {
        name: "warn_days",
        scope: Scope::Everywhere,
        builtin: Builtin::Value("14"),
        value: Value::Days(|s| &mut s.policy.warn_days),
        doc: "the `expiring` window, in days",
    },
    Key {
        name: "crit_days",
        scope: Scope::Everywhere,
        builtin: Builtin::Value("3"),
        value: Value::Days(|s| &mut s.policy.crit_days),
        doc: "the `critical` window, in days (at most `warn_days`)",
    },
    Key {
        name: "renew_days",
        scope: Scope::Everywhere,
        builtin: Builtin::Follows("`warn_days`"),
        value: Value::Days(|s| &mut s.policy.renew_days),
        doc: "renew a renewable token when it expires within this many days",
    },
    Key {
        name: "unknown_after",
        scope: Scope::Everywhere,
        builtin: Builtin::Value(r#""6h""#),
        value: Value::Duration(Least::Positive, |s| &mut s.policy.unknown_after),
        doc: "unknown this long is alerted as `cannot_be_checked`",
    },
    Key {
        name: "remind_every",
        scope: Scope::Everywhere,
        builtin: Builtin::Value(r#""24h""#),
        value: Value::Duration(Least::Zero, |s| &mut s.policy.remind_every),
        doc: "a reminder while `critical` or `dead` (`\"0s\"`: never)",
    },
    Key {
        name: "doctor",
        scope: Scope::Everywhere,
        builtin: Builtin::Value("false"),
        value: Value::Flag(|s| &mut s.policy.doctor),
        doc: "run the `doctor` checklist too",
    },
    Key {
        name: "doctor_interval",
        scope: Scope::Everywhere,
        builtin: Builtin::Value(r#""6h""#),
        value: Value::Duration(Least::Positive, |s| &mut s.policy.doctor_interval),
        doc: "between two runs of the `doctor` checklist",
    },
    Key {
        name: "failover",
        scope: Scope::Everywhere,
        builtin: Builtin::Value("true"),
        value: Value::Flag(|s| &mut s.policy.failover),
        doc: "promote a healthy backup when the token is dead",
    },
    Key {
        name: "try_user_token",
        scope: Scope::Everywhere,
        builtin: Builtin::Value("false"),
        value: Value::Flag(|s| &mut s.policy.try_user_token),
        doc: "also try renewing a long-lived user token (as `refresh --try-user-token`)",
    },
    Key {
        name: "retention",
        scope: Scope::DefaultsOnly,
        builtin: Builtin::Value(r#""90d""#),
        value: Value::Duration(Least::Day, |s| &mut s.retention),
        doc: "how long checks, events and settled alerts are kept in the state file (at least a day): the state's history is one, never per token",
    },
    Key {
        name: "max_concurrent_reloads",
        scope: Scope::DefaultsAndSets,
        builtin: Builtin::Value("4"),
        value: Value::Count(|s| &mut s.max_concurrent_reloads),
        doc: "reload commands that run at once, from 1 to 1000: of the `[[token]]`s (defaults), of each set (its own, else the defaults')",
    },
    Key {
        name: "batch_checks",
        scope: Scope::DefaultsOnly,
        builtin: Builtin::Value("true"),
        value: Value::Flag(|s| &mut s.batch_checks),
        doc: "a round asks `/debug_token` for every token whose app id and secret are known in Graph batches (50 per `POST`), grouped by app, and `/me` only on a token's first check ever or when its verdict changes (each token's `/me` answer is kept in the state, so neither a restart nor a new leader asks it again for the whole fleet); each app's usage headers pace it (above 75 % the next few hundred tokens wait, up to 5 s), and a rate-limited app is asked nothing more (all its windows, across rounds) for Meta's regain time, or when Meta names none from a minute doubling up to an hour, and then one call tests it before its checks resume; a user's own limit (code 17) pauses only that user's tokens; paused tokens are not failed checks, are never asked one by one, and alert (`cannot_be_checked`) only once a pause outlasts `unknown_after`. A token of another app, or whose batch answer failed, is checked alone. Only in `[defaults]`: batching is per app, across tokens. `false`: one `/me` and one `/debug_token` call per token, as before",
    },
];

/// One key: everything about it.
pub(super) struct Key {
    /// As written in the file.
    pub(super) name: &'static str,
    /// The tables it may stand in.
    pub(super) scope: Scope,
    /// Its value when no table writes it.
    pub(super) builtin: Builtin,
    /// How its value is read and checked, and what it sets.
    pub(super) value: Value,
    /// What it does, as the README's table says it.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the README's rows are checked by a test")
    )]
    pub(super) doc: &'static str,
}

/// The tables that hold policy keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// `[defaults]`.
    Defaults,
    /// A `[[token]]`.
    Token,
    /// A `[[token_set]]`.
    Set,
}

/// Where a key may stand. Every key may stand in `[defaults]`: that is what makes it a policy key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// `[defaults]`, and each `[[token]]` and `[[token_set]]` over it: a token's own policy.
    Everywhere,
    /// `[defaults]` and each `[[token_set]]`: what a set shares, and the `[[token]]`s together.
    DefaultsAndSets,
    /// `[defaults]` only: the whole process's, never one token's.
    DefaultsOnly,
}

impl Scope {
    fn allows(self, place: Place) -> bool {
        match self {
            Self::Everywhere => true,
            Self::DefaultsAndSets => place != Place::Token,
            Self::DefaultsOnly => place == Place::Defaults,
        }
    }
}

/// A key's value when no table writes it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Builtin {
    /// This value, written as in the file: it is read by the key's own [`Value`], so a default
    /// out of bounds cannot be.
    Value(&'static str),
    /// Another key's, by a rule of [`follow`]; the text says which, for the README.
    Follows(
        #[cfg_attr(
            not(test),
            expect(dead_code, reason = "the README's rows are checked by a test")
        )]
        &'static str,
    ),
}

/// How a key's value is read and checked, and the setting it sets.
#[derive(Clone, Copy)]
pub(super) enum Value {
    /// A duration ([`parse_duration`]) no shorter than its [`Least`].
    Duration(Least, fn(&mut Settings) -> &mut Duration),
    /// A number of days, from 0 to 3650.
    Days(fn(&mut Settings) -> &mut u32),
    /// A number, from 1 to 1000.
    Count(fn(&mut Settings) -> &mut usize),
    /// `true` or `false`.
    Flag(fn(&mut Settings) -> &mut bool),
}

/// The shortest duration a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Least {
    /// Zero is allowed (`"0s"`: never).
    Zero,
    /// Longer than zero.
    Positive,
    /// A day or more (which is longer than zero, and said so first).
    Day,
}

/// What the policy keys set: a token's [`Policy`], and the settings of the whole process. The
/// built-in one is [`builtin`]; `[defaults]` makes one over it, and each token and set over that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Settings {
    /// A token's policy.
    pub(super) policy: Policy,
    /// `retention`.
    pub(super) retention: Duration,
    /// `max_concurrent_reloads`.
    pub(super) max_concurrent_reloads: usize,
    /// `batch_checks`.
    pub(super) batch_checks: bool,
    /// Whether `[defaults]` wrote `jitter`: then a token's own `interval` keeps it.
    jitter_written: bool,
}

impl Settings {
    /// Nothing set: what [`builtin`] writes the table's defaults over, and never a policy itself.
    const UNSET: Self = Self {
        policy: Policy {
            interval: Duration::ZERO,
            jitter: Duration::ZERO,
            warn_days: 0,
            crit_days: 0,
            renew_days: 0,
            unknown_after: Duration::ZERO,
            remind_every: Duration::ZERO,
            doctor: false,
            doctor_interval: Duration::ZERO,
            failover: false,
            try_user_token: false,
        },
        retention: Duration::ZERO,
        max_concurrent_reloads: 0,
        batch_checks: false,
        jitter_written: false,
    };
}

/// The built-in settings: every key's [`Builtin::Value`] read as if `[defaults]` wrote it, and
/// the others following theirs. A test reads them all, so this cannot fail once it has passed.
pub(super) fn builtin() -> Settings {
    static BUILTIN: LazyLock<Settings> = LazyLock::new(|| {
        let mut given = Given::default();
        for key in KEYS {
            if let Builtin::Value(text) = key.builtin {
                let value = DeValue::parse(text)
                    .unwrap_or_else(|e| panic!("`{}`'s default: {e}", key.name));
                given
                    .read(key, value)
                    .unwrap_or_else(|p| panic!("`{}`'s default: {}", key.name, p.message));
            }
        }
        merge(&Settings::UNSET, &given, 0..0)
            .unwrap_or_else(|p| panic!("the built-in defaults: {}", p.message))
    });
    *BUILTIN
}

/// The key `name`, if it may stand in `place`. A key that may not is left to serde, which refuses
/// it as unknown, with the list of the keys that may.
pub(super) fn find(name: &str, place: Place) -> Option<&'static Key> {
    KEYS.iter()
        .find(|key| key.name == name && key.scope.allows(place))
}

/// The policy keys `place` accepts, in the table's order.
pub(super) fn names_at(place: Place) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|key| key.scope.allows(place))
        .map(|key| key.name)
        .collect()
}

/// The policy keys written in one table, each read and checked.
#[derive(Default)]
pub(super) struct Given(Vec<(&'static Key, Range<usize>, Set)>);

impl Given {
    /// Reads `value`, written under `key`'s name: its type (in serde's words), then its bounds.
    pub(super) fn read(
        &mut self,
        key: &'static Key,
        value: Spanned<DeValue<'_>>,
    ) -> Result<(), Problem> {
        let span = value.span();
        let set = key.read(value)?;
        self.0.push((key, span, set));
        Ok(())
    }

    /// Where `name` is written in this table, if it is.
    fn span_of(&self, name: &str) -> Option<Range<usize>> {
        self.0
            .iter()
            .find(|(key, ..)| key.name == name)
            .map(|(_, span, _)| span.clone())
    }
}

/// A value read and checked, with the setting it goes to.
#[derive(Clone, Copy)]
enum Set {
    Duration(fn(&mut Settings) -> &mut Duration, Duration),
    Days(fn(&mut Settings) -> &mut u32, u32),
    Count(fn(&mut Settings) -> &mut usize, usize),
    Flag(fn(&mut Settings) -> &mut bool, bool),
}

impl Set {
    fn apply(self, settings: &mut Settings) {
        match self {
            Self::Duration(field, value) => *field(settings) = value,
            Self::Days(field, value) => *field(settings) = value,
            Self::Count(field, value) => *field(settings) = value,
            Self::Flag(field, value) => *field(settings) = value,
        }
    }
}

impl Key {
    fn read(&self, value: Spanned<DeValue<'_>>) -> Result<Set, Problem> {
        let name = self.name;
        Ok(match self.value {
            Value::Duration(least, field) => {
                let text: Spanned<String> = typed(value, &[])?;
                Set::Duration(field, duration(name, &text, least)?)
            }
            Value::Days(field) => {
                let days: Spanned<u32> = typed(value, &[])?;
                if *days.get_ref() > 3650 {
                    return Err(Problem::new(
                        days.span(),
                        format!(
                            "`{name}` = {} is more than ten years; write a number of days from 0 to 3650",
                            days.get_ref()
                        ),
                    ));
                }
                Set::Days(field, days.into_inner())
            }
            Value::Count(field) => {
                let count: Spanned<u32> = typed(value, &[])?;
                match *count.get_ref() {
                    n @ 1..=1000 => Set::Count(field, n as usize),
                    n => {
                        return Err(Problem::new(
                            count.span(),
                            format!("`{name}` = {n}: write a number from 1 to 1000"),
                        ));
                    }
                }
            }
            Value::Flag(field) => Set::Flag(field, typed::<bool>(value, &[])?),
        })
    }
}

/// `text`, the value of `name`, as a duration no shorter than `least`.
pub(super) fn duration(
    name: &str,
    text: &Spanned<String>,
    least: Least,
) -> Result<Duration, Problem> {
    let at = |message: String| Problem::new(text.span(), message);
    let d = parse_duration(text.get_ref()).map_err(|e| at(format!("`{name}`: {e}")))?;
    if least != Least::Zero && d.is_zero() {
        return Err(at(format!(
            "`{name}` must be longer than zero, such as \"1h\""
        )));
    }
    if least == Least::Day && d < Duration::from_secs(86_400) {
        return Err(at(format!(
            "`{name}` must be at least a day, such as \"90d\""
        )));
    }
    Ok(d)
}

/// `base` with one table's values over it: `[defaults]` over the built-in settings, or a token's
/// or a set's over `[defaults]`. `table` is where the table starts, for an error no single value
/// caused.
pub(super) fn merge(
    base: &Settings,
    given: &Given,
    table: Range<usize>,
) -> Result<Settings, Problem> {
    let mut settings = *base;
    for (_, _, set) in &given.0 {
        set.apply(&mut settings);
    }
    follow(base, given, &mut settings);
    windows(&settings, given, table)?;
    Ok(settings)
}

/// The keys whose default is another key's value: unless written, `jitter` is a tenth of a newly
/// written `interval` (unless `[defaults]` wrote a `jitter`, which then holds for every token), and
/// `renew_days` follows a newly written `warn_days` (as long as the two were equal, that is, as long
/// as nobody set `renew_days` apart).
fn follow(base: &Settings, given: &Given, settings: &mut Settings) {
    let written = |name| given.span_of(name).is_some();
    if written("jitter") {
        settings.jitter_written = true;
    } else if written("interval") && !base.jitter_written {
        settings.policy.jitter = settings.policy.interval / 10;
    }
    if written("warn_days")
        && !written("renew_days")
        && base.policy.renew_days == base.policy.warn_days
    {
        settings.policy.renew_days = settings.policy.warn_days;
    }
}

/// The critical window lies inside the warning window.
fn windows(settings: &Settings, given: &Given, table: Range<usize>) -> Result<(), Problem> {
    let policy = &settings.policy;
    if policy.crit_days <= policy.warn_days {
        return Ok(());
    }
    let span = given
        .span_of("crit_days")
        .or_else(|| given.span_of("warn_days"))
        .unwrap_or(table);
    Err(Problem::new(
        span,
        format!(
            "`crit_days` ({}) is more than `warn_days` ({}); the critical window lies inside the warning window",
            policy.crit_days, policy.warn_days
        ),
    ))
}

/// A humane duration: numbers each followed by a unit (`s`, `m`, `h`, `d`, `w`, or their long
/// forms), optionally separated by spaces: `30s`, `5m`, `1h 30m`, `2d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration: write a number and a unit, such as \"30s\", \"5m\", \"1h\", \"2d\" or \"1h 30m\""
        )
    };
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 || digits > 12 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        rest = rest[unit_len..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_MAX_CONCURRENT_RELOADS, DEFAULT_RETENTION};

    #[test]
    fn durations_read_like_people_write_them() {
        for (text, secs) in [
            ("1s", 1),
            ("5m", 300),
            ("1h", 3600),
            ("2d", 172_800),
            ("1h 30m", 5400),
            ("1h30m", 5400),
            ("90 minutes", 5400),
            ("1w", 604_800),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in ["", "5", "h", "5x", "-1h", "1.5h", "99999999999999999h"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_builtin_default_reads_and_the_public_constants_agree() {
        // The values themselves are pinned by tests/config.rs, as a user sees them; here, that the
        // table's texts read, that the followers follow, and that the public constants agree.
        let builtin = builtin();
        let policy = builtin.policy;
        assert_eq!(policy.interval, Duration::from_secs(3600));
        assert_eq!(policy.jitter, policy.interval / 10);
        assert_eq!((policy.warn_days, policy.renew_days), (14, 14));
        assert_eq!(builtin.retention, DEFAULT_RETENTION);
        assert_eq!(
            builtin.max_concurrent_reloads,
            DEFAULT_MAX_CONCURRENT_RELOADS
        );
        assert!(builtin.batch_checks && !builtin.jitter_written);
        assert_eq!(Policy::default(), policy);
    }

    #[test]
    fn each_key_has_one_entry_and_sets_its_own_setting() {
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KEYS.len(), "a key is defined twice");
        // Two entries writing one field would be a copy-paste slip: each must move the settings
        // somewhere no other entry does.
        let mut seen: Vec<Settings> = Vec::new();
        for key in KEYS {
            let mut settings = Settings::UNSET;
            match key.value {
                Value::Duration(_, field) => *field(&mut settings) = Duration::from_secs(7),
                Value::Days(field) => *field(&mut settings) = 7,
                Value::Count(field) => *field(&mut settings) = 7,
                Value::Flag(field) => *field(&mut settings) = true,
            }
            assert_ne!(settings, Settings::UNSET, "`{}` sets nothing", key.name);
            assert!(
                !seen.contains(&settings),
                "`{}` sets another key's field",
                key.name
            );
            seen.push(settings);
        }
        // The names the relations use are keys.
        for name in ["interval", "jitter", "warn_days", "crit_days", "renew_days"] {
            assert!(find(name, Place::Token).is_some(), "{name}");
        }
    }

    #[test]
    fn each_table_accepts_the_keys_of_its_scope() {
        assert_eq!(names_at(Place::Defaults).len(), KEYS.len());
        let token = names_at(Place::Token);
        assert!(!token.contains(&"retention") && !token.contains(&"batch_checks"));
        assert!(!token.contains(&"max_concurrent_reloads"));
        let set = names_at(Place::Set);
        assert!(set.contains(&"max_concurrent_reloads") && !set.contains(&"retention"));
        assert!(find("batch_checks", Place::Set).is_none());
    }

    /// The README's rows for the policy keys, as the table makes them.
    fn readme_rows() -> String {
        KEYS.iter()
            .map(|key| {
                let scope = match key.scope {
                    Scope::Everywhere => "defaults, token, set",
                    Scope::DefaultsAndSets => "defaults, set",
                    Scope::DefaultsOnly => "defaults",
                };
                let default = match key.builtin {
                    Builtin::Value(text) => format!("`{text}`"),
                    Builtin::Follows(text) => text.to_owned(),
                };
                format!("| `{}` | {scope} | {default} | {} |\n", key.name, key.doc)
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_policy_key_with_where_it_stands_and_its_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let section = readme
            .split("\n### `permatoken.toml`\n")
            .nth(1)
            .and_then(|s| s.split("\n### ").next())
            .expect("the README has a `permatoken.toml` section");
        // Every row of the section whose key column names a policy key, wherever it stands.
        let rows: String = section
            .lines()
            .filter(|line| {
                let first = line.split('|').nth(1).unwrap_or("");
                KEYS.iter()
                    .any(|k| first.contains(&format!("`{}`", k.name)))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let expected = readme_rows();
        assert!(
            rows == expected,
            "the README's rows of the policy keys must be, in this order:\n{expected}\nthey are:\n{rows}"
        );
    }
}
