//! A webhook receiver over real HTTPS, with certificates made at start, in the states `doctor` must
//! tell apart: a good one, and ones with an expired certificate, a certificate for another host, a
//! self-signed certificate, a certificate about to expire, a wrong challenge echo (or the verify
//! token echoed), no signature check, or a reply that never ends. It plays the user's service, not
//! Meta: it is how `doctor`'s webhook checks are tested without the internet.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::{Query, State as Extract};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::tls::TlsListener;

/// The receiver's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certificate {
    /// Signed by the run's CA, for 127.0.0.1, valid a year.
    Good,
    /// Signed by the CA, but it expired yesterday.
    Expired,
    /// Signed by the CA, valid, but for `webhook.example`, not 127.0.0.1.
    WrongHost,
    /// Signed by itself.
    SelfSigned,
    /// Signed by the CA, for 127.0.0.1, expiring in 5 days.
    ExpiringSoon,
}

/// How the receiver behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Echoes the challenge for the right verify token, checks `X-Hub-Signature-256`.
    Correct,
    /// Answers the handshake with something other than the challenge.
    WrongChallenge,
    /// Answers 200 to any notification, signed or not.
    AcceptsBadSignatures,
    /// Answers the handshake with `hub.verify_token` instead of `hub.challenge` (a common bug).
    EchoesVerifyToken,
    /// Answers the handshake with the query it received, as a debugging receiver might, its last
    /// pair (`hub.verify_token`, as Meta orders them) first.
    EchoesQuery,
    /// Answers every request with 200 and a body of digits that does not end (400 MB, then it
    /// hangs up): a challenge that never stops.
    EndlessReply,
}

/// What [`Behaviour::EndlessReply`] sends at most on one connection.
const ENDLESS_BYTES: u64 = 400 * 1024 * 1024;

/// A receiver to start.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Its certificate.
    pub certificate: Certificate,
    /// Its behaviour.
    pub behaviour: Behaviour,
    /// The verify token it expects.
    pub verify_token: String,
    /// The app secret it checks signatures with.
    pub app_secret: String,
}

/// A running receiver. Dropping it stops it.
pub struct Webhook {
    addr: SocketAddr,
    ca_pem: String,
    sent: Arc<AtomicU64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Webhook {
    /// `https://127.0.0.1:PORT/webhook`.
    pub fn url(&self) -> String {
        format!("https://{}/webhook", self.addr)
    }

    /// The run's CA certificate, PEM, for `--ca-file`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The most body bytes one connection took before its client hung up ([`Behaviour::EndlessReply`]).
    pub fn most_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Starts a receiver on a thread and runtime of its own.
    pub fn start_background(options: WebhookOptions) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("webhook".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return drop(tx.send(Err(e))),
                };
                runtime.block_on(async move {
                    let started = async {
                        let (server, ca_pem) = server_config(options.certificate)?;
                        let tcp = tokio::net::TcpListener::bind(SocketAddr::from((
                            Ipv4Addr::LOCALHOST,
                            0,
                        )))
                        .await?;
                        let addr = tcp.local_addr()?;
                        Ok::<_, std::io::Error>((tcp, addr, ca_pem, server))
                    };
                    match started.await {
                        Ok((tcp, addr, ca_pem, server)) => {
                            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                            let sent = Arc::new(AtomicU64::new(0));
                            let _ = tx.send(Ok(Self {
                                addr,
                                ca_pem,
                                sent: sent.clone(),
                                _stop: stop,
                            }));
                            let listener = TlsListener {
                                tcp,
                                acceptor: tokio_rustls::TlsAcceptor::from(server),
                            };
                            if options.behaviour == Behaviour::EndlessReply {
                                tokio::select! {
                                    () = endless(listener, sent) => {}
                                    _ = stopped => {}
                                }
                                return;
                            }
                            let router = axum::Router::new()
                                .route("/webhook", axum::routing::get(handshake).post(notification))
                                .with_state(Arc::new(options));
                            let _ = axum::serve(listener, router)
                                .with_graceful_shutdown(async {
                                    let _ = stopped.await;
                                })
                                .await;
                        }
                        Err(e) => drop(tx.send(Err(e))),
                    }
                });
            })?;
        rx.recv()
            .map_err(|_| std::io::Error::other("the webhook thread died while starting"))?
    }
}

type Shared = Arc<WebhookOptions>;

/// Serves [`Behaviour::EndlessReply`] by hand: an HTTP framework would hold the body it sends.
async fn endless(mut listener: TlsListener, sent: Arc<AtomicU64>) {
    use axum::serve::Listener as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut io, _) = listener.accept().await;
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match io.read(&mut buf).await {
                    Ok(n @ 1..) if head.len() < 64 * 1024 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let start = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
            if io.write_all(start).await.is_err() {
                return;
            }
            let chunk = vec![b'7'; 64 * 1024];
            let mut total = 0;
            while total < ENDLESS_BYTES && io.write_all(&chunk).await.is_ok() {
                total += chunk.len() as u64;
                sent.fetch_max(total, Ordering::SeqCst);
            }
        });
    }
}

async fn handshake(
    Extract(options): Extract<Shared>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if get("hub.mode") != Some("subscribe")
        || get("hub.verify_token") != Some(options.verify_token.as_str())
    {
        return (StatusCode::FORBIDDEN, "verify token mismatch").into_response();
    }
    let challenge = get("hub.challenge").unwrap_or("");
    match options.behaviour {
        Behaviour::WrongChallenge => (StatusCode::OK, "OK").into_response(),
        Behaviour::EchoesVerifyToken => {
            (StatusCode::OK, options.verify_token.clone()).into_response()
        }
        Behaviour::EchoesQuery => {
            let mut echo = url::form_urlencoded::Serializer::new(String::new());
            echo.extend_pairs(query.iter().rev());
            (StatusCode::OK, echo.finish()).into_response()
        }
        _ => (StatusCode::OK, challenge.to_owned()).into_response(),
    }
}

async fn notification(
    Extract(options): Extract<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if options.behaviour == Behaviour::AcceptsBadSignatures {
        return StatusCode::OK;
    }
    let Some(hex) = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
    else {
        return StatusCode::UNAUTHORIZED;
    };
    let Some(signature) = decode_hex(hex) else {
        return StatusCode::UNAUTHORIZED;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, options.app_secret.as_bytes());
    // Constant time, as Meta asks of receivers.
    match ring::hmac::verify(&key, &body, &signature) {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The date `days` from today (UTC), as year, month and day.
fn ymd(days: i64) -> (i32, u8, u8) {
    let date = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(jiff::Span::new().days(days))
        .expect("a date near today");
    (i32::from(date.year()), date.month() as u8, date.day() as u8)
}

macro_rules! day {
    ($days:expr) => {{
        let (y, m, d) = ymd($days);
        rcgen::date_time_ymd(y, m, d)
    }};
}

fn server_config(kind: Certificate) -> std::io::Result<(Arc<rustls::ServerConfig>, String)> {
    let fail =
        |e: rcgen::Error| std::io::Error::other(format!("cannot make a test certificate: {e}"));
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "permatoken webhook test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = day!(-30);
    ca_params.not_after = day!(3650);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(fail)?)
        .map_err(fail)?;

    let names = match kind {
        Certificate::WrongHost => vec!["webhook.example".to_owned()],
        _ => vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
    };
    let mut leaf = CertificateParams::new(names).map_err(fail)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "permatoken webhook");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = kind != Certificate::SelfSigned;
    (leaf.not_before, leaf.not_after) = match kind {
        Certificate::Expired => (day!(-60), day!(-1)),
        Certificate::ExpiringSoon => (day!(-60), day!(5)),
        _ => (day!(-1), day!(365)),
    };
    let key = KeyPair::generate().map_err(fail)?;
    let cert = match kind {
        Certificate::SelfSigned => leaf.self_signed(&key).map_err(fail)?,
        _ => leaf.signed_by(&key, &ca).map_err(fail)?,
    };
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .map_err(std::io::Error::other)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(server), ca.pem()))
}
