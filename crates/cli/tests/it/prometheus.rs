//! The Prometheus side of `watch`, with Debian's real tools: a real `watch` against the sandbox,
//! its tokens made ok, expiring, critical, dead, failed over, cannot be checked and unknown, scraped in
//! the text format and linted by `promtool check metrics`, and scraped as OpenMetrics by a real
//! Prometheus server that loads contrib/prometheus's rules and fires them; the rules checked and
//! unit-tested by `promtool`; every metric the rules and the Grafana dashboard name present in the
//! scrape. Under `CI=true` a missing promtool or prometheus fails the test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use permatoken_sandbox::Running;

use crate::harness::{app_lines, sandbox, token_of};

/// Generous: liveness, never speed.
const DEADLINE: Duration = Duration::from_secs(90);

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib")
}

/// `name` (a Debian `prometheus` binary) when installed; `None` (after saying so) outside CI.
fn tool(name: &'static str, test: &str) -> Option<&'static str> {
    if Command::new(name).arg("--version").output().is_ok() {
        return Some(name);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{name} is missing (Debian's `prometheus` package), and CI must run {test}"
    );
    eprintln!("SKIPPED part of {test}: no {name} on this machine (apt-get install prometheus)");
    None
}

/// A GET with an optional `Accept`: (status, Content-Type, body). HTTP/1.0, so that the body comes
/// whole, never chunked.
fn get(addr: &str, path: &str, accept: Option<&str>) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let accept = accept.map_or(String::new(), |a| format!("accept: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nhost: {addr}\r\n{accept}\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Some((status, content_type, body.to_owned()))
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("not within {DEADLINE:?}: {what}");
}

/// A child killed (by its own pid) and reaped when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every `permatoken_…` name in `text` (PromQL expressions, a rules file).
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("permatoken_")
        .filter(|(i, _)| {
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every `expr` of the Grafana dashboard's panels, and its variables' `definition`.
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The value of the sample written exactly `series` (name and labels), if any.
fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let test = "the_rules_pass_promtool_check_and_their_unit_tests";
    let Some(promtool) = tool("promtool", test) else {
        return;
    };
    let dir = contrib().join("prometheus");
    let check = Command::new(promtool)
        .args(["check", "rules", "permatoken.rules.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{said}");
    assert!(said.contains("SUCCESS: 9 rules found"), "{said}");
    let tests = Command::new(promtool)
        .args(["test", "rules", "permatoken.rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&tests.stdout).into_owned()
        + &String::from_utf8_lossy(&tests.stderr);
    assert!(tests.status.success(), "{said}");
    assert!(said.contains("SUCCESS"), "{said}");
    // Each alert has a test that shows it firing.
    let rules = std::fs::read_to_string(dir.join("permatoken.rules.yml")).unwrap();
    let unit = std::fs::read_to_string(dir.join("permatoken.rules.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let fires = unit
            .split("alertname: ")
            .skip(1)
            .any(|t| t.starts_with(&format!("{alert}\n")) && !t.contains("exp_alerts: []"));
        assert!(fires, "no test shows {alert} firing");
    }
}

fn env(sandbox: &Running, scenario: &str) -> String {
    format!(
        "WHATSAPP_ACCESS_TOKEN={}\n{}",
        token_of(sandbox, scenario),
        app_lines(sandbox)
    )
}

/// Each token and the state it must reach (`unknown`: no state decided yet).
const STATES: [(&str, &str); 7] = [
    ("orders", "ok"),
    ("soon", "expiring"),
    ("urgent", "critical"),
    ("gone", "dead"),
    ("billing", "failed_over"),
    ("lost", "cannot_be_checked"),
    ("new", "unknown"),
];

/// A `watch` serving the seven tokens of [`STATES`]; its address, once each is in its state.
fn watch(sandbox: &Running, p: &Path) -> (Killed, String) {
    std::fs::write(p.join("orders.env"), env(sandbox, "system-user")).unwrap();
    std::fs::write(p.join("soon.env"), env(sandbox, "user-expiring")).unwrap();
    std::fs::write(p.join("urgent.env"), env(sandbox, "user-expires-soon")).unwrap();
    std::fs::write(p.join("gone.env"), env(sandbox, "expired")).unwrap();
    std::fs::write(
        p.join("billing.env"),
        format!(
            "{}WHATSAPP_ACCESS_TOKEN_BACKUP={}\n",
            env(sandbox, "password-changed"),
            token_of(sandbox, "system-user-60d")
        ),
    )
    .unwrap();
    // `lost.env` and `new.env` are never written: neither can be read, ever.
    let config = r#"[defaults]
interval = "1h"
renew_days = 0

[[token]]
name = "orders"
env_file = "orders.env"

[[token]]
name = "soon"
env_file = "soon.env"

[[token]]
name = "urgent"
env_file = "urgent.env"

[[token]]
name = "gone"
env_file = "gone.env"

[[token]]
name = "billing"
env_file = "billing.env"

[[token]]
name = "lost"
env_file = "lost.env"
interval = "1s"
unknown_after = "1s"

[[token]]
name = "new"
env_file = "new.env"

[[alert]]
name = "ops"
kind = "command"
command = "true"
"#;
    std::fs::write(p.join("permatoken.toml"), config).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_permatoken"))
        .args([
            "watch",
            "--config",
            "permatoken.toml",
            "--state",
            "state.db",
        ])
        .args(["--listen", &addr])
        .current_dir(p)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", p)
        .env("PERMATOKEN_GRAPH_URL", sandbox.url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the permatoken binary runs");
    let child = Killed(child);
    let mut last = String::new();
    let start = Instant::now();
    loop {
        if let Some((200, _, text)) = get(&addr, "/metrics", None) {
            let reached = STATES.iter().all(|(token, state)| {
                sample(
                    &text,
                    &format!("permatoken_token_status{{token=\"{token}\",status=\"{state}\"}}"),
                ) == Some("1")
            });
            if reached && text.contains("permatoken_round_duration_seconds ") {
                return (child, addr);
            }
            last = text;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the tokens did not reach their states within {DEADLINE:?}; /metrics:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_real_scrape_passes_promtool_shows_every_state_and_has_every_metric_the_rules_and_dashboard_use()
 {
    let test = "a_real_scrape_passes_promtool_shows_every_state_and_has_every_metric_the_rules_and_dashboard_use";
    let sandbox = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let (_watch, addr) = watch(&sandbox, p);

    // The text format by default and for text/plain, OpenMetrics when asked.
    let text_type = "text/plain; version=0.0.4; charset=utf-8";
    let open_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let (_, default_type, text) = get(&addr, "/metrics", None).unwrap();
    assert_eq!(default_type, text_type);
    let (_, plain_type, _) = get(&addr, "/metrics", Some("text/plain;version=0.0.4")).unwrap();
    assert_eq!(plain_type, text_type);
    let (_, om_type, om) = get(
        &addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .unwrap();
    assert_eq!(om_type, open_type);
    assert!(om.ends_with("# EOF\n") && !text.contains("# EOF"), "{om}");

    // One status sample per state per token, 1 for its own.
    for (token, state) in STATES {
        let ones: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("permatoken_token_status{{token=\"{token}\",")))
            .filter(|l| l.ends_with(" 1"))
            .collect();
        assert_eq!(ones.len(), 1, "{token}: {ones:?}");
        assert!(ones[0].contains(&format!("status=\"{state}\"")), "{ones:?}");
        assert_eq!(
            text.matches(&format!("permatoken_token_status{{token=\"{token}\","))
                .count(),
            7,
            "{token}"
        );
    }
    // The counters are there from the start; billing's failover counted.
    assert_eq!(
        sample(&text, "permatoken_failovers_total{token=\"billing\"}"),
        Some("1")
    );
    assert_eq!(
        sample(&text, "permatoken_renewals_total{token=\"orders\"}"),
        Some("0")
    );
    let version = format!(
        "permatoken_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &version), Some("1"), "{text}");
    // No token in any label.
    for scenario in [
        "system-user",
        "user-expiring",
        "expired",
        "password-changed",
    ] {
        assert!(!text.contains(&token_of(&sandbox, scenario)));
    }

    // Every metric the rules and the dashboard name is in the scrape.
    let rules = std::fs::read_to_string(contrib().join("prometheus/permatoken.rules.yml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(contrib().join("grafana/permatoken.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");
    for (what, names) in [
        ("the rules", metric_names(&rules)),
        ("the dashboard", metric_names(&exprs.join("\n"))),
    ] {
        assert!(names.len() >= 6, "{what}: {names:?}");
        for name in names {
            let present = text.lines().any(|l| {
                l.strip_prefix(&name)
                    .is_some_and(|r| r.starts_with([' ', '{']))
            });
            assert!(present, "{what} name {name}, not in the scrape:\n{text}");
        }
    }

    // promtool lints the text format.
    if let Some(promtool) = tool("promtool", test) {
        let mut lint = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        lint.stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = lint.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{said}\n{text}"
        );
    }

    // A real Prometheus scrapes it as OpenMetrics, fires the rules on it and answers the
    // dashboard's queries.
    if let Some(prometheus) = tool("prometheus", test) {
        let web = scraped_by_prometheus(prometheus, p, &addr);
        for expr in exprs.iter().filter(|e| !e.starts_with("label_values")) {
            let expr = expr.replace("$job", ".*").replace("$__rate_interval", "1m");
            let query: String = expr
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    b => format!("%{b:02X}"),
                })
                .collect();
            let (status, _, body) = get(&web.0, &format!("/api/v1/query?query={query}"), None)
                .expect("Prometheus answers");
            assert_eq!(status, 200, "{expr}: {body}");
            assert!(body.contains("\"status\":\"success\""), "{expr}: {body}");
        }
        let (_, _, body) = get(
            &web.0,
            "/api/v1/query?query=sum%20by%20(status)%20(permatoken_token_status)",
            None,
        )
        .unwrap();
        for (_, state) in STATES {
            assert!(body.contains(&format!("\"status\":\"{state}\"")), "{body}");
        }
    }
}

/// Prometheus scraping `addr` every second with the rules loaded: the target is up with no error,
/// and the token alerts without `for:` fire for the tokens in those states. Its address, and the
/// process (killed when dropped).
fn scraped_by_prometheus(prometheus: &str, p: &Path, addr: &str) -> (String, Killed) {
    let rules = contrib().join("prometheus/permatoken.rules.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: permatoken\n    static_configs:\n      - targets: ['{addr}']\n",
        rules.canonicalize().unwrap().display()
    );
    std::fs::write(p.join("prometheus.yml"), config).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let child = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            p.join("prometheus.yml").display()
        ))
        .arg(format!("--storage.tsdb.path={}", p.join("tsdb").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus runs");
    let prometheus = Killed(child);
    let mut last = String::new();
    eventually(
        "Prometheus scrapes watch as OpenMetrics without error",
        || {
            let Some((200, _, body)) = get(&web, "/api/v1/targets", None) else {
                return false;
            };
            last = body.clone();
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            json["data"]["activeTargets"]
                .as_array()
                .is_some_and(|t| t.len() == 1 && t[0]["health"] == "up" && t[0]["lastError"] == "")
        },
    );
    let mut firing = Vec::new();
    let want = [
        ("PermatokenTokenDead", "gone"),
        ("PermatokenTokenFailedOver", "billing"),
        ("PermatokenTokenCannotBeChecked", "lost"),
    ];
    let start = Instant::now();
    loop {
        if let Some((200, _, body)) = get(&web, "/api/v1/alerts", None) {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            firing = json["data"]["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["state"] == "firing")
                .map(|a| {
                    (
                        a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                        a["labels"]["token"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect::<Vec<_>>();
            if want
                .iter()
                .all(|(a, t)| firing.iter().any(|(fa, ft)| fa == a && ft == t))
            {
                break;
            }
        }
        if start.elapsed() > DEADLINE {
            let rules = get(&web, "/api/v1/rules", None).map(|r| r.2);
            panic!(
                "the alerts {want:?} did not fire within {DEADLINE:?}: {firing:?}; targets: {last}; rules: {rules:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Nothing fires for the tokens that are fine.
    assert!(
        !firing.iter().any(|(_, t)| t == "orders" || t == "new"),
        "{firing:?}"
    );
    (web, prometheus)
}
