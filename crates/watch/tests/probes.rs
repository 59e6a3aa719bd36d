//! Issue 16, item 5: `/healthz` (503 with a JSON reason when the loop is stale or the election
//! cannot reach the state database; 200 with JSON otherwise) and `/readyz` (200 once the daemon
//! serves the page), as a probe sees them. What the daemon tells is told here through its
//! [`Health`], with instants in the past standing for time gone by.

// Shared with `http.rs` and `page.rs`; this file needs only a snapshot.
#[allow(dead_code)]
mod http_support;

use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use http_support::{now, snapshot};
use permatoken_watch::health::Health;
use permatoken_watch::http::{self, AppState, BearerToken};
use permatoken_watch::metrics::Counters;
use permatoken_watch::snapshot::{self as snap, Publisher, Snapshot};
use serde_json::Value;
use tower::ServiceExt;

const BEARER: &str = "PERMATOKENTEST-http-bearer-0123456789";

/// An endpoint on a non-loopback address (so the page is guarded: probes must not be), before
/// its state is open, as `watch` starts.
fn endpoint() -> (AppState, Publisher) {
    let (publisher, subscriber) = snap::channel(Snapshot::default());
    let state = AppState::waiting(
        "0.0.0.0:9464".parse().unwrap(),
        Some(BearerToken::new(BEARER).unwrap()),
        subscriber,
        Counters::default(),
    )
    .unwrap();
    (state, publisher)
}

async fn probe(state: &AppState, path: &str) -> (StatusCode, Value) {
    let response = http::app(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body:?}"));
    (status, json)
}

fn ago(secs: u64) -> Instant {
    Instant::now()
        .checked_sub(Duration::from_secs(secs))
        .expect("the machine has been up for a while")
}

fn reasons(json: &Value) -> Vec<&str> {
    json["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems: {json}"))
        .iter()
        .map(|p| p["reason"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn readyz_answers_503_until_the_daemon_serves_the_page_and_is_never_guarded() {
    let (state, publisher) = endpoint();
    let (status, json) = probe(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["status"], "not_ready");
    assert_eq!(json["reason"], "starting", "{json}");

    publisher.publish(Snapshot {
        waiting_for_state: Some("connection refused (127.0.0.1:5432)".to_owned()),
        ..Snapshot::default()
    });
    let (status, json) = probe(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["reason"], "waiting_for_state", "{json}");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("waiting for the state database: connection refused"),
        "{json}"
    );
    // Liveness says so too, and differently: waiting is a reason of its own.
    let (status, json) = probe(&state, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reasons(&json), ["waiting_for_state"]);

    // The daemon published its first snapshot from the state.
    publisher.publish(snapshot(now()));
    state.health().set_ready();
    let (status, json) = probe(&state, "/readyz").await;
    assert_eq!(
        (status, json),
        (StatusCode::OK, serde_json::json!({"status": "ready"}))
    );
    let (status, json) = probe(&state, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["status"], "ok");
}

#[tokio::test]
async fn healthz_is_stale_when_the_loop_made_no_progress_for_twice_its_period_plus_its_last_pass() {
    let (state, publisher) = endpoint();
    publisher.publish(snapshot(now()));
    let health: Health = state.health();
    health.set_shortest_interval(Some(Duration::from_secs(60)));
    // Before any pass: nothing to measure.
    assert_eq!(probe(&state, "/healthz").await.0, StatusCode::OK);

    // A pass of 30 s that ended 200 s ago: 200 > 2 × 60 + 30.
    health.pass_began(ago(230));
    health.pass_ended(ago(200));
    let (status, json) = probe(&state, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["status"], "unhealthy");
    assert_eq!(reasons(&json), ["stale"]);
    let message = json["problems"][0]["message"].as_str().unwrap();
    assert!(message.contains("no progress for 200 s"), "{message}");

    // A longer pass allows longer: 200 ≤ 2 × 60 + 100.
    health.pass_began(ago(300));
    health.pass_ended(ago(200));
    assert_eq!(probe(&state, "/healthz").await.0, StatusCode::OK);

    // A round of many windows, each ending now, is not stuck however long it runs.
    health.pass_began(ago(10_000));
    let (status, json) = probe(&state, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    health.progressed(Instant::now());
    assert_eq!(probe(&state, "/healthz").await.0, StatusCode::OK);

    // Tokens checked every 6 hours: a quiet loop is fine for 12.
    health.pass_began(ago(3 * 3600 + 1));
    health.pass_ended(ago(3 * 3600));
    health.set_shortest_interval(Some(Duration::from_secs(6 * 3600)));
    assert_eq!(probe(&state, "/healthz").await.0, StatusCode::OK);
    // Under a minute, the loop's own minute counts: an idle loop is not stuck.
    health.set_shortest_interval(Some(Duration::from_secs(5)));
    health.pass_began(ago(90));
    health.pass_ended(ago(90));
    assert_eq!(probe(&state, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn healthz_fails_while_the_election_has_not_reached_the_database_for_the_lease() {
    let (state, publisher) = endpoint();
    publisher.publish(snapshot(now()));
    let health = state.health();
    health.election_started(Duration::from_secs(15), ago(60));
    health.election_polled(ago(10), Err("db error: connection refused".to_owned()));
    let (status, json) = probe(&state, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(reasons(&json), ["state_unreachable"]);
    let message = json["problems"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("for 60 s (the lease is 15 s): db error: connection refused"),
        "{message}"
    );
    // Within the lease of its last answer, a failing poll is not yet a problem.
    health.election_polled(ago(5), Ok(()));
    health.election_polled(ago(1), Err("db error: connection refused".to_owned()));
    assert_eq!(probe(&state, "/healthz").await.0, StatusCode::OK);
    // A poll that never comes back is as bad as one that fails.
    health.election_started(Duration::from_secs(15), ago(20));
    let (_, json) = probe(&state, "/healthz").await;
    assert!(
        json["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("its calls do not answer"),
        "{json}"
    );

    // Several reasons at once are each said.
    let mut unwritable = snapshot(now());
    unwritable.state_unwritable = Some(snap::StateProblem {
        since: now() - 60,
        reason: "database or disk is full".to_owned(),
    });
    publisher.publish(unwritable);
    let (_, json) = probe(&state, "/healthz").await;
    assert_eq!(reasons(&json), ["state_unwritable", "state_unreachable"]);
}

/// The daemon tells its [`Health`]: ready once its first snapshot is published, and each pass of
/// its loop (so a loop quiet for days would be stale). On SQLite there is no election, so never
/// `state_unreachable` (PostgreSQL's is `watch_ops.rs`' in the binary's tests, against a cluster).
#[tokio::test]
async fn a_running_daemon_tells_its_passes_and_its_readiness() {
    use permatoken_graph::ProxyConfig;
    use permatoken_sandbox::{Options as SandboxOptions, Sandbox};
    use permatoken_state::Store;
    use permatoken_watch::alert::Sender;
    use permatoken_watch::daemon::{Daemon, Options, SystemClock};

    let sandbox = Sandbox::start_background(&SandboxOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orders.env"),
        format!(
            "WHATSAPP_ACCESS_TOKEN={}\n",
            sandbox.token("system-user").unwrap().expose_secret()
        ),
    )
    .unwrap();
    let toml = dir.path().join("permatoken.toml");
    let text = "[defaults]\ninterval = \"1d\"\n\n[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\n";
    let config = permatoken_watch::config::parse(text, &toml).unwrap().config;
    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    let (publisher, _subscriber) = snap::channel(Snapshot::default());
    let mut daemon = Daemon::new(Options {
        config,
        store,
        publisher,
        counters: Counters::default(),
        sender: Sender::new(ProxyConfig::default(), None),
        graph: permatoken_graph::Config::new(sandbox.url()),
        clock: std::sync::Arc::new(SystemClock),
        backup_dir: None,
    });
    // SQLite's election is none: this daemon always leads.
    let election = daemon
        .store()
        .election("replica-a", Duration::from_secs(15));
    daemon.set_election(election);
    let health = Health::default();
    daemon.set_health(health.clone());
    assert!(!health.is_ready());
    let (_keep, reloads) = tokio::sync::mpsc::unbounded_channel();
    daemon
        .run(tokio::time::sleep(Duration::from_secs(2)), reloads)
        .await
        .unwrap();

    assert!(health.is_ready(), "the page was served");
    assert_eq!(health.problems(Instant::now()), []);
    // Three days on with no pass since: stale (a day's interval allows two), and nothing else.
    let later = Instant::now() + Duration::from_secs(3 * 86_400);
    let said: Vec<&str> = health.problems(later).iter().map(|p| p.reason).collect();
    assert_eq!(said, ["stale"]);
    // A day on, within the allowance: still fine.
    let sooner = Instant::now() + Duration::from_secs(86_400);
    assert_eq!(health.problems(sooner), []);
}
