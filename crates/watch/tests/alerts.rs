//! Alert delivery against real receivers on 127.0.0.1: what each route kind receives, signatures,
//! which failures are retried, timeouts, capped answers, and that no URL or secret ever shows.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode, Uri};
use jiff::Timestamp;
use permatoken_graph::ProxyConfig;
use permatoken_watch::alert::{Alert, AlertKind, SIGNATURE_HEADER, Sender};
use permatoken_watch::config::{self, Route};
use permatoken_watch::states::State;

/// What a receiver got: path, headers, body.
type Seen = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

#[derive(Clone)]
struct Receiver {
    seen: Seen,
    status: u16,
    reply: Arc<Vec<u8>>,
}

async fn receive(
    Extract(r): Extract<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    r.seen
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), headers, body));
    (StatusCode::from_u16(r.status).unwrap(), r.reply.to_vec())
}

/// A receiver answering `status` with `reply`; its base URL and what it saw.
async fn receiver(status: u16, reply: impl Into<Vec<u8>>) -> (String, Seen) {
    let seen = Seen::default();
    let state = Receiver {
        seen: seen.clone(),
        status,
        reply: Arc::new(reply.into()),
    };
    let app = Router::new()
        .route("/{*rest}", axum::routing::post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// One route, from a configuration snippet (the way a person writes it).
fn route(dir: &Path, body: &str) -> Route {
    let text = format!("[[alert]]\nname = \"ops\"\n{body}\n");
    let loaded = config::parse(&text, &dir.join("permatoken.toml")).unwrap();
    loaded.config.routes.into_iter().next().unwrap()
}

fn alert() -> Alert {
    Alert {
        id: "0123456789abcdef0123456789abcdef".into(),
        token: "orders".into(),
        state: State::Critical,
        previous_state: Some(State::Expiring),
        message: "the token expires on 2026-12-01 10:00 UTC, in 2 days".into(),
        fix: Some("run `permatoken refresh`".into()),
        time: Timestamp::from_second(1_800_000_000).unwrap(),
        kind: AlertKind::Change,
    }
}

fn sender() -> Sender {
    Sender::new(ProxyConfig::default(), None)
}

const SIGNING_KEY: &str = "PERMATOKENTEST-signing-key";

#[tokio::test]
async fn a_webhook_gets_the_documented_json_signed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hook.key"), format!("{SIGNING_KEY}\n")).unwrap();
    let (base, seen) = receiver(200, "accepted").await;
    let route = route(
        dir.path(),
        &format!(
            "kind = \"webhook\"\nurl = \"{base}/hook/PERMATOKENTEST-path\"\nsecret_file = \"hook.key\"\nheaders = {{ \"X-Team\" = \"ops\" }}"
        ),
    );
    let delivered = sender().deliver(&route, &alert()).await.unwrap();
    assert_eq!(
        (delivered.status, delivered.reply.as_str()),
        (Some(200), "accepted")
    );
    let seen = seen.lock().unwrap();
    let (path, headers, body) = &seen[0];
    assert_eq!(path, "/hook/PERMATOKENTEST-path");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-team"], "ops");
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "id": "0123456789abcdef0123456789abcdef",
            "token": "orders",
            "state": "critical",
            "previous_state": "expiring",
            "message": "the token expires on 2026-12-01 10:00 UTC, in 2 days",
            "fix": "run `permatoken refresh`",
            "time": "2027-01-15T08:00:00Z",
            "kind": "change",
        })
    );
    // HMAC-SHA256 of the exact body, computed here apart from the code under test.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SIGNING_KEY.as_bytes());
    let expected: String = ring::hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(headers[SIGNATURE_HEADER], format!("sha256={expected}"));
    assert!(!String::from_utf8_lossy(body).contains("PERMATOKENTEST"));
}

#[tokio::test]
async fn slack_gets_an_incoming_webhook_body_from_a_url_file() {
    let dir = tempfile::tempdir().unwrap();
    let (base, seen) = receiver(200, "ok").await;
    std::fs::write(
        dir.path().join("slack.url"),
        format!("{base}/services/T0/B0/PERMATOKENTEST\n"),
    )
    .unwrap();
    let route = route(dir.path(), "kind = \"slack\"\nurl_file = \"slack.url\"");
    sender().deliver(&route, &alert()).await.unwrap();
    let seen = seen.lock().unwrap();
    let (_, headers, body) = &seen[0];
    assert!(headers.get(SIGNATURE_HEADER).is_none());
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["text"]);
    let text = json["text"].as_str().unwrap();
    for fact in [
        "`orders` is critical (was expiring)",
        "in 2 days",
        "*Fix:* run `permatoken refresh`",
        "0123456789abcdef0123456789abcdef",
    ] {
        assert!(text.contains(fact), "{fact}: {text}");
    }
}

#[tokio::test]
async fn failures_say_whether_to_try_again() {
    let dir = tempfile::tempdir().unwrap();
    for (status, retryable) in [
        (500, true),
        (503, true),
        (408, true),
        (429, true),
        (404, false),
        (401, false),
        (302, false),
    ] {
        let (base, seen) = receiver(status, "nope").await;
        let route = route(
            dir.path(),
            &format!("kind = \"webhook\"\nurl = \"{base}/h\""),
        );
        let e = sender().deliver(&route, &alert()).await.unwrap_err();
        assert_eq!((e.status, e.retryable), (Some(status), retryable), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("alert route `ops` (127.0.0.1): HTTP {status} (")),
            "{e}"
        );
        assert!(e.to_string().ends_with(": nope"), "{e}");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (target, target_seen) = receiver(200, "").await;
    let app = Router::new().route(
        "/{*rest}",
        axum::routing::post(move || {
            let to = format!("{target}/elsewhere");
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", to)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let route = route(
        dir.path(),
        &format!("kind = \"webhook\"\nurl = \"http://{addr}/h\""),
    );
    let e = sender().deliver(&route, &alert()).await.unwrap_err();
    assert_eq!((e.status, e.retryable), (Some(307), false));
    assert!(
        e.reason.contains("a redirect, which is not followed"),
        "{e}"
    );
    assert!(target_seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            held.push(socket);
        }
    });
    let route = route(
        dir.path(),
        &format!("kind = \"webhook\"\nurl = \"http://{addr}/h\"\ntimeout = \"1s\""),
    );
    let e = sender().deliver(&route, &alert()).await.unwrap_err();
    assert!(e.retryable);
    assert_eq!(e.status, None);
    assert_eq!(e.reason, "no answer within 1 s", "{e}");
}

#[tokio::test]
async fn a_huge_answer_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    for status in [200, 500] {
        let (base, _) = receiver(status, vec![b'x'; 8 * 1024 * 1024]).await;
        let route = route(
            dir.path(),
            &format!("kind = \"webhook\"\nurl = \"{base}/h\""),
        );
        let said = match sender().deliver(&route, &alert()).await {
            Ok(d) => d.reply,
            Err(e) => e.reason,
        };
        assert!(
            said.ends_with("(an answer longer than 64 KiB, not read)"),
            "{status}: {said}"
        );
    }
}

#[tokio::test]
async fn no_url_or_secret_shows_in_errors_or_debug() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signing.key"), SIGNING_KEY).unwrap();
    // A receiver that echoes its URL and a secret back.
    let (base, _) = receiver(500, "").await;
    let url = format!("{base}/hook/PERMATOKENTEST-path?key=PERMATOKENTEST-query");
    let (echo_base, _) = receiver(
        500,
        format!("bad hook {base}/hook/PERMATOKENTEST-path?key=PERMATOKENTEST-query signed with {SIGNING_KEY}"),
    )
    .await;
    let echo_url = url.replace(&base, &echo_base);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let closed_url = format!("http://{closed}/hook/PERMATOKENTEST-path");
    for url in [url.as_str(), echo_url.as_str(), closed_url.as_str()] {
        let route = route(
            dir.path(),
            &format!(
                "kind = \"webhook\"\nurl = \"{url}\"\nsecret_file = \"signing.key\"\nheaders = {{ Authorization = \"Bearer PERMATOKENTEST-header\" }}"
            ),
        );
        let e = sender().deliver(&route, &alert()).await.unwrap_err();
        for shown in [e.to_string(), format!("{e:?}"), format!("{route:?}")] {
            assert!(!shown.contains("PERMATOKENTEST"), "{shown}");
            assert!(!shown.contains("/hook"), "{shown}");
        }
        assert!(e.retryable, "{e}");
        if url == echo_url {
            assert!(e.reason.ends_with("…?… signed with …"), "{e}");
        }
    }
    let unreadable = route(dir.path(), "kind = \"webhook\"\nurl_file = \"missing.url\"");
    let e = sender().deliver(&unreadable, &alert()).await.unwrap_err();
    assert!(e.to_string().contains("missing.url"), "{e}");
}

#[tokio::test]
async fn plain_http_never_goes_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = ProxyConfig::from_vars([
        ("HTTPS_PROXY", format!("http://{closed}")),
        ("HTTP_PROXY", format!("http://{closed}")),
    ]);
    let (base, seen) = receiver(204, "").await;
    let route = route(
        dir.path(),
        &format!("kind = \"webhook\"\nurl = \"{base}/h\""),
    );
    let sender = Sender::new(proxy, None);
    sender.deliver(&route, &alert()).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
    // https goes through it (here a closed port), and the error says so.
    let route = self::route(
        dir.path(),
        "kind = \"webhook\"\nurl = \"https://alerts.example.com/PERMATOKENTEST\"",
    );
    let e = sender.deliver(&route, &alert()).await.unwrap_err();
    assert!(e.retryable);
    assert!(
        e.to_string()
            .starts_with("alert route `ops` (alerts.example.com): cannot reach the receiver: "),
        "{e}"
    );
    assert!(
        e.reason.ends_with(&format!(
            "(through the proxy http://{closed} that `HTTPS_PROXY` names)"
        )),
        "{e}"
    );
    assert!(!e.to_string().contains("PERMATOKENTEST"), "{e}");
}

#[tokio::test]
async fn a_test_alert_says_what_the_receiver_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (base, seen) = receiver(202, "queued as \u{1b}[31m#42\n").await;
    let route = route(
        dir.path(),
        &format!("kind = \"webhook\"\nurl = \"{base}/h\""),
    );
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let answer = sender().test_alert(&route, now).await.unwrap();
    assert_eq!(answer.route, "ops");
    assert_eq!(answer.status, Some(202));
    assert_eq!(answer.reply, "queued as \\u{1b}[31m#42");
    let seen = seen.lock().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&seen[0].2).unwrap();
    assert_eq!(json["kind"], "test");
    assert_eq!(json["state"], "ok");
    assert_eq!(json["previous_state"], serde_json::Value::Null);
}

/// Set in the environment of the child run of [`a_command_route_gets_the_json_without_secrets`].
const CHILD: &str = "PERMATOKEN_ALERTS_TEST_CHILD";

#[test]
fn a_command_route_gets_the_json_without_secrets() {
    // This process's environment cannot be changed safely; the test runs itself again with the
    // secret variables set, and the child does the delivery.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "command_route_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, dir.path())
        .env("WHATSAPP_ACCESS_TOKEN", "PERMATOKENTEST-token")
        .env("WHATSAPP_ACCESS_TOKEN_BACKUP", "PERMATOKENTEST-backup")
        .env("FACEBOOK_APP_SECRET", "PERMATOKENTEST-secret")
        .env("PERMATOKEN_KEPT", "kept")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdin = std::fs::read(dir.path().join("stdin.json")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&stdin).unwrap();
    assert_eq!(json["token"], "orders");
    assert_eq!(json["kind"], "change");
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    assert!(env.contains("PERMATOKEN_KEPT=kept"), "{env}");
    assert!(!env.contains("PERMATOKENTEST"), "{env}");
    assert!(
        !env.contains("WHATSAPP_ACCESS_TOKEN") && !env.contains("FACEBOOK_APP_SECRET"),
        "{env}"
    );
    assert!(std::fs::read_to_string(dir.path().join("done")).is_ok());
}

#[tokio::test]
#[ignore = "run by a_command_route_gets_the_json_without_secrets"]
async fn command_route_child() {
    let Some(dir) = std::env::var_os(CHILD) else {
        return;
    };
    let dir = Path::new(&dir);
    assert_eq!(
        std::env::var("FACEBOOK_APP_SECRET").as_deref(),
        Ok("PERMATOKENTEST-secret")
    );
    let route = route(
        dir,
        &format!(
            "kind = \"command\"\ncommand = \"cat > '{0}/stdin.json'; env > '{0}/env'; echo delivered; echo to stderr >&2\"",
            dir.display()
        ),
    );
    let delivered = sender().deliver(&route, &alert()).await.unwrap();
    assert_eq!(delivered.status, None);
    assert_eq!(delivered.reply, "delivered / to stderr");
    // A failing command is a retryable failure that says what it printed, cut short.
    let failing = route_named(
        dir,
        "kind = \"command\"\ncommand = \"head -c 100000 /dev/zero | tr '\\\\0' y; exit 3\"",
    );
    let e = sender().deliver(&failing, &alert()).await.unwrap_err();
    assert!(e.retryable);
    assert!(
        e.reason.starts_with("the command exited with 3: yyy"),
        "{e}"
    );
    assert!(e.reason.chars().count() < 300, "{e}");
    // One that never ends is stopped at its timeout.
    let slow = route_named(
        dir,
        "kind = \"command\"\ncommand = \"sleep 30\"\ntimeout = \"1s\"",
    );
    let e = sender().deliver(&slow, &alert()).await.unwrap_err();
    assert_eq!(e.reason, "the command did not finish within 1 s");
    std::fs::write(dir.join("done"), "").unwrap();
}

fn route_named(dir: &Path, body: &str) -> Route {
    route(dir, body)
}

/// Standard base64, written here apart from the code under test.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// What a Standard Webhooks receiver does with `key` (the secret's bytes): the signature over
/// `{id}.{timestamp}.{body}` matches one of the header's, and the timestamp is within 5 minutes of
/// its clock (older is a replay). Returns why it refuses.
fn verify_standard(key: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name}"))
    };
    let (id, timestamp) = (header("webhook-id")?, header("webhook-timestamp")?);
    let sent: i64 = timestamp.parse().map_err(|_| "timestamp not a number")?;
    if (Timestamp::now().as_second() - sent).abs() > 300 {
        return Err("timestamp out of tolerance: a replay".into());
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
    let expected = format!("v1,{}", base64(ring::hmac::sign(&key, &signed).as_ref()));
    header("webhook-signature")?
        .split(' ')
        .any(|s| s == expected)
        .then_some(())
        .ok_or("no signature matches".into())
}

#[tokio::test]
async fn a_signed_body_carries_standard_webhooks_headers_a_receiver_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (base, seen) = receiver(200, "ok").await;
    // A plain secret is the key's bytes; a `whsec_` one is base64 of them, decoded.
    let raw_key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(73) ^ 0x5a).collect();
    let whsec = format!("whsec_{}", base64(&raw_key));
    for (file, text, key) in [
        (
            "plain.key",
            SIGNING_KEY.to_owned(),
            SIGNING_KEY.as_bytes().to_vec(),
        ),
        ("whsec.key", whsec.clone(), raw_key.clone()),
    ] {
        std::fs::write(dir.path().join(file), format!("{text}\n")).unwrap();
        let route = route(
            dir.path(),
            &format!("kind = \"webhook\"\nurl = \"{base}/hook\"\nsecret_file = \"{file}\""),
        );
        sender().deliver(&route, &alert()).await.unwrap();
        let (_, headers, body) = seen.lock().unwrap().pop().unwrap();
        assert_eq!(headers["webhook-id"], alert().id.as_str());
        verify_standard(&key, &headers, &body).unwrap_or_else(|e| panic!("{file}: {e}"));
        // The timestamp is signed: the same body and signature under another time is refused.
        let mut replayed = headers.clone();
        let earlier = headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            - 1;
        replayed.insert("webhook-timestamp", earlier.to_string().parse().unwrap());
        assert_eq!(
            verify_standard(&key, &replayed, &body),
            Err("no signature matches".into())
        );
        // The GitHub-style header stays, keyed by the file's text as written.
        let github = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, text.as_bytes());
        let hex: String = ring::hmac::sign(&github, &body)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(headers[SIGNATURE_HEADER], format!("sha256={hex}"));
    }
    // Unsigned routes carry none of them.
    let route = route(
        dir.path(),
        &format!("kind = \"webhook\"\nurl = \"{base}/hook\""),
    );
    sender().deliver(&route, &alert()).await.unwrap();
    let (_, headers, _) = seen.lock().unwrap().pop().unwrap();
    assert!(headers.get("webhook-signature").is_none());
    assert!(headers.get(SIGNATURE_HEADER).is_none());
}

#[tokio::test]
async fn an_alertmanager_route_posts_the_array_under_its_base_path() {
    let dir = tempfile::tempdir().unwrap();
    let (base, seen) = receiver(200, "").await;
    let route = route(
        dir.path(),
        &format!("kind = \"alertmanager\"\nurl = \"{base}/am/\""),
    );
    // Made in the past, as a delivery retried is.
    let critical = Alert {
        time: Timestamp::from_second(1_700_000_000).unwrap(),
        ..alert()
    };
    let recovered = Alert {
        state: State::Recovered,
        previous_state: Some(State::Dead),
        ..critical.clone()
    };
    sender().deliver(&route, &critical).await.unwrap();
    sender().deliver(&route, &recovered).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "/am/api/v2/alerts");
    let firing: serde_json::Value = serde_json::from_slice(&seen[0].2).unwrap();
    // critical (was expiring): the expiring alert resolved at the change, the critical one firing.
    assert_eq!(firing[0]["labels"]["state"], "expiring");
    assert_eq!(firing[0]["endsAt"], "2023-11-14T22:13:20Z");
    assert_eq!(firing[1]["startsAt"], "2023-11-14T22:13:20Z");
    assert_eq!(
        firing[1]["labels"],
        serde_json::json!({"alertname": "PermatokenTokenState", "severity": "critical",
                           "state": "critical", "token": "orders"})
    );
    assert_eq!(firing[1]["annotations"]["fix"], "run `permatoken refresh`");
    let ends: Timestamp = firing[1]["endsAt"].as_str().unwrap().parse().unwrap();
    assert!(ends > Timestamp::now(), "{firing}");
    let resolved: serde_json::Value = serde_json::from_slice(&seen[1].2).unwrap();
    assert_eq!(resolved.as_array().unwrap().len(), 1, "{resolved}");
    assert_eq!(resolved[0]["labels"]["state"], "dead");
    assert_eq!(resolved[0]["endsAt"], "2023-11-14T22:13:20Z");
}

/// The log lines written while a [`Log::capture`] guard lives, on this thread.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;

    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

impl Log {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Issue 16, item 5: 9 deliveries on a plain-http `url_file` route made 9 warnings; now one per
/// route, at start, and one more when its file names another URL.
#[tokio::test]
async fn the_plain_http_warning_of_a_url_file_route_is_said_once_at_start_not_at_every_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let (base, seen) = receiver(200, "ok").await;
    let file = dir.path().join("ops.url");
    std::fs::write(&file, format!("{base}/hook/PERMATOKENTEST-a\n")).unwrap();
    let route = route(dir.path(), "kind = \"webhook\"\nurl_file = \"ops.url\"");
    let log = Log::default();
    let _guard = log.capture();
    let sender = sender();
    // At start: said before any delivery.
    sender.warn_plain_http(std::slice::from_ref(&route));
    assert!(
        log.text()
            .contains("route `ops` sends alerts over plain http://"),
        "{}",
        log.text()
    );
    for _ in 0..9 {
        sender.deliver(&route, &alert()).await.unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), 9);
    let warnings = |text: &str| text.matches("sends alerts over plain http://").count();
    assert_eq!(warnings(&log.text()), 1, "{}", log.text());
    // Another receiver in the file: said again, once.
    std::fs::write(&file, format!("{base}/hook/PERMATOKENTEST-b\n")).unwrap();
    for _ in 0..3 {
        sender.clone().deliver(&route, &alert()).await.unwrap();
    }
    assert_eq!(warnings(&log.text()), 2, "{}", log.text());
    assert!(log.text().contains("route `ops`"), "{}", log.text());
    assert!(
        !log.text().contains("PERMATOKENTEST"),
        "the URL is a secret"
    );
}
