//! When each token is checked next: pure logic, no I/O, no clock and no randomness of its own (every
//! function takes `now`, and the random draw of the jitter is passed in), so each rule is a unit
//! test, like [`crate::states`].
//!
//! Due times are on the monotonic clock ([`Instant`]): a step of the wall clock (NTP, a virtual
//! machine resumed, `date -s`) neither holds the checks back nor brings them all on at once. Wall
//! times come in only from the shared state, converted once when read ([`Schedule::resume`]), and go
//! out only to people ([`wall_time`]: the page's next check).
//!
//! The rules:
//! - a token never checked is due at once (at the daemon's start);
//! - after a check, the next one is an `interval` later plus a random part of `jitter`: every
//!   interval is honoured, from a second (the configuration refuses less), and one under
//!   [`FREQUENT`] is warned of at start with what it costs ([`calls_an_hour`]);
//! - but never later than a quarter of the time its soonest expiry still has (a token and its
//!   backups are scheduled together, by their soonest expiry), nor, for that, sooner than
//!   [`FIRST_RETRY`] (or the interval, when shorter);
//! - after a check that could not tell (unknown), the next one backs off from [`FIRST_RETRY`] or the
//!   interval, whichever is shorter, doubling, never beyond the interval;
//! - a check deferred for its app's rate limit is due when the limit has passed;
//! - a new leader takes up the schedule where the shared state leaves it: an interval after each
//!   token's latest check, by whichever replica made it ([`Schedule::resume`]); a check stored with a
//!   time ahead of this machine's clock counts as made now;
//! - the doctor checklist of a token has a schedule of its own (`doctor_interval`).
//!
//! Must never: read a file, the store or a clock (what the store said is handed in), decide what a
//! check means, or measure a wait on the wall clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use permatoken_state as store;

use crate::config::Policy;

/// The first retry after an unknown check, at most; and the soonest an expiry nearing brings the
/// next check (the interval, when shorter, for both).
pub const FIRST_RETRY: Duration = Duration::from_secs(60);

/// An interval shorter than this is warned of at start, with the calls an hour it costs.
pub const FREQUENT: Duration = Duration::from_secs(5 * 60);

/// The longest back-off step after unknown checks: 2^16 first retries, far past any interval.
const MAX_DOUBLINGS: u32 = 16;

/// How far ahead a due time may be: past it, [`Instant`] arithmetic could overflow.
const FARTHEST: Duration = Duration::from_secs(100 * 365 * 86_400);

/// What the schedule keeps of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    at: Instant,
    /// Unknown checks in a row, for the back-off.
    unknown_streak: u32,
}

/// Every token's next check, and every doctor checklist's next run, by token name.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// When the daemon started: when a token never scheduled is due.
    started_at: Instant,
    due: HashMap<String, Due>,
    doctor: HashMap<String, Instant>,
}

/// How long after a check the next one comes, given the token's policy, the time its soonest
/// expiry still had at the check (by the wall clock: expiry is Meta's wall time), how many unknown
/// checks in a row it has had (this one included) and the random draw `unit` in `[0, 1)` for the
/// jitter.
pub fn wait(
    policy: &Policy,
    expires_in: Option<Duration>,
    unknown_streak: u32,
    unit: f64,
) -> Duration {
    // The configuration refuses an interval under a second; zero would make a busy loop.
    let interval = policy.interval.max(Duration::from_secs(1));
    let first_retry = FIRST_RETRY.min(interval);
    let jitter = Duration::try_from_secs_f64(policy.jitter.as_secs_f64() * unit.clamp(0.0, 1.0))
        .unwrap_or(policy.jitter);
    let mut wait = interval.saturating_add(jitter);
    if let Some(left) = expires_in {
        // Sooner as expiry nears, but not in a loop as it comes.
        wait = wait.min((left / 4).max(first_retry));
    }
    if unknown_streak > 0 {
        // Back off from a minute (or the interval), doubling, never beyond the interval.
        let backoff = first_retry.saturating_mul(1 << (unknown_streak - 1).min(MAX_DOUBLINGS));
        wait = wait.min(backoff);
    }
    wait
}

/// The `/debug_token` calls an hour that checking one token every `interval` costs: each counts
/// against its app's hourly allowance, as a call of a batch does too.
pub fn calls_an_hour(interval: Duration) -> u64 {
    3600 / interval.as_secs().max(1)
}

/// When `at` comes on the wall clock, for people: `wall_now` plus how far `at` is from `now`.
pub fn wall_time(at: Instant, now: Instant, wall_now: Timestamp) -> Timestamp {
    let ahead = SignedDuration::try_from(at.saturating_duration_since(now)).unwrap_or_default();
    let behind = SignedDuration::try_from(now.saturating_duration_since(at)).unwrap_or_default();
    wall_now
        .saturating_add(ahead)
        .and_then(|t| t.saturating_sub(behind))
        .unwrap_or(wall_now)
}

/// How long ago `then` was at `now` on the wall clock; a time ahead of `now` (another machine's
/// clock, or this one stepped back) counts as now.
pub fn age(then: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(then)).unwrap_or_default()
}

fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait.min(FARTHEST)).unwrap_or(now)
}

impl Schedule {
    /// A schedule in which every token is due at `started_at`.
    pub fn new(started_at: Instant) -> Self {
        Self {
            started_at,
            due: HashMap::new(),
            doctor: HashMap::new(),
        }
    }

    /// When `name` is checked next (`started_at` if it never was scheduled).
    pub fn next(&self, name: &str) -> Instant {
        self.due.get(name).map_or(self.started_at, |d| d.at)
    }

    /// When `name` is checked next, if it was scheduled: what the page shows.
    pub fn scheduled(&self, name: &str) -> Option<Instant> {
        self.due.get(name).map(|d| d.at)
    }

    /// Whether `name` is due at `now`.
    pub fn is_due(&self, name: &str, now: Instant) -> bool {
        self.due.get(name).is_none_or(|d| d.at <= now)
    }

    /// The soonest next check among `names`; `None` without any.
    pub fn soonest<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Option<Instant> {
        names.into_iter().map(|name| self.next(name)).min()
    }

    /// Schedules `name` after a check at `now`: see [`wait`]. `unknown` says whether the check
    /// (of the token or of any of its backups) could not tell.
    pub fn checked(
        &mut self,
        name: &str,
        policy: &Policy,
        expires_in: Option<Duration>,
        unknown: bool,
        now: Instant,
        unit: f64,
    ) {
        let entry = self.entry(name, now);
        entry.unknown_streak = if unknown { entry.unknown_streak + 1 } else { 0 };
        entry.at = later(now, wait(policy, expires_in, entry.unknown_streak, unit));
    }

    /// `name`'s check was deferred at `now` (its app is rate-limited): it is due `wait` later, its
    /// back-off untouched, since no check was made.
    pub fn defer(&mut self, name: &str, wait: Duration, now: Instant) {
        self.entry(name, now).at = later(now, wait);
    }

    fn entry(&mut self, name: &str, now: Instant) -> &mut Due {
        self.due.entry(name.to_owned()).or_insert(Due {
            at: now,
            unknown_streak: 0,
        })
    }

    /// A new leader's schedule at `now` (`wall_now` on the wall clock): forgets every due time, then
    /// schedules each of `tokens` (name and policy) an interval after its latest check in `latest`
    /// (its time and expiry, as the shared state keeps them), as if this replica had made it. A token
    /// without a check there stays due at once. Each stored time is converted once, here: how long
    /// ago it was by the wall clock now (none, if ahead of it).
    pub fn resume<'a>(
        &mut self,
        tokens: impl IntoIterator<Item = (&'a str, &'a Policy)>,
        latest: &HashMap<String, (Timestamp, Option<Timestamp>)>,
        wall_now: Timestamp,
        now: Instant,
        unit: impl Fn() -> f64,
    ) {
        self.due.clear();
        for (name, policy) in tokens {
            let Some(&(at, expires_at)) = latest.get(name) else {
                continue;
            };
            // As after the check itself: only an expiry still ahead then brings it nearer.
            let expires_in = expires_at.filter(|e| *e > at).map(|e| age(at, e));
            let wait = wait(policy, expires_in, 0, unit());
            let due = later(now, wait.saturating_sub(age(at, wall_now)));
            self.due.insert(
                name.to_owned(),
                Due {
                    at: due,
                    unknown_streak: 0,
                },
            );
        }
    }

    /// Keeps only the tokens `keep` says are still configured.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.due.retain(|name, _| keep(name));
        self.doctor.retain(|name, _| keep(name));
    }

    /// Whether the doctor checklist of `name` is due at `now` (at once if it never ran).
    pub fn doctor_is_due(&self, name: &str, now: Instant) -> bool {
        self.doctor.get(name).is_none_or(|at| *at <= now)
    }

    /// The doctor checklist of `name` ran at `now`: next one `every` later.
    pub fn doctor_ran(&mut self, name: &str, every: Duration, now: Instant) {
        self.doctor.insert(name.to_owned(), later(now, every));
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
    const MINUTE: Duration = Duration::from_secs(60);

    /// `secs` after a moment fixed for the whole test run, on the monotonic clock.
    fn at(secs: u64) -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now) + Duration::from_secs(secs)
    }

    /// A wall time, `secs` after a fixed one.
    fn wall(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
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
        let p = policy(HOUR, secs(360));
        assert_eq!(wait(&p, None, 0, 0.0), HOUR);
        assert_eq!(wait(&p, None, 0, 0.5), HOUR + secs(180));
        // A draw out of range is held to the jitter.
        assert_eq!(wait(&p, None, 0, 7.0), HOUR + secs(360));
    }

    #[test]
    fn every_interval_is_honoured_down_to_a_second() {
        for interval in [1, 2, 30, 59, 60, 299] {
            let p = policy(secs(interval), Duration::ZERO);
            assert_eq!(wait(&p, None, 0, 0.0), secs(interval), "{interval}s");
        }
        // The README's example: 30 s means 30 s, with its jitter on top.
        assert_eq!(
            wait(&policy(secs(30), secs(3)), None, 0, 0.5),
            secs(30) + secs(3) / 2
        );
        // Zero never reaches here (the configuration refuses it), but would not make a busy loop.
        assert_eq!(
            wait(&policy(Duration::ZERO, Duration::ZERO), None, 0, 0.0),
            secs(1)
        );
    }

    #[test]
    fn an_expiry_ahead_brings_the_next_check_to_a_quarter_of_what_is_left() {
        let p = policy(HOUR, Duration::ZERO);
        // Two hours left: checked again in half an hour, not an hour.
        assert_eq!(wait(&p, Some(secs(7200)), 0, 0.0), secs(1800));
        // Far away: the interval.
        assert_eq!(wait(&p, Some(secs(86_400 * 30)), 0, 0.0), HOUR);
        // Nearly gone, or gone: never sooner than the first retry.
        assert_eq!(wait(&p, Some(secs(10)), 0, 0.0), FIRST_RETRY);
        assert_eq!(wait(&p, Some(Duration::ZERO), 0, 0.0), FIRST_RETRY);
        // A shorter interval is kept: nearing expiry never makes a check later.
        let p = policy(secs(20), Duration::ZERO);
        assert_eq!(wait(&p, Some(secs(10)), 0, 0.0), secs(20));
        assert_eq!(wait(&p, Some(secs(3600)), 0, 0.0), secs(20));
    }

    #[test]
    fn unknown_checks_back_off_from_a_minute_or_the_interval_doubling_to_the_interval() {
        let streaks = |interval: Duration| -> Vec<u64> {
            let p = policy(interval, Duration::ZERO);
            (1..=8)
                .map(|streak| wait(&p, None, streak, 0.0).as_secs())
                .collect()
        };
        assert_eq!(streaks(HOUR), [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(streaks(5 * MINUTE), [60, 120, 240, 300, 300, 300, 300, 300]);
        // Shorter than a minute: the interval from the first retry on.
        assert_eq!(streaks(secs(30)), [30; 8]);
        assert_eq!(streaks(secs(1)), [1; 8]);
        // A streak far past any interval neither overflows nor exceeds it.
        let p = policy(HOUR, Duration::ZERO);
        assert_eq!(wait(&p, None, u32::MAX, 0.0), HOUR);
        // An enormous interval neither overflows nor wraps.
        let p = policy(Duration::MAX, Duration::MAX);
        assert_eq!(wait(&p, None, 0, 1.0), Duration::MAX);
        let mut s = Schedule::new(at(0));
        s.checked("orders", &p, None, false, at(0), 1.0);
        assert!(!s.is_due("orders", at(10 * 365 * 86_400)));
    }

    #[test]
    fn what_an_interval_costs_in_calls_an_hour() {
        assert_eq!(calls_an_hour(secs(1)), 3600);
        assert_eq!(calls_an_hour(secs(30)), 120);
        assert_eq!(calls_an_hour(secs(299)), 12);
        assert_eq!(calls_an_hour(HOUR), 1);
        assert_eq!(calls_an_hour(Duration::ZERO), 3600);
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
    fn a_thirty_second_interval_checks_every_thirty_seconds() {
        let p = policy(secs(30), Duration::ZERO);
        let mut s = Schedule::new(at(0));
        let mut now = 0;
        for _ in 0..4 {
            assert!(s.is_due("orders", at(now)));
            s.checked("orders", &p, None, false, at(now), 0.0);
            assert!(!s.is_due("orders", at(now + 29)));
            now += 30;
        }
        // After an unknown check too: 30 s, not a minute.
        s.checked("orders", &p, None, true, at(now), 0.0);
        assert_eq!(s.next("orders"), at(now + 30));
    }

    #[test]
    fn a_deferred_check_is_due_when_the_limit_passes_and_keeps_its_streak() {
        let p = policy(HOUR, Duration::ZERO);
        let mut s = Schedule::new(at(0));
        s.defer("orders", secs(600), at(0));
        assert!(!s.is_due("orders", at(599)));
        assert!(s.is_due("orders", at(600)));
        s.checked("orders", &p, None, true, at(600), 0.0);
        s.defer("orders", secs(4399), at(601));
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
        // The new leader's clocks: wall(1000) is at(50) on its monotonic clock.
        let latest = HashMap::from([
            ("orders".to_owned(), (wall(100), None)),
            ("billing".to_owned(), (wall(200), Some(wall(200 + 7200)))),
            // Expired before its check: the interval, as after the check itself.
            ("dead".to_owned(), (wall(300), Some(wall(0)))),
            // Checked by a replica whose clock is ahead (or this one was stepped back): as if now.
            ("ahead".to_owned(), (wall(1000 + 7200), None)),
            // Longer ago than its interval: due at once.
            ("old".to_owned(), (wall(1000 - 7200), None)),
        ]);
        let tokens = ["orders", "billing", "dead", "ahead", "old", "new"];
        s.resume(tokens.map(|t| (t, &p)), &latest, wall(1000), at(50), || 0.0);
        assert_eq!(s.scheduled("orders"), Some(at(50 + 3600 - 900)));
        assert_eq!(s.scheduled("billing"), Some(at(50 + 1800 - 800)));
        assert_eq!(s.scheduled("dead"), Some(at(50 + 3600 - 700)));
        assert_eq!(s.scheduled("ahead"), Some(at(50 + 3600)));
        assert_eq!(s.scheduled("old"), Some(at(50)));
        // Never checked: due at once. Forgotten: what the old schedule said is gone.
        assert_eq!(s.scheduled("new"), None);
        assert!(s.is_due("new", at(0)));
        assert_eq!(s.scheduled("gone"), None);
    }

    #[test]
    fn a_due_time_is_shown_on_the_wall_clock_of_now() {
        assert_eq!(wall_time(at(130), at(100), wall(1000)), wall(1030));
        assert_eq!(wall_time(at(70), at(100), wall(1000)), wall(970));
        // The wall clock went back an hour since: the check is still 30 s away, shown so.
        assert_eq!(
            wall_time(at(130), at(100), wall(1000 - 3600)),
            wall(1030 - 3600)
        );
        assert_eq!(age(wall(0), wall(90)), secs(90));
        assert_eq!(age(wall(90), wall(0)), Duration::ZERO);
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
                        first_seen: wall(0),
                        last_seen: wall(0),
                        identity: None,
                    },
                    check: check.map(|(when, status)| store::CheckRecord {
                        key: key(k),
                        checked_at: wall(when),
                        status,
                        alert_state: "ok".into(),
                        valid: Some(true),
                        expires_at: Some(wall(when + 86_400)),
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
            HashMap::from([("orders".to_owned(), (wall(20), Some(wall(20 + 86_400))))])
        );
    }

    #[test]
    fn forgotten_tokens_leave_the_schedule_and_the_doctors() {
        let p = policy(HOUR, Duration::ZERO);
        let mut s = Schedule::new(at(0));
        s.checked("orders", &p, None, false, at(0), 0.0);
        s.doctor_ran("orders", secs(6 * 3600), at(0));
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
        s.doctor_ran("orders", secs(6 * 3600), at(0));
        assert!(!s.doctor_is_due("orders", at(6 * 3600 - 1)));
        assert!(s.doctor_is_due("orders", at(6 * 3600)));
    }
}
