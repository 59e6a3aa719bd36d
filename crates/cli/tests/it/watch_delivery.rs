//! Alerts reach people whatever the state and the receivers do, shown on the real daemon: a
//! token that dies while the state's disk (a real, full tmpfs) takes no write is alerted once, with
//! the id it is recorded under once space is freed, beside a `state_unwritable` alert and a failing
//! `/healthz`; a receiver that accepts the connection and never answers delays no other token's
//! checks, and what it never took stays due for the next start after SIGTERM.
//!
//! The tmpfs needs `mount` (root): where it is not permitted the test says so and is skipped,
//! unless `CI=true`, where it must run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use permatoken_sandbox::Running;
use serde_json::Value;

use crate::harness::{app_lines, sandbox, token_of};
use crate::watch::receiver;

/// Generous: a round every minute at most, on a loaded machine. Liveness, never speed.
const DEADLINE: Duration = Duration::from_secs(180);

/// A tmpfs mounted on a folder for the test's life, unmounted however the test ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (said loudly) where `mount` is not permitted; a failure under `CI=true`.
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Self(at.to_owned())),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true requires a tmpfs for the full-disk test: `mount` failed: {why}"
                );
                eprintln!("SKIPPED: a full disk needs `mount -t tmpfs` (run as root): {why}");
                None
            }
        }
    }

    /// Fills it to the last byte with one file; returns the file.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [65536usize, 4096, 512, 1] {
            let bytes = vec![0u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process of the test may still hold a file there.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A `permatoken watch` killed when the test ends, its stderr read line by line.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    addr: String,
}

impl Watch {
    fn start(dir: &Path, sandbox: &Running, state: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_permatoken"))
            .args([
                "watch",
                "--config",
                "permatoken.toml",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--state")
            .arg(state)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("PERMATOKEN_GRAPH_URL", sandbox.url())
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
            lines,
            log: Vec::new(),
            addr: String::new(),
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

    /// Waits for a line of stderr holding `needle`.
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

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(&self.addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        let addr = &self.addr;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    }

    /// The token `name` on `/api/tokens`.
    fn token(&self, name: &str) -> Option<Value> {
        let (_, body) = self.get("/api/tokens?per_page=100")?;
        let page: Value = serde_json::from_str(&body).ok()?;
        let tokens = page["tokens"].as_array()?;
        tokens.iter().find(|t| t["name"] == name).cloned()
    }

    /// SIGTERM, then the exit code and what is left of the log.
    fn stop(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
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
        (status.code(), self.log.join("\n"))
    }
}

impl Drop for Watch {
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
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("not within {DEADLINE:?}: {what}");
}

/// The JSON alerts a receiver got.
fn alerts(seen: &Arc<Mutex<Vec<String>>>) -> Vec<Value> {
    let bodies = seen.lock().unwrap().clone();
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).expect("an alert is JSON"))
        .collect()
}

/// One value of the state, read-only, beside the running daemon.
fn query(state: &Path, sql: &str) -> Vec<String> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let db = rusqlite::Connection::open_with_flags(state, flags).expect("the state opens");
    let mut statement = db.prepare(sql).unwrap();
    statement
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn env_for(sandbox: &Running, scenario: &str) -> String {
    format!(
        "WHATSAPP_ACCESS_TOKEN={}\n{}",
        token_of(sandbox, scenario),
        app_lines(sandbox)
    )
}

fn route(name: &str, url: &str, extra: &str) -> String {
    format!("\n[[alert]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\n{extra}")
}

#[test]
fn a_token_dying_on_a_full_disk_is_alerted_once_and_recorded_with_its_id_once_there_is_room() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let Some(disk) = Tmpfs::mount(&p.join("disk"), "4m") else {
        return;
    };
    let (hook, seen) = receiver(200);
    let config = format!(
        "[defaults]\ninterval = \"1h\"\n\n[[token_set]]\nname = \"clients\"\nenv_files = \"clients/*/.env\"\nalerts = [\"ops\"]\n{}",
        route("ops", &hook, "")
    );
    std::fs::write(p.join("permatoken.toml"), config).unwrap();
    std::fs::create_dir_all(p.join("clients/orders")).unwrap();
    std::fs::write(
        p.join("clients/orders/.env"),
        env_for(&sandbox, "system-user"),
    )
    .unwrap();
    let state = disk.0.join("state.db");
    let mut watch = Watch::start(p, &sandbox, &state);
    eventually("orders is checked and recorded", || {
        watch
            .token("clients/orders")
            .is_some_and(|t| t["last_check"].is_i64())
    });
    assert_eq!(watch.get("/healthz").unwrap().0, 200);

    // The disk fills; then a client's token dies (a new member of the set: checked at the next
    // round, within a minute).
    let filler = disk.fill();
    std::fs::create_dir_all(p.join("clients/billing")).unwrap();
    std::fs::write(
        p.join("clients/billing/.env"),
        env_for(&sandbox, "password-changed"),
    )
    .unwrap();
    eventually("the dead token and the full disk are alerted", || {
        let got = alerts(&seen);
        got.iter().any(|a| a["token"] == "clients/billing")
            && got.iter().any(|a| a["kind"] == "state_unwritable")
    });
    let (status, body) = watch.get("/healthz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("state not writable since"), "{body}");
    assert!(body.contains("full"), "what the state said: {body}");
    let got = alerts(&seen);
    let full = got
        .iter()
        .find(|a| a["kind"] == "state_unwritable")
        .unwrap();
    assert_eq!(full["token"], "permatoken-state", "{full}");
    assert!(
        full["message"]
            .as_str()
            .unwrap()
            .contains("cannot write its state"),
        "{full}"
    );
    let dead: Vec<&Value> = got
        .iter()
        .filter(|a| a["token"] == "clients/billing")
        .collect();
    assert_eq!(dead.len(), 1, "one alert, once: {got:?}");
    assert_eq!(dead[0]["state"], "dead", "{}", dead[0]);
    let id = dead[0]["id"].as_str().unwrap().to_owned();
    // The page says so, and shows the state decided though not recorded.
    let (_, page) = watch.get("/api/tokens").unwrap();
    let page: Value = serde_json::from_str(&page).unwrap();
    assert!(page["state_unwritable"]["reason"].is_string(), "{page}");
    assert_eq!(watch.token("clients/billing").unwrap()["state"], "dead");
    assert!(
        query(
            &state,
            "SELECT id FROM alerts WHERE token_name = 'clients/billing'"
        )
        .is_empty(),
        "the state took nothing"
    );

    // Room again: the decision is recorded under the id already delivered, settled as delivered.
    std::fs::remove_file(filler).unwrap();
    eventually("/healthz is ok again", || {
        watch.get("/healthz").is_some_and(|(s, _)| s == 200)
    });
    eventually("the delivery is recorded as delivered", || {
        query(
            &state,
            "SELECT d.status FROM deliveries d JOIN alerts a ON a.id = d.alert_id WHERE a.token_name = 'clients/billing'",
        ) == ["delivered"]
    });
    assert_eq!(
        query(
            &state,
            "SELECT id FROM alerts WHERE token_name = 'clients/billing'"
        ),
        [id.as_str()]
    );
    assert_eq!(
        query(
            &state,
            "SELECT alert_id FROM announced WHERE token_name = 'clients/billing'"
        ),
        [id.as_str()]
    );
    // A courier's pass and a round later, still one `dead`.
    watch.wait_for("the state can be written again");
    std::thread::sleep(Duration::from_secs(12));
    let dead = alerts(&seen)
        .into_iter()
        .filter(|a| a["token"] == "clients/billing")
        .count();
    assert_eq!(dead, 1, "never sent again");
    let (code, log) = watch.stop();
    assert_eq!(code, Some(0), "{log}");
    for scenario in ["system-user", "password-changed"] {
        assert!(
            !log.contains(&token_of(&sandbox, scenario)),
            "a token in the log"
        );
    }
}

/// A receiver that accepts each connection and never answers; how many it accepted.
fn hanging_receiver() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, accepted)
}

/// How many checks of `token` the sandbox got (`/debug_token`, alone or in a batch).
fn requests_with(sandbox: &Running, token: &str) -> usize {
    sandbox
        .requests()
        .iter()
        .filter(|r| r.query_param("input_token").as_deref() == Some(token))
        .count()
}

#[test]
fn a_receiver_that_never_answers_delays_no_check_and_keeps_its_alert_for_the_next_start() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let (hang, accepted) = hanging_receiver();
    // The interval is the shortest there is; today's floor makes it a minute.
    let config = |url: &str| {
        format!(
            "[defaults]\ninterval = \"1s\"\n\n[[token]]\nname = \"legacy\"\nenv_file = \"legacy.env\"\nalerts = [\"hang\"]\n\n[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\n{}",
            route("hang", url, "timeout = \"1h\"\n")
        )
    };
    std::fs::write(p.join("permatoken.toml"), config(&hang)).unwrap();
    std::fs::write(p.join("legacy.env"), env_for(&sandbox, "password-changed")).unwrap();
    std::fs::write(p.join("orders.env"), env_for(&sandbox, "system-user")).unwrap();
    let orders = token_of(&sandbox, "system-user");
    let state = p.join("state.db");
    let watch = Watch::start(p, &sandbox, &state);
    eventually(
        "the dead token's alert is in flight to the hanging receiver",
        || accepted.load(Ordering::SeqCst) > 0,
    );
    let before = requests_with(&sandbox, &orders);
    assert!(before > 0, "orders was checked in the first round");
    eventually("orders is checked again while the alert hangs", || {
        requests_with(&sandbox, &orders) > before
    });
    assert_eq!(
        watch.token("legacy").unwrap()["state"],
        "dead",
        "the round that raised the alert finished"
    );

    // SIGTERM: the attempt under way gets its grace, then the daemon stops; the alert stays due.
    let (code, log) = watch.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("left for the next start"), "{log}");
    assert_eq!(
        query(&state, "SELECT status FROM deliveries WHERE route = 'hang'"),
        ["pending"]
    );
    let id = query(&state, "SELECT id FROM alerts WHERE token_name = 'legacy'");
    assert_eq!(id.len(), 1);

    // The next start delivers it, with its id, where the route now leads.
    let (hook, seen) = receiver(200);
    std::fs::write(p.join("permatoken.toml"), config(&hook)).unwrap();
    let watch = Watch::start(p, &sandbox, &state);
    eventually("the pending alert is delivered at the next start", || {
        !seen.lock().unwrap().is_empty()
    });
    let got = alerts(&seen);
    assert_eq!(got[0]["id"], id[0].as_str(), "{got:?}");
    assert_eq!(got[0]["token"], "legacy");
    let (code, log) = watch.stop();
    assert_eq!(code, Some(0), "{log}");
}
