//! What the real Graph API answers that the sandbox now answers too (`graph-api.md` §12), seen through
//! the binary; and `permatoken sandbox` keeping its admin API and CA file from other local users.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use crate::harness::{Test, app_lines, sandbox, token_of};

#[test]
fn a_token_with_one_character_changed_is_invalid_in_metas_words() {
    let sandbox = sandbox();
    let whole = token_of(&sandbox, "user-60d");
    let at = (40..whole.len())
        .find(|&i| {
            let b = whole.as_bytes();
            b[i] != b'Z' && b[i - 1] != b'Z' && b[i].is_ascii_lowercase()
        })
        .unwrap();
    let mut changed = whole.into_bytes();
    changed[at] = if changed[at] == b'q' { b'r' } else { b'q' };
    let changed = String::from_utf8(changed).unwrap();
    let out = Test::against(&sandbox)
        .write(
            ".env",
            &format!("WHATSAPP_ACCESS_TOKEN={changed}\n{}", app_lines(&sandbox)),
        )
        .args(["check", "--json"])
        .run();
    out.assert_code(2);
    assert_eq!(out.codes(), ["token_invalid"]);
    let report = out.json();
    let message = report["findings"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("The access token could not be decrypted"),
        "{message}"
    );
    assert_eq!(report["token"]["valid"], false);
    assert_eq!(report["token"]["never_expires"], serde_json::Value::Null);
    assert!(!out.stdout.contains(&changed) && !out.stderr.contains(&changed));
}

#[test]
fn an_invalidated_tokens_expires_at_0_is_not_never() {
    let sandbox = sandbox();
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "password-changed", true)
        .args(["check", "--json"])
        .run();
    out.assert_code(2);
    let token = &out.json()["token"];
    assert_eq!(token["type"], "USER", "debug_token still answered");
    assert_eq!(token["never_expires"], serde_json::Value::Null);
    assert_eq!(token["expires_at"], serde_json::Value::Null);
    assert_eq!(token["issued_at"], serde_json::Value::Null);
    assert_eq!(token["kind"], "unknown");
    assert_eq!(out.codes(), ["token_invalidated"]);

    // Alive with 0: a long-lived user token that does not expire by time; its data access does.
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "user-no-expiry", true)
        .args(["check", "--json"])
        .run();
    out.assert_code(0);
    let token = &out.json()["token"];
    assert_eq!(token["never_expires"], true);
    assert_eq!(token["kind"], "long_lived_user");
    let lapses: jiff::Timestamp = token["data_access_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(lapses > jiff::Timestamp::now());
    // Inside the warning window, the lapse of data access is said.
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "user-no-expiry", true)
        .args(["check", "--json", "--warn-days", "90"])
        .run();
    out.assert_code(0);
    assert_eq!(out.codes(), ["data_access_expiring"]);
}

#[test]
fn exchange_learns_the_lifetime_from_debug_token_when_the_answer_has_none() {
    let sandbox = sandbox();
    // The sandbox leaves `expires_in` out when a temporary API Setup token is exchanged.
    let temporary = token_of(&sandbox, "temporary-fresh");
    let (out, dir) = Test::against(&sandbox)
        .write(
            ".env",
            &format!("WHATSAPP_ACCESS_TOKEN={temporary}\n{}", app_lines(&sandbox)),
        )
        .args(["exchange", "--json"])
        .run_keep();
    out.assert_code(0);
    let report = out.json();
    assert_eq!(report["token"]["kind"], "long_lived_user");
    let expires: jiff::Timestamp = report["token"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = expires.duration_since(jiff::Timestamp::now()).as_secs();
    assert!((5_183_944 - 3600..=5_183_944).contains(&left), "{left}");
    let written = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    assert!(!written.contains(&temporary), "the new token was written");
    let new = written
        .lines()
        .find_map(|l| l.strip_prefix("WHATSAPP_ACCESS_TOKEN="))
        .unwrap();
    for secret in [&temporary, new] {
        assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));
    }
}

#[test]
fn an_expiry_without_a_subcode_is_an_expiry_for_scan_verify_too() {
    let sandbox = sandbox();
    let dead = token_of(&sandbox, "expired-no-subcode");
    let out = Test::against(&sandbox)
        .write(".env", &format!("WHATSAPP_ACCESS_TOKEN={dead}\n"))
        .args(["scan", "--verify", "--format", "json"])
        .run();
    out.assert_code(1);
    assert!(!out.stdout.contains(&dead) && !out.stderr.contains(&dead));
    let findings = out.json()["findings"].clone();
    assert_eq!(findings[0]["verified"], "expired", "{findings:#}");
}

/// `permatoken sandbox` with `args`, until its banner is printed: the child and the banner.
fn start_sandbox(args: &[&str], home: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_permatoken"))
        .arg("sandbox")
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("TMPDIR", home)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the permatoken binary runs");
    let stdout = child.stdout.take();
    match stdout.and_then(banner_of) {
        Some(banner) => (child, banner),
        None => {
            let out = child.wait_with_output();
            panic!("the sandbox ended before its banner: {out:?}");
        }
    }
}

/// The lines up to "Ctrl-C stops it", or `None` if the output ends before.
fn banner_of(stdout: impl Read) -> Option<String> {
    let mut banner = String::new();
    let mut lines = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line).ok()? == 0 {
            return None;
        }
        banner.push_str(&line);
        if line.starts_with("Ctrl-C stops it") {
            return Some(banner);
        }
    }
}

/// Ends the child as Ctrl-C would, by its own id, and waits for it.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn http_get(url: &str, path: &str, header: Option<(&str, &str)>) -> (u16, String) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let extra = header.map_or(String::new(), |(k, v)| format!("{k}: {v}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, answer)
}

#[test]
fn the_sandboxs_request_log_needs_the_admin_secret_of_the_banner() {
    let home = tempfile::tempdir().unwrap();
    let (child, banner) = start_sandbox(&[], home.path());
    let url = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("export PERMATOKEN_GRAPH_URL="))
        .unwrap()
        .to_owned();
    let header = permatoken_sandbox::ADMIN_HEADER;
    let secret = banner
        .split(&format!("{header}: "))
        .nth(1)
        .and_then(|rest| rest.get(..32))
        .unwrap_or_else(|| panic!("no admin secret in the banner:\n{banner}"))
        .to_owned();
    let token = banner
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("system-user "))
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    // A Graph call with the token: the log now holds its Authorization header.
    let (status, _) = http_get(
        &url,
        "/me",
        Some(("Authorization", &format!("Bearer {token}"))),
    );
    assert_eq!(status, 200);
    let (status, body) = http_get(&url, "/_sandbox/requests", None);
    assert_eq!(status, 401);
    assert!(!body.contains(&token));
    let (status, body) = http_get(
        &url,
        "/_sandbox/requests",
        Some((header, "0".repeat(32).as_str())),
    );
    assert_eq!(status, 401);
    assert!(!body.contains(&token));
    let (status, body) = http_get(&url, "/_sandbox/requests", Some((header, &secret)));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&token), "the log is there for its owner");
    stop(child);
}

#[cfg(unix)]
#[test]
fn the_sandboxs_ca_goes_into_a_private_folder_and_never_over_a_file() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let home = tempfile::tempdir().unwrap();
    let (child, banner) = start_sandbox(&["--tls"], home.path());
    let ca = banner
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("permatoken check --ca-file ")?;
            rest.split_whitespace().next()
        })
        .unwrap_or_else(|| panic!("no CA file in the banner:\n{banner}"));
    let ca = std::path::PathBuf::from(ca);
    let folder = ca.parent().unwrap().to_owned();
    assert!(
        folder.starts_with(home.path()),
        "in the temporary folder: {}",
        ca.display()
    );
    assert_ne!(folder, home.path(), "in a folder of its own");
    assert_eq!(mode(&folder), 0o700);
    assert_eq!(mode(&ca), 0o600);
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    stop(child);
    assert!(!folder.exists(), "the run's folder goes with the run");

    // A file already at --ca-out is neither overwritten nor written through.
    let taken = home.path().join("taken.pem");
    std::fs::write(&taken, "kept").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_permatoken"))
        .args(["sandbox", "--tls", "--ca-out"])
        .arg(&taken)
        .env_clear()
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "kept");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca-out"), "{err}");
}
