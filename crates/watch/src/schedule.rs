//! When each token is checked next: pure logic, no I/O, no clock and no randomness of its own (every
//! function takes `now`, and the random draw of the jitter is passed in), so each rule is a unit
//! test, like [`crate::states`].
//!
//! The rules:
//! - a token never checked is due at once (at the daemon's start);
//! - after a check, the next one is an `interval` later plus a random part of `jitter`, but never
//!   later than a quarter of the time its soonest expiry still has (a token and its backups are
//!   scheduled together, by their soonest expiry);
//! - after a check that could not tell (unknown), the next one backs off from a minute, doubling,
//!   never beyond that;
//! - no token is checked twice within [`MIN_GAP`];
//! - a check deferred for its app's rate limit is due when the limit has passed;
//! - a new leader takes up the schedule where the shared state leaves it: an interval after each
//!   token's latest check, by whichever replica made it ([`Schedule::resume`]);
//! - the doctor checklist of a token has a schedule of its own (`doctor_interval`).
//!
//! Must never: read a file, the store or the clock (what the store said is handed in), or decide
//! what a check means.

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use permatoken_state as store;

use crate::config::Policy;

/// The shortest wait between two checks of a token.
pub const MIN_GAP: Duration = Duration::from_secs(60);

/// The longest back-off step after unknown checks: 2^16 minutes, far past any interval.
const MAX_DOUBLINGS: u32 = 16;

/// What the schedule keeps of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    at: Timestamp,
    /// Unknown checks in a row, for the back-off.
    unknown_streak: u32,
}

/// Every token's next check, and every doctor checklist's next run, by token name.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// When the daemon started: when a token never scheduled is due.
    started_at: Timestamp,
    due: HashMap<String, Due>,
    doctor: HashMap<String, Timestamp>,
}

/// How long after `now` the next check of a token comes, given its policy, its soonest expiry
/// ahead, how many unknown checks in a row it has had (this one included) and the random draw
/// `unit` in `[0, 1)` for the jitter.
pub fn wait(
    policy: &Policy,
    expires_at: Option<Timestamp>,
    unknown_streak: u32,
    now: Timestamp,
    unit: f64,
) -> Duration {
    let mut wait = policy.interval + policy.jitter.mul_f64(unit.clamp(0.0, 1.0));
    if let Some(expires) = expires_at {
        let left = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
        wait = wait.min(left / 4);
    }
    if unknown_streak > 0 {
        // Back off from a minute, doubling, never beyond the interval.
        let backoff = MIN_GAP.saturating_mul(1 << (unknown_streak - 1).min(MAX_DOUBLINGS));
        wait = wait.min(backoff);
    }
    wait.max(MIN_GAP)
}

fn later(now: Timestamp, wait: Duration) -> Timestamp {
    now + SignedDuration::try_from(wait).unwrap_or(SignedDuration::from_hours(1))
}

impl Schedule {
    /// A schedule in which every token is due at `started_at`.
    pub fn new(started_at: Timestamp) -> Self {
        Self {
            started_at,
            due: HashMap::new(),
            doctor: HashMap::new(),
        }
    }

    /// When `name` is checked next (`started_at` if it never was scheduled).
    pub fn next(&self, name: &str) -> Timestamp {
        self.due.get(name).map_or(self.started_at, |d| d.at)
    }

    /// When `name` is checked next, if it was scheduled: what the page shows.
    pub fn scheduled(&self, name: &str) -> Option<Timestamp> {
        self.due.get(name).map(|d| d.at)
    }

    /// Whether `name` is due at `now`.
    pub fn is_due(&self, name: &str, now: Timestamp) -> bool {
        self.due.get(name).is_none_or(|d| d.at <= now)
    }

    /// The soonest next check among `names`; `None` without any.
    pub fn soonest<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Option<Timestamp> {
        names.into_iter().map(|name| self.next(name)).min()
    }

    /// Schedules `name` after a check at `now`: see [`wait`]. `unknown` says whether the check
    /// (of the token or of any of its backups) could not tell.
    pub fn checked(
        &mut self,
        name: &str,
        policy: &Policy,
        expires_at: Option<Timestamp>,
        unknown: bool,
        now: Timestamp,
        unit: f64,
    ) {
        let entry = self.entry(name, now);
        entry.unknown_streak = if unknown { entry.unknown_streak + 1 } else { 0 };
        entry.at = later(
            now,
            wait(policy, expires_at, entry.unknown_streak, now, unit),
        );
    }

    /// `name`'s check was deferred (its app is rate-limited): it is due at `until`, its back-off
    /// untouched, since no check was made.
    pub fn defer(&mut self, name: &str, until: Timestamp, now: Timestamp) {
        self.entry(name, now).at = until;
    }

    fn entry(&mut self, name: &str, now: Timestamp) -> &mut Due {
        self.due.entry(name.to_owned()).or_insert(Due {
            at: now,
            unknown_streak: 0,
        })
    }

    /// A new leader's schedule: forgets every due time, then schedules each of `tokens` (name and
    /// policy) an interval after its latest check in `latest` (its time and expiry), as if this
    /// replica had made it. A token without a check there stays due at once.
    pub fn resume<'a>(
        &mut self,
        tokens: impl IntoIterator<Item = (&'a str, &'a Policy)>,
        latest: &HashMap<String, (Timestamp, Option<Timestamp>)>,
        unit: impl Fn() -> f64,
    ) {
        self.due.clear();
        for (name, policy) in tokens {
            if let Some(&(at, expires_at)) = latest.get(name) {
                self.checked(name, policy, expires_at, false, at, unit());
            }
        }
    }

    /// Keeps only the tokens `keep` says are still configured.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.due.retain(|name, _| keep(name));
        self.doctor.retain(|name, _| keep(name));
    }

    /// Whether the doctor checklist of `name` is due at `now` (at once if it never ran).
    pub fn doctor_is_due(&self, name: &str, now: Timestamp) -> bool {
        self.doctor.get(name).is_none_or(|at| *at <= now)
    }

    /// The doctor checklist of `name` ran at `now`: next one `every` later.
    pub fn doctor_ran(&mut self, name: &str, every: Duration, now: Timestamp) {
        let every = SignedDuration::try_from(every).unwrap_or(SignedDuration::from_hours(6));
        self.doctor.insert(name.to_owned(), now + every);
    }
}

/// For [`Schedule::resume`]: per primary token name, the time and expiry of its newest check in
/// the shared state, when that check could tell (one that could not leaves the token due at once).
pub fn last_known_checks(
    latest: &[store::LatestCheck],
) -> HashMap<String, (Timestamp, Option<Timestamp>)> {
    let mut newest: HashMap<&str, &store::CheckRecord> = HashMap::new();
    for entry in latest {
        let (store::Role::Primary, Some(check)) = (&entry.token.role, &entry.check) else {
            continue;
        };
        let slot = newest.entry(entry.token.name.as_str()).or_insert(check);
        if slot.checked_at < check.checked_at {
            *slot = check;
        }
    }
    newest
        .into_iter()
        .filter(|(_, check)| check.status != store::Status::Unknown)
        .map(|(name, check)| (name.to_owned(), (check.checked_at, check.expires_at)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn policy(interval: Duration, jitter: Duration) -> Policy {
        Policy {
            interval,
            jitter,
            ..Policy::default()
        }
    }

    #[test]
    fn the_next_check_is_an_interval_later_plus_part_of_the_jitter() {
        let p = policy(HOUR, Duration::from_secs(360));
        assert_eq!(wait(&p, None, 0, at(0), 0.0), HOUR);
        assert_eq!(
            wait(&p, None, 0, at(0), 0.5),
            HOUR + Duration::from_secs(180)
        );
        // A draw out of range is held to the jitter.
        assert_eq!(
            wait(&p, None, 0, at(0), 7.0),
            HOUR + Duration::from_secs(360)
        );
    }

    #[test]
    fn an_expiry_ahead_brings_the_next_check_to_a_quarter_of_what_is_left() {
        let p = policy(HOUR, Duration::ZERO);
        // Two hours left: checked again in half an hour, not an hour.
        assert_eq!(
            wait(&p, Some(at(7200)), 0, at(0), 0.0),
            Duration::from_secs(1800)
        );
        // Far away: the interval.
        assert_eq!(wait(&p, Some(at(86_400 * 30)), 0, at(0), 0.0), HOUR);
        // Nearly gone: never sooner than the smallest gap.
        assert_eq!(wait(&p, Some(at(10)), 0, at(0), 0.0), MIN_GAP);
        // Already past: the smallest gap too.
        assert_eq!(wait(&p, Some(at(-10)), 0, at(0), 0.0), MIN_GAP);
    }

    #[test]
    fn unknown_checks_back_off_from_a_minute_doubling_to_the_interval() {
        let p = policy(HOUR, Duration::ZERO);
        let waits: Vec<u64> = (1..=8)
            .map(|streak| wait(&p, None, streak, at(0), 0.0).as_secs())
            .collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        // A streak far past any interval neither overflows nor exceeds it.
        assert_eq!(wait(&p, None, u32::MAX, at(0), 0.0), HOUR);
    }

    #[test]
    fn no_interval_is_shorter_than_the_smallest_gap() {
        let p = policy(Duration::from_secs(30), Duration::ZERO);
        assert_eq!(wait(&p, None, 0, at(0), 0.0), MIN_GAP);
    }

    #[test]
    fn a_token_never_scheduled_is_due_at_the_start() {
        let s = Schedule::new(at(0));
        assert!(s.is_due("orders", at(0)));
        assert_eq!(s.next("orders"), at(0));
        assert_eq!(s.scheduled("orders"), None);
        assert_eq!(s.soonest(["orders", "billing"]), Some(at(0)));
        assert_eq!(s.soonest([]), None);
    }

    #[test]
    fn a_check_schedules_the_next_and_a_streak_of_unknowns_backs_off() {
        let p = policy(HOUR, Duration::ZERO);
        let mut s = Schedule::new(at(0));
        s.checked("orders", &p, None, false, at(0), 0.0);
        assert!(!s.is_due("orders", at(3599)));
        assert!(s.is_due("orders", at(3600)));
        s.checked("orders", &p, None, true, at(3600), 0.0);
        assert_eq!(s.next("orders"), at(3660));
        s.checked("orders", &p, None, true, at(3660), 0.0);
        assert_eq!(s.next("orders"), at(3780));
        // A known answer ends the streak.
        s.checked("orders", &p, None, false, at(3780), 0.0);
        assert_eq!(s.next("orders"), at(7380));
        s.checked("orders", &p, None, true, at(7380), 0.0);
        assert_eq!(s.next("orders"), at(7440));
    }

    #[test]
    fn a_deferred_check_is_due_when_the_limit_passes_and_keeps_its_streak() {
        let p = policy(HOUR, Duration::ZERO);
        let mut s = Schedule::new(at(0));
        s.defer("orders", at(600), at(0));
        assert!(!s.is_due("orders", at(599)));
        assert!(s.is_due("orders", at(600)));
        s.checked("orders", &p, None, true, at(600), 0.0);
        s.defer("orders", at(5000), at(601));
        assert_eq!(s.next("orders"), at(5000));
        // The deferral made no check: the streak goes on from one.
        s.checked("orders", &p, None, true, at(5000), 0.0);
        assert_eq!(s.next("orders"), at(5120));
    }

    #[test]
    fn a_new_leader_resumes_an_interval_after_each_latest_check() {
        let p = policy(HOUR, Duration::ZERO);
        let mut s = Schedule::new(at(0));
        s.checked("gone", &p, None, false, at(0), 0.0);
        let latest = HashMap::from([
            ("orders".to_owned(), (at(100), None)),
            ("billing".to_owned(), (at(200), Some(at(200 + 7200)))),
        ]);
        s.resume(
            [("orders", &p), ("billing", &p), ("new", &p)],
            &latest,
            || 0.0,
        );
        assert_eq!(s.scheduled("orders"), Some(at(3700)));
        assert_eq!(s.scheduled("billing"), Some(at(200 + 1800)));
        // Never checked: due at once. Forgotten: what the old schedule said is gone.
        assert_eq!(s.scheduled("new"), None);
        assert!(s.is_due("new", at(0)));
        assert_eq!(s.scheduled("gone"), None);
    }

    #[test]
    fn a_new_leader_resumes_from_each_names_newest_primary_check_that_could_tell() {
        let key = |c: char| store::TokenKey::parse(&c.to_string().repeat(64)).unwrap();
        let entry =
            |k: char, name: &str, role: store::Role, check: Option<(i64, store::Status)>| {
                store::LatestCheck {
                    token: store::TokenRecord {
                        key: key(k),
                        name: name.to_owned(),
                        role,
                        fingerprint: String::new(),
                        source_path: String::new(),
                        source_key: None,
                        first_seen: at(0),
                        last_seen: at(0),
                        identity: None,
                    },
                    check: check.map(|(when, status)| store::CheckRecord {
                        key: key(k),
                        checked_at: at(when),
                        status,
                        alert_state: "ok".into(),
                        valid: Some(true),
                        expires_at: Some(at(when + 86_400)),
                        never_expires: false,
                        kind: None,
                        missing_scopes: Vec::new(),
                        finding_codes: Vec::new(),
                        elapsed_ms: 0,
                    }),
                }
            };
        use store::Status::{Ok, Unknown};
        let latest = [
            // Renewed: the old token's check is older than the new one's.
            entry('a', "orders", store::Role::Primary, Some((10, Ok))),
            entry('b', "orders", store::Role::Primary, Some((20, Ok))),
            // The newest check could not tell: due at once, whatever came before.
            entry('c', "billing", store::Role::Primary, Some((10, Ok))),
            entry('d', "billing", store::Role::Primary, Some((30, Unknown))),
            // A backup's check does not schedule its primary.
            entry(
                'e',
                "orders/B",
                store::Role::Backup("orders".into()),
                Some((90, Ok)),
            ),
            entry('f', "new", store::Role::Primary, None),
        ];
        let got = last_known_checks(&latest);
        assert_eq!(
            got,
            HashMap::from([("orders".to_owned(), (at(20), Some(at(20 + 86_400))))])
        );
    }

    #[test]
    fn forgotten_tokens_leave_the_schedule_and_the_doctors() {
        let p = policy(HOUR, Duration::ZERO);
        let mut s = Schedule::new(at(0));
        s.checked("orders", &p, None, false, at(0), 0.0);
        s.doctor_ran("orders", Duration::from_secs(6 * 3600), at(0));
        s.checked("billing", &p, None, false, at(0), 0.0);
        s.retain(|name| name == "billing");
        assert_eq!(s.scheduled("orders"), None);
        assert!(s.doctor_is_due("orders", at(1)));
        assert_eq!(s.scheduled("billing"), Some(at(3600)));
    }

    #[test]
    fn the_doctor_runs_at_once_then_every_doctor_interval() {
        let mut s = Schedule::new(at(0));
        assert!(s.doctor_is_due("orders", at(0)));
        s.doctor_ran("orders", Duration::from_secs(6 * 3600), at(0));
        assert!(!s.doctor_is_due("orders", at(6 * 3600 - 1)));
        assert!(s.doctor_is_due("orders", at(6 * 3600)));
    }
}
