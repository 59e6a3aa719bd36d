//! A local emulator of the Graph API endpoints permatoken uses, for our tests and for people without a
//! Meta account.
//!
//! It serves `/me`, `/debug_token` and `/oauth/access_token` (with or without a `/vNN.N` prefix) with the
//! paths, field names, value sets, error objects and HTTP statuses of `graph-api.md`, holds scenario
//! tokens made at start, checks `appsecret_proof` like the real API, has a movable clock, injects faults
//! (latency, 5xx, rate limits and a throttle that grows while called, cut-short JSON, `null`s in batches) and records every request so tests can assert on what a
//! client really sent. Admin endpoints live under `/_sandbox/` and answer only requests that carry the
//! run's admin secret in the [`ADMIN_HEADER`] header: the port is open to every local user, and the
//! request log holds whatever `Authorization` values clients sent.
//!
//! Must never: bind anything but loopback, or share code with the client (`permatoken-graph`): its JSON
//! is written from the reference, so that a misreading in one is caught by the other.

// Handlers' helpers return the error answer itself (`Result<_, Response>`), at once; boxing it would
// only add noise.
#![allow(clippy::result_large_err)]

mod api;
mod batch;
mod scenarios;
mod tls;
mod webhook;
mod whatsapp;

pub(crate) use scenarios::Owner;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
pub use webhook::{Behaviour, Certificate, Webhook, WebhookOptions};
pub use whatsapp::{ACCOUNTS, ALLOWED_RECIPIENTS, Account, PHONES, Phone, granted_accounts};

use permatoken_secret::{AccessToken, AppSecret};
use serde::{Deserialize, Serialize};

pub use scenarios::{App, SCENARIOS, Scenario};

/// The header that carries the admin secret on calls to `/_sandbox/`.
pub const ADMIN_HEADER: &str = "x-sandbox-admin";

/// A token of `app_id` shaped like Meta's (`graph-api.md` §11), for test corpora: it decodes to
/// `app_id` but works nowhere.
pub fn fake_token(app_id: u64) -> AccessToken {
    scenarios::mint(app_id)
}

/// How a sandbox starts.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Refuse calls made with a user token that carry no `appsecret_proof` ("Require App Secret").
    pub require_proof: bool,
    /// Faults active from the start.
    pub faults: Faults,
    /// Serve HTTPS with a certificate signed by a CA made at start ([`Running::ca_pem`]).
    pub tls: bool,
    /// How many extra valid tokens to make at start ([`Sandbox::extra_tokens`]), for tests and
    /// benchmarks of many tokens: each a never-expiring system-user token of the sandbox's app with
    /// every WhatsApp permission. Cheap: ten thousand take one call to the random source.
    pub extra_tokens: usize,
}

/// Faults to inject. Counters apply to the next that many Graph requests (admin calls do not count); in
/// a batch, each sub-request is one Graph request and the batch itself none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before every answer.
    pub latency_ms: u64,
    /// The next N requests answer HTTP 503 with an empty body (an outage).
    pub server_errors: u32,
    /// The next N requests answer code 4, "Application request limit reached", with usage headers.
    pub rate_limits: u32,
    /// `estimated_time_to_regain_access` sent with those rate limits, in minutes.
    pub regain_minutes: Option<u32>,
    /// The next N answers are cut in the middle of their JSON.
    pub truncate: u32,
    /// `call_count` of `X-App-Usage` on every answer (percent of the hourly allowance; default 1).
    pub app_usage_percent: Option<u32>,
    /// The next N sub-requests of batches answer `null`, as Meta does for one that "did not finish
    /// in time" (`graph-api.md` §8); a call alone is not touched.
    pub batch_nulls: u32,
    /// The app is throttled, as Meta throttles an app over its hourly allowance (`graph-api.md`
    /// §7), for this many seconds from when the faults are set: every Graph call (a batch's
    /// sub-requests one by one) answers code 4, "Application request limit reached", with
    /// `X-App-Usage` at 100 % and no time to regain access. Unlike `rate_limits`, a window of time,
    /// not a number of answers.
    pub throttle_secs: u64,
    /// Each call made while throttled pushes the throttle's end this many milliseconds later: "continuing
    /// to make calls will continue to increase your call count".
    pub throttle_grow_ms: u64,
    /// The next N calls made with a user's (or system user's) token, as `/me` is, answer code 17,
    /// "User request limit reached": that user's limit across apps. Calls made with the app token
    /// (`/debug_token`) are not touched.
    pub user_rate_limits: u32,
    /// Batch answers leave out each sub-answer's `headers`, as Meta does with
    /// `include_headers=false`, whatever the request asked.
    pub batch_headers_omitted: bool,
}

/// Where the app's throttle stands ([`Faults::throttle_secs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Throttle {
    /// Whether calls are refused now.
    pub active: bool,
    /// How long until it ends, if no call is made meanwhile.
    pub remaining_ms: u64,
    /// Calls refused by it since the faults were set.
    pub refused: u64,
}

/// One request the sandbox received, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, version prefix included.
    pub path: String,
    /// The raw query string.
    pub query: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The body, as text.
    pub body: String,
    /// A sub-request of a batch (`POST /` with `batch`), logged after the batch itself: its path and
    /// query are those of its `relative_url` (which travelled in the batch's body, never in a URL of
    /// its own), its `authorization` the batch's, its body the sub-request's `body`.
    pub batched: bool,
}

impl Request {
    /// The path and query, as a URL would show them.
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// The value of one query parameter, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_deref()?.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The bearer token, if the request carried one in its `Authorization` header.
    pub fn bearer(&self) -> Option<&str> {
        self.authorization.as_deref()?.strip_prefix("Bearer ")
    }
}

pub(crate) struct State {
    pub(crate) ours: App,
    pub(crate) other: App,
    pub(crate) system_user_id: String,
    pub(crate) require_proof: bool,
    /// Made at start; the admin API answers only requests that carry it.
    pub(crate) admin_secret: String,
    pub(crate) inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    pub(crate) records: Vec<scenarios::Record>,
    /// Where each token is in `records`: a sandbox with thousands of extra tokens answers each request
    /// without a scan.
    pub(crate) index: HashMap<String, usize>,
    /// How far the clock was moved forward, in seconds: every token is that much older.
    pub(crate) clock_offset: i64,
    /// How far the sandbox's own clock runs ahead of the machine's, in seconds (see
    /// [`Sandbox::advance_now`]).
    pub(crate) now_offset: i64,
    pub(crate) faults: Faults,
    /// When the app's throttle ends ([`Faults::throttle_secs`]), while one was set.
    pub(crate) throttled_until: Option<std::time::Instant>,
    /// Calls the throttle refused since the faults were set.
    pub(crate) throttle_refused: u64,
    pub(crate) requests: Vec<Request>,
    /// Apps installed for the system user (`POST /{system-user-id}/applications`).
    pub(crate) installed: Vec<u64>,
    /// WhatsApp Business Accounts this app is subscribed to.
    pub(crate) subscribed: Vec<String>,
}

impl Inner {
    /// Makes `faults` the active ones; a throttle starts now.
    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.throttled_until = (faults.throttle_secs > 0)
            .then(|| std::time::Instant::now() + Duration::from_secs(faults.throttle_secs));
        self.throttle_refused = 0;
        self.faults = faults;
    }

    /// Where the throttle stands now.
    pub(crate) fn throttle(&self) -> Throttle {
        let remaining = self
            .throttled_until
            .map(|end| end.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or_default();
        Throttle {
            active: !remaining.is_zero(),
            remaining_ms: u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
            refused: self.throttle_refused,
        }
    }
}

impl State {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in one handler must not take the whole sandbox down with a poisoned lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A sandbox, made but not yet listening.
#[derive(Clone)]
pub struct Sandbox {
    state: Arc<State>,
}

impl Sandbox {
    /// Makes the apps and scenario tokens.
    pub fn new(options: &Options) -> Self {
        let ours = scenarios::new_app("Permatoken Sandbox");
        let other = scenarios::new_app("Someone Else's App");
        let system_user_id = scenarios::new_system_user_id();
        let now = api::unix_now();
        let mut records = scenarios::build(&ours, &other, &system_user_id, now);
        records.extend(scenarios::extras(
            &ours,
            &system_user_id,
            now,
            options.extra_tokens,
        ));
        let index = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.token.expose_secret().to_owned(), i))
            .collect();
        Self {
            state: Arc::new(State {
                ours,
                other,
                system_user_id,
                require_proof: options.require_proof,
                admin_secret: scenarios::random_bytes(16)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                inner: Mutex::new({
                    let mut inner = Inner {
                        records,
                        index,
                        clock_offset: 0,
                        now_offset: 0,
                        faults: Faults::default(),
                        throttled_until: None,
                        throttle_refused: 0,
                        requests: Vec::new(),
                        installed: Vec::new(),
                        subscribed: whatsapp::initially_subscribed(),
                    };
                    inner.set_faults(options.faults.clone());
                    inner
                }),
            }),
        }
    }

    /// The HTTP service, for serving or for calling in-process.
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Listens on 127.0.0.1 and serves on the current tokio runtime until the handle is dropped.
    pub async fn start(options: &Options) -> std::io::Result<Running> {
        let (sandbox, bound, ca_pem) = Self::bind(options).await?;
        let addr = bound.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(sandbox.router(), bound, stopped));
        Ok(Running {
            sandbox,
            addr,
            ca_pem,
            _stop: stop,
        })
    }

    /// Like [`Sandbox::start`], on a thread and runtime of its own: for tests that block on a child
    /// process while the sandbox answers it.
    pub fn start_background(options: &Options) -> std::io::Result<Running> {
        let (tx, rx) = std::sync::mpsc::channel();
        let options = options.clone();
        std::thread::Builder::new()
            .name("sandbox".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(rt) => rt,
                    Err(e) => return drop(tx.send(Err(e))),
                };
                runtime.block_on(async move {
                    let bound = Self::bind(&options)
                        .await
                        .and_then(|(sandbox, bound, ca_pem)| {
                            Ok((sandbox, bound.local_addr()?, bound, ca_pem))
                        });
                    match bound {
                        Ok((sandbox, addr, bound, ca_pem)) => {
                            let (stop, stopped) = tokio::sync::oneshot::channel();
                            let router = sandbox.router();
                            let running = Running {
                                sandbox,
                                addr,
                                ca_pem,
                                _stop: stop,
                            };
                            let _ = tx.send(Ok(running));
                            serve(router, bound, stopped).await;
                        }
                        Err(e) => drop(tx.send(Err(e))),
                    }
                });
            })?;
        rx.recv()
            .map_err(|_| std::io::Error::other("the sandbox thread died while starting"))?
    }

    async fn bind(options: &Options) -> std::io::Result<(Self, Bound, Option<String>)> {
        // Loopback only: the sandbox's tokens and secret are printed for anyone to use.
        let tcp =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, options.port)))
                .await?;
        let (bound, ca_pem) = if options.tls {
            let ca = tls::make()?;
            let acceptor = tokio_rustls::TlsAcceptor::from(ca.server);
            (
                Bound::Tls(tls::TlsListener { tcp, acceptor }),
                Some(ca.ca_pem),
            )
        } else {
            (Bound::Plain(tcp), None)
        };
        Ok((Self::new(options), bound, ca_pem))
    }

    /// The sandbox's app: id, name and secret (a fake one, made at start).
    pub fn app(&self) -> &App {
        &self.state.ours
    }

    /// The id of the sandbox business's system user, for `permatoken mint --system-user`.
    pub fn system_user_id(&self) -> &str {
        &self.state.system_user_id
    }

    /// The other app, whose token the `other-app` scenario holds.
    pub fn other_app(&self) -> &App {
        &self.state.other
    }

    /// The token of scenario `name`.
    pub fn token(&self, name: &str) -> Option<AccessToken> {
        let inner = self.state.lock();
        inner
            .records
            .iter()
            .find(|r| r.scenario == name)
            .map(|r| r.token.clone())
    }

    /// The extra tokens made at start ([`Options::extra_tokens`]), in the order they were made.
    pub fn extra_tokens(&self) -> Vec<AccessToken> {
        let inner = self.state.lock();
        inner
            .records
            .iter()
            .filter(|r| r.scenario == scenarios::EXTRA)
            .map(|r| r.token.clone())
            .collect()
    }

    /// Writes the extra tokens as JSON (`{"app_id", "system_user_id", "tokens": [...]}`) to `path`, a
    /// new file created with mode 0600: an existing file or symbolic link there is refused, never
    /// written through. A write that fails leaves no file behind.
    pub fn write_extra_tokens(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tokens = self.extra_tokens();
        let json = serde_json::json!({
            "app_id": self.app().id.to_string(),
            "system_user_id": self.system_user_id(),
            "tokens": tokens.iter().map(|t| t.expose_secret()).collect::<Vec<_>>(),
        });
        let mut text = serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?;
        text.push('\n');
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        // From here the file is ours: a failed write removes it.
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .inspect_err(|_| {
                let _ = std::fs::remove_file(path);
            })
    }

    /// Every request received so far (admin calls excluded).
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().requests.clone()
    }

    /// Replaces the active faults; a throttle among them starts now.
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().set_faults(faults);
    }

    /// Where the app's throttle stands ([`Faults::throttle_secs`]).
    pub fn throttle(&self) -> Throttle {
        self.state.lock().throttle()
    }

    /// Moves the clock forward: every token ages by `by`.
    pub fn advance_clock(&self, by: Duration) {
        self.state.lock().clock_offset += i64::try_from(by.as_secs()).unwrap_or(i64::MAX / 2);
    }

    /// Moves the sandbox's own clock forward: tokens keep their dates and the sandbox's "now" (what
    /// expiry is judged against, when new tokens are minted) runs `by` ahead of the machine's. For a
    /// client whose clock is moved too (the `watch` daemon's tests); [`Sandbox::advance_clock`] is
    /// for a client that reads the machine's clock.
    pub fn advance_now(&self, by: Duration) {
        self.state.lock().now_offset += i64::try_from(by.as_secs()).unwrap_or(i64::MAX / 2);
    }

    /// The secret the admin API (`/_sandbox/…`) asks for in the [`ADMIN_HEADER`] header, made at
    /// start: to tell the person running the sandbox.
    pub fn admin_secret(&self) -> &str {
        &self.state.admin_secret
    }

    /// The app secret, to tell the person running the sandbox.
    pub fn app_secret(&self) -> &AppSecret {
        &self.state.ours.secret
    }
}

/// A listening sandbox. Dropping it stops the server.
pub struct Running {
    sandbox: Sandbox,
    addr: SocketAddr,
    ca_pem: Option<String>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

enum Bound {
    Plain(tokio::net::TcpListener),
    Tls(tls::TlsListener),
}

impl Bound {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::Plain(l) => l.local_addr(),
            Self::Tls(l) => l.tcp.local_addr(),
        }
    }
}

/// Serves until the sender of `stopped` is dropped.
async fn serve(router: axum::Router, bound: Bound, stopped: tokio::sync::oneshot::Receiver<()>) {
    let stopped = async {
        let _ = stopped.await;
    };
    let _ = match bound {
        Bound::Plain(l) => axum::serve(l, router).with_graceful_shutdown(stopped).await,
        Bound::Tls(l) => axum::serve(l, router).with_graceful_shutdown(stopped).await,
    };
}

impl Running {
    /// `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// With TLS: the PEM certificate of the CA made at start, for clients to trust.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// With TLS: writes the CA certificate where clients can read it, and returns the path. With
    /// `path`, that file, which must not exist yet; without, `ca.pem` in a new folder of the system's
    /// temporary folder, made for this run, readable by its owner only. Either way the file is
    /// created exclusively with mode 0600: a file of that name made beforehand by someone else (a
    /// predictable `/tmp` name, a symbolic link) is refused, never written through.
    pub fn write_ca(&self, path: Option<&std::path::Path>) -> std::io::Result<std::path::PathBuf> {
        let pem = self.ca_pem.as_deref().ok_or_else(|| {
            std::io::Error::other("the sandbox serves plain http: it has no CA certificate")
        })?;
        let path = match path {
            Some(path) => path.to_owned(),
            None => tls::private_folder()?.join("ca.pem"),
        };
        tls::create_exclusive(&path, pem.as_bytes())?;
        Ok(path)
    }
}

impl std::ops::Deref for Running {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}
