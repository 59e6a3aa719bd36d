//! Several `permatoken watch` replicas on one PostgreSQL state (a cluster started for the test, see
//! crates/state/tests/it/pg_cluster.rs), as real processes: exactly one leads (`permatoken_leader`
//! on /metrics), only the leader calls the Graph API, and a standby takes over when the leader is
//! killed, or stopped for longer than the lease (the stopped one, resumed, stands by). Each replica
//! talks to a sandbox of its own, so each sandbox's request log is one replica's Graph calls.
//! The token belongs to neither sandbox (each says it is invalid): what counts here is who asks.
//! Signals are sent with the `kill` command. Deadlines are generous: liveness, never speed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::watch_postgres::pg_cluster::{PgCluster, WATCH};
use permatoken_sandbox::Running;

use crate::harness::{app_lines, sandbox, token_of};

pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// `orders` is checked by the first leader; `late`'s file appears only after that round, so that a
/// new leader, which takes up the schedule from the shared state, has exactly one token to check at
/// once: the one nobody could check yet.
const CONFIG: &str = "[defaults]\ninterval = \"1h\"\n\n[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\n\n[[token]]\nname = \"late\"\nenv_file = \"late.env\"\n";

/// One `watch` replica: its process, its sandbox, its HTTP address and its stderr so far.
pub(crate) struct Replica {
    child: Child,
    pub(crate) sandbox: Running,
    pub(crate) addr: String,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Replica {
    /// A replica with a 3 s lease, so that a stopped leader is fenced soon.
    fn start(dir: &Path, url: &str, pg: &PgCluster) -> Self {
        Self::start_with(dir, url, pg, &[("PERMATOKEN_LEADER_LEASE", "3")])
    }

    /// A replica of `permatoken.toml` in `dir`, its state at `url`, with `env` added to the
    /// environment it starts with.
    pub(crate) fn start_with(dir: &Path, url: &str, pg: &PgCluster, env: &[(&str, &str)]) -> Self {
        let sandbox = sandbox();
        let mut child = Command::new(env!("CARGO_BIN_EXE_permatoken"))
            .args(["watch", "--config", "permatoken.toml", "--state", url])
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("PGPASSWORD", pg.password())
            .envs(env.iter().copied())
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
        let mut replica = Self {
            child,
            sandbox,
            addr: String::new(),
            lines,
            log: Vec::new(),
        };
        let serving = replica.wait_for("serving the status page");
        replica.addr = serving
            .split("http://")
            .nth(1)
            .and_then(|s| s.strip_suffix('/'))
            .expect("the address is logged")
            .to_owned();
        replica
    }

    pub(crate) fn wait_for(&mut self, needle: &str) -> String {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "no `{needle}` within {DEADLINE:?}; stderr so far:\n{}",
            self.log.join("\n")
        );
    }

    /// `permatoken_leader` on its /metrics, when it answers.
    pub(crate) fn leader(&self) -> Option<u8> {
        let body = get(&self.addr, "/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix("permatoken_leader "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// `/api/tokens` as JSON, when it answers.
    pub(crate) fn page(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&get(&self.addr, "/api/tokens")?).ok()
    }

    pub(crate) fn graph_calls(&self) -> usize {
        self.sandbox.requests().len()
    }

    /// The Graph calls that carried `token` (as the token inspected, or as the caller).
    pub(crate) fn calls_about(&self, token: &str) -> usize {
        self.sandbox
            .requests()
            .iter()
            .filter(|r| {
                r.target().contains(token)
                    || r.body.contains(token)
                    || r.authorization
                        .as_deref()
                        .is_some_and(|a| a.contains(token))
            })
            .count()
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("the kill command runs");
        assert!(status.success());
    }

    /// Its exit status, once it has exited.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Its stderr so far, the lines waiting read too.
    pub(crate) fn log(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    pub(crate) fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.log.push(line);
        }
        self.log
    }
}

pub(crate) fn get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_owned())
}

pub(crate) fn eventually(what: &str, f: impl FnMut() -> bool) {
    eventually_within(DEADLINE, what, f);
}

/// Polls `f` until it holds; panics after `deadline`, which is liveness, never a speed.
pub(crate) fn eventually_within(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("not within {deadline:?}: {what}");
}

/// Two replicas started on one database, once exactly one of them leads: (leader, standby).
pub(crate) fn elect(a: Replica, b: Replica) -> (Replica, Replica) {
    eventually("exactly one replica leads", || {
        matches!(
            (a.leader(), b.leader()),
            (Some(1), Some(0)) | (Some(0), Some(1))
        )
    });
    if a.leader() == Some(1) {
        (a, b)
    } else {
        (b, a)
    }
}

/// The tokens of `orders` and `late`.
struct Tokens {
    orders: String,
    late: String,
}

/// Two replicas on one database, once exactly one of them leads and has checked `orders`:
/// (leader, standby, the tokens), `late`'s file written after that first round.
fn two_replicas(dir: &Path, pg: &PgCluster) -> (Replica, Replica, Tokens) {
    pg.create_database("fleet", WATCH);
    let url = pg.url(WATCH, "fleet", "?sslmode=disable");
    let tokens = sandbox();
    let orders = token_of(&tokens, "system-user");
    let late = token_of(&tokens, "user-60d");
    let env = format!("WHATSAPP_ACCESS_TOKEN={orders}\n{}", app_lines(&tokens));
    std::fs::write(dir.join("permatoken.toml"), CONFIG).unwrap();
    std::fs::write(dir.join("orders.env"), env).unwrap();
    let a = Replica::start(dir, &url, pg);
    let b = Replica::start(dir, &url, pg);
    let (leader, standby) = elect(a, b);
    eventually("the leader checks its token", || leader.graph_calls() > 0);
    eventually("the leader's first round is published", || {
        get(&leader.addr, "/api/tokens").is_some_and(|page| page.contains("\"late\""))
    });
    let env = format!("WHATSAPP_ACCESS_TOKEN={late}\n{}", app_lines(&tokens));
    std::fs::write(dir.join("late.env"), env).unwrap();
    (leader, standby, Tokens { orders, late })
}

/// A new leader checks at once the token nobody could check, and not the one its predecessor
/// checked within the interval.
fn the_new_leader_takes_up_the_schedule(new: &Replica, tokens: &Tokens) {
    eventually(
        "the new leader checks the token nobody could check yet",
        || new.calls_about(&tokens.late) > 0,
    );
    assert_eq!(
        new.calls_about(&tokens.orders),
        0,
        "the new leader checked again a token checked within its interval"
    );
}

#[test]
fn one_replica_leads_and_a_standby_takes_over_when_the_leader_is_killed() {
    let Some(pg) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut standby, tokens) = two_replicas(dir.path(), &pg);
    assert_eq!(standby.leader(), Some(0));
    // The standby serves what the leader recorded in the shared state.
    eventually(
        "the standby shows orders' check and chart from the shared state",
        || {
            get(&standby.addr, "/api/tokens").is_some_and(|page| {
                let page: serde_json::Value = serde_json::from_str(&page).unwrap_or_default();
                page["leader"] == false
                    && page["tokens"].as_array().is_some_and(|tokens| {
                        tokens.iter().any(|t| {
                            t["name"] == "orders" && !t["last_check"].is_null()
                                // Its chart read from the shared state too.
                                && t["history"].as_array().is_some_and(|h| !h.is_empty())
                        })
                    })
            })
        },
    );
    assert_eq!(standby.graph_calls(), 0, "a standby called the Graph API");

    leader.signal("-KILL");
    eventually("the standby leads once the leader is killed", || {
        standby.leader() == Some(1)
    });
    the_new_leader_takes_up_the_schedule(&standby, &tokens);
    standby.wait_for("this replica now leads");
    leader.stop();
    standby.stop();
}

#[test]
fn a_stopped_leader_is_fenced_after_the_lease_and_stands_by_when_resumed() {
    let Some(pg) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, standby, tokens) = two_replicas(dir.path(), &pg);
    assert_eq!(standby.graph_calls(), 0, "a standby called the Graph API");

    // A stopped process keeps its session open: only the lease ends it.
    leader.signal("-STOP");
    eventually("the standby leads after the lease", || {
        standby.leader() == Some(1)
    });
    the_new_leader_takes_up_the_schedule(&standby, &tokens);
    let before = leader.graph_calls();
    leader.signal("-CONT");
    leader.wait_for("this replica stands by");
    eventually("the resumed one reports standby", || {
        leader.leader() == Some(0)
    });
    assert_eq!(standby.leader(), Some(1), "two leaders");
    assert_eq!(
        leader.graph_calls(),
        before,
        "the fenced replica called the Graph API"
    );
    let log = leader.stop().join("\n");
    standby.stop();
    assert!(
        !log.contains("PERMATOKENTEST") && !log.contains(pg.password()),
        "{log}"
    );
}

#[test]
fn a_lease_that_is_not_a_number_of_seconds_is_refused_before_anything_runs() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("fleet", WATCH);
    let sandbox = sandbox();
    let env = format!(
        "WHATSAPP_ACCESS_TOKEN={}\n{}",
        token_of(&sandbox, "system-user"),
        app_lines(&sandbox)
    );
    let out = crate::harness::Test::against(&sandbox)
        .write("permatoken.toml", CONFIG)
        .write("orders.env", &env)
        .env("PGPASSWORD", pg.password())
        .env("PERMATOKEN_LEADER_LEASE", "1s")
        .args([
            "watch",
            "--config",
            "permatoken.toml",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--state", &pg.url(WATCH, "fleet", "?sslmode=disable")])
        .run();
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("PERMATOKEN_LEADER_LEASE"),
        "{}",
        out.stderr
    );
    assert!(sandbox.requests().is_empty(), "a Graph call was made");
}
