//! Issue 16, item 5, as an operator sees it: `--log-format json` lines a collector can parse, with
//! no secret in any field, and the probes `/healthz` and `/readyz` of a real `watch`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use permatoken_sandbox::Running;
use serde_json::Value;

use crate::harness::{Test, app_lines, sandbox, token_of};
use crate::watch::{get, receiver};

/// Generous: liveness, never speed.
const DEADLINE: Duration = Duration::from_secs(60);

/// A `permatoken watch` daemon and its standard error, line by line.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Daemon {
    fn start(dir: &Path, sandbox: &Running, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_permatoken"))
            .arg("watch")
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("PERMATOKEN_GRAPH_URL", sandbox.url())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the permatoken binary runs");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a line holding `needle`.
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

    /// The address of its endpoint, from the line that says it (text or JSON).
    fn addr(&mut self) -> String {
        let line = self.wait_for("serving the status page");
        let tail = line.split("http://").nth(1).expect("the address is logged");
        tail.split('/').next().unwrap().to_owned()
    }

    /// SIGTERM, the exit code, and every line it wrote.
    fn stop(mut self) -> (Option<i32>, Vec<String>) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
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
        (status.code(), std::mem::take(&mut self.log))
    }
}

impl Drop for Daemon {
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
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("not within {DEADLINE:?}: {what}");
}

/// Each line is one JSON object with a timestamp, a level and a message, and holds none of
/// `secrets`; the parsed lines.
#[track_caller]
fn json_lines(log: &[String], secrets: &[&str]) -> Vec<Value> {
    assert!(!log.is_empty(), "nothing was logged");
    log.iter()
        .map(|line| {
            for secret in secrets {
                assert!(!line.contains(secret), "a secret in the log: {line}");
            }
            let json: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(json["timestamp"].is_string(), "{line}");
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                    .contains(&json["level"].as_str().unwrap_or("")),
                "{line}"
            );
            assert!(json["message"].is_string(), "{line}");
            json
        })
        .collect()
}

#[test]
fn json_logs_are_one_object_a_line_and_hold_no_secret() {
    let sandbox = sandbox();
    let (hook, seen) = receiver(200);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let secret_path = format!("PERMATOKENTEST-route-{}", std::process::id());
    std::fs::write(p.join("ops.url"), format!("{hook}/{secret_path}\n")).unwrap();
    std::fs::write(p.join("ops.key"), "PERMATOKENTEST-signing-key\n").unwrap();
    let mut config = String::from("[defaults]\ninterval = \"1h\"\n");
    for (name, scenario) in [("orders", "system-user"), ("billing", "password-changed")] {
        std::fs::write(
            p.join(format!("{name}.env")),
            format!(
                "WHATSAPP_ACCESS_TOKEN={}\n{}",
                token_of(&sandbox, scenario),
                app_lines(&sandbox)
            ),
        )
        .unwrap();
        config.push_str(&format!(
            "\n[[token]]\nname = \"{name}\"\nenv_file = \"{name}.env\"\nalerts = [\"ops\"]\n"
        ));
    }
    config.push_str(
        "\n[[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl_file = \"ops.url\"\nsecret_file = \"ops.key\"\n",
    );
    std::fs::write(p.join("permatoken.toml"), &config).unwrap();
    let app_secret = sandbox.app_secret().expose_secret().to_owned();
    let tokens = [
        token_of(&sandbox, "system-user"),
        token_of(&sandbox, "password-changed"),
    ];
    let secrets = [
        tokens[0].as_str(),
        tokens[1].as_str(),
        app_secret.as_str(),
        secret_path.as_str(),
        "PERMATOKENTEST",
    ];

    let args = [
        "--config",
        "permatoken.toml",
        "--state",
        "state.db",
        "--listen",
        "127.0.0.1:0",
    ];
    let mut watch = Daemon::start(
        p,
        &sandbox,
        &[&args[..], &["--log-format", "json"]].concat(),
        &[],
    );
    // At start, before the endpoint; once, whatever the deliveries.
    watch.wait_for("sends alerts over plain http://");
    let addr = watch.addr();
    eventually("the dead token is alerted", || {
        !seen.lock().unwrap().is_empty()
    });
    eventually("/healthz is ok", || {
        get(&addr, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    let (code, log) = watch.stop();
    assert_eq!(code, Some(0), "{}", log.join("\n"));
    let lines = json_lines(&log, &secrets);
    let plain = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("plain http://"))
        })
        .count();
    assert_eq!(plain, 1, "{log:?}");
    let dead = lines
        .iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.contains("dead")))
        .unwrap_or_else(|| panic!("the dead token is logged: {log:?}"));
    assert_eq!(dead["level"], "WARN", "{dead}");
    assert!(lines.iter().any(|l| l["message"] == "stopped"), "{log:?}");

    // `PERMATOKEN_LOG_FORMAT=json` does the same, for a unit file's environment.
    let once = Test::against(&sandbox)
        .env("PERMATOKEN_LOG_FORMAT", "json")
        .args(["watch", "--once", "--config"])
        .args([p.join("permatoken.toml").display().to_string()])
        .args(["--state", &p.join("once.db").display().to_string()])
        .run();
    assert_eq!(once.code, 2, "{}", once.stderr);
    let log: Vec<String> = once.stderr.lines().map(str::to_owned).collect();
    json_lines(&log, &secrets);
}

/// The JSON `/healthz` of a replica: (status, the reasons it fails for).
fn health(addr: &str) -> Option<(u16, Vec<String>)> {
    let (status, body) = get(addr, "/healthz")?;
    let json: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/healthz is not JSON ({e}): {body}"));
    let reasons = json["problems"]
        .as_array()
        .map(|p| {
            p.iter()
                .map(|p| p["reason"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    Some((status, reasons))
}

#[test]
fn healthz_turns_503_on_both_replicas_while_postgres_is_stopped_and_200_once_it_is_back() {
    use crate::watch_leader::{Replica, elect};
    use crate::watch_postgres::pg_cluster::{PgCluster, WATCH};
    let Some(pg) = PgCluster::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    pg.create_database("fleet", WATCH);
    let url = pg.url(WATCH, "fleet", "?sslmode=disable");
    let tokens = sandbox();
    std::fs::write(
        p.join("orders.env"),
        format!(
            "WHATSAPP_ACCESS_TOKEN={}\n{}",
            token_of(&tokens, "system-user"),
            app_lines(&tokens)
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("permatoken.toml"),
        "[defaults]\ninterval = \"1h\"\n\n[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\n",
    )
    .unwrap();
    let lease = [("PERMATOKEN_LEADER_LEASE", "3")];
    let (leader, standby) = elect(
        Replica::start_with(p, &url, &pg, &lease),
        Replica::start_with(p, &url, &pg, &lease),
    );
    for replica in [&leader, &standby] {
        eventually("/healthz is ok and /readyz ready", || {
            health(&replica.addr).is_some_and(|(s, _)| s == 200)
                && get(&replica.addr, "/readyz").is_some_and(|(s, _)| s == 200)
        });
    }

    pg.stop();
    for replica in [&standby, &leader] {
        eventually("/healthz says the state database cannot be reached", || {
            health(&replica.addr)
                .is_some_and(|(s, r)| s == 503 && r.contains(&"state_unreachable".to_owned()))
        });
        // The page is still served: ready, though not healthy.
        assert_eq!(get(&replica.addr, "/readyz").unwrap().0, 200);
    }
    let (_, body) = get(&standby.addr, "/healthz").unwrap();
    assert!(body.contains("the lease is 3 s"), "{body}");
    assert!(!body.contains(pg.password()), "{body}");

    pg.start_again();
    for replica in [&standby, &leader] {
        eventually("/healthz is ok again", || {
            health(&replica.addr).is_some_and(|(s, _)| s == 200)
        });
    }
    for replica in [leader, standby] {
        let log = replica.stop().join("\n");
        assert!(!log.contains(pg.password()), "the password is logged");
    }
}

/// The documents of the Kubernetes manifest, each as (kind, its text).
fn manifest() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../contrib/kubernetes/permatoken-watch.yaml"),
    )
    .unwrap();
    text.split("\n---\n")
        .map(|doc| {
            assert!(!doc.contains('\t'), "YAML takes no tab: {doc}");
            assert!(doc.lines().any(|l| l.starts_with("apiVersion: ")), "{doc}");
            let kind = doc
                .lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .unwrap_or_else(|| panic!("a document without a kind: {doc}"));
            (kind.trim().to_owned(), doc.to_owned())
        })
        .collect()
}

/// The value of the first `key: value` line after the line holding `after`, in `doc`.
fn value_after<'a>(doc: &'a str, after: &str, key: &str) -> &'a str {
    doc.lines()
        .skip_while(|l| !l.contains(after))
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}` after `{after}`"))
        .trim_matches('"')
}

#[test]
fn the_kubernetes_manifest_probes_liveness_and_readiness_apart_and_has_a_service_and_a_budget() {
    let docs = manifest();
    let kinds: Vec<&str> = docs.iter().map(|(k, _)| k.as_str()).collect();
    for kind in [
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(&kind), "no {kind}: {kinds:?}");
    }
    let deployment = &docs.iter().find(|(k, _)| k == "Deployment").unwrap().1;
    assert_eq!(
        value_after(deployment, "livenessProbe:", "path"),
        "/healthz"
    );
    assert_eq!(
        value_after(deployment, "readinessProbe:", "path"),
        "/readyz"
    );
    for key in ["cpu", "memory"] {
        value_after(deployment, "requests:", key);
        value_after(deployment, "limits:", key);
    }
    // The Service's port is the one `--listen` names.
    let listen = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("- --listen=0.0.0.0:"))
        .expect("--listen");
    let service = &docs.iter().find(|(k, _)| k == "Service").unwrap().1;
    assert_eq!(value_after(service, "ports:", "port"), listen);
    assert_eq!(value_after(deployment, "ports:", "containerPort"), listen);
    let budget = &docs
        .iter()
        .find(|(k, _)| k == "PodDisruptionBudget")
        .unwrap()
        .1;
    assert_eq!(value_after(budget, "spec:", "minAvailable"), "1");
    // The env files come from a Secret, read-only, where the set's pattern finds them.
    let volumes = &deployment[deployment.find("\n      volumes:").expect("volumes")..];
    assert_eq!(
        value_after(volumes, "- name: env-files", "secretName"),
        "permatoken-env-files"
    );
    assert_eq!(
        value_after(deployment, "mountPath: /srv/clients", "readOnly"),
        "true"
    );
}

/// The token set of the manifest's ConfigMap finds the env files where the kubelet puts a Secret's
/// `items` (`acme/.env` behind the `..data` link of an atomic update), and says so at
/// `--check-config`.
#[test]
fn the_kubernetes_token_set_finds_the_env_files_of_a_mounted_secret() {
    let docs = manifest();
    let config = &docs.iter().find(|(k, _)| k == "ConfigMap").unwrap().1;
    let toml: String = config
        .lines()
        .skip_while(|l| l.trim() != "permatoken.toml: |")
        .skip(1)
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("clients");
    // As the kubelet lays out a Secret volume.
    let data = mount.join("..2026_12_08_03_00_00.000000001");
    std::fs::create_dir_all(data.join("acme")).unwrap();
    std::fs::write(
        data.join("acme/.env"),
        "WHATSAPP_ACCESS_TOKEN=PERMATOKENTEST\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(data.file_name().unwrap(), mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/acme", mount.join("acme")).unwrap();
    let toml = toml
        .replace("/srv/clients", &mount.display().to_string())
        .replace("/etc/permatoken-secrets/slack-url", "slack.url");
    let out = Test::new()
        .write("permatoken.toml", &toml)
        .args(["watch", "--config", "permatoken.toml", "--check-config"])
        .run();
    out.assert_code(0);
    assert!(
        out.stdout.contains("matches 1 file(s) now"),
        "{}",
        out.stdout
    );
}
