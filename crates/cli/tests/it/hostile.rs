//! Hostile and broken servers: an answer that never ends, a webhook receiver that streams forever or
//! echoes the verify token. Each one ends in a clear finding, in bounded memory, with no secret shown.
//!
//! Memory is asserted on the real `permatoken` child: the server reads the child's `VmHWM` (its peak
//! resident memory) from `/proc/<pid>/status` each time the child opens a new connection, which it
//! does only after it has given up on the previous answer. No timing is involved.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::harness::Outcome;

/// What a hostile server streams at most: the 400 MB of the issue.
const FLOOD_BYTES: u64 = 400 * 1024 * 1024;
/// What the child's peak memory must stay under; it reads a 4 MiB answer at most, twice at a time.
const PEAK_LIMIT_KB: u64 = 100 * 1024;

/// A token of the right shape, made at run time and marked as a test value.
pub(crate) fn test_token() -> String {
    let seed = std::collections::hash_map::RandomState::new();
    let noise = std::hash::BuildHasher::hash_one(&seed, std::process::id());
    format!("EAAPERMATOKENTEST{noise:016x}ZZ")
}

/// The `permatoken` binary, spawned so that its pid is known while it runs.
pub(crate) struct Child {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Child {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary folder"),
            env: Vec::new(),
        }
    }

    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs with `args`, telling `pid` the child's id as soon as it exists.
    pub(crate) fn run(self, args: &[&str], pid: &AtomicU32) -> Outcome {
        let child = Command::new(env!("CARGO_BIN_EXE_permatoken"))
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the permatoken binary runs");
        pid.store(child.id(), Ordering::SeqCst);
        let out = child.wait_with_output().expect("the binary finishes");
        Outcome {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }
}

/// The peak resident memory of process `pid`, in kB, while it runs.
pub(crate) fn peak_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Reads an HTTP request head (the bodies these clients send are small and ignored).
pub(crate) fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}

/// A plain-HTTP server on loopback that answers every request with 200 and a JSON string that does
/// not end (400 MB, then it hangs up), and records the peak memory of the child it is told about.
struct Flood {
    addr: SocketAddr,
    pid: Arc<AtomicU32>,
    connections: Arc<AtomicUsize>,
    /// The child's peak memory, seen when it came back for another try.
    peak_kb: Arc<AtomicU64>,
    /// The most bytes one connection took before the child hung up.
    most_sent: Arc<AtomicU64>,
}

impl Flood {
    fn start(declare_length: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let flood = Self {
            addr: listener.local_addr().unwrap(),
            pid: Arc::default(),
            connections: Arc::default(),
            peak_kb: Arc::default(),
            most_sent: Arc::default(),
        };
        let (pid, connections, peak, most) = (
            flood.pid.clone(),
            flood.connections.clone(),
            flood.peak_kb.clone(),
            flood.most_sent.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let n = connections.fetch_add(1, Ordering::SeqCst);
                if n > 0 {
                    // A new try: the child has given up on an earlier answer, so its peak memory
                    // includes reading one.
                    while pid.load(Ordering::SeqCst) == 0 {
                        std::thread::yield_now();
                    }
                    if let Some(kb) = peak_kb(pid.load(Ordering::SeqCst)) {
                        peak.fetch_max(kb, Ordering::SeqCst);
                    }
                }
                let most = most.clone();
                std::thread::spawn(move || {
                    if read_head(&mut stream).is_none() {
                        return;
                    }
                    flood_body(&mut stream, declare_length, &most);
                });
            }
        });
        flood
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// `{"id":"aaaa…` for [`FLOOD_BYTES`] or until the reader hangs up, raising `most` to the bytes
/// taken as it goes (the reader never sees a byte before it is counted).
fn flood_body(stream: &mut impl Write, declare_length: bool, most: &AtomicU64) {
    let head = if declare_length {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"id\":\"",
            FLOOD_BYTES + 7
        )
    } else {
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"id\":\""
            .to_owned()
    };
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < FLOOD_BYTES {
        if stream.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len() as u64;
        most.fetch_max(sent, Ordering::SeqCst);
    }
}

#[test]
fn an_endless_graph_answer_is_unknown_in_bounded_memory() {
    // Without a length (read until the cap), and with a declared 400 MB (refused before reading).
    for declare_length in [false, true] {
        let flood = Flood::start(declare_length);
        let token = test_token();
        let out = Child::new().env("WHATSAPP_ACCESS_TOKEN", &token).run(
            &["check", "--json", "--graph-url", &flood.url()],
            &flood.pid,
        );
        let peak = flood.peak_kb.load(Ordering::SeqCst);
        let most = flood.most_sent.load(Ordering::SeqCst);
        eprintln!(
            "declared length {declare_length}: peak memory of `check` {} MB; most one connection took {} MB",
            peak / 1024,
            most / (1024 * 1024)
        );
        out.assert_code(3);
        assert_eq!(out.json()["status"], "unknown");
        let codes = out.codes();
        assert!(
            !codes.is_empty() && codes.iter().all(|c| c == "graph_unreachable"),
            "{codes:?}"
        );
        let message = out.json()["findings"][0]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("larger than 4 MiB"), "{message}");
        for text in [&out.stdout, &out.stderr] {
            assert!(!text.contains(&token[..token.len() / 2]), "{text}");
        }
        // Two calls, each tried again: the peak was read after whole answers had been given up on.
        let connections = flood.connections.load(Ordering::SeqCst);
        assert!(connections > 2, "{connections} connections");
        assert!(peak > 0, "the child's memory was read");
        assert!(peak < PEAK_LIMIT_KB, "peak {peak} kB");
        assert!(most < FLOOD_BYTES / 4, "{most} bytes taken");
    }
}

const VERIFY: &str = "PERMATOKENTEST-hostile-verify-token";

/// A receiver behaving as `behaviour`, and a `.env` that points `doctor` at it and at `sandbox`.
fn webhook_setup(
    sandbox: &permatoken_sandbox::Running,
    behaviour: permatoken_sandbox::Behaviour,
) -> (permatoken_sandbox::Webhook, String) {
    use permatoken_sandbox::{ACCOUNTS, Certificate, PHONES, Webhook, WebhookOptions};
    let webhook = Webhook::start_background(WebhookOptions {
        certificate: Certificate::Good,
        behaviour,
        verify_token: VERIFY.to_owned(),
        app_secret: sandbox.app_secret().expose_secret().to_owned(),
    })
    .expect("a local HTTPS receiver");
    let env = format!(
        "WHATSAPP_ACCESS_TOKEN={}\n{}WHATSAPP_BUSINESS_ACCOUNT_ID={}\nWHATSAPP_PHONE_NUMBER_ID={}\nWHATSAPP_WEBHOOK_URL={}\nWHATSAPP_WEBHOOK_VERIFY_TOKEN={VERIFY}\n",
        crate::harness::token_of(sandbox, "system-user"),
        crate::harness::app_lines(sandbox),
        ACCOUNTS[0].id,
        PHONES[0].id,
        webhook.url()
    );
    (webhook, env)
}

/// `doctor`'s webhook item: status and evidence, and every secret checked absent from all output.
fn doctor_webhook(
    sandbox: &permatoken_sandbox::Running,
    webhook: &permatoken_sandbox::Webhook,
    env: &str,
) -> (String, String) {
    let secrets = [
        VERIFY.to_owned(),
        crate::harness::token_of(sandbox, "system-user"),
        sandbox.app_secret().expose_secret().to_owned(),
    ];
    let mut found = None;
    for json in [true, false] {
        let mut args = vec!["doctor", "--ca-file", "ca.pem", "--allow-private-webhook"];
        if json {
            args.push("--json");
        }
        let out = crate::harness::Test::against(sandbox)
            .write(".env", env)
            .write("ca.pem", webhook.ca_pem())
            .env("RUST_LOG", "trace")
            .args(args)
            .run();
        out.assert_code(2);
        for secret in &secrets {
            for text in [&out.stdout, &out.stderr] {
                assert!(
                    !text.contains(&secret[..secret.len() / 2]),
                    "a secret leaked:\n{text}"
                );
            }
        }
        if json {
            let report = out.json();
            let item = report["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["id"] == "webhook")
                .expect("a webhook item")
                .clone();
            let evidence: Vec<&str> = item["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap())
                .collect();
            found = Some((
                item["status"].as_str().unwrap().to_owned(),
                format!("{} | fix: {}", evidence.join(" | "), item["fix"]),
            ));
        }
    }
    found.unwrap()
}

#[test]
fn a_receiver_echoing_the_verify_token_is_told_so_without_showing_it() {
    let sandbox = crate::harness::sandbox();
    let (webhook, env) = webhook_setup(&sandbox, permatoken_sandbox::Behaviour::EchoesVerifyToken);
    let (status, said) = doctor_webhook(&sandbox, &webhook, &env);
    assert_eq!(status, "critical", "{said}");
    assert!(
        said.contains("the receiver echoed the verify token instead of the challenge"),
        "{said}"
    );
    assert!(said.contains("`hub.challenge`"), "{said}");
}

#[test]
fn a_receiver_echoing_the_query_has_the_verify_token_named_not_shown() {
    let sandbox = crate::harness::sandbox();
    let (webhook, env) = webhook_setup(&sandbox, permatoken_sandbox::Behaviour::EchoesQuery);
    let (status, said) = doctor_webhook(&sandbox, &webhook, &env);
    assert_eq!(status, "critical", "{said}");
    assert!(said.contains("not the challenge"), "{said}");
    assert!(
        said.contains("\"hub.verify_token=[verify token]&"),
        "{said}"
    );
}

#[test]
fn an_endless_webhook_reply_is_read_up_to_64_kib() {
    let sandbox = crate::harness::sandbox();
    let (webhook, env) = webhook_setup(&sandbox, permatoken_sandbox::Behaviour::EndlessReply);
    let (status, said) = doctor_webhook(&sandbox, &webhook, &env);
    assert_eq!(status, "critical", "{said}");
    assert!(
        said.contains("verification handshake answered 200 OK with more than 64 KiB"),
        "{said}"
    );
    let most = webhook.most_sent();
    eprintln!(
        "most one webhook connection took: {} MB",
        most / (1024 * 1024)
    );
    assert!(most > 0, "the receiver sent its endless reply");
    assert!(most < FLOOD_BYTES / 4, "{most} bytes taken");
}

#[test]
fn an_endless_answer_to_send_test_is_unknown_and_not_sent_again() {
    let flood = Flood::start(false);
    let token = test_token();
    let out = Child::new()
        .env("WHATSAPP_ACCESS_TOKEN", &token)
        .env("WHATSAPP_PHONE_NUMBER_ID", "106540352242922")
        .run(
            &[
                "send-test",
                "--json",
                "--to",
                "+16505550100",
                "--graph-url",
                &flood.url(),
            ],
            &flood.pid,
        );
    out.assert_code(3);
    let report = out.json();
    assert_eq!(report["status"], "unknown");
    assert_eq!(report["accepted"], false);
    let message = report["error"]["message"].as_str().unwrap();
    assert!(message.contains("larger than 4 MiB"), "{message}");
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(&token[..token.len() / 2]), "{text}");
    }
    // A message may have been sent: it is not sent again.
    assert_eq!(flood.connections.load(Ordering::SeqCst), 1);
    let most = flood.most_sent.load(Ordering::SeqCst);
    assert!(most > 0 && most < FLOOD_BYTES / 4, "{most} bytes taken");
}
