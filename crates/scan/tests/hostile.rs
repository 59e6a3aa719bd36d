//! Crafted inputs that took the detectors quadratic time: megabytes of the words and characters a
//! detector stops at. Each is sized so that the quadratic implementation (the key scanned back and
//! forth to the ends of the buffer around every match, the line counted from the start of the buffer
//! for every finding) would need from hundreds of billions to trillions of steps — hours — while the
//! linear one reads it in well under a second. No timing is asserted: a quadratic regression shows as a
//! test that does not finish, and CI's timeout catches it.

use permatoken_scan::{Kind, Secret, scan_bytes};

/// The size of each crafted buffer.
const SIZE: usize = 3 << 20;

fn repeated(unit: &str) -> Vec<u8> {
    unit.repeat(SIZE / unit.len()).into_bytes()
}

fn hex(n: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"0123456789abcdef"[(x % 16) as usize])
        })
        .collect()
}

#[test]
fn megabytes_of_what_a_detector_stops_at_are_read_in_linear_time() {
    // `secret` alone on one line: every match used to read its key to both ends of the buffer and
    // look for the end of the line to its end; `=` and `:` are what a value is looked for after.
    for unit in [
        "secret", "SECRET_", "secret=", "secret:", "EAA", "EAA ", "|", "%7C", "=", "1|", "app_id=",
    ] {
        let scan = scan_bytes("crafted", &repeated(unit));
        assert!(scan.findings.is_empty(), "{unit}: {:?}", scan.findings);
        assert!(scan.stats.bytes > (SIZE - unit.len()) as u64);
    }
}

#[test]
fn a_hundred_thousand_findings_on_one_line_are_counted_in_one_pass() {
    // One line of app tokens: every finding used to count its line and column from the start of the
    // buffer and search its whole line for `permatoken:allow`.
    let app = 1_234_567_890_123u64;
    let secret = hex(32, 7);
    let unit = format!("{app}|{secret} ");
    let count = SIZE / unit.len();
    let mut text = unit.repeat(count);
    text.push('\n');
    text.push_str(&format!("é FACEBOOK_APP_SECRET={}\n", hex(32, 9)));
    let scan = scan_bytes("crafted", text.as_bytes());
    assert_eq!(scan.findings.len(), count + 1);
    let last_on_line = &scan.findings[count - 1];
    assert_eq!(
        (last_on_line.line, last_on_line.column),
        (1, (count - 1) * unit.len() + 1)
    );
    assert_eq!(last_on_line.kind, Kind::AppToken);
    assert_eq!(last_on_line.app_id.as_deref(), Some("1234567890123"));
    let after = &scan.findings[count];
    assert_eq!(
        (after.kind, after.line, after.column),
        (Kind::AppSecret, 2, 23),
        "the column counts code points: é is one"
    );
    match last_on_line.secret() {
        Secret::AppToken(token) => {
            assert_eq!(token.app_id(), app.to_string());
            assert_eq!(token.secret().expose_secret(), secret);
        }
        other => panic!("an app token, not {other:?}"),
    }
    let shown = format!("{:?}", scan.findings[0]) + &last_on_line.fingerprint;
    assert!(!shown.contains(&secret), "never the secret: {shown}");
}

#[test]
fn an_allow_comment_at_the_end_of_a_long_line_silences_every_finding_on_it() {
    let unit = format!("1234567890123|{} ", hex(32, 3));
    let count = SIZE / unit.len();
    let text = unit.repeat(count) + "# permatoken:allow\n" + &unit + "\n";
    let scan = scan_bytes("crafted", text.as_bytes());
    assert_eq!(scan.stats.allowed, count as u64);
    assert_eq!(scan.findings.len(), 1);
    assert_eq!((scan.findings[0].line, scan.findings[0].column), (2, 1));
}

#[test]
fn many_lines_of_findings_are_counted_in_one_pass() {
    // Each finding used to count the lines before it from the start of the buffer.
    let unit = format!("APP_TOKEN=1234567890123|{}\n", hex(32, 5));
    let count = SIZE / unit.len();
    let scan = scan_bytes("crafted", unit.repeat(count).as_bytes());
    assert_eq!(scan.findings.len(), count);
    let last = scan.findings.last().unwrap();
    assert_eq!(
        (last.kind, last.line, last.column),
        (Kind::AppToken, count, 11)
    );
}

#[test]
fn one_blob_at_a_hundred_thousand_paths_is_read_in_linear_time() {
    // Each path of a blob used to be compared with every path the blob had already: a crafted
    // commit of one blob at 300,000 paths (made here through the index, no files written) cost their
    // square (45 billion comparisons here).
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    let git = |args: &[&str], input: Option<&[u8]>| -> String {
        let mut child = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = input {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    git(&["init", "-q"], None);
    let empty = git(&["hash-object", "-w", "--stdin"], Some(b"nothing to see\n"));
    let text = format!("FACEBOOK_APP_SECRET={}\n", hex(32, 13));
    let secret = git(&["hash-object", "-w", "--stdin"], Some(text.as_bytes()));
    let paths = 300_000;
    let mut index: String = (0..paths)
        .map(|i| format!("100644 {empty}\td{}/f{i}.txt\n", i % 100))
        .collect();
    index.push_str(&format!("100644 {secret}\t.env\n"));
    git(&["update-index", "--index-info"], Some(index.as_bytes()));
    let tree = git(&["write-tree"], None);
    let commit = git(&["commit-tree", &tree, "-m", "one blob, many paths"], None);
    git(&["update-ref", "HEAD", &commit], None);
    let scan = permatoken_scan::scan_git(repo, &permatoken_scan::Options::default()).unwrap();
    assert_eq!(scan.stats.blobs, 2, "each distinct blob is read once");
    assert_eq!(scan.findings.len(), 1);
    assert_eq!(scan.findings[0].path, ".env");
    assert_eq!(scan.findings[0].at_head, Some(true));
}

#[test]
fn a_large_baseline_is_applied_in_linear_time() {
    // Every finding used to be compared with every baseline entry: 150,000 of each, their product.
    let count = 150_000;
    let text: String = (0..count)
        .map(|i| format!("1234567890123|{}\n", hex(32, i as u64 * 2 + 1)))
        .collect();
    let first = scan_bytes("crafted", text.as_bytes());
    assert_eq!(first.findings.len(), count);
    let baseline = permatoken_scan::Baseline::of(&first);
    let mut again = scan_bytes("crafted", text.as_bytes());
    baseline.apply(&mut again);
    assert!(again.findings.is_empty());
    assert_eq!(again.stats.baselined, count as u64);
}
