//! The daemon against the sandbox through simulated weeks: the sandbox's clock and the daemon's move
//! together a day at a time, with faults injected on some days. What a user would see is asserted:
//! the env files' bytes, the reload's marker, the alerts a receiver got over real HTTP, the snapshot
//! and `/metrics`, a restart that says nothing again, and no secret in the state file.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::StatusCode;
use jiff::{SignedDuration, Timestamp};
use permatoken_graph::ProxyConfig;
use permatoken_sandbox::{Faults, Options as SandboxOptions, Running, Sandbox};
use permatoken_state::Store;
use permatoken_watch::alert::Sender;
use permatoken_watch::config;
use permatoken_watch::daemon::{Clock, Daemon, Options};
use permatoken_watch::metrics::{self, Counters};
use permatoken_watch::snapshot::{self, Snapshot, Status, TokenState};
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86_400);

/// The machine's time plus the simulated days.
#[derive(Clone, Default)]
struct TestClock(Arc<AtomicI64>);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::now() + SignedDuration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// What the receiver got, and how many of the next requests it refuses with 503.
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<(u16, Value)>>>,
    refuse: Arc<AtomicI64>,
}

async fn receive(Extract(r): Extract<Receiver>, body: Bytes) -> StatusCode {
    let json: Value = serde_json::from_slice(&body).expect("an alert is JSON");
    // Refused and recorded under one lock: a route's deliveries may arrive at once, and the
    // bodies must be in the order the refusals were given.
    let mut bodies = r.bodies.lock().unwrap();
    let status = if r.refuse.fetch_sub(1, Ordering::SeqCst) > 0 {
        503
    } else {
        200
    };
    bodies.push((status, json));
    StatusCode::from_u16(status).unwrap()
}

async fn receiver() -> (String, Receiver) {
    let r = Receiver::default();
    let app = Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), r)
}

fn token(sandbox: &Running, scenario: &str) -> String {
    sandbox.token(scenario).unwrap().expose_secret().to_owned()
}

struct World {
    sandbox: Running,
    clock: TestClock,
    dir: tempfile::TempDir,
    config: config::Config,
    state: std::path::PathBuf,
}

impl World {
    fn advance(&self, by: Duration) {
        self.sandbox.advance_now(by);
        self.clock
            .0
            .fetch_add(i64::try_from(by.as_secs()).unwrap(), Ordering::SeqCst);
    }

    async fn daemon(&self) -> (Daemon, snapshot::Subscriber, Counters) {
        let store = Store::open(&self.state).await.expect("the state opens");
        let (publisher, subscriber) = snapshot::channel(Snapshot::default());
        let counters = Counters::default();
        let mut graph = permatoken_graph::Config::new(self.sandbox.url());
        graph.retry.max_retries = 1;
        let daemon = Daemon::new(Options {
            config: self.config.clone(),
            store,
            publisher,
            counters: counters.clone(),
            sender: Sender::new(ProxyConfig::default(), None),
            graph,
            clock: Arc::new(self.clock.clone()),
            backup_dir: Some(self.dir.path().join("backups")),
        });
        (daemon, subscriber, counters)
    }
}

/// `/api/tokens` as the endpoint serving `daemon`'s snapshots answers it.
async fn api_tokens(
    daemon: &Daemon,
    subscriber: snapshot::Subscriber,
    counters: &Counters,
) -> Value {
    use tower::ServiceExt;
    let state = permatoken_watch::http::AppState::new(
        permatoken_watch::http::DEFAULT_LISTEN,
        None,
        subscriber,
        counters.clone(),
        daemon.store().clone(),
    )
    .unwrap();
    let request = axum::http::Request::get("/api/tokens?per_page=500")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = permatoken_watch::http::app(state)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_weeks_renew_fail_over_alert_once_and_survive_a_restart() {
    let sandbox = Sandbox::start_background(&SandboxOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app_id = sandbox.app().id.to_string();
    let app_secret = sandbox.app_secret().expose_secret().to_owned();
    let (hook, received) = receiver().await;
    // The first delivery is refused: it is tried again, with the same id.
    received.refuse.store(1, Ordering::SeqCst);

    let orders_token = token(&sandbox, "system-user-60d");
    let orders_env = dir.path().join("orders.env");
    let orders_text = format!(
        "# orders service\nFACEBOOK_APP_ID={app_id}\nFACEBOOK_APP_SECRET={app_secret}\nWHATSAPP_ACCESS_TOKEN={orders_token}\nOTHER=\"keep me\"\n"
    );
    write(&orders_env, &orders_text);

    let dead_token = token(&sandbox, "expired");
    let spare_token = token(&sandbox, "system-user");
    let billing_env = dir.path().join("billing.env");
    write(
        &billing_env,
        &format!(
            "FACEBOOK_APP_ID={app_id}\nFACEBOOK_APP_SECRET={app_secret}\nWHATSAPP_ACCESS_TOKEN={dead_token}\nWHATSAPP_ACCESS_TOKEN_BACKUP={spare_token}\n"
        ),
    );
    let dying_token = token(&sandbox, "user-expires-soon");
    let support_env = dir.path().join("support.env");
    write(
        &support_env,
        &format!(
            "FACEBOOK_APP_ID={app_id}\nFACEBOOK_APP_SECRET={app_secret}\nWHATSAPP_ACCESS_TOKEN={dying_token}\n"
        ),
    );
    let marker = dir.path().join("reloaded");
    let text = format!(
        r#"
[defaults]
interval = "1h"
remind_every = "0s"

[[token]]
name = "orders"
env_file = "orders.env"
alerts = ["ops"]

[[token]]
name = "billing"
env_file = "billing.env"
reload = "printf reloaded > '{}'"
alerts = ["ops"]

[[token]]
name = "support"
env_file = "support.env"
alerts = ["ops"]

[[alert]]
name = "ops"
kind = "webhook"
url = "{hook}"
"#,
        marker.display()
    );
    let config = config::parse(&text, &dir.path().join("permatoken.toml"))
        .expect("the configuration is valid")
        .config;
    let world = World {
        sandbox,
        clock: TestClock::default(),
        state: dir.path().join("state.db"),
        dir,
        config,
    };

    let (mut daemon, subscriber, counters) = world.daemon().await;
    // Faults on some days: each is used up within that day's round, and never alerts.
    let faults: [(u32, Faults); 3] = [
        (
            5,
            Faults {
                server_errors: 40,
                ..Faults::default()
            },
        ),
        (
            12,
            Faults {
                rate_limits: 40,
                ..Faults::default()
            },
        ),
        (
            20,
            Faults {
                truncate: 40,
                ..Faults::default()
            },
        ),
    ];
    let mut unknown_rounds = 0;
    for day in 0..50u32 {
        let fault = faults.iter().find(|(d, _)| *d == day);
        world
            .sandbox
            .set_faults(fault.map(|(_, f)| f.clone()).unwrap_or_default());
        let step = daemon.run_due(world.clock.now()).await.expect("a round");
        if day == 12 {
            // Rate-limited batches defer the app's checks until after the regain time: none is
            // checked (nor made unknown) that day, and none is asked one by one.
            assert_eq!(step.checked, 0, "day {day}: deferred");
        } else {
            assert!(step.checked >= 3, "day {day}: every token is due daily");
        }
        if step.worst == Some(Status::Unknown) && fault.is_some() {
            unknown_rounds += 1;
        }
        world.sandbox.set_faults(Faults::default());
        world.advance(DAY);
    }
    assert!(unknown_rounds >= 1, "the faults made some checks unknown");

    // orders: renewed inside its window, once; only the token's value changed in its file.
    let after = std::fs::read_to_string(&orders_env).unwrap();
    let new_token = after
        .lines()
        .find_map(|l| l.strip_prefix("WHATSAPP_ACCESS_TOKEN="))
        .unwrap()
        .to_owned();
    assert!(new_token != orders_token, "renewed");
    assert_eq!(after, orders_text.replace(&orders_token, &new_token));
    // billing: the backup took the dead token's place and the reload ran.
    let billing = std::fs::read_to_string(&billing_env).unwrap();
    assert!(billing.contains(&format!("WHATSAPP_ACCESS_TOKEN={spare_token}\n")));
    assert!(!billing.contains(&dead_token));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "reloaded");

    // The alerts: billing failed over, support critical then dead; none from the faults.
    // The first delivery was refused (503) and tried again with the same id.
    let bodies = received.bodies.lock().unwrap().clone();
    let said: Vec<(u16, &str, &str, Option<&str>)> = bodies
        .iter()
        .map(|(status, b)| {
            (
                *status,
                b["token"].as_str().unwrap(),
                b["state"].as_str().unwrap(),
                b["previous_state"].as_str(),
            )
        })
        .collect();
    let delivered: Vec<_> = said
        .iter()
        .filter(|s| s.0 == 200)
        .map(|s| (s.1, s.2, s.3))
        .collect();
    assert_eq!(said[0].0, 503, "{said:?}");
    let repeats: Vec<_> = bodies[1..]
        .iter()
        .filter(|(_, b)| b["id"] == bodies[0].1["id"])
        .collect();
    assert_eq!(
        repeats.len(),
        1,
        "the refused alert is sent again, with its id: {said:?}"
    );
    assert_eq!(repeats[0].0, 200);
    assert_eq!(repeats[0].1["state"], bodies[0].1["state"]);
    let mut expected = vec![
        ("billing", "failed_over", None),
        ("support", "critical", None),
        ("support", "dead", Some("critical")),
    ];
    let mut got = delivered.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "{said:?}");
    for (_, b) in &bodies {
        assert_eq!(b["id"].as_str().unwrap().len(), 32);
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // The snapshot and /metrics say the same.
    let snap = subscriber.borrow().clone();
    let view = |name: &str| snap.tokens.iter().find(|t| t.name == name).unwrap().clone();
    assert_eq!(view("orders").state, TokenState::Ok);
    assert!(view("orders").valid);
    assert_eq!(view("billing").state, TokenState::Ok);
    assert_eq!(view("support").state, TokenState::Dead);
    assert!(!view("support").valid);
    assert!(snap.round_finished);
    assert!(
        snap.events
            .iter()
            .any(|e| e.kind == snapshot::EventKind::Failover)
    );
    assert!(
        snap.events
            .iter()
            .any(|e| e.kind == snapshot::EventKind::Renewal)
    );
    // The route delivered in the end: it shows when, and fails no more.
    let route = &snap.routes[0];
    assert!(route.last_at.is_some(), "{route:?}");
    assert_eq!(route.failing_since, None, "{route:?}");
    // What was said is listed too: the support token's death among them.
    assert!(
        snap.events
            .iter()
            .any(|e| e.kind == snapshot::EventKind::Alert
                && e.token.as_deref() == Some("support")
                && e.text.contains("dead")),
        "{:?}",
        snap.events
    );
    // The snapshot holds no chart: /api/tokens reads each token's from the state file, its newest
    // point the check the snapshot shows.
    let api = api_tokens(&daemon, subscriber.clone(), &counters).await;
    let tokens = api["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), snap.tokens.len());
    for t in tokens {
        let history = t["history"].as_array().unwrap();
        let newest = history.last().unwrap_or_else(|| panic!("no history: {t}"));
        assert_eq!(
            (&newest["at"], &newest["status"]),
            (&t["last_check"], &t["status"]),
            "{t}"
        );
        assert!(
            history
                .windows(2)
                .all(|w| w[0]["at"].as_i64() < w[1]["at"].as_i64()),
            "{t}"
        );
    }
    let orders = tokens.iter().find(|t| t["name"] == "orders").unwrap();
    assert!(orders["history"].as_array().unwrap().len() > 5, "{orders}");
    let text = metrics::render(&snap, &counters, metrics::Format::Text);
    assert!(
        text.contains("permatoken_token_valid{token=\"orders\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("permatoken_token_valid{token=\"support\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("permatoken_renewals_total{token=\"orders\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("permatoken_failovers_total{token=\"billing\"} 1"),
        "{text}"
    );
    let totals = counters.totals();
    assert_eq!(totals.renewals.get("orders"), Some(&1));
    // Every Graph request the sandbox saw is counted once, by how it ended; the 5xx bursts too.
    // A batch counts by its sub-requests (each counts against Meta's limits), not by the `POST`
    // that carries them (`POST /v26.0/`, which the sandbox logs too).
    let graph_requests = world
        .sandbox
        .requests()
        .iter()
        .filter(|r| !r.target().starts_with("/_sandbox"))
        .filter(|r| r.batched || !(r.method == "POST" && r.path.ends_with('/')))
        .count() as u64;
    assert_eq!(
        totals.graph_requests.values().sum::<u64>(),
        graph_requests,
        "{:?}",
        totals.graph_requests
    );
    assert!(
        totals.graph_requests["ok"] > 0,
        "{:?}",
        totals.graph_requests
    );
    assert!(
        totals.graph_requests["unreachable"] > 0,
        "{:?}",
        totals.graph_requests
    );

    // A restart: a new store and daemon on the same file say nothing again.
    drop(daemon);
    let before = received.bodies.lock().unwrap().len();
    let (mut daemon, _subscriber, _counters) = world.daemon().await;
    for _ in 0..3 {
        daemon.run_due(world.clock.now()).await.expect("a round");
        world.advance(DAY);
    }
    assert_eq!(
        received.bodies.lock().unwrap().len(),
        before,
        "no alert again after a restart"
    );
    drop(daemon);

    // No secret in the state file (nor its journal).
    let secrets = [
        orders_token.as_str(),
        new_token.as_str(),
        dead_token.as_str(),
        spare_token.as_str(),
        dying_token.as_str(),
        app_secret.as_str(),
        hook.as_str(),
    ];
    for entry in std::fs::read_dir(world.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("state.db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for secret in secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret in {name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_are_numbered_on_across_a_restart_and_a_missing_file_is_unknown_not_fatal() {
    let sandbox = Sandbox::start_background(&SandboxOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (hook, received) = receiver().await;
    let app = format!(
        "FACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\n",
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    );
    write(
        &dir.path().join("legacy.env"),
        &format!(
            "{app}WHATSAPP_ACCESS_TOKEN={}\n",
            token(&sandbox, "expired")
        ),
    );
    let text = format!(
        r#"
[defaults]
remind_every = "1d"
unknown_after = "6h"

[[token]]
name = "legacy"
env_file = "legacy.env"
alerts = ["ops"]

[[token]]
name = "gone"
env_file = "missing.env"
alerts = ["ops"]

[[alert]]
name = "ops"
kind = "webhook"
url = "{hook}"
"#
    );
    let config = config::parse(&text, &dir.path().join("permatoken.toml"))
        .unwrap()
        .config;
    let world = World {
        sandbox,
        clock: TestClock::default(),
        state: dir.path().join("state.db"),
        dir,
        config,
    };
    let (mut daemon, _subscriber, _counters) = world.daemon().await;
    for _ in 0..3 {
        daemon.run_due(world.clock.now()).await.expect("a round");
        world.advance(DAY);
    }
    drop(daemon);
    let (mut daemon, _subscriber, _counters) = world.daemon().await;
    daemon.run_due(world.clock.now()).await.expect("a round");
    drop(daemon);

    let bodies = received.bodies.lock().unwrap().clone();
    let of = |name: &str| -> Vec<Value> {
        bodies
            .iter()
            .filter(|(_, b)| b["token"] == name)
            .map(|(_, b)| b.clone())
            .collect()
    };
    let legacy = of("legacy");
    let kinds: Vec<(&str, &str)> = legacy
        .iter()
        .map(|b| (b["state"].as_str().unwrap(), b["kind"].as_str().unwrap()))
        .collect();
    // Day 0 the change; days 1, 2 and (after the restart) 3 a reminder each.
    assert_eq!(
        kinds,
        [
            ("dead", "change"),
            ("dead", "reminder"),
            ("dead", "reminder"),
            ("dead", "reminder"),
        ]
    );
    let mut ids: Vec<&str> = legacy.iter().map(|b| b["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        4,
        "each reminder has its own id, after a restart too"
    );
    // The missing file: unknown at first (no alert), `cannot_be_checked` once it lasted 6 h, once.
    let gone = of("gone");
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(gone[0]["state"], "cannot_be_checked");
    assert!(
        gone[0]["message"].as_str().unwrap().contains("missing.env"),
        "{}",
        gone[0]["message"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_check_comes_sooner_as_expiry_nears_and_after_an_unknown_check() {
    let sandbox = Sandbox::start_background(&SandboxOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = format!(
        "FACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\n",
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    );
    for (file, scenario) in [
        ("far.env", "system-user"),
        ("near.env", "user-expires-soon"),
        ("gone.env", "expired"),
    ] {
        write(
            &dir.path().join(file),
            &format!("{app}WHATSAPP_ACCESS_TOKEN={}\n", token(&sandbox, scenario)),
        );
    }
    let text = "[defaults]\ninterval = \"1d\"\njitter = \"0s\"\n\n[[token]]\nname = \"far\"\nenv_file = \"far.env\"\n";
    let config = config::parse(text, &dir.path().join("permatoken.toml"))
        .unwrap()
        .config;
    let world = World {
        sandbox,
        clock: TestClock::default(),
        state: dir.path().join("state.db"),
        dir,
        config,
    };
    let next_after = |config: &config::Config| {
        let config = config.clone();
        let world = &world;
        async move {
            // Each call a minute later: the page shows, per name, the newest check.
            world.advance(Duration::from_secs(60));
            let (mut daemon, subscriber, _) = world.daemon().await;
            daemon.replace_config(config).await;
            let now = world.clock.now();
            daemon.run_due(now).await.unwrap();
            let next = daemon.next_due().unwrap();
            let view = subscriber.borrow().tokens[0].clone();
            (next.duration_since(now), view)
        }
    };
    // Never expires: the interval.
    let (wait, view) = next_after(&world.config).await;
    assert_eq!(wait, SignedDuration::from_hours(24));
    assert!(
        view.scopes
            .iter()
            .any(|s| s == "whatsapp_business_messaging"),
        "{view:?}"
    );
    // Two days left: within a quarter of that.
    let near = config::parse(
        &text.replace("far.env", "near.env"),
        &world.dir.path().join("permatoken.toml"),
    )
    .unwrap()
    .config;
    let (wait, _) = next_after(&near).await;
    assert!(wait <= SignedDuration::from_hours(12), "{wait:?}");
    assert!(wait >= SignedDuration::from_mins(1), "{wait:?}");
    // Expired two days ago: dead by the API's word, looked at again after the interval, not each
    // minute (an expiry behind it brings nothing nearer).
    let gone = config::parse(
        &text.replace("far.env", "gone.env"),
        &world.dir.path().join("permatoken.toml"),
    )
    .unwrap()
    .config;
    let (wait, view) = next_after(&gone).await;
    assert_eq!(view.status, Status::Critical, "{view:?}");
    assert_eq!(wait, SignedDuration::from_hours(24));
    // Could not tell: again within minutes, not a day later.
    world.sandbox.set_faults(Faults {
        server_errors: 100,
        ..Faults::default()
    });
    let (wait, view) = next_after(&world.config).await;
    world.sandbox.set_faults(Faults::default());
    assert_eq!(view.status, Status::Unknown);
    assert_eq!(wait, SignedDuration::from_mins(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_items_are_alerted_on_change_like_tokens_at_their_own_interval() {
    let sandbox = Sandbox::start_background(&SandboxOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (hook, received) = receiver().await;
    // An account this app is not subscribed to: webhooks never arrive, a critical item.
    write(
        &dir.path().join("orders.env"),
        &format!(
            "FACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\nWHATSAPP_ACCESS_TOKEN={}\nWHATSAPP_BUSINESS_ACCOUNT_ID=102290129340399\nWHATSAPP_PHONE_NUMBER_ID=106540352242922\n",
            sandbox.app().id,
            sandbox.app_secret().expose_secret(),
            token(&sandbox, "system-user")
        ),
    );
    let text = format!(
        "[defaults]\ninterval = \"1h\"\ndoctor = true\ndoctor_interval = \"2d\"\nremind_every = \"0s\"\n\n[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\nalerts = [\"ops\"]\n\n[[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{hook}\"\n"
    );
    let config = config::parse(&text, &dir.path().join("permatoken.toml"))
        .unwrap()
        .config;
    let world = World {
        sandbox,
        clock: TestClock::default(),
        state: dir.path().join("state.db"),
        dir,
        config,
    };
    let (mut daemon, _subscriber, _counters) = world.daemon().await;
    let subscription_calls = |world: &World| {
        world
            .sandbox
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/subscribed_apps"))
            .count()
    };
    let mut calls = Vec::new();
    for _ in 0..4 {
        daemon.run_due(world.clock.now()).await.unwrap();
        calls.push(subscription_calls(&world));
        world.advance(DAY);
    }
    // The checklist ran on days 0 and 2 only.
    assert!(calls[0] > 0, "{calls:?}");
    assert_eq!(calls[1], calls[0], "{calls:?}");
    assert!(calls[2] > calls[1], "{calls:?}");
    assert_eq!(calls[3], calls[2], "{calls:?}");
    let bodies = received.bodies.lock().unwrap().clone();
    let doctor: Vec<(&str, &str)> = bodies
        .iter()
        .filter_map(|(_, b)| {
            let token = b["token"].as_str()?;
            token
                .starts_with("orders/doctor/")
                .then(|| (token, b["state"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(
        doctor,
        [("orders/doctor/app_subscription", "critical")],
        "one alert, not repeated at the second run: {bodies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_spare_token_in_two_env_files_shows_its_check_under_both_names() {
    let sandbox = Sandbox::start_background(&SandboxOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = format!(
        "FACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\n",
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    );
    let spare = token(&sandbox, "system-user");
    for (file, scenario) in [
        ("orders.env", "system-user-60d"),
        ("billing.env", "user-60d"),
    ] {
        write(
            &dir.path().join(file),
            &format!(
                "{app}WHATSAPP_ACCESS_TOKEN={}\nWHATSAPP_ACCESS_TOKEN_BACKUP={spare}\n",
                token(&sandbox, scenario)
            ),
        );
    }
    let text = "[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\n\n[[token]]\nname = \"billing\"\nenv_file = \"billing.env\"\n";
    let config = config::parse(text, &dir.path().join("permatoken.toml"))
        .unwrap()
        .config;
    let world = World {
        sandbox,
        clock: TestClock::default(),
        state: dir.path().join("state.db"),
        dir,
        config,
    };
    let (mut daemon, subscriber, _) = world.daemon().await;
    daemon.run_due(world.clock.now()).await.unwrap();
    let snap = subscriber.borrow().clone();
    for name in [
        "orders/WHATSAPP_ACCESS_TOKEN_BACKUP",
        "billing/WHATSAPP_ACCESS_TOKEN_BACKUP",
    ] {
        let view = snap.tokens.iter().find(|t| t.name == name).unwrap();
        assert_eq!(view.status, Status::Ok, "{view:?}");
        assert!(view.valid && view.never_expires, "{view:?}");
        assert!(view.last_check.is_some(), "{view:?}");
        assert!(!view.fingerprint.is_empty(), "{view:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_dying_in_one_round_makes_one_grouped_alert_sent_at_least_once() {
    let sandbox = Sandbox::start_background(&SandboxOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (hook, received) = receiver().await;
    let app = format!(
        "FACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\n",
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    );
    // Twelve services whose tokens are dead at once, as after an app secret reset.
    let mut text = String::from("[defaults]\nremind_every = \"0s\"\n");
    for i in 0..12 {
        let scenario = if i % 2 == 0 {
            "expired"
        } else {
            "password-changed"
        };
        write(
            &dir.path().join(format!("svc{i}.env")),
            &format!("{app}WHATSAPP_ACCESS_TOKEN={}\n", token(&sandbox, scenario)),
        );
        text.push_str(&format!(
            "\n[[token]]\nname = \"svc{i}\"\nenv_file = \"svc{i}.env\"\nalerts = [\"ops\"]\n"
        ));
    }
    text.push_str(&format!(
        "\n[[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{hook}\"\n"
    ));
    let config = config::parse(&text, &dir.path().join("permatoken.toml"))
        .unwrap()
        .config;
    let world = World {
        sandbox,
        clock: TestClock::default(),
        state: dir.path().join("state.db"),
        dir,
        config,
    };
    let (mut daemon, _subscriber, counters) = world.daemon().await;
    // The receiver refuses the first attempt: the group is retried, whole, with the same id.
    received.refuse.store(1, Ordering::SeqCst);
    daemon.run_due(world.clock.now()).await.unwrap();
    for _ in 0..3 {
        world.advance(Duration::from_secs(3600));
        daemon.run_due(world.clock.now()).await.unwrap();
    }
    let bodies = received.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one refused, one taken: {bodies:?}");
    let (first, group) = (&bodies[0].1, &bodies[1].1);
    assert_eq!((bodies[0].0, bodies[1].0), (503, 200));
    assert_eq!(first["id"], group["id"], "a group sent again keeps its id");
    assert_eq!(group["kind"], "group");
    assert_eq!(group["count"], 12);
    assert!(
        group["message"]
            .as_str()
            .unwrap()
            .starts_with("12 tokens changed state: 12 dead"),
        "{group}"
    );
    let mut names: Vec<&str> = group["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["state"], "dead", "{a}");
            a["token"].as_str().unwrap()
        })
        .collect();
    names.sort_unstable();
    let mut want: Vec<String> = (0..12).map(|i| format!("svc{i}")).collect();
    want.sort_unstable();
    assert_eq!(names, want);
    // Each member counts as delivered, and nothing is sent again after a restart.
    assert_eq!(
        counters
            .totals()
            .alerts
            .get(&("ops".to_owned(), "delivered".to_owned())),
        Some(&12)
    );
    drop(daemon);
    let (mut daemon, _subscriber, _) = world.daemon().await;
    world.advance(Duration::from_secs(3600));
    daemon.run_due(world.clock.now()).await.unwrap();
    assert_eq!(received.bodies.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_up_the_schedule_from_the_shared_state_instead_of_checking_all_again() {
    let sandbox = Sandbox::start_background(&SandboxOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = format!(
        "FACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\n",
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    );
    for (file, scenario) in [("known.env", "system-user"), ("new.env", "user-60d")] {
        write(
            &dir.path().join(file),
            &format!("{app}WHATSAPP_ACCESS_TOKEN={}\n", token(&sandbox, scenario)),
        );
    }
    let one = "[defaults]\ninterval = \"1d\"\njitter = \"0s\"\n\n[[token]]\nname = \"known\"\nenv_file = \"known.env\"\n";
    let both = format!("{one}\n[[token]]\nname = \"new\"\nenv_file = \"new.env\"\n");
    let toml = dir.path().join("permatoken.toml");
    let parse = |text: &str| config::parse(text, &toml).unwrap().config;
    let world = World {
        sandbox,
        clock: TestClock::default(),
        state: dir.path().join("state.db"),
        config: parse(one),
        dir,
    };
    // The old leader checks `known`, then is gone.
    let (mut old, _, _) = world.daemon().await;
    let first = world.clock.now();
    old.run_due(first).await.unwrap();
    drop(old);
    world.advance(Duration::from_secs(600));

    // The new leader, ten minutes later, with a token nobody has checked yet.
    let mut world = world;
    world.config = parse(&both);
    let (mut new, _, _) = world.daemon().await;
    let election = new.store().election("replica-b", Duration::from_secs(15));
    new.set_election(election);
    let (_keep, reloads) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = tokio::time::sleep(Duration::from_secs(3));
    new.run(shutdown, reloads).await.unwrap();

    let latest = new.store().latest_checks().await.unwrap();
    let checked_at = |name: &str| {
        latest
            .iter()
            .filter(|l| l.token.name == name)
            .filter_map(|l| l.check.as_ref().map(|c| c.checked_at))
            .max()
    };
    // `known` was checked ten minutes ago with a day's interval: not again.
    let known = checked_at("known").expect("the old leader's check");
    assert!(known < first + SignedDuration::from_secs(60), "{known}");
    // `new` has no check to go by: due at once.
    let new_at = checked_at("new").expect("the new leader checks a token never checked");
    assert!(new_at >= first + SignedDuration::from_secs(599), "{new_at}");
    assert!(new.is_leader());
}
