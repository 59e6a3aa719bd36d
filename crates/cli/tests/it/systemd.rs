//! The examples under contrib/ that the README shows: the systemd units are accepted by
//! `systemd-analyze verify`, the packaged watch unit is rated "OK" or better by `systemd-analyze
//! security`, and the Kubernetes example's permatoken.toml and the package's
//! /etc/permatoken/permatoken.toml are accepted by `watch --check-config`.

use std::path::Path;
use std::process::Command;

/// Whether `systemd-analyze` is here; outside CI a test may skip without it, saying so.
fn systemd_analyze(test: &str) -> bool {
    let Ok(found) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing, and CI must run this test"
        );
        eprintln!("SKIPPED {test}: no systemd-analyze on this machine");
        return false;
    };
    assert!(found.status.success());
    true
}

/// The units of contrib/systemd copied into a temporary folder, their `ExecStart=` pointed at the
/// binary under test (verify checks that the program exists), and their names as `./NAME`.
fn units_under_test() -> (tempfile::TempDir, Vec<String>) {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/bin/permatoken", env!("CARGO_BIN_EXE_permatoken"));
        std::fs::write(dir.path().join(&name), text).unwrap();
        names.push(format!("./{name}"));
    }
    names.sort();
    (dir, names)
}

#[test]
fn the_example_units_verify() {
    if !systemd_analyze("the_example_units_verify") {
        return;
    }
    let (dir, names) = units_under_test();
    assert!(names.len() >= 3, "{names:?}");
    assert!(names.contains(&"./permatoken-watch.service".to_owned()));
    // The man page its Documentation= names is installed by the package, not here: `.ci/run`
    // verifies the installed unit with it.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&names)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_packaged_watch_unit_is_rated_ok_or_better_by_systemd_analyze_security() {
    if !systemd_analyze("the_packaged_watch_unit_is_rated_ok_or_better_by_systemd_analyze_security")
    {
        return;
    }
    let (dir, _) = units_under_test();
    let unit = std::fs::read_to_string(dir.path().join("permatoken-watch.service")).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "User=permatoken",
        "StateDirectory=permatoken",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in the unit");
    }
    assert!(
        unit.lines().any(|l| l.starts_with("WatchdogSec=")),
        "no WatchdogSec="
    );
    let security = |threshold: &str| {
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={threshold}"))
            .arg("./permatoken-watch.service")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // systemd rates exposure from 0 to 100 (shown as 0.0 to 10.0): below 10 "SAFE", below 50 "OK",
    // then "MEDIUM", "EXPOSED", "UNSAFE". A rating above the threshold exits non-zero.
    let ok = security("49");
    let text = String::from_utf8_lossy(&ok.stdout);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default();
    assert!(
        ok.status.success() && (overall.contains(" OK ") || overall.contains(" SAFE ")),
        "rated above OK: {overall}\n{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The threshold bites: a unit without the hardening would not pass it (the test can fail).
    let bare: String = unit
        .lines()
        .filter(|l| !l.contains("=") || l.starts_with("Type=") || l.starts_with("ExecStart="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("permatoken-watch.service"), bare).unwrap();
    assert!(!security("49").status.success(), "a bare unit passed");
}

#[test]
fn the_kubernetes_examples_configuration_is_valid() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../contrib/kubernetes/permatoken-watch.yaml"),
    )
    .unwrap();
    // The ConfigMap's `permatoken.toml: |` block: its lines indented deeper than the key.
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim() != "permatoken.toml: |");
    let key = lines.next().expect("the ConfigMap holds permatoken.toml");
    let indent = key.len() - key.trim_start().len();
    let toml: String = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .map(|l| format!("{}\n", l.get(indent + 2..).unwrap_or("")))
        .collect();
    assert!(toml.contains("[[token_set]]"), "{toml}");
    let out = crate::harness::Test::new()
        .write("permatoken.toml", &toml)
        .args(["watch", "--config", "permatoken.toml", "--check-config"])
        .run();
    out.assert_code(0);
    assert!(
        out.stdout.contains("1 token set(s), 1 alert route(s)"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_packages_configuration_example_is_valid() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/deb/permatoken.toml"),
    )
    .unwrap();
    assert!(example.contains("state = \"/var/lib/permatoken/state.db\""));
    let out = crate::harness::Test::new()
        .write("permatoken.toml", &example)
        .args(["watch", "--config", "permatoken.toml", "--check-config"])
        .run();
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("is valid: 1 token(s), 0 token set(s), 0 alert route(s)"),
        "{}",
        out.stdout
    );
}
