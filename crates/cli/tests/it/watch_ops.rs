//! Issue 16, item 5, as an operator sees it: `--log-format json` lines a collector can parse, with
//! no secret in any field, and the probes `/healthz` and `/readyz` of a real `watch`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use permatoken_sandbox::Running;
use serde_json::Value;

use crate::harness::{Test, app_lines, sandbox, token_of};
use crate::watch::{get, receiver};

/// Generous: liveness, never speed.
const DEADLINE: Duration = Duration::from_secs(60);

/// A `permatoken watch` daemon and its standard error, line by line.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Daemon {
    fn start(dir: &Path, sandbox: &Running, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_permatoken"))
            .arg("watch")
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("PERMATOKEN_GRAPH_URL", sandbox.url())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the permatoken binary runs");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a line holding `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.log.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!(
            "no `{needle}` within {DEADLINE:?}:\n{}",
            self.log.join("\n")
        );
    }

    /// The address of its endpoint, from the line that says it (text or JSON).
    fn addr(&mut self) -> String {
        let line = self.wait_for("serving the status page");
        let tail = line.split("http://").nth(1).expect("the address is logged");
        tail.split('/').next().unwrap().to_owned()
    }

    /// SIGTERM, the exit code, and every line it wrote.
    fn stop(mut self) -> (Option<i32>, Vec<String>) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < DEADLINE, "watch did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.log.push(line);
        }
        (status.code(), std::mem::take(&mut self.log))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("not within {DEADLINE:?}: {what}");
}

/// Each line is one JSON object with a timestamp, a level and a message, and holds none of
/// `secrets`; the parsed lines.
#[track_caller]
fn json_lines(log: &[String], secrets: &[&str]) -> Vec<Value> {
    assert!(!log.is_empty(), "nothing was logged");
    log.iter()
        .map(|line| {
            for secret in secrets {
                assert!(!line.contains(secret), "a secret in the log: {line}");
            }
            let json: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(json["timestamp"].is_string(), "{line}");
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                    .contains(&json["level"].as_str().unwrap_or("")),
                "{line}"
            );
            assert!(json["message"].is_string(), "{line}");
            json
        })
        .collect()
}

#[test]
fn json_logs_are_one_object_a_line_and_hold_no_secret() {
    let sandbox = sandbox();
    let (hook, seen) = receiver(200);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let secret_path = format!("PERMATOKENTEST-route-{}", std::process::id());
    std::fs::write(p.join("ops.url"), format!("{hook}/{secret_path}\n")).unwrap();
    std::fs::write(p.join("ops.key"), "PERMATOKENTEST-signing-key\n").unwrap();
    let mut config = String::from("[defaults]\ninterval = \"1h\"\n");
    for (name, scenario) in [("orders", "system-user"), ("billing", "password-changed")] {
        std::fs::write(
            p.join(format!("{name}.env")),
            format!(
                "WHATSAPP_ACCESS_TOKEN={}\n{}",
                token_of(&sandbox, scenario),
                app_lines(&sandbox)
            ),
        )
        .unwrap();
        config.push_str(&format!(
            "\n[[token]]\nname = \"{name}\"\nenv_file = \"{name}.env\"\nalerts = [\"ops\"]\n"
        ));
    }
    config.push_str(
        "\n[[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl_file = \"ops.url\"\nsecret_file = \"ops.key\"\n",
    );
    std::fs::write(p.join("permatoken.toml"), &config).unwrap();
    let app_secret = sandbox.app_secret().expose_secret().to_owned();
    let tokens = [
        token_of(&sandbox, "system-user"),
        token_of(&sandbox, "password-changed"),
    ];
    let secrets = [
        tokens[0].as_str(),
        tokens[1].as_str(),
        app_secret.as_str(),
        secret_path.as_str(),
        "PERMATOKENTEST",
    ];

    let args = [
        "--config",
        "permatoken.toml",
        "--state",
        "state.db",
        "--listen",
        "127.0.0.1:0",
    ];
    let mut watch = Daemon::start(
        p,
        &sandbox,
        &[&args[..], &["--log-format", "json"]].concat(),
        &[],
    );
    let addr = watch.addr();
    eventually("the dead token is alerted", || {
        !seen.lock().unwrap().is_empty()
    });
    watch.wait_for("sends alerts over plain http://");
    eventually("/healthz is ok", || {
        get(&addr, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    let (code, log) = watch.stop();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    let lines = json_lines(&log, &secrets);
    let dead = lines
        .iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.contains("dead")))
        .unwrap_or_else(|| panic!("the dead token is logged: {log:?}"));
    assert_eq!(dead["level"], "WARN", "{dead}");
    assert!(lines.iter().any(|l| l["message"] == "stopped"), "{log:?}");

    // `PERMATOKEN_LOG_FORMAT=json` does the same, for a unit file's environment.
    let once = Test::against(&sandbox)
        .env("PERMATOKEN_LOG_FORMAT", "json")
        .args(["watch", "--once", "--config"])
        .args([p.join("permatoken.toml").display().to_string()])
        .args(["--state", &p.join("once.db").display().to_string()])
        .run();
    assert_eq!(once.code, 2, "{}", once.stderr);
    let log: Vec<String> = once.stderr.lines().map(str::to_owned).collect();
    json_lines(&log, &secrets);
}
