//! How long what was announced of each token has lasted, on the monotonic clock: the
//! [`Lasted`] that [`crate::states::decide`] weighs against `unknown_after` and `remind_every`.
//!
//! The state store keeps wall times (when a run of unknown checks began, when the last alert was
//! made), for people and for the replicas sharing it. A wall clock can step (NTP, a virtual
//! machine resumed, `date -s`): subtracting wall times would then hold an alert back for the
//! length of a step back, or send a reminder and a `cannot_be_checked` at a step forward. So each
//! stored time is converted once, when this process first reads it (at its start, or when another
//! replica wrote it): its age by the wall clock then, none if it is ahead; from then on, that age
//! grows on the monotonic clock only. A time this process records itself is read back as a stored
//! time it already knows (the store keeps whole seconds, and so do [`Stopwatches`]).
//!
//! Must never: read a clock (both `now`s are handed in), or keep a token that is neither unknown
//! nor in a reminded state (what a fleet costs stays with the few tokens in trouble).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::schedule::age;
use crate::states::{Announced, Lasted};

/// One stored time, as this process measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stopwatch {
    /// The stored time, in whole seconds as the store keeps it.
    stored: i64,
    /// When this process first read it or wrote it, on the monotonic clock.
    started: Instant,
    /// How old it was then.
    age: Duration,
}

impl Stopwatch {
    fn lasted(&self, now: Instant) -> Duration {
        self.age + now.saturating_duration_since(self.started)
    }
}

/// Per token name, a stopwatch for its run of unknown checks and one for the time since its last
/// alert (kept only while it is in a reminded state).
#[derive(Debug, Default)]
pub(crate) struct Stopwatches {
    unknown: HashMap<String, Stopwatch>,
    alerted: HashMap<String, Stopwatch>,
}

impl Stopwatches {
    /// How long what `announced` records of `name` has lasted at `now` (`wall_now` on the wall
    /// clock). Called with what was announced before a decision and with what is announced after
    /// it, so that a time just recorded is measured from now on.
    pub(crate) fn measure(
        &mut self,
        name: &str,
        announced: Option<&Announced>,
        wall_now: Timestamp,
        now: Instant,
    ) -> Lasted {
        let unknown_since = announced.and_then(|a| a.unknown_since);
        let alerted = announced
            .filter(|a| a.state.is_some_and(|s| s.is_reminded()))
            .map(|a| a.last_alert.unwrap_or(a.since));
        Lasted {
            unknown: time(&mut self.unknown, name, unknown_since, wall_now, now),
            since_alert: time(&mut self.alerted, name, alerted, wall_now, now),
        }
    }

    /// Keeps only the tokens `keep` says are still configured.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.unknown.retain(|name, _| keep(name));
        self.alerted.retain(|name, _| keep(name));
    }
}

/// How long `stored` has lasted at `now`, by `name`'s stopwatch in `watches`: started now, at the
/// age `stored` has by the wall clock, when it is a time not seen before.
fn time(
    watches: &mut HashMap<String, Stopwatch>,
    name: &str,
    stored: Option<Timestamp>,
    wall_now: Timestamp,
    now: Instant,
) -> Duration {
    let Some(stored) = stored else {
        watches.remove(name);
        return Duration::ZERO;
    };
    match watches.get(name) {
        Some(watch) if watch.stored == stored.as_second() => watch.lasted(now),
        _ => {
            let age = age(stored, wall_now);
            let watch = Stopwatch {
                stored: stored.as_second(),
                started: now,
                age,
            };
            watches.insert(name.to_owned(), watch);
            age
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::states::State;

    const HOUR: Duration = Duration::from_secs(3600);

    fn wall(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn mono(secs: u64) -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now) + Duration::from_secs(secs)
    }

    fn unknown_since(at: Timestamp) -> Announced {
        Announced {
            state: Some(State::Ok),
            since: wall(0),
            last_alert: None,
            reminders: 0,
            unknown_since: Some(at),
        }
    }

    #[test]
    fn a_stored_time_is_converted_once_then_ages_on_the_monotonic_clock() {
        let mut w = Stopwatches::default();
        let a = unknown_since(wall(0));
        // First read 100 s after it was recorded, by the wall clock.
        assert_eq!(
            w.measure("orders", Some(&a), wall(100), mono(0)).unknown,
            Duration::from_secs(100)
        );
        // The wall clock jumps an hour on, then two back: only the monotonic clock counts.
        let got = w.measure("orders", Some(&a), wall(100 + 3600 + 60), mono(60));
        assert_eq!(got.unknown, Duration::from_secs(160));
        let got = w.measure("orders", Some(&a), wall(100 - 3600 + 120), mono(120));
        assert_eq!(got.unknown, Duration::from_secs(220));
        // Not in a reminded state: nothing measured since an alert, nothing kept for it.
        assert_eq!(got.since_alert, Duration::ZERO);
        assert!(w.alerted.is_empty());
    }

    #[test]
    fn a_time_recorded_now_is_measured_from_now_whatever_the_wall_clock_does() {
        let mut w = Stopwatches::default();
        // This process records it (nanoseconds; the store gives back whole seconds).
        let recorded = wall(500) + jiff::SignedDuration::from_millis(700);
        w.measure("orders", Some(&unknown_since(recorded)), recorded, mono(10));
        let read_back = unknown_since(wall(500));
        let got = w.measure("orders", Some(&read_back), wall(500 + 2 * 3600), mono(70));
        assert_eq!(got.unknown, Duration::from_secs(60));
        let got = w.measure("orders", Some(&read_back), wall(500 - 3600), mono(100));
        assert_eq!(got.unknown, Duration::from_secs(90));
    }

    #[test]
    fn a_time_ahead_of_the_wall_clock_counts_as_now_and_a_new_one_restarts_the_watch() {
        let mut w = Stopwatches::default();
        // Written by a replica whose clock is ahead, or before this one was stepped back.
        let ahead = unknown_since(wall(3600));
        assert_eq!(
            w.measure("orders", Some(&ahead), wall(0), mono(0)).unknown,
            Duration::ZERO
        );
        assert_eq!(
            w.measure("orders", Some(&ahead), wall(0), mono(30)).unknown,
            Duration::from_secs(30)
        );
        // Another replica recorded a new run: measured from its own age.
        let newer = unknown_since(wall(-20));
        assert_eq!(
            w.measure("orders", Some(&newer), wall(0), mono(40)).unknown,
            Duration::from_secs(20)
        );
        // The run ended: forgotten.
        w.measure(
            "orders",
            Some(&Announced {
                unknown_since: None,
                ..newer
            }),
            wall(0),
            mono(50),
        );
        assert!(w.unknown.is_empty());
    }

    #[test]
    fn the_time_since_an_alert_is_measured_while_critical_or_dead_only() {
        let mut w = Stopwatches::default();
        let dead = Announced {
            state: Some(State::Dead),
            since: wall(0),
            last_alert: Some(wall(0)),
            reminders: 0,
            unknown_since: None,
        };
        assert_eq!(
            w.measure("orders", Some(&dead), wall(600), mono(0))
                .since_alert,
            Duration::from_secs(600)
        );
        let got = w.measure("orders", Some(&dead), wall(600 + 24 * 3600), mono(60));
        assert_eq!(got.since_alert, Duration::from_secs(660));
        // Before any alert, from when the state began.
        let quiet = Announced {
            last_alert: None,
            since: wall(-3600),
            ..dead.clone()
        };
        assert_eq!(
            w.measure("billing", Some(&quiet), wall(0), mono(0))
                .since_alert,
            HOUR
        );
        // Back to ok: forgotten; a token never seen measures nothing.
        let ok = Announced {
            state: Some(State::Ok),
            ..dead
        };
        w.measure("orders", Some(&ok), wall(0), mono(90));
        w.retain(|name| name != "billing");
        assert!(w.alerted.is_empty());
        assert_eq!(w.measure("new", None, wall(0), mono(0)), Lasted::default());
    }
}
