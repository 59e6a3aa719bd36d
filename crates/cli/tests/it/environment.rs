//! Hostile surroundings: variables that are not UTF-8, a reader that went away, a failure asked for
//! in JSON. Each ends in a clear message and an exit code, never a panic, never a secret.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};

use crate::harness::{Test, app_lines, sandbox, token_of};

/// A token-shaped value with a Latin-1 `é` in it, as a paste from the wrong terminal gives.
fn latin1_token() -> OsString {
    OsString::from_vec(b"EAAPERMATOKENTESTcanary\xe9xxxxxxxxxxxxxxxxxxxx".to_vec())
}

fn permatoken(args: &[&str], dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_permatoken"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .stdin(Stdio::null());
    cmd
}

#[track_caller]
fn assert_clean(stdout: &[u8], stderr: &[u8]) {
    for (name, bytes) in [("stdout", stdout), ("stderr", stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("canary"), "{name} shows the value:\n{text}");
        assert!(!text.contains("panicked"), "{name} shows a panic:\n{text}");
        assert!(!text.contains("internal error"), "{name}:\n{text}");
    }
}

#[test]
fn a_token_that_is_not_utf8_is_named_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    for json in [false, true] {
        let mut args = vec!["check"];
        if json {
            args.push("--json");
        }
        let out = permatoken(&args, dir.path())
            .env("WHATSAPP_ACCESS_TOKEN", latin1_token())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert_clean(&out.stdout, &out.stderr);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("`WHATSAPP_ACCESS_TOKEN` from the environment is not UTF-8 text"),
            "{stderr}"
        );
        assert!(stderr.contains("hint:"), "{stderr}");
        if json {
            let object: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(object["status"], "unknown");
            assert!(
                object["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("WHATSAPP_ACCESS_TOKEN")
            );
        }
    }
}

#[test]
fn an_option_variable_that_is_not_utf8_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = permatoken(&["check"], dir.path())
        .env(
            "PERMATOKEN_GRAPH_URL",
            OsString::from_vec(b"http://127.0.0.1:1/canary\xff".to_vec()),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_clean(&out.stdout, &out.stderr);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("`PERMATOKEN_GRAPH_URL`"), "{stderr}");
    // Refused before clap reads the arguments, yet `--json` still gets its one object.
    let out = permatoken(&["check", "--json"], dir.path())
        .env(
            "PERMATOKEN_GRAPH_URL",
            OsString::from_vec(b"http://127.0.0.1:1/canary\xff".to_vec()),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let object: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(object["status"], "unknown");
    let message = object["error"]["message"].as_str().unwrap();
    assert!(message.contains("`PERMATOKEN_GRAPH_URL`"), "{object:#}");
}

#[test]
fn a_state_folder_that_is_not_utf8_is_named_and_nothing_is_written() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "WHATSAPP_ACCESS_TOKEN={}\n{}",
        token_of(&sandbox, "short-lived"),
        app_lines(&sandbox)
    );
    std::fs::write(dir.path().join(".env"), &env).unwrap();
    let state = OsString::from_vec(b"/tmp/canary\xffstate".to_vec());
    let out = permatoken(&["exchange"], dir.path())
        .env("PERMATOKEN_GRAPH_URL", sandbox.url())
        .env("XDG_STATE_HOME", &state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_clean(&out.stdout, &out.stderr);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("`XDG_STATE_HOME` is not valid UTF-8") && stderr.contains("--no-backup"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".env")).unwrap(),
        env
    );
    assert!(sandbox.requests().is_empty(), "stopped before any call");

    // The daemon, which renews too, says the same at start.
    let out = permatoken(&["watch", "--once", "--state", "state.db"], dir.path())
        .env("PERMATOKEN_GRAPH_URL", sandbox.url())
        .env("XDG_STATE_HOME", &state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_clean(&out.stdout, &out.stderr);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("`XDG_STATE_HOME` is not valid UTF-8"),
        "{stderr}"
    );
}

#[test]
fn a_variable_we_do_not_read_is_ignored_whatever_its_bytes() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let out = permatoken(&["check", "--json"], dir.path())
        .env("PERMATOKEN_GRAPH_URL", sandbox.url())
        .env("WHATSAPP_ACCESS_TOKEN", token_of(&sandbox, "user-60d"))
        .env("SOMETHING_ELSE", latin1_token())
        .env(OsString::from_vec(b"NAME_\xff".to_vec()), "x")
        .output()
        .unwrap();
    assert_clean(&out.stdout, &out.stderr);
    let object: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(object["token"]["valid"], true, "{object:#}");
}

/// Standard output whose reader is gone before anything is written: every write fails with EPIPE.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

#[test]
fn a_reader_that_went_away_is_no_panic() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["check", "--json"][..],
        &["check"],
        &["check", "--json", "--env-file", "missing.env"],
        &["doctor", "--json"],
        &["completions", "bash"],
        &["--help"],
    ] {
        let out = permatoken(args, dir.path())
            .env("PERMATOKEN_GRAPH_URL", sandbox.url())
            .env("WHATSAPP_ACCESS_TOKEN", token_of(&sandbox, "user-60d"))
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_clean(&out.stdout, &out.stderr);
        assert!(
            matches!(out.status.code(), Some(0..=3)),
            "{args:?}: {out:?}"
        );
    }
}

#[test]
fn every_json_command_answers_a_failure_with_one_object() {
    // No token anywhere: each command stops before its first call, and says so in JSON.
    for args in [
        &["check", "--json"][..],
        &["doctor", "--json"],
        &["send-test", "--json", "--to", "+1 650 555 0100"],
        &["exchange", "--json"],
        &["refresh", "--json"],
    ] {
        let out = Test::new().args(args).run();
        out.assert_code(3);
        let object = out.json();
        assert_eq!(object["status"], "unknown", "{args:?}: {object:#}");
        assert!(
            object["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{args:?}: {object:#}"
        );
        assert!(object["error"]["hint"].is_string(), "{args:?}: {object:#}");
        assert!(out.stderr.contains("error:"), "{args:?}: {}", out.stderr);
    }
}

/// A Graph API stand-in whose every answer carries terminal escapes and a bidi override: a hostile
/// proxy or a spoofed endpoint. It answers `/me` with such a name and everything else with a 190
/// error whose message holds them. Serves `answers` connections, then stops.
fn hostile_graph(answers: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(answers) {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let me = String::from_utf8_lossy(&request).contains(" /v");
            let is_me = me && String::from_utf8_lossy(&request).contains("/me");
            let (status, body) = if is_me {
                (
                    "200 OK",
                    r#"{"id":"1234","name":"Evil\u001b]0;pwned\u0007 \u001b[31mRed\u202eexe.txt"}"#,
                )
            } else {
                (
                    "400 Bad Request",
                    r#"{"error":{"message":"Bad \u001b[2J\u001b[31mcleared\u202e","type":"OAuthException","code":190,"fbtrace_id":"A\u001b[0m"}}"#,
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn text_from_the_graph_api_cannot_drive_the_terminal() {
    let url = hostile_graph(16);
    let out = Test::new()
        .env("PERMATOKEN_GRAPH_URL", &url)
        .env(
            "WHATSAPP_ACCESS_TOKEN",
            "EAAPERMATOKENTESTxxxxxxxxxxxxxxxxxxxxxxxx",
        )
        .args(["check", "--color", "never"])
        .run();
    for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!text.contains('\u{1b}'), "{name} holds an escape:\n{text}");
        assert!(!text.contains('\u{7}'), "{name} holds a bell:\n{text}");
        assert!(
            !text.contains('\u{202e}'),
            "{name} holds a bidi override:\n{text}"
        );
    }
    assert!(
        out.stdout.contains("\\u{1b}"),
        "shown, escaped:\n{}",
        out.stdout
    );
}
