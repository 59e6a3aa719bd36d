//! `permatoken watch` as a user runs it: `--check-config`, `--once` exit codes, `--test-alert` to a
//! local receiver, and the real daemon: its HTTP endpoint, SIGHUP taking in a new token, a second
//! instance on the same state file refused, SIGTERM ending it with exit 0. Signals are sent with the
//! `kill` command.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use permatoken_sandbox::Running;

use crate::harness::{Test, app_lines, sandbox, token_of};

/// Generous: liveness, never speed.
const DEADLINE: Duration = Duration::from_secs(60);

fn config_for(tokens: &[&str], extra: &str) -> String {
    let mut text = String::from("[defaults]\ninterval = \"1h\"\n");
    for name in tokens {
        text.push_str(&format!(
            "\n[[token]]\nname = \"{name}\"\nenv_file = \"{name}.env\"\n"
        ));
    }
    text.push_str(extra);
    text
}

fn env_for(sandbox: &Running, scenario: &str) -> String {
    format!(
        "WHATSAPP_ACCESS_TOKEN={}\n{}",
        token_of(sandbox, scenario),
        app_lines(sandbox)
    )
}

#[test]
fn check_config_accepts_a_good_file_and_names_line_and_column_of_a_bad_one() {
    let good = Test::new()
        .write("permatoken.toml", &config_for(&["orders"], ""))
        .args(["watch", "--config", "permatoken.toml", "--check-config"])
        .run();
    good.assert_code(0);
    assert!(
        good.stdout
            .contains("is valid: 1 token(s), 0 token set(s), 0 alert route(s)"),
        "{}",
        good.stdout
    );

    // A set is counted, and what its pattern matches now is said.
    let set = Test::new()
        .write("clients/a/.env", "WHATSAPP_ACCESS_TOKEN=x\n")
        .write("clients/b/.env", "WHATSAPP_ACCESS_TOKEN=x\n")
        .write(
            "permatoken.toml",
            "[[token_set]]\nname = \"clients\"\nenv_files = \"clients/*/.env\"\n",
        )
        .args(["watch", "--config", "permatoken.toml", "--check-config"])
        .run();
    set.assert_code(0);
    assert!(
        set.stdout.contains("0 token(s), 1 token set(s)")
            && set.stdout.contains("set `clients`")
            && set.stdout.contains("matches 2 file(s) now"),
        "{}",
        set.stdout
    );

    let bad = Test::new()
        .write(
            "permatoken.toml",
            "[defaults]\nwarn_days = 14\ninterval = \"forever\"\n",
        )
        .args(["watch", "--config", "permatoken.toml", "--check-config"])
        .run();
    bad.assert_code(3);
    assert!(
        bad.stderr.contains("permatoken.toml:3:12"),
        "the message names line and column: {}",
        bad.stderr
    );

    let json = Test::new()
        .write("permatoken.toml", &config_for(&["orders", "billing"], ""))
        .args([
            "watch",
            "--config",
            "permatoken.toml",
            "--check-config",
            "--json",
        ])
        .run();
    json.assert_code(0);
    assert_eq!(
        json.json()["tokens"],
        serde_json::json!(["orders", "billing"])
    );
}

#[test]
fn check_config_warns_of_files_it_cannot_read_and_strict_fails_on_them() {
    let extra = "\n[[token]]\nname = \"billing\"\ntoken_file = \"billing.token\"\napp_id = \"1\"\napp_secret_file = \"secrets/app\"\n\
        \n[[token]]\nname = \"shop\"\nenv_file = \"shop.env\"\nbackups = [\"SHOP_SPARE\"]\n\
        \n[[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nsecret_file = \"hook.key\"\n";
    let config = config_for(&["orders"], extra);
    // `orders.env` missing, `billing.token` a folder, `secrets/app` and `hook.key` missing, and
    // `shop.env` lacking its backup: each said, none an error.
    let run = |strict: bool, json: bool| {
        let mut args = vec!["watch", "--config", "permatoken.toml", "--check-config"];
        args.extend(strict.then_some("--strict"));
        args.extend(json.then_some("--json"));
        let test = Test::new()
            .write("permatoken.toml", &config)
            .write("shop.env", "WHATSAPP_ACCESS_TOKEN=EAAPERMATOKENTESTshop\n");
        std::fs::create_dir(test.path().join("billing.token")).unwrap();
        let (out, dir) = test.args(&args).run_keep();
        (out, dir.path().to_owned())
    };
    let (out, dir) = run(false, false);
    out.assert_code(0);
    for expected in [
        format!(
            "token `orders`: cannot read its `env_file` `{}`: no such file",
            dir.join("orders.env").display()
        ),
        format!(
            "token `billing`: cannot read its `token_file` `{}`: it is a folder, not a file",
            dir.join("billing.token").display()
        ),
        format!(
            "token `billing`: cannot read its `app_secret_file` `{}`: no such file",
            dir.join("secrets/app").display()
        ),
        format!(
            "alert route `ops`: cannot read its `secret_file` `{}`: no such file",
            dir.join("hook.key").display()
        ),
        format!(
            "token `shop`: its backup `SHOP_SPARE` is not in `{}`",
            dir.join("shop.env").display()
        ),
    ] {
        assert!(
            out.stderr.contains(&format!("warning: {expected}")),
            "{expected}\nnot in:\n{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("EAAPERMATOKENTEST"), "{}", out.stderr);
    assert!(out.stdout.contains("is valid"), "{}", out.stdout);

    let (out, _) = run(false, true);
    out.assert_code(0);
    assert_eq!(out.json()["status"], "ok");
    assert_eq!(
        out.json()["warnings"].as_array().unwrap().len(),
        5,
        "{}",
        out.stdout
    );

    let (out, _) = run(true, false);
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("error: 5 warning(s), and --strict makes a warning fail the check"),
        "{}",
        out.stderr
    );
    let (out, _) = run(true, true);
    out.assert_code(3);
    let json = out.json();
    assert_eq!(json["status"], "unknown");
    assert_eq!(json["warnings"].as_array().unwrap().len(), 5);
    assert!(json["error"]["message"].is_string(), "{json:#}");

    // Every file there: no warning, and --strict passes.
    let out = Test::new()
        .write("permatoken.toml", &config_for(&["orders"], ""))
        .write(
            "orders.env",
            "WHATSAPP_ACCESS_TOKEN=EAAPERMATOKENTESTorders\n",
        )
        .args([
            "watch",
            "--config",
            "permatoken.toml",
            "--check-config",
            "--strict",
        ])
        .run();
    out.assert_code(0);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    // --strict belongs to --check-config.
    Test::new().args(["watch", "--strict"]).run().assert_code(3);
}

#[test]
fn once_exits_with_the_worst_status_of_the_round() {
    let sandbox = sandbox();
    for (scenario, code) in [
        ("system-user", 0),
        ("user-expiring", 1),
        ("user-expires-soon", 2),
        ("expired", 2),
    ] {
        let out = Test::against(&sandbox)
            .write("permatoken.toml", &config_for(&["orders"], ""))
            .write("orders.env", &env_for(&sandbox, scenario))
            .args(["watch", "--config", "permatoken.toml", "--once", "--json"])
            .run();
        assert_eq!(out.code, code, "{scenario}: {}{}", out.stdout, out.stderr);
        let json = out.json();
        assert_eq!(json["tokens"][0]["name"], "orders", "{json}");
        assert!(!out.stdout.contains(&token_of(&sandbox, scenario)));
        assert!(!out.stderr.contains(&token_of(&sandbox, scenario)));
    }
    // A file that cannot be read: unknown (3), not a crash.
    let out = Test::against(&sandbox)
        .write("permatoken.toml", &config_for(&["orders"], ""))
        .args(["watch", "--config", "permatoken.toml", "--once"])
        .run();
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("orders:"), "{}", out.stdout);
    // No configuration file: `./.env` with the defaults.
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .args(["watch", "--once"])
        .run();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("default: ok"), "{}", out.stdout);
}

#[test]
fn no_home_and_no_state_home_is_refused_with_exit_3() {
    let out = Test::new()
        .write("permatoken.toml", &config_for(&["orders"], ""))
        .args(["watch", "--config", "permatoken.toml", "--once"])
        .env("HOME", "")
        .run();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("XDG_STATE_HOME"), "{}", out.stderr);
}

/// A receiver on loopback answering every request with `status`; what it got.
pub(crate) fn receiver(status: u16) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let text = read_request(&mut stream);
            keep.lock().unwrap().push(text);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
        }
    });
    (url, seen)
}

fn read_request(stream: &mut TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    String::from_utf8_lossy(&body).into_owned()
}

#[test]
fn once_with_no_alerts_looks_without_sending_or_recording_an_alert() {
    let sandbox = sandbox();
    let (url, seen) = receiver(200);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let config = format!(
        "[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\nalerts = [\"ops\"]\n\
         \n[[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{url}\"\n"
    );
    std::fs::write(p.join("permatoken.toml"), config).unwrap();
    std::fs::write(p.join("orders.env"), env_for(&sandbox, "expired")).unwrap();
    let run = |extra: &[&str]| {
        Test::against(&sandbox)
            .args(["watch", "--once", "--json", "--config"])
            .args([p.join("permatoken.toml").display().to_string()])
            .args([
                "--state".to_owned(),
                p.join("state.db").display().to_string(),
            ])
            .args(extra)
            .run()
    };
    // Twice: the first look leaves no alert waiting for the second to send.
    for _ in 0..2 {
        let look = run(&["--no-alerts"]);
        look.assert_code(2);
        assert_eq!(look.json()["tokens"][0]["state"], "dead", "{}", look.stdout);
        assert!(
            look.stderr
                .contains("1 alert(s) decided and not sent nor recorded (--no-alerts)"),
            "{}",
            look.stderr
        );
        assert!(seen.lock().unwrap().is_empty(), "nothing received");
    }
    // Nothing was recorded as announced: a normal round alerts the death, once.
    let normal = run(&[]);
    normal.assert_code(2);
    let bodies = seen.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}\n{}", normal.stderr);
    let alert: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(
        (alert["token"].as_str(), alert["state"].as_str()),
        (Some("orders"), Some("dead")),
        "{alert:#}"
    );
    run(&[]).assert_code(2);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "announced once, and recorded so"
    );
    // Only with --once: a daemon that never alerts would be a silent one.
    let out = Test::new().args(["watch", "--no-alerts"]).run();
    out.assert_code(3);
    assert!(out.stderr.contains("--once"), "{}", out.stderr);
}

#[test]
fn test_alert_says_what_the_receiver_answered() {
    let (url, seen) = receiver(200);
    let route = format!("\n[[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{url}\"\n");
    let out = Test::new()
        .write("permatoken.toml", &config_for(&["orders"], &route))
        .args([
            "watch",
            "--config",
            "permatoken.toml",
            "--test-alert",
            "ops",
        ])
        .run();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("delivered to `ops`: HTTP 200"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("plain http://"),
        "a warning: {}",
        out.stderr
    );
    let bodies = seen.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    let alert: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(alert["kind"], "test");
    assert!(
        !out.stdout.contains(&url) && !out.stderr.contains(&url),
        "a URL is a secret"
    );

    let (url, _) = receiver(500);
    let route = format!("\n[[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{url}\"\n");
    let out = Test::new()
        .write("permatoken.toml", &config_for(&["orders"], &route))
        .args([
            "watch",
            "--config",
            "permatoken.toml",
            "--test-alert",
            "ops",
            "--json",
        ])
        .run();
    assert_eq!(out.code, 2, "refused: {}{}", out.stdout, out.stderr);
    assert_eq!(out.json()["http_status"], 500);

    let out = Test::new()
        .write("permatoken.toml", &config_for(&["orders"], &route))
        .args([
            "watch",
            "--config",
            "permatoken.toml",
            "--test-alert",
            "nope",
        ])
        .run();
    assert_eq!(out.code, 3);
    assert!(out.stderr.contains("the routes are: ops"), "{}", out.stderr);
}

pub(crate) fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

fn kill(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("the kill command runs");
    assert!(status.success());
}

/// Waits for a line of stderr holding `needle`; every line read is kept in `log`.
fn wait_for(lines: &mpsc::Receiver<String>, log: &mut Vec<String>, needle: &str) -> String {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                log.push(line.clone());
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
        log.join("\n")
    );
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

fn spawn_watch(dir: &Path, sandbox: &Running, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_permatoken"))
        .arg("watch")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("PERMATOKEN_GRAPH_URL", sandbox.url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the permatoken binary runs")
}

/// Starts watch with `--listen listen` (and a bearer token file), and returns the addresses it
/// says it serves on, then stops it with SIGTERM after `f` had them.
fn serving_on(listen: &str, f: impl FnOnce(&[String])) {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("permatoken.toml"), config_for(&["orders"], "")).unwrap();
    std::fs::write(p.join("orders.env"), env_for(&sandbox, "system-user")).unwrap();
    std::fs::write(p.join("http.token"), "PERMATOKENTEST-0123456789abcdef\n").unwrap();
    let mut child = spawn_watch(
        p,
        &sandbox,
        &[
            "--config",
            "permatoken.toml",
            "--state",
            "state.db",
            "--listen",
            listen,
            "--http-token-file",
            "http.token",
        ],
    );
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
    let mut log = Vec::new();
    // Every address is logged before the daemon says what it watches.
    wait_for(&lines, &mut log, "watching 1 token(s)");
    let addrs: Vec<String> = log
        .iter()
        .filter(|l| l.contains("serving the status page"))
        .filter_map(|l| l.split("http://").nth(1)?.strip_suffix('/'))
        .map(str::to_owned)
        .collect();
    f(&addrs);
    kill(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", log.join("\n"));
}

fn metrics_answer(addr: &str) {
    let answer = get(addr, "/metrics");
    assert_eq!(
        answer.map(|(status, _)| status),
        Some(200),
        "GET {addr}/metrics"
    );
}

fn ipv6_loopback() -> bool {
    let there = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !there {
        eprintln!("skipped the IPv6 part: this host has no ::1");
    }
    there
}

#[test]
fn listen_takes_an_address_every_interface_and_localhost() {
    serving_on("127.0.0.1:0", |addrs| {
        assert_eq!(addrs.len(), 1, "{addrs:?}");
        assert!(addrs[0].starts_with("127.0.0.1:"), "{addrs:?}");
        metrics_answer(&addrs[0]);
    });
    let v6 = ipv6_loopback();
    if v6 {
        serving_on("[::1]:0", |addrs| {
            assert_eq!(addrs.len(), 1, "{addrs:?}");
            assert!(addrs[0].starts_with("[::1]:"), "{addrs:?}");
            metrics_answer(&addrs[0]);
        });
    }
    // localhost: both loopback addresses on one port, never a resolver's answer.
    serving_on("localhost:0", |addrs| {
        assert!(addrs[0].starts_with("127.0.0.1:"), "{addrs:?}");
        let port = addrs[0].rsplit_once(':').unwrap().1.to_owned();
        metrics_answer(&format!("127.0.0.1:{port}"));
        if v6 {
            assert_eq!(addrs.len(), 2, "{addrs:?}");
            assert_eq!(addrs[1], format!("[::1]:{port}"));
            metrics_answer(&format!("[::1]:{port}"));
        }
    });
    // `:PORT`: every interface of both families, reached here over each loopback.
    serving_on(":0", |addrs| {
        let port = addrs[0].rsplit_once(':').unwrap().1.to_owned();
        let expected = if v6 { "[::]" } else { "0.0.0.0" };
        assert_eq!(addrs[0], format!("{expected}:{port}"), "{addrs:?}");
        for addr in &addrs[1..] {
            assert_eq!(addr, &format!("0.0.0.0:{port}"), "{addrs:?}");
        }
        metrics_answer(&format!("127.0.0.1:{port}"));
        if v6 {
            metrics_answer(&format!("[::1]:{port}"));
        }
    });
}

#[test]
fn listen_refuses_other_forms_and_every_interface_without_a_token() {
    for bad in ["example.com:9464", "9464", "localhost", ":http", "[::1]"] {
        let out = Test::new().args(["watch", "--listen", bad]).run();
        out.assert_code(3);
        assert!(
            out.stderr
                .contains(&format!("`{bad}` is not a listen address"))
                && out.stderr.contains("`:9464` for every interface"),
            "{bad}: {}",
            out.stderr
        );
    }
    let out = Test::new()
        .write(
            "permatoken.toml",
            &format!("listen = \"nowhere:1\"\n{}", config_for(&["orders"], "")),
        )
        .args(["watch", "--config", "permatoken.toml", "--check-config"])
        .run();
    out.assert_code(3);
    assert!(
        out.stderr.contains("`nowhere:1` is not a listen address"),
        "{}",
        out.stderr
    );
    // Every interface is not loopback: the page needs its bearer token there.
    let sandbox = sandbox();
    let out = Test::against(&sandbox)
        .write("permatoken.toml", &config_for(&["orders"], ""))
        .write("orders.env", &env_for(&sandbox, "system-user"))
        .args([
            "watch",
            "--config",
            "permatoken.toml",
            "--state",
            "state.db",
            "--listen",
            ":0",
        ])
        .run();
    out.assert_code(3);
    assert!(
        out.stderr.contains("is not a loopback address")
            && out.stderr.contains("--http-token-file"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_http_token_file_larger_than_any_token_is_refused_with_exit_3() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("permatoken.toml"), config_for(&["orders"], "")).unwrap();
    std::fs::write(p.join("orders.env"), env_for(&sandbox, "system-user")).unwrap();
    // It was cut at 4 KiB and the rest ignored; now it is refused.
    std::fs::write(p.join("http.token"), "PERMATOKENTEST".repeat(300)).unwrap();
    let mut child = spawn_watch(
        p,
        &sandbox,
        &[
            "--config",
            "permatoken.toml",
            "--state",
            "state.db",
            "--listen",
            "127.0.0.1:0",
            "--http-token-file",
            "http.token",
        ],
    );
    let mut status = None;
    eventually("watch stops", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.unwrap().code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "cannot read the HTTP token file `http.token`: it is larger than 4 KiB, so it is not a token file"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("PERMATOKENTEST"), "{stderr}");
}

#[test]
fn the_daemon_serves_reloads_on_sighup_refuses_a_second_instance_and_stops_on_sigterm() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("permatoken.toml"), config_for(&["orders"], "")).unwrap();
    std::fs::write(p.join("orders.env"), env_for(&sandbox, "system-user")).unwrap();
    std::fs::write(p.join("billing.env"), env_for(&sandbox, "user-expiring")).unwrap();
    let mut child = spawn_watch(
        p,
        &sandbox,
        &[
            "--config",
            "permatoken.toml",
            "--state",
            "state.db",
            "--listen",
            "127.0.0.1:0",
        ],
    );
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
    let mut log = Vec::new();
    let serving = wait_for(&lines, &mut log, "serving the status page");
    let addr = serving
        .split("http://")
        .nth(1)
        .and_then(|s| s.strip_suffix('/'))
        .expect("the address is logged")
        .to_owned();

    // The first round shows on /api/tokens and /metrics.
    eventually("orders is on /api/tokens", || {
        get(&addr, "/api/tokens").is_some_and(|(s, b)| s == 200 && b.contains("\"orders\""))
    });
    eventually("/metrics has orders' validity", || {
        get(&addr, "/metrics").is_some_and(|(s, b)| {
            s == 200 && b.contains("permatoken_token_valid{token=\"orders\"} 1")
        })
    });
    let (status, _) = get(&addr, "/healthz").unwrap();
    assert_eq!(status, 200);

    // A second watch on the same state file is refused, naming it.
    let second = Test::against(&sandbox)
        .args([
            "watch",
            "--config",
            &p.join("permatoken.toml").display().to_string(),
            "--state",
            &p.join("state.db").display().to_string(),
            "--once",
        ])
        .run();
    assert_eq!(second.code, 3, "{}", second.stderr);
    assert!(second.stderr.contains("state.db"), "{}", second.stderr);

    // An invalid configuration on SIGHUP is logged and the old one kept.
    std::fs::write(p.join("permatoken.toml"), "[[token]]\nname = 3\n").unwrap();
    kill(&child, "-HUP");
    wait_for(&lines, &mut log, "the configuration was not reloaded");
    // A valid one is taken in: the new token appears.
    std::fs::write(
        p.join("permatoken.toml"),
        config_for(&["orders", "billing"], ""),
    )
    .unwrap();
    kill(&child, "-HUP");
    eventually("billing is on /api/tokens after SIGHUP", || {
        get(&addr, "/api/tokens").is_some_and(|(_, b)| b.contains("\"billing\""))
    });
    wait_for(&lines, &mut log, "configuration reloaded");

    kill(&child, "-TERM");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < DEADLINE, "watch did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    // Drain what is left of the log: never a secret in it.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        log.push(line);
    }
    let log = log.join("\n");
    for scenario in ["system-user", "user-expiring"] {
        assert!(
            !log.contains(&token_of(&sandbox, scenario)),
            "a token in the log"
        );
    }
    assert!(!log.contains(sandbox.app_secret().expose_secret()));
}

/// Issue 15, item 13: the lock is on the file, not the spelling of its path.
#[test]
fn a_second_watch_on_the_same_state_by_a_symlink_or_another_path_is_refused_naming_the_pid() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("permatoken.toml"), config_for(&["orders"], "")).unwrap();
    std::fs::write(p.join("orders.env"), env_for(&sandbox, "system-user")).unwrap();
    std::fs::create_dir(p.join("a")).unwrap();
    let mut child = spawn_watch(
        p,
        &sandbox,
        &[
            "--config",
            "permatoken.toml",
            "--state",
            "state.db",
            "--listen",
            "127.0.0.1:0",
        ],
    );
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
    let mut log = Vec::new();
    wait_for(&lines, &mut log, "serving the status page");
    std::os::unix::fs::symlink(p.join("state.db"), p.join("link.db")).unwrap();
    let config = p.join("permatoken.toml").display().to_string();
    for state in [
        p.join("link.db").display().to_string(),
        format!("{}/a/../state.db", p.display()),
    ] {
        let second = Test::against(&sandbox)
            .args(["watch", "--config", &config, "--state", &state, "--once"])
            .run();
        assert_eq!(second.code, 3, "{state}: {}", second.stderr);
        assert!(
            second
                .stderr
                .contains("is in use by another `permatoken watch`")
                && second.stderr.contains(&format!("pid {}", child.id())),
            "{state}: {}",
            second.stderr
        );
    }
    kill(&child, "-TERM");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < DEADLINE, "watch did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once it has stopped, the symlink is a way to the same state like any other.
    let again = Test::against(&sandbox)
        .args([
            "watch",
            "--config",
            &config,
            "--state",
            &p.join("link.db").display().to_string(),
            "--once",
        ])
        .run();
    assert_eq!(again.code, 0, "{}", again.stderr);
}

/// Issue 15, item 13: a state of zero bytes would send every alert again under new ids.
#[test]
fn a_zero_length_state_file_is_refused_unless_state_new_says_it_is_new() {
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("permatoken.toml"), config_for(&["orders"], "")).unwrap();
    std::fs::write(p.join("orders.env"), env_for(&sandbox, "system-user")).unwrap();
    let state = p.join("state.db");
    std::fs::write(&state, "").unwrap();
    let run = |extra: &[&str]| {
        Test::against(&sandbox)
            .args(["watch", "--once", "--config"])
            .args([p.join("permatoken.toml").display().to_string()])
            .args(["--state".to_owned(), state.display().to_string()])
            .args(extra)
            .run()
    };
    let refused = run(&[]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("is empty (zero bytes)") && refused.stderr.contains("--state-new"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        std::fs::metadata(&state).unwrap().len(),
        0,
        "left as it was"
    );

    let taken = run(&["--state-new"]);
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    assert!(std::fs::metadata(&state).unwrap().len() > 0);
    // From then on it is a state like any other: no flag needed, and the flag changes nothing.
    assert_eq!(run(&[]).code, 0);
    assert_eq!(run(&["--state-new"]).code, 0);

    // A missing file is created, as ever.
    std::fs::remove_file(&state).unwrap();
    assert_eq!(run(&[]).code, 0);
    assert!(std::fs::metadata(&state).unwrap().len() > 0);
}
