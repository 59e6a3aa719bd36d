//! Times as a person says them on the page: "expired 1 day ago", "expires in 7 days", "in 3 hours".
//! One unit, the largest that fits, rounded down (a token that expires in 1 day and 20 hours
//! "expires in 1 day": never later than it will); the exact UTC time stands beside it. The page's
//! script has the same rules (`span` in `script.js`), so the server's first rendering and the live
//! countdown agree.
//!
//! Must never: read a clock (every function takes `now`).

use crate::snapshot::UnixSeconds;

const UNITS: [(i64, &str, &str); 4] = [
    (86_400, "day", "days"),
    (3_600, "hour", "hours"),
    (60, "minute", "minutes"),
    (1, "second", "seconds"),
];

/// A length of time, `secs` (its sign ignored), in its largest unit: "3 hours", "1 day".
pub fn span(secs: i64) -> String {
    let secs = secs.saturating_abs();
    let (size, one, many) = UNITS
        .into_iter()
        .find(|(size, _, _)| secs >= *size)
        .unwrap_or(UNITS[3]);
    let n = secs / size;
    format!("{n} {}", if n == 1 { one } else { many })
}

/// When `at` is from `now`: "in 3 hours", "5 minutes ago", "now".
pub fn relative(at: UnixSeconds, now: UnixSeconds) -> String {
    let d = at.saturating_sub(now);
    match d.signum() {
        1 => format!("in {}", span(d)),
        -1 => format!("{} ago", span(d)),
        _ => "now".to_owned(),
    }
}

/// What is left of a token: "expires in 7 days", "expired 1 day ago", "never expires".
pub fn left(never_expires: bool, expires_at: Option<UnixSeconds>, now: UnixSeconds) -> String {
    match (never_expires, expires_at) {
        (true, _) => "never expires".to_owned(),
        (false, None) => "expiry unknown".to_owned(),
        (false, Some(at)) if at > now => format!("expires in {}", span(at - now)),
        (false, Some(at)) if at == now => "expired just now".to_owned(),
        (false, Some(at)) => format!("expired {} ago", span(now.saturating_sub(at))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60;
    const HOUR: i64 = 3_600;
    const DAY: i64 = 86_400;

    #[test]
    fn a_span_is_one_unit_rounded_down() {
        assert_eq!(span(0), "0 seconds");
        assert_eq!(span(1), "1 second");
        assert_eq!(span(59), "59 seconds");
        assert_eq!(span(MIN), "1 minute");
        assert_eq!(span(59 * MIN + 59), "59 minutes");
        assert_eq!(span(HOUR), "1 hour");
        assert_eq!(span(3 * HOUR + 6 * MIN + 28), "3 hours");
        assert_eq!(span(DAY + 3 * HOUR + 6 * MIN + 28), "1 day");
        assert_eq!(span(DAY + 23 * HOUR), "1 day");
        assert_eq!(span(7 * DAY), "7 days");
        assert_eq!(span(400 * DAY), "400 days");
        assert_eq!(span(-2 * HOUR), "2 hours");
        assert_eq!(span(i64::MIN), format!("{} days", i64::MAX / DAY));
    }

    #[test]
    fn what_is_left_reads_as_a_sentence() {
        let now = 1_800_000_000;
        assert_eq!(
            left(false, Some(now - DAY - 3 * HOUR - 6 * MIN - 28), now),
            "expired 1 day ago"
        );
        assert_eq!(
            left(false, Some(now + 7 * DAY + 5), now),
            "expires in 7 days"
        );
        assert_eq!(left(false, Some(now + 3 * HOUR), now), "expires in 3 hours");
        assert_eq!(left(false, Some(now), now), "expired just now");
        assert_eq!(left(true, None, now), "never expires");
        assert_eq!(left(false, None, now), "expiry unknown");
    }

    #[test]
    fn relative_times_say_which_way() {
        let now = 1_800_000_000;
        assert_eq!(relative(now + 3 * HOUR, now), "in 3 hours");
        assert_eq!(relative(now - 5 * MIN - 10, now), "5 minutes ago");
        assert_eq!(relative(now, now), "now");
        assert_eq!(
            relative(i64::MIN, i64::MAX),
            format!("{} days ago", i64::MAX / DAY)
        );
    }
}
