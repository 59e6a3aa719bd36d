//! `[[token_set]]` against the sandbox: one token per client folder, named by the folder; folders
//! added and removed between rounds; a file that cannot be read; each client's alert route; the
//! reload given the file and folder as `$1`/`$2` (a hostile folder name runs nothing) and no more
//! reloads at once than `max_concurrent_reloads`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};
use permatoken_graph::ProxyConfig;
use permatoken_sandbox::{Options as SandboxOptions, Running, Sandbox};
use permatoken_state::Store;
use permatoken_watch::alert::Sender;
use permatoken_watch::config;
use permatoken_watch::daemon::{Clock, Daemon, Options};
use permatoken_watch::metrics::Counters;
use permatoken_watch::snapshot::{self, Snapshot, Status};

#[derive(Clone, Default)]
struct TestClock(Arc<AtomicI64>);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::now() + SignedDuration::from_secs(self.0.load(Ordering::SeqCst))
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

fn client(root: &Path, folder: &str, sandbox: &Running, token: &str, extra: &str) {
    let folder = root.join(folder);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join(".env"),
        format!(
            "FACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\nWHATSAPP_ACCESS_TOKEN={token}\n{extra}",
            sandbox.app().id,
            sandbox.app_secret().expose_secret()
        ),
    )
    .unwrap();
}

fn names(snap: &Snapshot) -> Vec<String> {
    let mut names: Vec<String> = snap.tokens.iter().map(|t| t.name.clone()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_of_client_folders_is_watched_and_follows_the_files() {
    let sandbox = Sandbox::start_background(&SandboxOptions {
        extra_tokens: 40,
        ..SandboxOptions::default()
    })
    .unwrap();
    let extras = sandbox.extra_tokens();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("clients");
    for (i, token) in extras.iter().take(30).enumerate() {
        let extra = match i {
            8 => "PERMATOKEN_ALERT_ROUTE=nope\n",
            _ => "",
        };
        client(
            &root,
            &format!("c{i:02}"),
            &sandbox,
            token.expose_secret(),
            extra,
        );
    }
    // c07 holds a dead token and names its own route.
    let dead = sandbox.token("expired").unwrap();
    client(
        &root,
        "c07",
        &sandbox,
        dead.expose_secret(),
        "PERMATOKEN_ALERT_ROUTE=client-c07\n",
    );
    // c30's file is a link to nothing: there, but not readable.
    std::fs::create_dir_all(root.join("c30")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone"), root.join("c30/.env")).unwrap();
    // Neither a hidden folder nor a folder without the file is a token.
    client(&root, ".hidden", &sandbox, extras[39].expose_secret(), "");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let ops = dir.path().join("ops.log");
    let own = dir.path().join("c07.log");
    let text = format!(
        r#"
[defaults]
interval = "1h"

[[token_set]]
name = "clients"
env_files = "clients/*/.env"
alerts = ["ops"]
alert_route_key = "PERMATOKEN_ALERT_ROUTE"

[[alert]]
name = "ops"
kind = "command"
# One write per alert: a route's deliveries may run at once.
command = "printf '%s\\n' \"$(cat)\" >> '{}'"

[[alert]]
name = "client-c07"
kind = "command"
command = "cat >> '{}'"
"#,
        ops.display(),
        own.display()
    );
    let (mut daemon, subscriber, clock) = daemon(&sandbox, dir.path(), &text).await;

    let step = daemon.run_due(clock.now()).await.expect("a round");
    assert_eq!(step.checked, 31);
    let snap = subscriber.borrow().clone();
    let expected: Vec<String> = (0..=30).map(|i| format!("clients/c{i:02}")).collect();
    assert_eq!(names(&snap), expected);
    for t in &snap.tokens {
        let want = match t.name.as_str() {
            "clients/c30" | "clients/c07" => continue,
            _ => Status::Ok,
        };
        assert_eq!(t.status, want, "{}", t.name);
    }
    let view = |snap: &Snapshot, name: &str| snap.tokens.iter().find(|t| t.name == name).cloned();
    assert_eq!(view(&snap, "clients/c30").unwrap().status, Status::Unknown);
    assert!(!view(&snap, "clients/c07").unwrap().valid);

    // c07's death went to its own route and to the set's.
    let said = std::fs::read_to_string(&own).expect("the client's route got its alert");
    let alert: serde_json::Value = serde_json::from_str(&said).unwrap();
    assert_eq!(alert["token"], "clients/c07");
    assert_eq!(alert["state"], "dead");
    assert!(
        std::fs::read_to_string(&ops)
            .unwrap()
            .contains("clients/c07")
    );
    // c08 names a route that does not exist: said for that token, and its check went on.
    assert!(
        snap.events
            .iter()
            .any(|e| e.token.as_deref() == Some("clients/c08")
                && e.text.contains("`nope`")
                && e.text.contains("no [[alert]] has that name")),
        "{:?}",
        snap.events
    );
    assert_eq!(view(&snap, "clients/c08").unwrap().status, Status::Ok);

    // A folder added is checked at the next step, before anything else is due.
    client(&root, "c31", &sandbox, extras[31].expose_secret(), "");
    let step = daemon.run_due(clock.now()).await.expect("a round");
    assert_eq!(step.checked, 1);
    let snap = subscriber.borrow().clone();
    assert_eq!(view(&snap, "clients/c31").unwrap().status, Status::Ok);

    // A folder removed is gone from the snapshot, even with nothing due.
    std::fs::remove_dir_all(root.join("c00")).unwrap();
    let step = daemon.run_due(clock.now()).await.expect("a round");
    assert_eq!(step.checked, 0);
    let snap = subscriber.borrow().clone();
    assert!(view(&snap, "clients/c00").is_none());
    assert_eq!(snap.tokens.len(), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_get_file_and_folder_as_arguments_and_run_a_bounded_number_at_once() {
    let sandbox = Sandbox::start_background(&SandboxOptions {
        extra_tokens: 12,
        ..SandboxOptions::default()
    })
    .unwrap();
    let extras = sandbox.extra_tokens();
    let dead = sandbox.token("expired").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("clients");
    // Each primary is dead and has a healthy backup: the failover writes the file, then reloads.
    let hostile = "$(touch pwned)";
    let mut folders: Vec<String> = (0..11).map(|i| format!("c{i:02}")).collect();
    folders.push(hostile.to_owned());
    for (i, folder) in folders.iter().enumerate() {
        client(
            &root,
            folder,
            &sandbox,
            dead.expose_secret(),
            &format!(
                "WHATSAPP_ACCESS_TOKEN_BACKUP={}\n",
                extras[i].expose_secret()
            ),
        );
    }
    let running = dir.path().join("running");
    std::fs::create_dir(&running).unwrap();
    let args = dir.path().join("args.log");
    let counts = dir.path().join("counts.log");
    let script = dir.path().join("reload.sh");
    // How many reloads run while this one does: each marks itself in `running` and counts.
    std::fs::write(
        &script,
        format!(
            "printf '%s|%s\\n' \"$1\" \"$2\" >> '{args}'\nmkdir '{run}'/$$\nls '{run}' | wc -l >> '{counts}'\nsleep 0.3\nrmdir '{run}'/$$\n",
            args = args.display(),
            run = running.display(),
            counts = counts.display()
        ),
    )
    .unwrap();
    let text = format!(
        r#"
[defaults]
max_concurrent_reloads = 9

[[token_set]]
name = "clients"
env_files = "clients/*/.env"
reload = "sh '{}' \"$1\" \"$2\""
max_concurrent_reloads = 2
"#,
        script.display()
    );
    let (mut daemon, subscriber, clock) = daemon(&sandbox, dir.path(), &text).await;
    let step = daemon.run_due(clock.now()).await.expect("a round");
    assert_eq!(step.checked, 12);
    let snap = subscriber.borrow().clone();
    assert_eq!(snap.tokens.iter().filter(|t| t.valid).count(), 12);

    let mut got: Vec<String> = std::fs::read_to_string(&args)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    let mut expected: Vec<String> = folders
        .iter()
        .map(|f| {
            let folder = root.join(f);
            format!("{}|{}", folder.join(".env").display(), folder.display())
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected, "each reload got its file and folder");
    assert!(got.iter().any(|l| l.contains("$(touch pwned)")));
    // The folder's name was data: nothing ran it, here or in any folder the reload could be in.
    for place in [
        dir.path().to_owned(),
        root.clone(),
        root.join(hostile),
        std::env::current_dir().unwrap(),
    ] {
        assert!(!place.join("pwned").exists(), "{}", place.display());
    }
    let counts: Vec<usize> = std::fs::read_to_string(&counts)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 12);
    let most = counts.iter().copied().max().unwrap();
    assert!(
        (1..=2).contains(&most),
        "at most 2 reloads at once: {counts:?}"
    );
}
