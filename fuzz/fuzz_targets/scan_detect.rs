//! Any bytes: the detectors return findings without panicking; each finding's line and column point
//! at its secret in the input, findings come in order, and no fingerprint or `Debug` output holds a
//! secret. Linear time: an input of at most 16 bytes is also scanned repeated to 64 KiB, the shape
//! of the crafted files that made the detectors quadratic (`secret` repeated). Under the fuzzer's
//! instrumentation the quadratic detectors took 7 s on `secret` so repeated, past `-timeout=2`; the
//! linear ones take milliseconds. (The crafted-input tests of `crates/scan` check the same at
//! megabytes, in CI.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use permatoken_scan::{Secret, scan_bytes};

/// What a short input is repeated to.
const AMPLIFIED: usize = 64 << 10;
/// Inputs up to this long are also scanned repeated.
const SHORT: usize = 16;
/// How many findings have their position checked (the check itself reads from the start).
const CHECKED: usize = 64;

/// The bytes at 1-based `line` and `column` (code points: bytes that do not continue a UTF-8 sequence).
fn at(data: &[u8], line: usize, column: usize) -> &[u8] {
    let text = data.split(|b| *b == b'\n').nth(line - 1).expect("the line exists");
    let mut points = 0;
    for (i, b) in text.iter().enumerate() {
        if !(0x80..0xc0).contains(b) {
            points += 1;
            if points == column {
                return &text[i..];
            }
        }
    }
    panic!("column {column} is past the end of line {line}");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let scan = scan_bytes("fuzz", data);
    assert_eq!(scan.stats.bytes, data.len() as u64);
    let mut previous = (0, 0);
    for (i, f) in scan.findings.iter().enumerate() {
        assert!(f.line >= 1 && f.column >= 1);
        assert!((f.line, f.column) > previous, "in order, no overlap");
        previous = (f.line, f.column);
        let (secret, id) = match f.secret() {
            Secret::AccessToken(t) => (t.expose_secret().to_owned(), None),
            Secret::AppSecret(s) => (s.expose_secret().to_owned(), None),
            Secret::AppToken(t) => (t.secret().expose_secret().to_owned(), Some(t.app_id())),
            _ => unreachable!("a kind the target does not know"),
        };
        if i < CHECKED {
            let here = at(data, f.line, f.column);
            match id {
                Some(id) => {
                    assert!(here.starts_with(id.as_bytes()), "the app id is where the finding says");
                    assert_eq!(f.app_id.as_deref(), Some(id));
                    assert!(find(here, secret.as_bytes()) <= Some(id.len() + 3));
                }
                None => assert!(here.starts_with(secret.as_bytes()), "the secret is where the finding says"),
            }
        }
        let shown = format!("{f:?}{}", f.fingerprint);
        assert!(!shown.contains(&secret), "a fingerprint never holds the secret");
    }
    if !data.is_empty() && data.len() <= SHORT {
        let repeated = data.repeat(AMPLIFIED / data.len());
        let scan = scan_bytes("fuzz", &repeated);
        assert_eq!(scan.stats.bytes, repeated.len() as u64);
    }
});
