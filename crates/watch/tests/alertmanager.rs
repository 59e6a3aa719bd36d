//! An `alertmanager` route against a real Alertmanager (Debian's `prometheus-alertmanager`, started
//! here on a free loopback port, clustering off): the daemon's loop, on the real clock, against the
//! sandbox. A token the sandbox says is dead shows in Alertmanager's `GET /api/v2/alerts` with its
//! labels; it is sent again while active (its `endsAt` moves on); replaced by a good token, it
//! resolves (gone from the active list), and so does one taken out of the configuration. Under
//! `CI=true` a missing Alertmanager fails the test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use permatoken_graph::ProxyConfig;
use permatoken_sandbox::{Options as SandboxOptions, Sandbox};
use permatoken_state::Store;
use permatoken_watch::alert::Sender;
use permatoken_watch::config;
use permatoken_watch::daemon::{Daemon, Options, SystemClock};
use permatoken_watch::metrics::Counters;
use permatoken_watch::snapshot::{self, Snapshot};
use serde_json::Value;

/// Debian's binary, or upstream's name.
fn alertmanager_or_skip(test: &str) -> Option<PathBuf> {
    let found = ["prometheus-alertmanager", "alertmanager"]
        .iter()
        .flat_map(|name| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(move |dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some_and(|v| v == "true") {
            panic!("prometheus-alertmanager is not installed: `.ci/run` installs it with apt-get");
        }
        eprintln!(
            "SKIPPED {test}: Alertmanager is not installed (apt-get install prometheus-alertmanager)"
        );
    }
    found
}

/// A running Alertmanager, killed when dropped.
struct Alertmanager {
    child: Child,
    base: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain-http client (no TLS set up: reqwest here has no crypto provider of its own).
fn client() -> reqwest::Client {
    let tls = permatoken_graph::tls_config(None, true).unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .build()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `binary` with one receiver that sends nowhere, its storage in `dir`, and waits (at most
/// 30 s) until it is ready.
async fn start(binary: &Path, dir: &Path) -> Alertmanager {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: nowhere\n  group_wait: 1s\nreceivers:\n  - name: nowhere\n",
    )
    .unwrap();
    let storage = dir.join("am-data");
    std::fs::create_dir_all(&storage).unwrap();
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", storage.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("alertmanager starts");
    let am = Alertmanager {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client
            .get(format!("{}/-/ready", am.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return am;
        }
        assert!(
            Instant::now() < deadline,
            "alertmanager is not ready in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Alertmanager's active alerts (`GET /api/v2/alerts`), as its raw text and parsed.
async fn alerts(am: &Alertmanager) -> (String, Vec<Value>) {
    let text = client()
        .get(format!("{}/api/v2/alerts", am.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    (text, list)
}

/// Polls Alertmanager's alerts until `until` holds of `token`'s (at most `within`).
async fn wait_for(
    am: &Alertmanager,
    token: &str,
    within: Duration,
    what: &str,
    until: impl Fn(&[Value]) -> bool,
) -> (String, Vec<Value>) {
    let deadline = Instant::now() + within;
    loop {
        let (text, list) = alerts(am).await;
        let orders: Vec<Value> = list
            .into_iter()
            .filter(|a| a["labels"]["token"] == token)
            .collect();
        if until(&orders) {
            return (text, orders);
        }
        assert!(Instant::now() < deadline, "{what}: Alertmanager has {text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn ends_at(alert: &Value) -> Timestamp {
    alert["endsAt"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_token_fires_in_alertmanager_is_kept_alive_and_resolves_once_replaced_or_removed() {
    let Some(binary) = alertmanager_or_skip("a_dead_token_fires_in_alertmanager") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let am = start(&binary, dir.path()).await;
    let sandbox = Sandbox::start_background(&SandboxOptions::default()).unwrap();
    let app = format!(
        "FACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\n",
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    );
    let dead = sandbox.token("expired").unwrap().expose_secret().to_owned();
    let good = sandbox
        .token("system-user")
        .unwrap()
        .expose_secret()
        .to_owned();
    let env = dir.path().join("orders.env");
    std::fs::write(&env, format!("{app}WHATSAPP_ACCESS_TOKEN={dead}\n")).unwrap();
    std::fs::write(
        dir.path().join("billing.env"),
        format!("{app}WHATSAPP_ACCESS_TOKEN={dead}\n"),
    )
    .unwrap();
    let route = format!(
        "[[alert]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"{}\"\n",
        am.base
    );
    let token = |name: &str| {
        format!(
            "[[token]]\nname = \"{name}\"\nenv_file = \"{name}.env\"\ninterval = \"2s\"\nalerts = [\"am\"]\n\n"
        )
    };
    let path = dir.path().join("permatoken.toml");
    let text = format!("{}{}{route}", token("orders"), token("billing"));
    let loaded = config::parse(&text, &path).unwrap();
    assert!(
        loaded.warnings.iter().any(|w| w.contains("`am`")),
        "plain http is warned of: {:?}",
        loaded.warnings
    );
    let mut graph = permatoken_graph::Config::new(sandbox.url());
    graph.retry.max_retries = 1;
    let (publisher, _subscriber) = snapshot::channel(Snapshot::default());
    let mut daemon = Daemon::new(Options {
        config: loaded.config,
        store: Store::open(dir.path().join("state.db")).await.unwrap(),
        publisher,
        counters: Counters::default(),
        sender: Sender::new(ProxyConfig::default(), None),
        graph,
        clock: Arc::new(SystemClock),
        backup_dir: Some(dir.path().join("backups")),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (reloads, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let running = tokio::spawn(async move {
        daemon
            .run(
                async {
                    let _ = stopped.await;
                },
                reload_rx,
            )
            .await
    });

    // Dead: the alert fires with the documented labels and words, and no secret.
    let (raw, firing) = wait_for(
        &am,
        "orders",
        Duration::from_secs(60),
        "the dead token's alert",
        |a| !a.is_empty(),
    )
    .await;
    assert_eq!(firing.len(), 1, "{raw}");
    let alert = &firing[0];
    assert_eq!(
        alert["labels"],
        serde_json::json!({
            "alertname": "PermatokenTokenState",
            "token": "orders",
            "state": "dead",
            "severity": "critical",
        })
    );
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    assert_eq!(
        alert["annotations"]["summary"],
        "permatoken: token `orders` is dead"
    );
    assert!(
        !alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert!(alert["annotations"]["fix"].is_string(), "{alert}");
    for secret in [
        dead.as_str(),
        good.as_str(),
        sandbox.app_secret().expose_secret(),
    ] {
        assert!(!raw.contains(secret), "a secret in Alertmanager: {raw}");
    }
    let first_end = ends_at(alert);
    assert!(first_end > Timestamp::now(), "{alert}");

    // Active: sent again each minute with `endsAt` moved on, the same one alert.
    let (raw, again) = wait_for(&am, "orders", Duration::from_secs(100), "a resend", |a| {
        a.len() == 1 && ends_at(&a[0]) > first_end
    })
    .await;
    wait_for(
        &am,
        "billing",
        Duration::from_secs(5),
        "billing fires",
        |a| a.len() == 1,
    )
    .await;
    assert_eq!(again[0]["labels"]["state"], "dead", "{raw}");
    assert_eq!(again[0]["startsAt"], alert["startsAt"], "{raw}");

    // Replaced by a good token: recovered, the alert resolves. Taken out of the configuration
    // (still dead): resolved at the next resend.
    std::fs::write(&env, format!("{app}WHATSAPP_ACCESS_TOKEN={good}\n")).unwrap();
    let text = format!("{}{route}", token("orders"));
    reloads
        .send(config::parse(&text, &path).unwrap().config)
        .unwrap();
    let (raw, _) = wait_for(
        &am,
        "orders",
        Duration::from_secs(60),
        "orders resolved",
        |a| a.is_empty(),
    )
    .await;
    assert!(!raw.contains("\"token\":\"orders\""), "{raw}");
    wait_for(
        &am,
        "billing",
        Duration::from_secs(100),
        "billing resolved",
        |a| a.is_empty(),
    )
    .await;

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
