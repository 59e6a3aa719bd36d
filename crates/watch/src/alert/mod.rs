//! Alerts: what is said ([`Alert`], its JSON documented below) and how it reaches a person
//! ([`Sender::deliver`] per route kind), with the retry schedule ([`retry_delay`]) the scheduler uses
//! with the state store to deliver at least once across restarts.
//!
//! # The alert JSON
//!
//! A `webhook` route receives, as `POST` with `Content-Type: application/json`:
//!
//! ```json
//! {
//!   "id": "3f2a…",                 // 32 hex digits, stable: the same alert sent again keeps it
//!   "token": "orders",             // the token's name in permatoken.toml
//!   "state": "critical",           // ok | expiring | critical | dead | failed_over |
//!                                  // cannot_be_checked | recovered
//!   "previous_state": "expiring",  // null for a token seen for the first time
//!   "message": "the token expires on 2026-12-01 10:00 UTC, in 2 days",
//!   "fix": "run `permatoken refresh` …",   // null when nothing is to be done
//!   "time": "2026-11-29T10:00:00Z",        // RFC 3339, when the alert was made
//!   "kind": "change"               // change | reminder | test | state_unwritable
//! }
//! ```
//!
//! A `state_unwritable` alert is about watch itself, not a token: its `token` is
//! [`STATE_ALERT_TOKEN`], its `state` `critical`, and its message says what the state store
//! answered. It goes on every route, and the alerts decided while the state cannot be written are
//! delivered meanwhile with the ids they are recorded under once it can.
//!
//! It never holds a secret: no token, no fingerprint of one, no app secret, no URL. A `slack` route
//! receives `{"text": "…"}` saying the same in words; a `command` route gets the JSON on standard
//! input. An `alertmanager` route receives Alertmanager's own array at `<url>/api/v2/alerts`
//! ([`crate::alertmanager`]). With `secret_file`, a body is signed: `X-Permatoken-Signature-256:
//! sha256=<hex>`, the lowercase hex HMAC-SHA256 of the exact body bytes keyed by the file's content
//! (surrounding whitespace dropped), as GitHub signs its webhooks, and the Standard Webhooks headers
//! `webhook-id` (the alert's id), `webhook-timestamp`, `webhook-signature` ([`crate::signature`]).
//!
//! A delivery is [`Delivered`], or a [`DeliveryError`] that says whether trying again may help
//! (network errors, timeouts, 408, 429 and 5xx: yes; other 4xx and redirects: no) and what the
//! receiver said, sanitised, cut short, with the URL and secrets taken out.
//!
//! Must never: show a route's URL (only its name and host), a header's value or the signing secret;
//! follow a redirect; send plain `http://` through a proxy; read more of an answer than
//! [`MAX_REPLY_BYTES`].

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jiff::Timestamp;
use permatoken_fs::ReadError;
use permatoken_graph::{Capped, ProxyConfig, read_capped};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::{Route, RouteKind, SecretUrl, Target};
use crate::states::State;

mod command;

use command::deliver_command;

/// The header that carries a body's signature.
pub use crate::signature::SIGNATURE_HEADER;

/// The limit on one attempt unless the route sets `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes read of a receiver's answer, or of a command's output (each stream).
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
/// The most characters of what a receiver said kept in a result.
const SHOWN_CHARS: usize = 200;
/// The most bytes read of a `url_file` or `secret_file`.
const MAX_SECRET_FILE_BYTES: u64 = 8 * 1024;

/// Why an alert was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The state changed.
    Change,
    /// The state is still critical or dead.
    Reminder,
    /// `watch --test-alert`.
    Test,
    /// The state cannot be written: what watch decides is kept in memory meanwhile.
    StateUnwritable,
}

/// The `token` of a [`AlertKind::StateUnwritable`] alert.
pub const STATE_ALERT_TOKEN: &str = "permatoken-state";

/// One alert, serialised as the JSON documented in the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable: from the token's key, the state, when it began and the reminder's number.
    pub id: String,
    /// The token's name.
    pub token: String,
    /// The state announced (`recovered` for back to ok).
    pub state: State,
    /// The state before; `None` for a token seen for the first time.
    pub previous_state: Option<State>,
    /// What is the matter, one sentence.
    pub message: String,
    /// What to do.
    pub fix: Option<String>,
    /// When the alert was made (RFC 3339 in JSON).
    pub time: Timestamp,
    /// Why it was made.
    pub kind: AlertKind,
}

impl Alert {
    /// The webhook body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an alert serialises")
    }

    /// The Slack incoming-webhook body: `{"text": …}`, the same facts in words.
    pub fn to_slack(&self) -> Vec<u8> {
        let icon = match self.state {
            State::Ok | State::Recovered => "✅",
            State::Expiring | State::CannotBeChecked | State::FailedOver | State::SetShrunk => "⚠️",
            State::Critical | State::Dead => "🚨",
        };
        let what = match (self.kind, self.previous_state) {
            (AlertKind::Test, _) => "test alert".to_owned(),
            (AlertKind::StateUnwritable, _) => String::new(),
            (AlertKind::Reminder, _) => format!("still {}", words(self.state)),
            (AlertKind::Change, Some(p)) => format!("{} (was {})", words(self.state), words(p)),
            (AlertKind::Change, None) => words(self.state).to_owned(),
        };
        let head = match self.kind {
            AlertKind::StateUnwritable => "watch cannot write its state".to_owned(),
            _ => format!("token `{}` is {what}", slack_escape(&self.token)),
        };
        let mut text = format!(
            "{icon} *permatoken*: {head}\n{}",
            slack_escape(&self.message)
        );
        if let Some(fix) = &self.fix {
            text.push_str(&format!("\n*Fix:* {}", slack_escape(fix)));
        }
        text.push_str(&format!("\n_{} · id {}_", self.time, self.id));
        serde_json::to_vec(&serde_json::json!({ "text": text })).expect("a string serialises")
    }
}

fn words(state: State) -> &'static str {
    match state {
        State::Ok => "ok",
        State::Expiring => "expiring",
        State::Critical => "critical",
        State::Dead => "dead",
        State::FailedOver => "failed over to its backup",
        State::CannotBeChecked => "cannot be checked",
        State::Recovered => "recovered",
        State::SetShrunk => "missing members: more than a tenth of its files went in one listing",
    }
}

/// Slack's three control characters in text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Many alerts due on one route at once (an app secret reset kills a fleet in one round), sent as
/// one: the JSON below, or one Slack message that counts them and names the first few.
///
/// ```json
/// {
///   "id": "9c1e…",          // 32 hex digits from the members' ids: the same group sent again keeps it
///   "kind": "group",
///   "count": 1200,
///   "message": "1200 tokens changed state: 1200 dead",
///   "time": "2026-11-29T10:00:00Z",
///   "alerts": [{…one alert as above…}, …]   // every member, in the order they were raised
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertGroup {
    /// Stable: a hash of the members' ids.
    pub id: String,
    /// Always [`GROUP_KIND`].
    pub kind: String,
    /// How many alerts it holds.
    pub count: usize,
    /// One sentence: how many, in which states.
    pub message: String,
    /// When it was made.
    pub time: Timestamp,
    /// The alerts, each whole.
    pub alerts: Vec<Alert>,
}

/// The `kind` of an [`AlertGroup`].
pub const GROUP_KIND: &str = "group";
/// How many members a Slack message of a group names before "and N more".
const GROUP_NAMED: usize = 20;

impl AlertGroup {
    /// Groups `alerts` (at least one), made at `time`.
    pub fn new(alerts: Vec<Alert>, time: Timestamp) -> Self {
        let mut ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        ids.sort_unstable();
        let digest = ring::digest::digest(&ring::digest::SHA256, ids.join(",").as_bytes());
        let id: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut by_state: Vec<(State, usize)> = Vec::new();
        for a in &alerts {
            match by_state.iter_mut().find(|(s, _)| *s == a.state) {
                Some((_, n)) => *n += 1,
                None => by_state.push((a.state, 1)),
            }
        }
        let states: Vec<String> = by_state
            .iter()
            .map(|(state, n)| format!("{n} {}", words(*state)))
            .collect();
        Self {
            id,
            kind: GROUP_KIND.to_owned(),
            count: alerts.len(),
            message: format!(
                "{} tokens changed state: {}",
                alerts.len(),
                states.join(", ")
            ),
            time,
            alerts,
        }
    }

    /// The webhook body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a group serialises")
    }

    /// The Slack body: the count, then the first few tokens with their states.
    pub fn to_slack(&self) -> Vec<u8> {
        let mut text = format!("🚨 *permatoken*: {}", slack_escape(&self.message));
        for a in self.alerts.iter().take(GROUP_NAMED) {
            text.push_str(&format!(
                "\n• `{}` is {}",
                slack_escape(&a.token),
                words(a.state)
            ));
        }
        if self.count > GROUP_NAMED {
            text.push_str(&format!("\n… and {} more", self.count - GROUP_NAMED));
        }
        text.push_str(&format!("\n_{} · id {}_", self.time, self.id));
        serde_json::to_vec(&serde_json::json!({ "text": text })).expect("a string serialises")
    }
}

/// What one delivery carries: one alert or a group, as JSON, as Slack text and as Alertmanager's
/// array.
struct Bodies {
    /// The alert's or group's id: the Standard Webhooks `webhook-id`.
    id: String,
    json: Vec<u8>,
    slack: Vec<u8>,
    alertmanager: Vec<u8>,
}

impl Bodies {
    /// The bodies of `alerts` (their JSON `json`) at `now`; Alertmanager's only for `route`
    /// of that kind (a fleet's group is large).
    fn of(
        route: &Route,
        id: &str,
        json: Vec<u8>,
        slack: Vec<u8>,
        alerts: &[Alert],
        now: Timestamp,
    ) -> Self {
        let alertmanager = if route.kind == RouteKind::Alertmanager {
            let posted: Vec<_> = alerts
                .iter()
                .flat_map(|a| crate::alertmanager::of_alert(a, now))
                .collect();
            crate::alertmanager::body(&posted)
        } else {
            Vec::new()
        };
        Self {
            id: id.to_owned(),
            json,
            slack,
            alertmanager,
        }
    }
}

/// An alert made for `watch --test-alert`, for the token name `permatoken-test`.
pub fn test_alert_for(route: &str, now: Timestamp) -> Alert {
    Alert {
        id: crate::states::alert_id(&format!("test:{route}"), State::Ok, now, 0),
        token: "permatoken-test".into(),
        state: State::Ok,
        previous_state: None,
        message: format!(
            "a test alert from permatoken to the route `{route}`: if you read this, alerts arrive"
        ),
        fix: None,
        time: now,
        kind: AlertKind::Test,
    }
}

/// A delivery the receiver accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The route's name.
    pub route: String,
    /// The HTTP status (2xx); `None` for a command route.
    pub status: Option<u16>,
    /// What the receiver said (a command's output), sanitised, cut short, redacted.
    pub reply: String,
}

/// A delivery that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alert route `{route}`{}: {reason}", host.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct DeliveryError {
    /// The route's name.
    pub route: String,
    /// The receiver's host, when there is one.
    pub host: Option<String>,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// Whether trying again later may succeed.
    pub retryable: bool,
    /// What happened and what the receiver said: sanitised, cut short, no URL, no secret.
    pub reason: String,
}

/// The wait before delivery attempt `attempt + 1` after `attempt` failures (from 1): 30 s, 1 min,
/// 2 min, … doubled each time up to one hour, with "equal jitter" (between half and all of the step),
/// so that many alerts failing together do not come back together. The scheduler keeps the alert
/// and the attempt count in the state store, so delivery resumes after a restart.
pub fn retry_delay(attempt: u32) -> Duration {
    retry_delay_with(attempt, random_unit())
}

/// [`retry_delay`] with the random draw `unit` in `[0, 1)` given.
pub fn retry_delay_with(attempt: u32, unit: f64) -> Duration {
    const BASE: Duration = Duration::from_secs(30);
    const CAP: Duration = Duration::from_secs(3600);
    let step = BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(CAP);
    let half = step / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs from call to call: jitter, not cryptography.
pub(crate) fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Sends alerts. Build one and keep it: it holds the HTTP clients. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    proxy: ProxyConfig,
    extra_roots_pem: Option<Vec<u8>>,
    /// Built at the first delivery that needs it, so that a configuration with only command
    /// routes never sets up TLS.
    direct: Arc<OnceLock<Result<reqwest::Client, String>>>,
    /// For `https://` receivers the proxy covers.
    proxied: Arc<OnceLock<Result<reqwest::Client, String>>>,
    /// Per `url_file` route, the digest of the plain `http://` URL it was last warned about: the
    /// warning is said once per route (and again when its file names another URL), not at every
    /// delivery.
    warned_plain_http:
        Arc<std::sync::Mutex<std::collections::HashMap<String, ring::digest::Digest>>>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("proxy", &self.proxy)
            .finish()
    }
}

impl Sender {
    /// A sender going through `proxy` for `https://` receivers (as the Graph client does: plain
    /// `http://` never through a proxy), trusting `extra_roots_pem` (`--ca-file`) beside the system's
    /// roots.
    pub fn new(proxy: ProxyConfig, extra_roots_pem: Option<Vec<u8>>) -> Self {
        Self {
            proxy,
            extra_roots_pem,
            direct: Arc::default(),
            proxied: Arc::default(),
            warned_plain_http: Arc::default(),
        }
    }

    /// Says the plain-http warning of each `url_file` route whose file names an `http://` URL now:
    /// at start, and at a reload, where only a route new or changed says it again (a file that
    /// cannot be read now says so at its delivery).
    pub fn warn_plain_http(&self, routes: &[Route]) {
        for route in routes {
            if let Target::UrlFile(path) = &route.target
                && let Ok(url) = read_secret_file(path).and_then(|text| SecretUrl::parse(&text))
                && url.is_plain_http()
            {
                self.warn_plain_http_once(&route.name, &url);
            }
        }
    }

    /// Warns that `route`'s alerts travel in clear text, unless it was said already for this URL.
    fn warn_plain_http_once(&self, route: &str, url: &SecretUrl) {
        // A digest, not the URL: a Slack URL is a key, and this map lives as long as the process.
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            url.expose_secret().as_str().as_bytes(),
        );
        let mut warned = self
            .warned_plain_http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = warned
            .get(route)
            .is_some_and(|d| d.as_ref() == digest.as_ref());
        if !known {
            tracing::warn!("{}", crate::config::plain_http_warning(route, url));
            warned.insert(route.to_owned(), digest);
        }
    }

    /// The client for direct calls, or for calls through `proxy`.
    fn client(&self, proxy: Option<&reqwest::Url>) -> Result<&reqwest::Client, String> {
        let slot = match proxy {
            None => &self.direct,
            // There is one https proxy at most, whatever the host (NO_PROXY is asked per URL).
            Some(_) => &self.proxied,
        };
        slot.get_or_init(|| {
            let tls = permatoken_graph::tls_config(self.extra_roots_pem.as_deref(), true)
                .map_err(|e| e.to_string())?;
            let mut builder = reqwest::Client::builder()
                // Only the proxy chosen by `ProxyConfig`, never reqwest's own reading of the
                // environment (which would send plain http through `HTTP_PROXY`).
                .no_proxy()
                .tls_backend_preconfigured(tls)
                .connect_timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("permatoken/", env!("CARGO_PKG_VERSION")));
            if let Some(proxy) = proxy {
                builder =
                    builder
                        .proxy(reqwest::Proxy::https(proxy.as_str()).map_err(|e| {
                            format!("the proxy is not usable: {}", e.without_url())
                        })?);
            }
            builder
                .build()
                .map_err(|e| format!("cannot set up the HTTP client: {}", e.without_url()))
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// Sends `alert` along `route`, one attempt.
    pub async fn deliver(&self, route: &Route, alert: &Alert) -> Result<Delivered, DeliveryError> {
        let bodies = Bodies::of(
            route,
            &alert.id,
            alert.to_json(),
            alert.to_slack(),
            std::slice::from_ref(alert),
            Timestamp::now(),
        );
        self.deliver_bodies(route, &bodies).await
    }

    /// Sends a group of alerts along `route` as one ([`AlertGroup`]).
    pub async fn deliver_group(
        &self,
        route: &Route,
        group: &AlertGroup,
    ) -> Result<Delivered, DeliveryError> {
        let bodies = Bodies::of(
            route,
            &group.id,
            group.to_json(),
            group.to_slack(),
            &group.alerts,
            Timestamp::now(),
        );
        self.deliver_bodies(route, &bodies).await
    }

    /// Sends Alertmanager's array `body` along the `alertmanager` route `route`: the resend of
    /// what is active.
    pub(crate) async fn post_alertmanager(
        &self,
        route: &Route,
        body: Vec<u8>,
    ) -> Result<Delivered, DeliveryError> {
        let bodies = Bodies {
            id: String::new(),
            json: Vec::new(),
            slack: Vec::new(),
            alertmanager: body,
        };
        self.deliver_bodies(route, &bodies).await
    }

    async fn deliver_bodies(
        &self,
        route: &Route,
        alert: &Bodies,
    ) -> Result<Delivered, DeliveryError> {
        match &route.target {
            Target::Command(command) => deliver_command(route, command, alert).await,
            Target::Url(url) if route.kind == RouteKind::Alertmanager => {
                let url = crate::alertmanager::endpoint(url);
                self.deliver_http(route, &url, alert).await
            }
            Target::Url(url) => self.deliver_http(route, url, alert).await,
            Target::UrlFile(path) => {
                let url = read_secret_file(path)
                    .and_then(|text| SecretUrl::parse(&text))
                    .map_err(|reason| DeliveryError {
                        route: route.name.clone(),
                        host: None,
                        status: None,
                        // The file may be fixed before the next attempt.
                        retryable: true,
                        reason: format!("`url_file` `{}`: {reason}", path.display()),
                    })?;
                if url.is_plain_http() {
                    self.warn_plain_http_once(&route.name, &url);
                }
                let url = match route.kind {
                    RouteKind::Alertmanager => crate::alertmanager::endpoint(&url),
                    _ => url,
                };
                self.deliver_http(route, &url, alert).await
            }
        }
    }

    /// Sends a test alert along `route` and returns what the receiver answered
    /// (`watch --test-alert ROUTE`).
    pub async fn test_alert(
        &self,
        route: &Route,
        now: Timestamp,
    ) -> Result<Delivered, DeliveryError> {
        self.deliver(route, &test_alert_for(&route.name, now)).await
    }

    async fn deliver_http(
        &self,
        route: &Route,
        url: &SecretUrl,
        alert: &Bodies,
    ) -> Result<Delivered, DeliveryError> {
        let host = url.host();
        let secret = route
            .secret_file
            .as_deref()
            .map(read_secret_file)
            .transpose();
        let fail = |status: Option<u16>, retryable: bool, reason: String| DeliveryError {
            route: route.name.clone(),
            host: Some(host.clone()),
            status,
            retryable,
            reason: redact(&reason, url, None),
        };
        let secret = secret.map_err(|e| {
            fail(
                None,
                true,
                format!(
                    "`secret_file` `{}`: {e}",
                    route
                        .secret_file
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                ),
            )
        })?;
        let (client, via) = match self.proxy.for_url(url.expose_secret()) {
            Ok(Some((proxy, var))) => (
                self.client(Some(proxy)),
                Some((proxy.origin().ascii_serialization(), var)),
            ),
            Ok(None) => (self.client(None), None),
            Err(e) => return Err(fail(None, false, e.to_string())),
        };
        let client = client.map_err(|e| fail(None, false, e))?;
        let body = match route.kind {
            RouteKind::Slack => alert.slack.clone(),
            RouteKind::Alertmanager => alert.alertmanager.clone(),
            _ => alert.json.clone(),
        };
        let mut request = client
            .post(url.expose_secret().clone())
            .timeout(route.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in &route.headers {
            let mut value = reqwest::header::HeaderValue::from_str(value.expose_secret())
                .map_err(|_| fail(None, false, format!("header `{name}` is not valid")))?;
            value.set_sensitive(true);
            request = request.header(name.as_str(), value);
        }
        if let Some(secret) = &secret {
            let signed =
                crate::signature::headers(secret, &alert.id, Timestamp::now().as_second(), &body)
                    .map_err(|e| fail(None, false, e))?;
            for (name, value) in signed {
                request = request.header(name, value);
            }
        }
        let response = request.body(body).send().await.map_err(|e| {
            let e = e.without_url();
            let reason = if e.is_timeout() {
                format!(
                    "no answer within {}",
                    permatoken_graph::human(route.timeout)
                )
            } else {
                format!("cannot reach the receiver: {}", chain(&e))
            };
            let reason = match &via {
                Some((proxy, var)) => {
                    format!("{reason} (through the proxy {proxy} that `{var}` names)")
                }
                None => reason,
            };
            let mut err = fail(None, true, reason);
            err.reason = redact(&err.reason, url, secret.as_deref().map(String::as_str));
            err
        })?;
        let status = response.status();
        let reply = read_reply(response, route.timeout).await;
        let reply = redact(&reply, url, secret.as_deref().map(String::as_str));
        judge(route, host, status, reply)
    }
}

/// What a receiver answered, made safe to show: at most [`MAX_REPLY_BYTES`] of it, read within
/// `timeout`.
async fn read_reply(response: reqwest::Response, timeout: Duration) -> String {
    match tokio::time::timeout(timeout, read_capped(response, MAX_REPLY_BYTES)).await {
        Ok(Ok(Capped::Whole(bytes))) => shown(&String::from_utf8_lossy(&bytes)),
        Ok(Ok(Capped::OverLimit)) => format!(
            "(an answer longer than {}, not read)",
            permatoken_graph::human_bytes(MAX_REPLY_BYTES)
        ),
        Ok(Err(e)) => format!("(the answer was cut short: {})", chain(&e.without_url())),
        Err(_) => "(the answer did not end in time)".into(),
    }
}

/// A delivery judged by the receiver's status: a 2xx is delivered; a redirect or a 4xx other than
/// 408 and 429 is not worth trying again; anything else is.
fn judge(
    route: &Route,
    host: String,
    status: reqwest::StatusCode,
    reply: String,
) -> Result<Delivered, DeliveryError> {
    let code = status.as_u16();
    if status.is_success() {
        return Ok(Delivered {
            route: route.name.clone(),
            status: Some(code),
            reply,
        });
    }
    let said = if reply.is_empty() {
        String::new()
    } else {
        format!(": {reply}")
    };
    let (retryable, what) = match code {
        300..=399 => (
            false,
            "a redirect, which is not followed: put the final URL in the route".to_owned(),
        ),
        408 | 429 => (true, "try again later".to_owned()),
        400..=499 => (
            false,
            "the receiver refused the alert; check the route's URL and headers".to_owned(),
        ),
        _ => (true, "the receiver failed".to_owned()),
    };
    Err(DeliveryError {
        route: route.name.clone(),
        host: Some(host),
        status: Some(code),
        retryable,
        reason: format!("HTTP {code} ({what}){said}"),
    })
}

/// A file holding one secret value (a URL, a signing key), read with a cap, whitespace trimmed, in
/// memory zeroed when dropped.
fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, String> {
    let bytes = permatoken_fs::read_secret(path, MAX_SECRET_FILE_BYTES).map_err(|e| match e {
        ReadError::Io(e) => format!("cannot read it: {e}"),
        // "it is larger than 8 KiB"
        e => format!("{e}; it should hold one value"),
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| "it is not UTF-8 text".to_owned())?
        .trim();
    if text.is_empty() {
        return Err("it is empty".into());
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// Text from a receiver made safe to show: control characters and bidirectional overrides escaped,
/// cut at [`SHOWN_CHARS`] characters.
fn shown(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.trim().chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push('…');
            break;
        }
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}');
        if c == '\n' || c == '\r' || c == '\t' {
            out.push(' ');
        } else if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` with the route's URL (whole, its path and its query) and `secret` replaced by `…`: a
/// receiver may echo them back.
fn redact(text: &str, url: &SecretUrl, secret: Option<&str>) -> String {
    let url = url.expose_secret();
    let mut out = text.to_owned();
    let mut needles: Vec<String> = vec![
        url.as_str().to_owned(),
        url.as_str().trim_end_matches('/').to_owned(),
    ];
    if url.path().len() > 1 {
        needles.push(url.path().to_owned());
        needles.extend(
            url.path_segments()
                .into_iter()
                .flatten()
                .filter(|s| s.len() >= 6)
                .map(str::to_owned),
        );
    }
    if let Some(q) = url.query() {
        needles.push(q.to_owned());
        needles.extend(
            url.query_pairs()
                .map(|(_, v)| v.into_owned())
                .filter(|v| v.len() >= 6),
        );
    }
    if !url.password().unwrap_or_default().is_empty() {
        needles.push(url.password().unwrap_or_default().to_owned());
    }
    if let Some(secret) = secret {
        needles.push(secret.to_owned());
    }
    needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for needle in needles.iter().filter(|n| !n.is_empty()) {
        out = out.replace(needle.as_str(), "…");
    }
    out
}

/// An error and its sources, `: `-joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let s = source.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_is_one_trimmed_value_of_at_most_8_kib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.key");
        std::fs::write(&path, "  PERMATOKENTEST-key\n").unwrap();
        assert_eq!(
            read_secret_file(&path).unwrap().as_str(),
            "PERMATOKENTEST-key"
        );
        let mut big = b"PERMATOKENTEST-key\n".to_vec();
        big.resize(MAX_SECRET_FILE_BYTES as usize + 1, b' ');
        std::fs::write(&path, &big).unwrap();
        assert_eq!(
            read_secret_file(&path).unwrap_err(),
            "it is larger than 8 KiB; it should hold one value"
        );
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(read_secret_file(&path).unwrap_err(), "it is empty");
        std::fs::write(&path, b"\xff").unwrap();
        assert_eq!(read_secret_file(&path).unwrap_err(), "it is not UTF-8 text");
        let err = read_secret_file(&dir.path().join("missing")).unwrap_err();
        assert!(err.starts_with("cannot read it: "), "{err}");
    }

    #[test]
    fn retries_double_up_to_an_hour_with_jitter() {
        assert_eq!(retry_delay_with(1, 0.0), Duration::from_secs(15));
        assert_eq!(retry_delay_with(1, 1.0), Duration::from_secs(30));
        assert_eq!(retry_delay_with(2, 1.0), Duration::from_secs(60));
        assert_eq!(retry_delay_with(3, 0.5), Duration::from_secs(90));
        assert_eq!(retry_delay_with(20, 1.0), Duration::from_secs(3600));
        assert_eq!(retry_delay_with(u32::MAX, 0.0), Duration::from_secs(1800));
        for attempt in 1..30 {
            let d = retry_delay(attempt);
            assert!(d >= Duration::from_secs(15) && d <= Duration::from_secs(3600));
        }
    }

    #[test]
    fn replies_are_sanitised_cut_and_redacted() {
        let url = SecretUrl::parse(
            "https://hooks.example.com/services/T000/B000/PERMATOKENTESTxyz?key=PERMATOKENTESTq",
        )
        .unwrap();
        let text = redact(
            &shown(
                "bad hook https://hooks.example.com/services/T000/B000/PERMATOKENTESTxyz\u{202e} PERMATOKENTESTq sig-PERMATOKENTEST-s\n",
            ),
            &url,
            Some("sig-PERMATOKENTEST-s"),
        );
        assert!(!text.contains("PERMATOKENTEST"), "{text}");
        assert!(text.contains("\\u{202e}"), "{text}");
        assert_eq!(shown(&"x".repeat(1000)).chars().count(), SHOWN_CHARS + 1);
    }

    #[test]
    fn the_slack_text_says_the_facts() {
        let alert = Alert {
            previous_state: Some(State::Expiring),
            state: State::Critical,
            kind: AlertKind::Change,
            fix: Some("run <permatoken refresh>".into()),
            ..test_alert_for("ops", Timestamp::from_second(1_800_000_000).unwrap())
        };
        let body: serde_json::Value = serde_json::from_slice(&alert.to_slack()).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(
            text.contains("`permatoken-test` is critical (was expiring)"),
            "{text}"
        );
        assert!(
            text.contains("*Fix:* run &lt;permatoken refresh&gt;"),
            "{text}"
        );
        assert!(text.contains(&alert.id), "{text}");
    }
}
