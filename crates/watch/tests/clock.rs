//! The daemon's two clocks apart: a test clock whose wall time jumps while its monotonic time does
//! not (as an NTP step does), against the sandbox. A jump changes no schedule and makes no alert;
//! the monotonic time passing does both. (`crates/cli/tests/it/watch_clock.rs` steps a real
//! process's clock with libfaketime.)

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use permatoken_graph::ProxyConfig;
use permatoken_sandbox::{Options as SandboxOptions, Running, Sandbox};
use permatoken_state::Store;
use permatoken_watch::alert::Sender;
use permatoken_watch::config;
use permatoken_watch::daemon::{Clock, Daemon, Options};
use permatoken_watch::metrics::Counters;
use permatoken_watch::snapshot::{self, Snapshot};

/// The machine's clocks, the wall one shifted by `wall` seconds and the monotonic one by `mono`.
#[derive(Clone, Default)]
struct SteppedClock {
    wall: Arc<AtomicI64>,
    mono: Arc<AtomicI64>,
}

impl SteppedClock {
    /// The wall clock steps by `secs` (either way); the monotonic clock does not move.
    fn step(&self, secs: i64) {
        self.wall.fetch_add(secs, Ordering::SeqCst);
    }

    /// `secs` go by: both clocks move.
    fn pass(&self, secs: i64) {
        self.wall.fetch_add(secs, Ordering::SeqCst);
        self.mono.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for SteppedClock {
    fn now(&self) -> Timestamp {
        Timestamp::now() + SignedDuration::from_secs(self.wall.load(Ordering::SeqCst))
    }

    fn instant(&self) -> Instant {
        let ahead = u64::try_from(self.mono.load(Ordering::SeqCst)).expect("never backwards");
        Instant::now() + Duration::from_secs(ahead)
    }
}

fn env(sandbox: &Running, scenario: &str) -> String {
    format!(
        "WHATSAPP_ACCESS_TOKEN={}\nFACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\n",
        sandbox.token(scenario).unwrap().expose_secret(),
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    )
}

const CONFIG: &str = r#"[defaults]
interval = "1m"
jitter = "0s"
unknown_after = "30m"
remind_every = "30m"

[[token]]
name = "orders"
env_file = "orders.env"

[[token]]
name = "gone"
env_file = "gone.env"

[[token]]
name = "missing"
env_file = "missing.env"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_of_the_wall_clock_changes_no_schedule_and_makes_no_alert() {
    let sandbox = Sandbox::start_background(&SandboxOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("orders.env"), env(&sandbox, "system-user")).unwrap();
    std::fs::write(p.join("gone.env"), env(&sandbox, "expired")).unwrap();
    // `missing.env` is never written: that token is unknown at every check.
    let config = config::parse(CONFIG, &p.join("permatoken.toml"))
        .unwrap()
        .config;
    let (publisher, _subscriber) = snapshot::channel(Snapshot::default());
    let mut graph = permatoken_graph::Config::new(sandbox.url());
    graph.retry.max_retries = 1;
    let clock = SteppedClock::default();
    let mut daemon = Daemon::new(Options {
        config,
        store: Store::open(&p.join("state.db")).await.unwrap(),
        publisher,
        counters: Counters::default(),
        sender: Sender::new(ProxyConfig::default(), None),
        graph,
        clock: Arc::new(clock.clone()),
        backup_dir: None,
    });

    let first = daemon.run_due(clock.now()).await.unwrap();
    assert_eq!(
        (first.checked, first.alerts),
        (3, 1),
        "gone is dead: {first:?}"
    );

    // Two hours on by the wall clock, no time by the monotonic one: nothing is due.
    clock.step(2 * 3600);
    let jumped = daemon.run_due(clock.now()).await.unwrap();
    assert_eq!((jumped.checked, jumped.alerts), (0, 0), "{jumped:?}");
    // A minute later each is checked again, and a minute of unknown or since the alert is no
    // reason to alert.
    clock.pass(60);
    let after = daemon.run_due(clock.now()).await.unwrap();
    assert_eq!((after.checked, after.alerts), (3, 0), "{after:?}");

    // Four hours back: the checks come a minute later all the same.
    clock.step(-4 * 3600);
    clock.pass(60);
    let now = clock.now();
    let back = daemon.run_due(now).await.unwrap();
    assert_eq!((back.checked, back.alerts), (3, 0), "{back:?}");
    let next = daemon.next_due().unwrap();
    assert_eq!(next.duration_since(now), SignedDuration::from_mins(1));

    // Half an hour on both clocks: the reminder of the dead token and `cannot_be_checked` of the
    // unreadable one come, measured on the monotonic clock.
    clock.pass(30 * 60);
    let later = daemon.run_due(clock.now()).await.unwrap();
    assert_eq!((later.checked, later.alerts), (3, 2), "{later:?}");
    let announced = daemon.store().all_announced().await.unwrap();
    let state = |name: &str| {
        announced
            .iter()
            .find(|a| a.token_name == name)
            .and_then(|a| a.announcement.as_ref())
            .map(|a| a.state.clone())
    };
    assert_eq!(state("missing").as_deref(), Some("cannot_be_checked"));
    assert_eq!(state("gone").as_deref(), Some("dead"));
}
