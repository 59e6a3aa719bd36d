//! A blob larger than `--max-file-size` in history is streamed past, never held: the peak resident
//! memory of this process (`VmHWM`, its own test binary so that no other test shares the process)
//! stays far below the blob's size.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use permatoken_scan::{Options, scan_git};

/// The blob: larger than the default 50 MiB limit.
const BIG: usize = 96 << 20;

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

/// Peak resident memory of this process so far, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[test]
fn a_blob_over_the_size_limit_is_streamed_past_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q"]);
    // Written a MiB at a time, so that making it does not raise this process's peak either. Text, not
    // NULs: a blob that looks binary would be skipped only after being read.
    let mut big = std::fs::File::create(repo.join("dump.sql")).unwrap();
    let chunk = "INSERT INTO t VALUES (1, 'PERMATOKENTEST');\n"
        .repeat(1 << 20 >> 6)
        .into_bytes();
    let mut written = 0;
    while written < BIG {
        big.write_all(&chunk).unwrap();
        written += chunk.len();
    }
    drop(big);
    // A secret made at run time beside it: the small blob is still read and found.
    let secret: String = (0..32)
        .map(|i| char::from(b"0123456789abcdef"[(i * 7 + 3) % 16]))
        .collect();
    std::fs::write(repo.join(".env"), format!("FACEBOOK_APP_SECRET={secret}\n")).unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "-qm", "a dump and a secret"]);

    let before = peak_kib();
    let scan = scan_git(repo, &Options::default()).expect("the history is read");
    let after = peak_kib();
    assert_eq!(scan.stats.skipped_large, 1, "{:?}", scan.stats);
    assert_eq!(scan.findings.len(), 1);
    assert_eq!(scan.findings[0].path, ".env");
    let big_kib = (BIG >> 10) as u64;
    assert!(
        after < big_kib / 3,
        "peak resident memory {after} KiB (before the scan {before} KiB) for a {big_kib} KiB blob"
    );
}
