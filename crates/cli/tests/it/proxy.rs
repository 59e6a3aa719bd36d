//! Proxies: plain http to loopback never goes through one (the token would reach it in clear text);
//! https follows `HTTPS_PROXY` through a CONNECT tunnel, TLS end to end, and `NO_PROXY` bypasses it.
//! The proxy here is a real one, written for the test: it relays bytes and records what it saw.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use permatoken_sandbox::Options;

use crate::harness::{Test, sandbox, sandbox_with, token_of};

const USER: &str = "PERMATOKENTEST-proxy-user";
const PASSWORD: &str = "PERMATOKENTEST-proxy-password";

/// An HTTP proxy on loopback: CONNECT tunnels to 127.0.0.1 are relayed; any other request (a plain
/// http call sent to a proxy) is recorded and refused.
struct Proxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Request heads received, whole.
    heads: Arc<Mutex<Vec<String>>>,
    /// Every byte relayed through tunnels, both ways.
    relayed: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let proxy = Self {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            heads: Arc::default(),
            relayed: Arc::default(),
        };
        let (connections, heads, relayed) = (
            proxy.connections.clone(),
            proxy.heads.clone(),
            proxy.relayed.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                connections.fetch_add(1, Ordering::SeqCst);
                let (heads, relayed) = (heads.clone(), relayed.clone());
                std::thread::spawn(move || serve(stream, &heads, &relayed));
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn url_with_credentials(&self) -> String {
        format!("http://{USER}:{PASSWORD}@{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(mut client: TcpStream, heads: &Mutex<Vec<String>>, relayed: &Arc<Mutex<Vec<u8>>>) {
    // A client sends nothing after CONNECT before the 200, so the buffer holds only the head.
    let mut reader = BufReader::new(&mut client);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    drop(reader);
    heads.lock().unwrap().push(head.clone());
    let target = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .filter(|t| t.starts_with("127.0.0.1:"));
    let Some(upstream) = target.and_then(|t| TcpStream::connect(t).ok()) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let pipe = |mut from: TcpStream, mut to: TcpStream, seen: Arc<Mutex<Vec<u8>>>| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    };
    let up = pipe(
        client.try_clone().unwrap(),
        upstream.try_clone().unwrap(),
        relayed.clone(),
    );
    let down = pipe(upstream, client, relayed.clone());
    let _ = up.join();
    let _ = down.join();
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn plain_http_to_loopback_never_goes_through_a_proxy() {
    let sandbox = sandbox();
    let proxy = Proxy::start();
    let port = sandbox.url().rsplit(':').next().unwrap().to_owned();
    for graph_url in [sandbox.url(), format!("http://localhost:{port}")] {
        let before = sandbox.requests().len();
        let mut test = Test::new().dotenv(&sandbox, "system-user", true);
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
            "HTTPS_PROXY",
        ] {
            test = test.env(var, &proxy.url_with_credentials());
        }
        let out = test
            .args(["check", "--json", "-v", "--graph-url", &graph_url])
            .run();
        out.assert_code(0);
        assert_eq!(out.json()["token"]["valid"], true);
        assert_eq!(sandbox.requests().len(), before + 2, "{graph_url}");
        assert!(
            out.stderr
                .contains("not followed: plain http:// goes only to loopback"),
            "{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("PERMATOKENTEST-proxy"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(proxy.connections(), 0, "{:?}", proxy.heads.lock().unwrap());
}

#[test]
fn https_goes_through_the_connect_proxy_with_tls_end_to_end() {
    let sandbox = sandbox_with(&Options {
        tls: true,
        ..Options::default()
    });
    let proxy = Proxy::start();
    let ca = sandbox.ca_pem().expect("a CA made at start").to_owned();
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .write("ca.pem", &ca)
        .env("HTTPS_PROXY", &proxy.url_with_credentials())
        .env("HTTP_PROXY", &proxy.url())
        .args(["check", "--json", "-v", "--ca-file", "ca.pem"])
        .run();
    out.assert_code(0);
    assert_eq!(out.json()["token"]["valid"], true);
    assert_eq!(sandbox.requests().len(), 2, "both calls arrived");
    let heads = proxy.heads.lock().unwrap().clone();
    assert!(!heads.is_empty());
    let target = sandbox.url().trim_start_matches("https://").to_owned();
    for head in &heads {
        assert!(
            head.starts_with(&format!("CONNECT {target} ")),
            "only tunnels: {head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("proxy-authorization: basic "),
            "the proxy's credentials go to the proxy: {head}"
        );
    }
    // TLS end to end: the proxy relayed the calls and saw no token.
    let relayed = proxy.relayed.lock().unwrap().clone();
    assert!(relayed.len() > 1000, "{} bytes relayed", relayed.len());
    let token = token_of(&sandbox, "system-user");
    for secret in [&token[..token.len() / 2], "Bearer", "debug_token"] {
        assert!(!contains(&relayed, secret), "`{secret}` crossed the proxy");
    }
    // `-v` says a proxy is used, and shows it without its credentials.
    assert!(
        out.stderr.contains("go through a proxy") && out.stderr.contains(&proxy.url()),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(USER) && !out.stderr.contains(PASSWORD));
    assert!(!out.stdout.contains(USER) && !out.stdout.contains(PASSWORD));
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let sandbox = sandbox_with(&Options {
        tls: true,
        ..Options::default()
    });
    let proxy = Proxy::start();
    let ca = sandbox.ca_pem().expect("a CA made at start").to_owned();
    for no_proxy in [("NO_PROXY", "example.com, 127.0.0.1"), ("no_proxy", "*")] {
        let out = Test::against(&sandbox)
            .dotenv(&sandbox, "system-user", true)
            .write("ca.pem", &ca)
            .env("https_proxy", &proxy.url())
            .env(no_proxy.0, no_proxy.1)
            .args(["check", "--json", "--ca-file", "ca.pem"])
            .run();
        out.assert_code(0);
    }
    assert_eq!(sandbox.requests().len(), 4);
    assert_eq!(proxy.connections(), 0);
}

#[test]
fn a_proxy_that_is_down_is_unknown_and_named_without_its_password() {
    let sandbox = sandbox_with(&Options {
        tls: true,
        ..Options::default()
    });
    let ca = sandbox.ca_pem().expect("a CA made at start").to_owned();
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .write("ca.pem", &ca)
        .env(
            "HTTPS_PROXY",
            &format!("http://{USER}:{PASSWORD}@127.0.0.1:{port}"),
        )
        .args(["check", "--json", "--ca-file", "ca.pem"])
        .run();
    out.assert_code(3);
    assert!(
        out.codes().iter().all(|c| c == "graph_unreachable"),
        "{:?}",
        out.codes()
    );
    let message = out.json()["findings"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(&format!(
            "through the proxy http://127.0.0.1:{port} that `HTTPS_PROXY` names"
        )),
        "{message}"
    );
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(USER) && !text.contains(PASSWORD), "{text}");
    }
    assert!(sandbox.requests().is_empty());
}

#[test]
fn a_socks_proxy_is_refused_by_name_for_https_and_ignored_for_loopback() {
    let socks = format!("socks5://{USER}:{PASSWORD}@127.0.0.1:1080");
    let sandbox = sandbox();
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .env("ALL_PROXY", &socks)
        .args(["check"])
        .run();
    out.assert_code(0);
    let out = Test::new()
        .env("WHATSAPP_ACCESS_TOKEN", &crate::hostile::test_token())
        .env("ALL_PROXY", &socks)
        .args(["check", "--graph-url", "https://graph.example:8443"])
        .run();
    out.assert_code(3);
    assert!(
        out.stderr.contains("`ALL_PROXY` names a socks5:// proxy"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(USER) && !out.stderr.contains(PASSWORD));
}

#[test]
fn a_graph_url_with_a_password_is_refused_without_showing_it() {
    for url in [
        format!("https://me:{PASSWORD}@graph.facebook.com"),
        format!("http://me:{PASSWORD}@127.0.0.1:9"),
        format!("https://:{PASSWORD}@graph.facebook.com"),
    ] {
        let out = Test::new()
            .env("WHATSAPP_ACCESS_TOKEN", &crate::hostile::test_token())
            .args(["check", "--json", "--graph-url", &url])
            .run();
        out.assert_code(3);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(all.contains("holds a user name or password"), "{all}");
        assert!(!all.contains(PASSWORD), "{all}");
    }
}

#[test]
fn the_webhook_probe_never_goes_through_a_proxy() {
    use permatoken_sandbox::{ACCOUNTS, Behaviour, Certificate, PHONES, Webhook, WebhookOptions};
    let sandbox = sandbox();
    let proxy = Proxy::start();
    let verify = "PERMATOKENTEST-proxy-verify";
    let webhook = Webhook::start_background(WebhookOptions {
        certificate: Certificate::Good,
        behaviour: Behaviour::Correct,
        verify_token: verify.to_owned(),
        app_secret: sandbox.app_secret().expose_secret().to_owned(),
    })
    .expect("a local HTTPS receiver");
    // By name: looked up once, checked, then connected to as checked.
    let url = webhook.url().replace("127.0.0.1", "localhost");
    let env = format!(
        "WHATSAPP_ACCESS_TOKEN={}\n{}WHATSAPP_BUSINESS_ACCOUNT_ID={}\nWHATSAPP_PHONE_NUMBER_ID={}\nWHATSAPP_WEBHOOK_URL={url}\nWHATSAPP_WEBHOOK_VERIFY_TOKEN={verify}\n",
        token_of(&sandbox, "system-user"),
        crate::harness::app_lines(&sandbox),
        ACCOUNTS[0].id,
        PHONES[0].id,
    );
    let mut test = Test::against(&sandbox)
        .write(".env", &env)
        .write("ca.pem", webhook.ca_pem());
    for var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY"] {
        test = test.env(var, &proxy.url());
    }
    let out = test
        .args([
            "doctor",
            "--json",
            "--ca-file",
            "ca.pem",
            "--allow-private-webhook",
        ])
        .run();
    out.assert_code(0);
    let report = out.json();
    let item = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "webhook")
        .unwrap();
    assert_eq!(item["status"], "ok", "{item:#}");
    let evidence = item["evidence"].to_string();
    assert!(
        evidence.contains("localhost resolves to")
            && evidence.contains("signed notification accepted"),
        "{evidence}"
    );
    assert_eq!(proxy.connections(), 0);
}
