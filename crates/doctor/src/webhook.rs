//! The webhook item: what Meta needs of the URL, proven against the live endpoint. `https://`; a host
//! that resolves only to public addresses (Meta cannot reach the others); a certificate Meta trusts,
//! for that host, not near its end; the verification handshake answered with exactly the challenge;
//! an inert, signed notification accepted within 10 s; and the same notification with a wrong
//! signature refused.
//!
//! Every connection goes to the addresses that were checked (a second lookup could be steered
//! elsewhere: DNS rebinding), never through a proxy, and a reply is read up to 64 KiB only.
//!
//! Must never: log or show the verify token (it is in the handshake URL, as Meta sends it, and a
//! broken receiver may echo it), the app secret or the access token, or send a notification that
//! could make the service act (the entry list is empty).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use permatoken_secret::{AppSecret, VerifyToken};
use reqwest::Url;

use crate::{Inputs, Item, ItemStatus};

/// How the webhook is checked.
#[derive(Debug, Clone, Default)]
pub struct WebhookCheck {
    /// `--allow-private-webhook`: a private address passes, said so in the evidence (tests, labs).
    pub allow_private: bool,
    /// `--ca-file`: more CAs to trust beside the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// `--no-webhook-post`: skip the notifications.
    pub no_post: bool,
}

/// The inert notification: no entry, so no business logic runs.
const INERT: &str = r#"{"object":"whatsapp_business_account","entry":[]}"#;
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most read of a receiver's reply: a challenge is a few digits.
const MAX_REPLY_BYTES: usize = 64 * 1024;
const CERT_WARN_DAYS: i64 = 14;

/// Whether Meta's servers could reach `ip`: not loopback, private, link-local, CGNAT, unique-local
/// or any other special-purpose range.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard 100::/64
                || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments 2001::/23
                || (s[0] == 0x0064 && s[1] == 0xff9b)) // NAT64 64:ff9b::/96 (and /48 local use)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || o[0] == 0 // "this network" 0.0.0.0/8
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF 192.0.0.0/24
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 6to4 relay 192.88.99.0/24
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240) // reserved 240.0.0.0/4
}

pub(crate) async fn item(inputs: &Inputs) -> Item {
    let mut item = Item::new(
        "webhook",
        "Webhook URL: public, HTTPS, trusted certificate, handshake, signatures",
    );
    let Some(raw) = &inputs.webhook_url else {
        return item.skipped("WHATSAPP_WEBHOOK_URL");
    };
    let check = &inputs.webhook;
    let secrets = Secrets::of(inputs);
    let url = match Url::parse(raw) {
        Ok(url) if url.host_str().is_some() => url,
        _ => {
            item.fact(format!("`{}` is not a URL", preview(&secrets.redact(raw))));
            item.flag(
                ItemStatus::Critical,
                "set `WHATSAPP_WEBHOOK_URL` to the full https:// address Meta calls",
            );
            return item;
        }
    };
    let shown = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.path()
    );
    if url.scheme() != "https" {
        item.fact(format!("{shown} is not https://"));
        item.flag(ItemStatus::Critical, "Meta calls only https:// webhooks: serve it over TLS with a certificate from a public CA (Let's Encrypt), and set `WHATSAPP_WEBHOOK_URL` to the https:// address");
        return item;
    }
    let host = url
        .host_str()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);

    // Where the host leads.
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            match tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
                .await
            {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(e)) => {
                    item.fact(format!("{host} does not resolve: {e}"));
                    item.flag(ItemStatus::Critical, "point the host's DNS at the server (an A or AAAA record), or fix the host in `WHATSAPP_WEBHOOK_URL`");
                    return item;
                }
                Err(_) => {
                    item.fact(format!("resolving {host} took over 10 s"));
                    item.flag(
                        ItemStatus::Unknown,
                        "check this machine's DNS and run again",
                    );
                    return item;
                }
            }
        }
    };
    let private: Vec<String> = addrs
        .iter()
        .filter(|a| !is_public(a.ip()))
        .map(|a| a.ip().to_string())
        .collect();
    let listed: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    if private.is_empty() {
        item.fact(format!(
            "{host} resolves to public address(es) {}",
            listed.join(", ")
        ));
    } else if check.allow_private {
        item.fact(format!("{host} resolves to {} — not public, allowed by --allow-private-webhook (Meta could not reach it)", listed.join(", ")));
    } else {
        item.fact(format!(
            "{host} resolves to {}, which Meta's servers cannot reach (not public)",
            private.join(", ")
        ));
        item.flag(ItemStatus::Critical, "expose the webhook on a public address (a reverse proxy, a tunnel for development), and set that URL in `WHATSAPP_WEBHOOK_URL` and in App Dashboard → WhatsApp → Configuration");
        return item;
    }

    // The certificate, as Meta would see it.
    let tls = match permatoken_graph::tls_config(check.ca_pem.as_deref(), true) {
        Ok(tls) => tls,
        Err(e) => {
            item.fact(e.to_string());
            item.flag(
                ItemStatus::Unknown,
                "check --ca-file and the system's CA certificates",
            );
            return item;
        }
    };
    match probe_certificate(&tls, &host, &addrs).await {
        Ok(expires) => {
            let left = expires.map(|t| t.duration_since(Timestamp::now()).as_hours() / 24);
            match left {
                Some(days) if days < CERT_WARN_DAYS => {
                    item.fact(format!(
                        "certificate trusted, for {host}, expires in {days} days"
                    ));
                    item.flag(ItemStatus::Warning, "renew the certificate now (certbot renew, or your CA's renewal): Meta stops delivering when it expires");
                }
                Some(days) => {
                    item.fact(format!("certificate trusted, for {host}, {days} days left"))
                }
                None => item.fact(format!("certificate trusted, for {host}")),
            }
        }
        Err((status, fact, fix)) => {
            item.fact(fact);
            item.flag(status, fix);
            return item;
        }
    }

    let http = match pinned_client(&host, &addrs, tls) {
        Ok(c) => c,
        Err(e) => {
            item.fact(format!("cannot set up HTTPS: {}", e.without_url()));
            item.flag(ItemStatus::Unknown, "run again");
            return item;
        }
    };

    // The verification handshake, as Meta sends it.
    match &inputs.verify_token {
        None => {
            item.fact(
                "verification handshake not tried: `WHATSAPP_WEBHOOK_VERIFY_TOKEN` is not set",
            );
            item.flag(ItemStatus::Warning, "set `WHATSAPP_WEBHOOK_VERIFY_TOKEN` to the verify token configured in App Dashboard → WhatsApp → Configuration");
        }
        Some(verify) => handshake(&mut item, &http, &url, verify, &secrets).await,
    }

    if check.no_post {
        item.fact("notifications not sent (--no-webhook-post)");
        return item;
    }
    match &inputs.app.app_secret {
        None => {
            item.fact("signed notification not sent: `FACEBOOK_APP_SECRET` is not set");
            item.flag(
                ItemStatus::Warning,
                "set `FACEBOOK_APP_SECRET`: Meta signs every notification with it",
            );
        }
        Some(secret) => notifications(&mut item, &http, &url, secret).await,
    }
    item
}

/// The client for the handshake and the notifications: it connects only to `addrs`, the addresses
/// that were checked, and never through a proxy (reqwest would follow `HTTPS_PROXY` on its own).
fn pinned_client(
    host: &str,
    addrs: &[SocketAddr],
    tls: rustls::ClientConfig,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    // An address in the URL is connected to as it is; a name is looked up no more.
    if host.parse::<IpAddr>().is_err() {
        builder = builder.resolve_to_addrs(host, addrs);
    }
    builder.build()
}

/// The secrets `doctor` knows, to keep out of anything a receiver answers.
struct Secrets(Vec<(String, &'static str)>);

impl Secrets {
    fn of(inputs: &Inputs) -> Self {
        let mut known = Vec::new();
        if let Some(verify) = &inputs.verify_token {
            known.push((verify.expose_secret().to_owned(), "[verify token]"));
        }
        if let Some(secret) = &inputs.app.app_secret {
            known.push((secret.expose_secret().to_owned(), "[app secret]"));
        }
        known.push((inputs.token.expose_secret().to_owned(), "[access token]"));
        // As they travel in a query string, too: a receiver may echo the query.
        let encoded: Vec<_> = known
            .iter()
            .map(|(value, name)| {
                let form: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
                (form, *name)
            })
            .filter(|(form, _)| !known.iter().any(|(value, _)| value == form))
            .collect();
        known.extend(encoded);
        known.retain(|(value, _)| !value.is_empty());
        // Longest first, so that a secret holding another is replaced whole.
        known.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        Self(known)
    }

    /// `text` with every known secret replaced by its name.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (value, name) in &self.0 {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), name);
            }
        }
        out
    }
}

type Refusal = (ItemStatus, String, String);

/// A TLS handshake with the system's roots (and `--ca-file`) with the first of `addrs` that takes a
/// connection: the certificate's expiry, or why Meta would refuse it.
async fn probe_certificate(
    tls: &rustls::ClientConfig,
    host: &str,
    addrs: &[SocketAddr],
) -> Result<Option<Timestamp>, Refusal> {
    let unknown = |fact: String| {
        (
            ItemStatus::Unknown,
            fact,
            "check that the server is up and reachable from here, then run again".to_owned(),
        )
    };
    let mut connected = None;
    let mut failures = Vec::new();
    for &addr in addrs {
        match tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                connected = Some(s);
                break;
            }
            Ok(Err(e)) => failures.push(format!("cannot connect to {addr}: {e}")),
            Err(_) => failures.push(format!("no connection to {addr} within 10 s")),
        }
    }
    let Some(stream) = connected else {
        return Err(unknown(failures.join("; ")));
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| unknown(format!("`{host}` is not a host name TLS can check")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.clone()));
    let tls = match tokio::time::timeout(TIMEOUT, connector.connect(name, stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(certificate_refusal(host, &e)),
        Err(_) => return Err(unknown("the TLS handshake took over 10 s".to_owned())),
    };
    Ok(tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| permatoken_x509::not_after(leaf)))
}

fn certificate_refusal(host: &str, e: &std::io::Error) -> Refusal {
    use rustls::CertificateError as C;
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let critical = |fact: String, fix: &str| (ItemStatus::Critical, fact, fix.to_owned());
    match tls {
        Some(rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => critical(
            format!("the certificate of {host} has expired"),
            "renew it now (certbot renew, or your CA's renewal) and reload the web server: Meta delivers nothing to an expired certificate",
        ),
        Some(rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        )) => critical(
            format!("the certificate is not for {host}"),
            "serve a certificate issued for this host name (its SAN must list it), or put the host the certificate names in `WHATSAPP_WEBHOOK_URL`",
        ),
        Some(rustls::Error::InvalidCertificate(C::UnknownIssuer)) => critical(
            format!("the certificate of {host} is self-signed or from a CA no one trusts"),
            "Meta does not accept self-signed certificates: get one from a public CA (Let's Encrypt is free), with its full chain",
        ),
        Some(other) => critical(
            format!("the TLS handshake with {host} failed: {other}"),
            "fix the server's TLS set-up: a current certificate from a public CA, with its full chain",
        ),
        None => (
            ItemStatus::Unknown,
            format!("the TLS handshake with {host} failed: {e}"),
            "check that the server speaks TLS on that port, then run again".to_owned(),
        ),
    }
}

fn challenge() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes).to_string()
}

/// What a body holds, safe to print: short, printable, no bidirectional overrides. Secrets are
/// taken out before, by [`Secrets::redact`].
fn preview(body: &str) -> String {
    let shown = |c: &char| {
        !c.is_control()
            && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    let clean: String = body.chars().filter(shown).take(40).collect();
    if body.chars().filter(shown).count() > 40 {
        format!("{clean}…")
    } else {
        clean
    }
}

async fn handshake(
    item: &mut Item,
    http: &reqwest::Client,
    url: &Url,
    verify: &VerifyToken,
    secrets: &Secrets,
) {
    let challenge = challenge();
    let mut target = url.clone();
    target
        .query_pairs_mut()
        .append_pair("hub.mode", "subscribe")
        .append_pair("hub.challenge", &challenge)
        .append_pair("hub.verify_token", verify.expose_secret());
    let fix = "answer Meta's GET with status 200 and exactly `hub.challenge` as the body when `hub.verify_token` matches `WHATSAPP_WEBHOOK_VERIFY_TOKEN` (403 otherwise)";
    match http.get(target).send().await {
        Ok(response) => {
            let status = response.status();
            let body = match permatoken_graph::read_capped(response, MAX_REPLY_BYTES).await {
                Ok(permatoken_graph::Capped::Whole(body)) => body,
                Ok(permatoken_graph::Capped::OverLimit) => {
                    item.fact(format!(
                        "verification handshake answered {status} with more than {} (not read further), not the challenge",
                        permatoken_graph::human_bytes(MAX_REPLY_BYTES)
                    ));
                    item.flag(ItemStatus::Critical, fix);
                    return;
                }
                Err(e) => {
                    item.fact(format!(
                        "verification handshake answered {status}, then the answer was cut short: {}",
                        e.without_url()
                    ));
                    item.flag(ItemStatus::Critical, fix);
                    return;
                }
            };
            let body = String::from_utf8_lossy(&body);
            if status.as_u16() == 200 && body == challenge {
                item.fact("verification handshake answered 200 with exactly the challenge");
            } else if body.trim() == verify.expose_secret() {
                item.fact(format!(
                    "verification handshake answered {status}: the receiver echoed the verify token instead of the challenge"
                ));
                item.flag(ItemStatus::Critical, "answer with the value of `hub.challenge`, not `hub.verify_token`: Meta checks that the body is exactly the challenge it sent");
            } else {
                item.fact(format!(
                    "verification handshake answered {status} with \"{}\", not the challenge",
                    preview(&secrets.redact(&body))
                ));
                item.flag(ItemStatus::Critical, fix);
            }
        }
        Err(e) => {
            item.fact(format!(
                "verification handshake failed: {}",
                e.without_url()
            ));
            item.flag(ItemStatus::Critical, fix);
        }
    }
}

async fn notifications(item: &mut Item, http: &reqwest::Client, url: &Url, secret: &AppSecret) {
    let post = |signature: String| {
        http.post(url.clone())
            .header("content-type", "application/json")
            .header("x-hub-signature-256", format!("sha256={signature}"))
            .body(INERT)
            .send()
    };
    let started = std::time::Instant::now();
    match post(secret.sign(INERT.as_bytes())).await {
        Ok(r) if r.status().as_u16() == 200 => {
            item.fact(format!(
                "signed notification accepted (200) in {} ms",
                started.elapsed().as_millis()
            ));
        }
        Ok(r) => {
            item.fact(format!("signed notification answered {}", r.status()));
            item.flag(ItemStatus::Critical, "answer 200 to Meta's POST (quickly: process it after answering), checking `X-Hub-Signature-256` with `FACEBOOK_APP_SECRET`; a receiver that checks with another secret refuses every real notification");
        }
        Err(e) => {
            item.fact(format!("signed notification failed: {}", e.without_url()));
            item.flag(
                ItemStatus::Critical,
                "answer Meta's POST with 200 within a few seconds; process it after answering",
            );
        }
    }
    let forged = "0".repeat(64);
    match post(forged).await {
        Ok(r) if r.status().is_success() => {
            item.fact(format!(
                "a notification with a wrong signature was accepted ({})",
                r.status()
            ));
            item.flag(ItemStatus::Warning, "refuse a POST whose `X-Hub-Signature-256` is not the HMAC-SHA256 of the raw body keyed by the app secret (compare in constant time): anyone can forge messages otherwise, unless the service drops them later");
        }
        Ok(r) => item.fact(format!(
            "a notification with a wrong signature was refused ({})",
            r.status()
        )),
        Err(e) => item.fact(format!(
            "a notification with a wrong signature was not accepted: {}",
            e.without_url()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name that never resolves (`.invalid`, RFC 6761) still reaches the checked address: the
    /// client connects only where the check looked, without a second lookup that could lead
    /// elsewhere.
    #[tokio::test]
    async fn connections_go_to_the_checked_addresses_only() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\npinned",
                )
                .unwrap();
        });
        let tls = permatoken_graph::tls_config(None, false).unwrap();
        let http = pinned_client("rebound.invalid", &[addr], tls).unwrap();
        let url = format!("http://rebound.invalid:{}/webhook", addr.port());
        let response = http
            .get(url)
            .send()
            .await
            .expect("connected to the pinned address");
        assert_eq!(response.text().await.unwrap(), "pinned");
    }

    #[test]
    fn known_secrets_are_named_not_shown() {
        let inputs = Inputs {
            token: permatoken_secret::AccessToken::new("EAAPERMATOKENTESTaccess"),
            source: String::new(),
            app: permatoken_inspect::AppCredentials {
                app_id: Some("1".into()),
                app_secret: Some(AppSecret::new("PERMATOKENTEST0app0secret")),
            },
            waba: None,
            phone: None,
            webhook_url: None,
            verify_token: Some(VerifyToken::new("PERMATOKENTEST verify&token")),
            webhook: WebhookCheck::default(),
            subscribe: false,
        };
        let secrets = Secrets::of(&inputs);
        let echoed = "hub.mode=subscribe&hub.verify_token=PERMATOKENTEST+verify%26token&x=PERMATOKENTEST0app0secret EAAPERMATOKENTESTaccess PERMATOKENTEST verify&token";
        let shown = secrets.redact(echoed);
        assert!(!shown.contains("PERMATOKENTEST"), "{shown}");
        assert!(
            shown.contains("hub.verify_token=[verify token]")
                && shown.contains("[app secret]")
                && shown.contains("[access token]"),
            "{shown}"
        );
        assert_eq!(preview("a\u{202e}b\nc"), "abc");
    }

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "64:ff9b::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "157.240.1.1",
            "100.128.0.1",
            "2a03:2880::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
