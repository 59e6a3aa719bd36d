//! Tokens that cannot be checked stay in sight: a file that holds no token is sent nowhere and is
//! unknown with its fix (never dead), and a set's member that cannot be read stays on the page with
//! the reason; a member removed for real is an event, and a set losing more than a tenth of its
//! members in one listing is one alert for the set.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use permatoken_graph::ProxyConfig;
use permatoken_sandbox::{Options as SandboxOptions, Running, Sandbox};
use permatoken_state::Store;
use permatoken_watch::alert::Sender;
use permatoken_watch::config;
use permatoken_watch::daemon::{Clock, Daemon, Options};
use permatoken_watch::metrics::Counters;
use permatoken_watch::snapshot::{self, Snapshot, Status, TokenView};
use serde_json::Value;

#[derive(Clone, Default)]
struct TestClock(Arc<AtomicI64>);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::now() + SignedDuration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

impl TestClock {
    fn advance(&self, by: Duration) {
        self.0
            .fetch_add(i64::try_from(by.as_secs()).unwrap(), Ordering::SeqCst);
    }
}

async fn daemon(
    sandbox: &Running,
    dir: &Path,
    text: &str,
) -> (Daemon, snapshot::Subscriber, TestClock) {
    let config = config::parse(text, &dir.join("permatoken.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    let store = Store::open(&dir.join("state.db"))
        .await
        .expect("the state opens");
    let (publisher, subscriber) = snapshot::channel(Snapshot::default());
    let mut graph = permatoken_graph::Config::new(sandbox.url());
    graph.retry.max_retries = 1;
    let clock = TestClock::default();
    let daemon = Daemon::new(Options {
        config,
        store,
        publisher,
        counters: Counters::default(),
        sender: Sender::new(ProxyConfig::default(), None),
        graph,
        clock: Arc::new(clock.clone()),
        backup_dir: Some(dir.join("backups")),
    });
    (daemon, subscriber, clock)
}

/// The `[[alert]]` of a command route that appends each alert, one JSON a line, to `log`: in one
/// write, since a route's deliveries may run at once.
fn route(log: &Path) -> String {
    format!(
        "[[alert]]\nname = \"ops\"\nkind = \"command\"\ncommand = \"printf '%s\\\\n' \\\"$(cat)\\\" >> '{log}'\"\n",
        log = log.display()
    )
}

/// The alerts the route of [`route`] received.
fn alerts(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn app_lines(sandbox: &Running) -> String {
    format!(
        "FACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\n",
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    )
}

fn view(snap: &Snapshot, name: &str) -> Option<TokenView> {
    snap.tokens.iter().find(|t| t.name == name).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_holds_no_token_is_sent_nowhere_unknown_with_its_fix_and_never_dead() {
    let sandbox = Sandbox::start_background(&SandboxOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = sandbox.token("system-user").unwrap();
    let good = good.expose_secret();
    // A private key pointed at by mistake, and a JSON text holding a token in an env file (with the
    // app's credentials, so that it would be batched).
    let key = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        "PERMATOKENTESTMIIEvQIBADANBgkqhkiG9w0BAQEFAASC".repeat(3)
    );
    std::fs::write(dir.path().join("server.key"), &key).unwrap();
    std::fs::write(
        dir.path().join("json.env"),
        format!(
            "{}WHATSAPP_ACCESS_TOKEN='{{\"access_token\":\"PERMATOKENTEST{good}\"}}'\n",
            app_lines(&sandbox)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("good.env"),
        format!("{}WHATSAPP_ACCESS_TOKEN={good}\n", app_lines(&sandbox)),
    )
    .unwrap();
    let log = dir.path().join("alerts.log");
    let text = format!(
        r#"
[defaults]
unknown_after = "1h"

[[token]]
name = "key"
token_file = "server.key"
alerts = ["ops"]

[[token]]
name = "json"
env_file = "json.env"
alerts = ["ops"]

[[token]]
name = "good"
env_file = "good.env"
alerts = ["ops"]

{}"#,
        route(&log)
    );
    let (mut daemon, subscriber, clock) = daemon(&sandbox, dir.path(), &text).await;
    daemon.run_due(clock.now()).await.expect("a round");
    let snap = subscriber.borrow().clone();
    for (name, file) in [("key", "server.key"), ("json", "json.env")] {
        let t = view(&snap, name).unwrap();
        assert_eq!(t.status, Status::Unknown, "{name}");
        let reason = t
            .reason
            .map(|r| r.words.message.clone())
            .unwrap_or_default();
        assert!(reason.contains(file), "{name}: {reason}");
        assert!(
            reason.contains("does not hold a Meta access token"),
            "{reason}"
        );
        assert!(!t.fingerprint.contains("--"), "{}", t.fingerprint);
    }
    assert_eq!(view(&snap, "good").unwrap().status, Status::Ok);
    assert!(view(&snap, "good").unwrap().reason.is_none());
    // Unknown for less than `unknown_after`: nobody alerted yet.
    assert!(alerts(&log).is_empty(), "{:?}", alerts(&log));

    clock.advance(Duration::from_secs(2 * 3600));
    daemon.run_due(clock.now()).await.expect("a round");
    let said = alerts(&log);
    let mut states: Vec<(&str, &str)> = said
        .iter()
        .map(|a| (a["token"].as_str().unwrap(), a["state"].as_str().unwrap()))
        .collect();
    states.sort_unstable();
    assert_eq!(
        states,
        [("json", "cannot_be_checked"), ("key", "cannot_be_checked")],
        "{said:?}"
    );
    for alert in &said {
        let fix = alert["fix"].as_str().unwrap();
        assert!(
            fix.starts_with("this file does not hold a Meta access token"),
            "{fix}"
        );
        let text = alert.to_string();
        assert!(!text.contains("PERMATOKENTEST"), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }

    // Nothing of either file reached the sandbox: not a `/debug_token`, a `/me` or a batch.
    let requests = sandbox.requests();
    assert!(!requests.is_empty(), "the good token was checked");
    for r in &requests {
        let sent = format!(
            "{} {} {}",
            r.target(),
            r.authorization.as_deref().unwrap_or_default(),
            r.body
        );
        assert!(!sent.contains("PERMATOKENTEST"), "{sent}");
        assert!(!sent.contains("PRIVATE"), "{sent}");
        assert!(!sent.contains("access_token%22"), "{sent}");
    }
}

fn client(root: &Path, folder: &str, sandbox: &Running, token: &str) {
    let folder = root.join(folder);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join(".env"),
        format!("{}WHATSAPP_ACCESS_TOKEN={token}\n", app_lines(sandbox)),
    )
    .unwrap();
}

/// The set alerts (`set_shrunk`) and the tokens' `cannot_be_checked` alerts received so far.
fn received(log: &Path) -> (Vec<Value>, Vec<String>) {
    let all = alerts(log);
    let sets = all
        .iter()
        .filter(|a| a["state"] == "set_shrunk")
        .cloned()
        .collect();
    let mut unknown: Vec<String> = all
        .iter()
        .filter(|a| a["state"] == "cannot_be_checked")
        .map(|a| a["token"].as_str().unwrap().to_owned())
        .collect();
    unknown.sort();
    (sets, unknown)
}

// Runs as root here, which ignores permissions: the members that cannot be read are made so in
// ways that hold for root too (a `.env` that is a folder, a client folder that became a link to
// nothing, and the set's folder a loop of links, which no one can list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_members_that_cannot_be_read_stay_and_members_gone_are_said() {
    let sandbox = Sandbox::start_background(&SandboxOptions {
        extra_tokens: 20,
        ..SandboxOptions::default()
    })
    .unwrap();
    let extras = sandbox.extra_tokens();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("clients");
    for (i, token) in extras.iter().enumerate() {
        client(&root, &format!("c{i:02}"), &sandbox, token.expose_secret());
    }
    let log = dir.path().join("alerts.log");
    let text = format!(
        r#"
[defaults]
interval = "1h"
unknown_after = "1h"

[[token_set]]
name = "clients"
env_files = "clients/*/.env"
alerts = ["ops"]

{}"#,
        route(&log)
    );
    let (mut daemon, subscriber, clock) = daemon(&sandbox, dir.path(), &text).await;
    let step = daemon.run_due(clock.now()).await.expect("a round");
    assert_eq!(step.checked, 20);
    let hour = Duration::from_secs(3600 + 600);

    // c01's `.env` becomes a folder, c02's folder a link to nothing; c03 is removed for real.
    std::fs::remove_file(root.join("c01/.env")).unwrap();
    std::fs::create_dir(root.join("c01/.env")).unwrap();
    std::fs::remove_dir_all(root.join("c02")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("nowhere"), root.join("c02")).unwrap();
    std::fs::remove_dir_all(root.join("c03")).unwrap();
    clock.advance(hour);
    daemon.run_due(clock.now()).await.expect("a round");
    let snap = subscriber.borrow().clone();
    assert_eq!(snap.tokens.len(), 19, "only c03 left the page");
    assert!(view(&snap, "clients/c03").is_none());
    for (name, why) in [
        ("clients/c01", "Is a directory"),
        ("clients/c02", "No such file"),
    ] {
        let t = view(&snap, name).unwrap_or_else(|| panic!("{name} vanished"));
        assert_eq!(t.status, Status::Unknown, "{name}");
        let r = t.reason.unwrap_or_else(|| panic!("{name} has no reason"));
        // The page says when it was last tried, though no check could be recorded.
        assert!(r.unknown, "{name}");
        assert_eq!(r.tried_at, snap.generated_at, "{name}");
        assert!(r.words.fix.is_some(), "{name}");
        let reason = &r.words.message;
        assert!(
            reason.contains(why) && reason.contains(".env"),
            "{name}: {reason}"
        );
    }
    let gone = snap
        .events
        .iter()
        .find(|e| e.token.as_deref() == Some("clients/c03"))
        .expect("c03's removal is an event");
    assert!(gone.text.contains("c03/.env` is gone"), "{}", gone.text);
    // One member in 20 gone is no alert for the set; the unreadable ones are not alerted yet.
    assert_eq!(received(&log), (vec![], vec![]));

    // Unreadable past `unknown_after`: `cannot_be_checked`, each once.
    clock.advance(hour);
    daemon.run_due(clock.now()).await.expect("a round");
    let (sets, unknown) = received(&log);
    assert!(sets.is_empty(), "{sets:?}");
    assert_eq!(unknown, ["clients/c01", "clients/c02"]);

    // Three of the 19 gone in one listing: more than a tenth, one alert for the set.
    for gone in ["c10", "c11", "c12"] {
        std::fs::remove_dir_all(root.join(gone)).unwrap();
    }
    clock.advance(hour);
    daemon.run_due(clock.now()).await.expect("a round");
    let (sets, _) = received(&log);
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0]["token"], "clients");
    assert_eq!(sets[0]["kind"], "change");
    let message = sets[0]["message"].as_str().unwrap();
    assert!(message.contains("lost 3 of its 19 members"), "{message}");
    let snap = subscriber.borrow().clone();
    assert_eq!(snap.tokens.len(), 16);

    // The set's folder cannot be listed at all (a loop of links): every member stays, nothing is
    // said gone, and their checks say why they cannot be read.
    std::fs::rename(&root, dir.path().join("clients.moved")).unwrap();
    std::os::unix::fs::symlink(&root, &root).unwrap();
    clock.advance(hour);
    daemon.run_due(clock.now()).await.expect("a round");
    let snap = subscriber.borrow().clone();
    assert_eq!(snap.tokens.len(), 16, "no mass removal");
    let removals = snap
        .events
        .iter()
        .filter(|e| e.text.contains("left its set"))
        .count();
    assert_eq!(removals, 4, "c03, c10, c11, c12 only");
    let (sets, _) = received(&log);
    assert_eq!(sets.len(), 1, "no second set alert");
    let t = view(&snap, "clients/c05").unwrap();
    assert_eq!(t.status, Status::Unknown);
    let reason = t
        .reason
        .map(|r| r.words.message.clone())
        .unwrap_or_default();
    assert!(reason.contains("symbolic links"), "{reason}");
}
