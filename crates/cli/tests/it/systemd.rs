//! The examples under contrib/ that the README shows: the systemd units are accepted by
//! `systemd-analyze verify`, and the Kubernetes example's permatoken.toml by `watch --check-config`.

use std::path::Path;
use std::process::Command;

#[test]
fn the_example_units_verify() {
    let Ok(found) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing, and CI must run this test"
        );
        eprintln!("SKIPPED the_example_units_verify: no systemd-analyze on this machine");
        return;
    };
    assert!(found.status.success());
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        // verify checks that ExecStart's program exists: point it at the binary under test.
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "/usr/local/bin/permatoken",
            env!("CARGO_BIN_EXE_permatoken"),
        );
        std::fs::write(dir.path().join(&name), text).unwrap();
        names.push(format!("./{name}"));
    }
    assert!(names.len() >= 3, "{names:?}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
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
