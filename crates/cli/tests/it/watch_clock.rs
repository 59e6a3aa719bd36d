//! The wall clock of a running `permatoken watch` stepped back and forward an hour, as an NTP step
//! does (libfaketime, Debian's `faketime`, moves `CLOCK_REALTIME` only: `DONT_FAKE_MONOTONIC=1`):
//! the checks go on at their interval, and no reminder or `cannot_be_checked` comes of the jump.
//! What is asserted is what a user sees: the checks counted on `/metrics`, the alerts a local
//! receiver got, the decisions to alert in the log. Deadlines are generous: liveness, never speed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{app_lines, sandbox, token_of};
use crate::watch::{get, receiver};

const DEADLINE: Duration = Duration::from_secs(60);

/// Where Debian's `libfaketime` puts the library, if it is installed.
fn libfaketime() -> Option<PathBuf> {
    let out = Command::new("dpkg")
        .args(["-L", "libfaketime"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .find(|p| p.file_name().is_some_and(|n| n == "libfaketime.so.1"))
        .filter(|p| p.exists())
}

/// A `watch` whose wall clock is the real one shifted by what `offset_file` says (`+0`, `-1h`, …),
/// read afresh at every call.
struct Watch {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Watch {
    fn start(dir: &Path, url: &str, library: &Path, offset_file: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_permatoken"))
            .args([
                "watch",
                "--config",
                "permatoken.toml",
                "--state",
                "state.db",
            ])
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("PERMATOKEN_GRAPH_URL", url)
            .env("LD_PRELOAD", library)
            .env("FAKETIME_TIMESTAMP_FILE", offset_file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("DONT_FAKE_MONOTONIC", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the permatoken binary runs");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut watch = Self {
            child,
            addr: String::new(),
            lines,
            log: Vec::new(),
        };
        let serving = watch.wait_for("serving the status page");
        watch.addr = serving
            .split("http://")
            .nth(1)
            .and_then(|s| s.strip_suffix('/'))
            .expect("the address is logged")
            .to_owned();
        watch
    }

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

    /// The lines of the log so far that say a decision to alert (`state <from> -> <to>: …`).
    fn decisions(&mut self) -> Vec<String> {
        self.drain();
        self.log
            .iter()
            .filter(|l| l.contains(" state ") && l.contains(" -> "))
            .cloned()
            .collect()
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
    }

    /// The checks of `token` counted on `/metrics`, whatever their result.
    fn checks(&mut self, token: &str) -> u64 {
        self.drain();
        let Some((200, text)) = get(&self.addr, "/metrics") else {
            return 0;
        };
        let label = format!("token=\"{token}\"");
        text.lines()
            .filter(|l| l.starts_with("permatoken_checks") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|n| n as u64)
            .sum()
    }

    /// Waits until `token` has been checked `more` times more than now.
    fn checked_again(&mut self, token: &str, more: u64, after: &str) {
        let from = self.checks(token);
        let start = Instant::now();
        while self.checks(token) < from + more {
            assert!(
                start.elapsed() < DEADLINE,
                "{token} was checked {} time(s) in {DEADLINE:?} {after}, not {more}; log:\n{}",
                self.checks(token) - from,
                self.log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_stepped_wall_clock_neither_stops_the_checks_nor_raises_an_alert() {
    let Some(library) = libfaketime() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "libfaketime is missing (Debian's `faketime`), and CI must run this test"
        );
        eprintln!(
            "SKIPPED a_stepped_wall_clock_neither_stops_the_checks_nor_raises_an_alert: no libfaketime on this machine (apt-get install faketime)"
        );
        return;
    };
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let (hook, received) = receiver(200);
    let env = |scenario| {
        format!(
            "WHATSAPP_ACCESS_TOKEN={}\n{}",
            token_of(&sandbox, scenario),
            app_lines(&sandbox)
        )
    };
    std::fs::write(p.join("orders.env"), env("system-user")).unwrap();
    std::fs::write(p.join("gone.env"), env("expired")).unwrap();
    // `missing.env` is never written: that token cannot be read, so it is unknown at every check.
    // Half an hour of unknown, or of dead, would alert: a jump of the wall clock must not count.
    let config = format!(
        r#"[defaults]
interval = "2s"
jitter = "0s"
unknown_after = "30m"
remind_every = "30m"

[[token]]
name = "orders"
env_file = "orders.env"
alerts = ["ops"]

[[token]]
name = "gone"
env_file = "gone.env"
alerts = ["ops"]

[[token]]
name = "missing"
env_file = "missing.env"
alerts = ["ops"]

[[alert]]
name = "ops"
kind = "webhook"
url = "{hook}"
"#
    );
    std::fs::write(p.join("permatoken.toml"), config).unwrap();
    let offset = p.join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let mut watch = Watch::start(p, &sandbox.url(), &library, &offset);

    // The dead token's alert shows that alerts get through: their absence later means something.
    let start = Instant::now();
    while !received
        .lock()
        .unwrap()
        .iter()
        .any(|b| b.contains("\"dead\""))
    {
        assert!(start.elapsed() < DEADLINE, "no alert for the dead token");
        std::thread::sleep(Duration::from_millis(200));
    }
    watch.checked_again("orders", 2, "at first");
    let decided = watch.decisions();
    assert_eq!(decided.len(), 1, "{decided:#?}");
    assert!(decided[0].contains("state none -> dead"), "{decided:#?}");

    // An hour back: the checks go on every 2 s, not an hour later.
    std::fs::write(&offset, "-1h\n").unwrap();
    watch.checked_again("orders", 3, "after the wall clock went back an hour");
    watch.checked_again("missing", 2, "after the wall clock went back an hour");

    // Two hours on (an hour past the real time): the unreadable token has been unknown for seconds,
    // not an hour, and the dead token was alerted seconds ago: nothing to say.
    std::fs::write(&offset, "+1h\n").unwrap();
    watch.checked_again("orders", 5, "after the wall clock went forward");
    watch.checked_again("missing", 3, "after the wall clock went forward");
    // Decided at the round, logged before its end: none but the first.
    let decided = watch.decisions();
    assert_eq!(
        decided.len(),
        1,
        "no reminder nor cannot_be_checked: {decided:#?}"
    );
    let bodies = received.lock().unwrap().clone();
    let alerts: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).expect("an alert is JSON"))
        .collect();
    assert_eq!(
        alerts.len(),
        1,
        "only the dead token's alert, no reminder nor cannot_be_checked: {alerts:#?}"
    );
    assert_eq!(alerts[0]["token"], "gone");
    assert_eq!(alerts[0]["kind"], "change");
}
