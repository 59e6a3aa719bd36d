//! `permatoken watch` under systemd's `Type=notify` and `WatchdogSec=`, as systemd sees it: a real
//! daemon against the sandbox, and a datagram socket this test binds and names in `NOTIFY_SOCKET`
//! (a path, or an abstract `@name`). What arrives there is what systemd would act on.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use permatoken_sandbox::Running;

use crate::harness::{app_lines, sandbox, token_of};

/// Generous: liveness, never speed.
const DEADLINE: Duration = Duration::from_secs(60);

/// Writes a configuration of one sandbox token into `dir`; the sandbox must outlive the daemon.
fn setup(dir: &Path) -> Running {
    let sandbox = sandbox();
    std::fs::write(
        dir.join("permatoken.toml"),
        "[defaults]\ninterval = \"1h\"\n\n[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\n",
    )
    .unwrap();
    let env = format!(
        "WHATSAPP_ACCESS_TOKEN={}\n{}",
        token_of(&sandbox, "system-user"),
        app_lines(&sandbox)
    );
    std::fs::write(dir.join("orders.env"), env).unwrap();
    sandbox
}

/// Starts `watch` in `dir` on `state`, with `NOTIFY_SOCKET=notify_socket` and `extra` variables.
fn spawn(
    dir: &Path,
    sandbox: &Running,
    state: &str,
    notify_socket: &str,
    extra: &[(&str, &str)],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_permatoken"))
        .args(["watch", "--config", "permatoken.toml", "--state", state])
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("PERMATOKEN_GRAPH_URL", sandbox.url())
        .env("NOTIFY_SOCKET", notify_socket)
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the permatoken binary runs")
}

/// Starts `watch` on a state file in `dir`, set up by [`setup`].
fn start(dir: &Path, notify_socket: &str, extra: &[(&str, &str)]) -> (Child, Running) {
    let sandbox = setup(dir);
    let child = spawn(dir, &sandbox, "state.db", notify_socket, extra);
    (child, sandbox)
}

/// The next message on `socket`, within the deadline.
fn next(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn stop(child: &mut Child) -> Option<i32> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("the kill command runs");
    assert!(status.success());
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("watch did not stop within {DEADLINE:?} of SIGTERM");
}

#[test]
fn watch_says_ready_then_pings_the_watchdog_from_its_loop_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    // systemd's watchdog of 2 s: a ping every second at most.
    let (mut child, _sandbox) = start(
        dir.path(),
        path.to_str().unwrap(),
        &[("WATCHDOG_USEC", "2000000")],
    );
    let first = next(&socket);
    assert!(
        first.starts_with("READY=1\nSTATUS=watching 1 token(s)"),
        "the first notification is READY=1: {first:?}"
    );
    // The first round's status line, then the idle loop's pings: more than one, so they come
    // from the loop that keeps turning, not from the round alone.
    let mut pings = 0;
    let mut statuses = Vec::new();
    while pings < 3 {
        let message = next(&socket);
        match message.as_str() {
            "WATCHDOG=1" => pings += 1,
            m if m.starts_with("STATUS=") => statuses.push(message),
            m => panic!("unexpected notification {m:?}"),
        }
    }
    assert!(
        statuses
            .iter()
            .any(|s| s == "STATUS=watching 1 token(s): last round checked 1, worst ok"),
        "{statuses:?}"
    );
    assert_eq!(stop(&mut child), Some(0));
    let mut rest = Vec::new();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        rest.iter().any(|m| m.starts_with("STOPPING=1\n")),
        "STOPPING=1 after SIGTERM: {rest:?}"
    );
}

#[test]
fn an_abstract_notify_socket_gets_ready_and_a_watchdog_of_another_process_is_left_alone() {
    use std::os::linux::net::SocketAddrExt as _;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("permatoken-it-notify-{}", std::process::id());
    let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    // WATCHDOG_PID names pid 1: the watchdog is not this process's, so it pings nothing.
    let (mut child, _sandbox) = start(
        dir.path(),
        &format!("@{name}"),
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    let first = next(&socket);
    assert!(first.starts_with("READY=1\n"), "{first:?}");
    // Long enough for a dozen pings of a 0.2 s watchdog, had it been ours.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stop(&mut child), Some(0));
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut rest = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(!rest.iter().any(|m| m == "WATCHDOG=1"), "{rest:?}");
    assert!(rest.iter().any(|m| m.starts_with("STOPPING=1")), "{rest:?}");
}

#[test]
fn waiting_for_the_state_database_extends_the_start_timeout_at_each_try() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    // A loopback port nothing listens on: the database "is down", so watch waits for it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgres://permatoken@127.0.0.1:{port}/fleet?sslmode=disable");
    let sandbox = setup(dir.path());
    let mut child = spawn(
        dir.path(),
        &sandbox,
        &url,
        path.to_str().unwrap(),
        &[
            ("PGPASSWORD", "PERMATOKENTEST-unused"),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    // Two tries (1 s apart): each extends the start by two of the longest waits between tries,
    // and no READY=1 nor watchdog ping comes while it waits.
    for _ in 0..2 {
        assert_eq!(
            next(&socket),
            "EXTEND_TIMEOUT_USEC=60000000\nSTATUS=waiting for the state database"
        );
    }
    assert_eq!(stop(&mut child), Some(0));
}
