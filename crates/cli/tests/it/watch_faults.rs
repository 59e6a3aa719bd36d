//! `permatoken watch` replicas through real faults of their PostgreSQL state (issue 15, items 9
//! and 12): the server stopped and started again, and a TCP proxy between a replica and the server
//! that stops forwarding without closing (a blackhole, as a partition or a dropping firewall does).
//! What is asserted is what an operator sees: the process alive, `/healthz`, the page,
//! `permatoken_leader` on `/metrics`, the log. Deadlines are liveness (the lease plus slack), never
//! a speed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{app_lines, sandbox, token_of};
use crate::watch_leader::{Replica, eventually, eventually_within, get};
use crate::watch_postgres::pg_cluster::{PgCluster, WATCH};

/// The lease the replicas here run with: short, so that a fault shows soon.
const LEASE: &str = "3";

/// The lease and enough slack for a loaded machine: how long `permatoken_leader` may lag.
const WITHIN_LEASE: Duration = Duration::from_secs(20);

const CONFIG: &str =
    "[defaults]\ninterval = \"1h\"\n\n[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\n";

fn setup(dir: &Path, pg: &PgCluster) -> String {
    pg.create_database("fleet", WATCH);
    let tokens = sandbox();
    let env = format!(
        "WHATSAPP_ACCESS_TOKEN={}\n{}",
        token_of(&tokens, "system-user"),
        app_lines(&tokens)
    );
    std::fs::write(dir.join("permatoken.toml"), CONFIG).unwrap();
    std::fs::write(dir.join("orders.env"), env).unwrap();
    pg.url(WATCH, "fleet", "?sslmode=disable")
}

fn replica(dir: &Path, url: &str, pg: &PgCluster) -> Replica {
    Replica::start_with(dir, url, pg, &[("PERMATOKEN_LEADER_LEASE", LEASE)])
}

/// The status code and body of `GET path`, when it answers.
fn status_of(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_owned()))
}

/// A TCP proxy on loopback to `port`; [`Proxy::blackhole`] makes it swallow every byte both ways
/// from then on, its connections left open, and connect nowhere for the new ones.
struct Proxy {
    port: u16,
    forwarding: Arc<AtomicBool>,
}

impl Proxy {
    fn to(port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let forwarding = Arc::new(AtomicBool::new(true));
        let proxy = Self {
            port: listener.local_addr().unwrap().port(),
            forwarding: forwarding.clone(),
        };
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let forwarding = forwarding.clone();
                std::thread::spawn(move || connect(client, port, forwarding));
            }
        });
        proxy
    }

    fn blackhole(&self) {
        self.forwarding.store(false, Ordering::SeqCst);
    }
}

fn connect(client: TcpStream, port: u16, forwarding: Arc<AtomicBool>) {
    if !forwarding.load(Ordering::SeqCst) {
        // Held open, never answered.
        swallow(client);
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let (client_in, server_in) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = forwarding.clone();
    std::thread::spawn(move || pump(client_in, server, up));
    pump(server_in, client, forwarding);
}

/// Copies `from` to `to` while forwarding; then reads and drops, never closing either.
fn pump(mut from: TcpStream, mut to: TcpStream, forwarding: Arc<AtomicBool>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                if forwarding.load(Ordering::SeqCst) {
                    let _ = to.shutdown(std::net::Shutdown::Write);
                    return;
                }
                // A blackhole sends no end either: hold the other side open.
                std::thread::sleep(Duration::from_secs(600));
                return;
            }
            Ok(n) => {
                if forwarding.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn swallow(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_leader_cut_off_by_a_blackhole_says_it_does_not_lead_within_the_lease_and_the_other_leads() {
    let Some(pg) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = setup(dir.path(), &pg);
    let proxy = Proxy::to(pg.port);
    let through_proxy = url.replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.port));
    // The one through the proxy starts alone, so that it leads.
    let mut cut = replica(dir.path(), &through_proxy, &pg);
    eventually("the replica behind the proxy leads", || {
        cut.leader() == Some(1)
    });
    let mut other = replica(dir.path(), &url, &pg);
    eventually("the other replica stands by", || other.leader() == Some(0));

    proxy.blackhole();
    eventually_within(WITHIN_LEASE, "the cut-off leader says 0", || {
        cut.leader() == Some(0)
    });
    eventually("the other replica leads", || other.leader() == Some(1));
    assert_eq!(cut.leader(), Some(0), "two replicas say they lead");
    // The page says so too, though its snapshot cannot be rebuilt.
    let page = get(&cut.addr, "/").expect("the page answers");
    assert!(page.contains("\"leader\":false"), "{page}");
    assert!(cut.exited().is_none(), "the cut-off replica exited");
    other.wait_for("this replica now leads");
    // Its loop may be waiting on the store's session, as long as the blackhole lasts: what it
    // says is the gauge's, read at each scrape, and the election's, bounded.
    let log = cut.log();
    assert!(!log.contains(pg.password()), "{log}");
    cut.stop();
    other.stop();
}

#[test]
fn a_reload_while_postgres_is_down_keeps_the_replica_up_and_the_gauge_says_0() {
    let Some(pg) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = setup(dir.path(), &pg);
    let mut leader = replica(dir.path(), &url, &pg);
    eventually("the replica leads", || leader.leader() == Some(1));

    pg.stop();
    eventually_within(WITHIN_LEASE, "the leader says 0 through the outage", || {
        leader.leader() == Some(0)
    });
    let page = get(&leader.addr, "/").expect("the page answers");
    assert!(page.contains("\"leader\":false"), "{page}");
    leader.signal("-HUP");
    leader.wait_for("configuration reloaded");
    let line = leader.wait_for("the reload cannot be recorded in the state");
    assert!(line.contains("the new configuration is in force"), "{line}");
    // Still alive and serving, well after the reload.
    std::thread::sleep(Duration::from_secs(2));
    assert!(leader.exited().is_none(), "{}", leader.log());
    assert!(get(&leader.addr, "/metrics").is_some(), "not serving");

    pg.start_again();
    eventually("the replica leads again", || leader.leader() == Some(1));
    leader.wait_for("is recorded now");
    eventually("the reload is recorded once the database is back", || {
        pg.psql(
            "fleet",
            "SELECT count(*) FROM events WHERE kind = 'config_reload';",
        )
        .trim()
            == "1"
    });
    let log = leader.stop().join("\n");
    assert!(!log.contains(pg.password()), "{log}");
}

#[test]
fn a_replica_started_while_postgres_is_down_waits_serving_503_then_starts() {
    let Some(pg) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = setup(dir.path(), &pg);
    pg.stop();

    // Bad configuration is not waited on: exit 3 at once.
    let bad = crate::harness::Test::new()
        .write("permatoken.toml", CONFIG)
        .env("PGPASSWORD", pg.password())
        .env("PERMATOKEN_LEADER_LEASE", "soon")
        .args([
            "watch",
            "--config",
            "permatoken.toml",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--state", &url])
        .run();
    assert_eq!(bad.code, 3, "{}", bad.stderr);

    let mut waiting = replica(dir.path(), &url, &pg);
    let line = waiting.wait_for("waiting for the state database");
    assert!(line.contains("127.0.0.1"), "{line}");
    let (status, body) = status_of(&waiting.addr, "/healthz").expect("/healthz answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("waiting for the state database"), "{body}");
    let (status, page) = status_of(&waiting.addr, "/").expect("the page answers");
    assert_eq!(status, 200);
    assert!(page.contains("waiting for the state database"), "{page}");
    assert_eq!(waiting.leader(), Some(0));
    // A reload while waiting neither kills it nor is lost: it is taken in once it runs.
    waiting.signal("-HUP");
    // Not a crash loop: still there after some tries.
    std::thread::sleep(Duration::from_secs(4));
    assert!(waiting.exited().is_none(), "{}", waiting.log());
    let told = waiting
        .log()
        .matches("waiting for the state database")
        .count();
    assert_eq!(told, 1, "each failure is told once: {}", waiting.log());

    // SIGTERM while waiting: out at once, with 0.
    let mut stopped = replica(dir.path(), &url, &pg);
    stopped.wait_for("waiting for the state database");
    stopped.signal("-TERM");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = stopped.exited() {
            break status;
        }
        assert!(start.elapsed() < WITHIN_LEASE, "SIGTERM did not stop it");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0), "{}", stopped.log());

    pg.start_again();
    eventually("it becomes healthy once the database answers", || {
        status_of(&waiting.addr, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    eventually("it leads and checks", || waiting.leader() == Some(1));
    waiting.wait_for("the state database answers");
    waiting.wait_for("configuration reloaded");
    waiting.stop();
}
