//! The HTTP side: one `reqwest` client over rustls (ring), bearer tokens in headers, `appsecret_proof`
//! on every call made with a user or system-user token when the app secret is known, and retries with
//! exponential backoff and jitter for transient failures only, inside a time budget. A rate-limited
//! call is sent again only after the regain time Meta named (when it fits the budget), never at once.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use permatoken_secret::{AccessToken, AppSecret, AppToken};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::body::{Capped, MAX_ANSWER_BYTES, read_capped};
use crate::error::{Endpoint, Error, ErrorClass, GraphError, human};
use crate::proxy::{ProxyConfig, shown};
use crate::types::{
    DebugTokenEnvelope, ErrorEnvelope, Me, NewToken, Success, TokenAnswer, TokenInfo,
};
use crate::usage::Usage;

/// `https://graph.facebook.com`.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com";
/// The Graph API version used unless told otherwise (`graph-api.md` §1: the newest, v26.0).
pub const DEFAULT_GRAPH_VERSION: &str = "v26.0";

/// How a client is set up. `Config::new` gives the defaults for a URL.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Base URL, `https://` (plain `http://` only for loopback).
    pub base_url: String,
    /// `vNN.N`; an empty string calls without a version prefix (the app's default version).
    pub version: String,
    /// The app secret, for `appsecret_proof`.
    pub app_secret: Option<AppSecret>,
    /// PEM certificates trusted beside the system's roots (`--ca-file`).
    pub extra_roots_pem: Option<Vec<u8>>,
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit on one request, answer included.
    pub request_timeout: Duration,
    /// When to try again.
    pub retry: RetryPolicy,
    /// The proxy for `https://` calls (none by default); plain `http://` never goes through one.
    pub proxy: ProxyConfig,
}

impl Config {
    /// Defaults for `base_url`: version [`DEFAULT_GRAPH_VERSION`], 5 s to connect, 10 s a request.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            version: DEFAULT_GRAPH_VERSION.to_owned(),
            app_secret: None,
            extra_roots_pem: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            proxy: ProxyConfig::default(),
        }
    }
}

/// Retries for the transient class: `base × 2^n`, with jitter, at most `max_retries`. A rate limit is
/// retried only after the regain time Meta named, within the budget.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// How many times a failed call is sent again.
    pub max_retries: u32,
    /// The first wait.
    pub base: Duration,
    /// No wait is longer than this, unless Meta asks for a longer one.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `attempt` (0-based): "equal jitter", between half and all of the step.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let step = self.base.saturating_mul(1 << attempt.min(16)).min(self.cap);
        let half = step / 2;
        half + half.mul_f64(random_unit())
    }
}

/// The time a whole operation may take, shared by the calls it makes.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Instant,
}

impl Budget {
    /// A budget of `limit` from now.
    pub fn new(limit: Duration) -> Self {
        Self {
            deadline: Instant::now() + limit,
        }
    }

    /// What is left of it.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Who makes a `/debug_token` call.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// The app token `APP_ID|APP_SECRET`.
    App(&'a AppToken),
    /// A valid token of the same app; the token inspecting itself is the usual case.
    Token(&'a AccessToken),
}

/// A Graph API client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    root: Url,
    app_secret: Option<AppSecret>,
    retry: RetryPolicy,
    request_timeout: Duration,
    /// The proxy calls go through, as it may be shown, and the variable that named it.
    via: Option<(String, &'static str)>,
    /// How the requests of this client and its clones ended, for a daemon's metrics.
    tally: std::sync::Arc<Tally>,
}

/// How many HTTP requests (each attempt, retries included) ended in each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// An answer the call could use.
    pub ok: u64,
    /// A Graph error object that is no rate limit (a dead token, a missing permission, a bad request).
    pub api_error: u64,
    /// A rate limit (code 4, 17, 32, 613, 80xxx …).
    pub rate_limited: u64,
    /// A 5xx, an answer cut short or too large, a refused or timed-out connection.
    pub unreachable: u64,
}

impl RequestCounts {
    /// `(outcome, count)` pairs, with the outcome as a metric label.
    pub fn by_outcome(&self) -> [(&'static str, u64); 4] {
        [
            ("ok", self.ok),
            ("api_error", self.api_error),
            ("rate_limited", self.rate_limited),
            ("unreachable", self.unreachable),
        ]
    }
}

#[derive(Debug, Default)]
struct Tally {
    ok: std::sync::atomic::AtomicU64,
    api_error: std::sync::atomic::AtomicU64,
    rate_limited: std::sync::atomic::AtomicU64,
    unreachable: std::sync::atomic::AtomicU64,
}

impl Tally {
    fn count<T>(&self, result: &Result<T, Error>) {
        let counter = match result {
            Ok(_) => &self.ok,
            Err(err) => match err.class(Endpoint::Other) {
                ErrorClass::RateLimited => &self.rate_limited,
                ErrorClass::Transient => &self.unreachable,
                _ => &self.api_error,
            },
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn read(&self) -> RequestCounts {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        RequestCounts {
            ok: load(&self.ok),
            api_error: load(&self.api_error),
            rate_limited: load(&self.rate_limited),
            unreachable: load(&self.unreachable),
        }
    }
}

impl Client {
    /// Builds a client; fails on a URL that is not `https://` (or `http://` to loopback), that holds
    /// a user name or password, a bad version, unreadable extra certificates or an unusable proxy.
    pub fn new(config: Config) -> Result<Self, Error> {
        let root = root_url(&config.base_url, &config.version)?;
        // Plain http to loopback (the sandbox): reading the system's ~300 roots would only cost
        // start-up time, and no certificate is ever verified.
        let tls = tls_config(config.extra_roots_pem.as_deref(), root.scheme() == "https")?;
        let set_up = |e: reqwest::Error| {
            Error::Config(format!(
                "cannot set up the HTTP client: {}",
                e.without_url()
            ))
        };
        // reqwest would follow every proxy variable on its own, `HTTP_PROXY` for plain http too:
        // the bearer token in clear text to a proxy. Only the proxy chosen here is used.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .tls_backend_preconfigured(tls)
            .connect_timeout(config.connect_timeout)
            // A redirect could carry the Authorization header somewhere else; Graph never redirects.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("permatoken/", env!("CARGO_PKG_VERSION")));
        if let Some((name, addrs)) = loopback_name(&root)? {
            // The check above and the connections must see the same addresses.
            builder = builder.resolve_to_addrs(&name, &addrs);
        }
        let ignored = config.proxy.ignored();
        if !ignored.is_empty() {
            tracing::debug!(
                "`{}` not followed: plain http:// goes only to loopback, never through a proxy; https:// follows `HTTPS_PROXY`",
                ignored.join("`, `")
            );
        }
        let via = match config.proxy.for_url(&root)? {
            Some((proxy, var)) => {
                let shown = shown(proxy);
                tracing::debug!(
                    proxy = %shown,
                    from = var,
                    "https calls to {} go through a proxy (a CONNECT tunnel: TLS runs end to end)",
                    root.host_str().unwrap_or_default()
                );
                builder = builder.proxy(reqwest::Proxy::https(proxy.as_str()).map_err(set_up)?);
                Some((shown, var))
            }
            None => None,
        };
        let http = builder.build().map_err(set_up)?;
        Ok(Self {
            http,
            root,
            app_secret: config.app_secret,
            retry: config.retry,
            request_timeout: config.request_timeout,
            via,
            tally: std::sync::Arc::default(),
        })
    }

    /// How the requests made so far by this client and its clones ended (each attempt counts; in a
    /// batch, each sub-request).
    pub fn request_counts(&self) -> RequestCounts {
        self.tally.read()
    }

    /// Counts one request (or batch sub-request) by how it ended.
    pub(crate) fn count<T>(&self, result: &Result<T, Error>) {
        self.tally.count(result);
    }

    /// The base URL, version included: where a batch is posted.
    pub(crate) fn root(&self) -> &Url {
        &self.root
    }

    /// The retry policy and the limit on one request, for the batch's own retry loop.
    pub(crate) fn limits(&self) -> (RetryPolicy, Duration) {
        (self.retry, self.request_timeout)
    }

    /// The app secret, for a batch sub-request's `appsecret_proof`.
    pub(crate) fn app_secret(&self) -> Option<&AppSecret> {
        self.app_secret.as_ref()
    }

    /// The same client, without the app secret: for a token of another app, whose proof would fail.
    pub fn without_app_secret(&self) -> Self {
        Self {
            app_secret: None,
            ..self.clone()
        }
    }

    /// Whether calls made with user tokens carry `appsecret_proof`.
    pub fn sends_proof(&self) -> bool {
        self.app_secret.is_some()
    }

    /// `GET /me?fields=id,name` with `token`.
    pub async fn me(&self, token: &AccessToken, budget: &Budget) -> Result<Me, Error> {
        let call = Call::get("me", Bearer::Token(token)).query("fields", "id,name");
        self.call(call, budget).await
    }

    /// `GET /debug_token?input_token=…`. A dead `input` is not an error here: the API answers HTTP 200
    /// with `is_valid: false` and `error`, which the returned [`TokenInfo`] holds.
    pub async fn debug_token(
        &self,
        input: &AccessToken,
        caller: Caller<'_>,
        budget: &Budget,
    ) -> Result<TokenInfo, Error> {
        let bearer = match caller {
            Caller::App(app) => Bearer::App(app),
            Caller::Token(token) => Bearer::Token(token),
        };
        let call = Call::get("debug_token", bearer).query("input_token", input.expose_secret());
        let envelope: DebugTokenEnvelope = self.call(call, budget).await?;
        Ok(envelope.data)
    }

    /// `POST /oauth/access_token` with `grant_type=fb_exchange_token`: a long-lived token for `input`
    /// (or, with `sixty_days`, a renewed 60-day system-user token). The app secret travels in the
    /// form body, never in the URL. Code 1 here means a wrong app id or secret and is never retried.
    pub async fn exchange(
        &self,
        app: &AppToken,
        input: &AccessToken,
        sixty_days: bool,
        budget: &Budget,
    ) -> Result<NewToken, Error> {
        let secret = app.secret().expose_secret();
        let mut call = Call::post("oauth/access_token", None, Endpoint::OAuthAccessToken)
            .form("grant_type", "fb_exchange_token")
            .form("client_id", app.app_id())
            .form("client_secret", secret)
            .form("fb_exchange_token", input.expose_secret());
        if sixty_days {
            call = call.form("set_token_expires_in_60_days", "true");
        }
        let answer: TokenAnswer = self.call(call, budget).await?;
        Ok(answer.into())
    }

    /// `POST /{system-user-id}/applications` with `business_app`: installs the app for the system user
    /// (Meta answers `{"success": true}`, also when it was installed already).
    pub async fn install_app(
        &self,
        admin: &AccessToken,
        system_user_id: &str,
        app_id: &str,
        budget: &Budget,
    ) -> Result<(), Error> {
        let path = format!("{}/applications", path_segment(system_user_id)?);
        let call = Call::post(&path, Some(Bearer::Token(admin)), Endpoint::Other)
            .form("business_app", app_id);
        self.call_success(call, budget).await
    }

    /// `POST /{system-user-id}/access_tokens`: a new token for the system user, for `app_id`, with
    /// `scopes`; never expiring unless `sixty_days`. Meta requires `appsecret_proof` here, so the
    /// client must know the app secret.
    pub async fn system_user_token(
        &self,
        admin: &AccessToken,
        system_user_id: &str,
        app_id: &str,
        scopes: &[&str],
        sixty_days: bool,
        budget: &Budget,
    ) -> Result<NewToken, Error> {
        let path = format!("{}/access_tokens", path_segment(system_user_id)?);
        let scope = scopes.join(",");
        let mut call = Call::post(&path, Some(Bearer::Token(admin)), Endpoint::Other)
            .form("business_app", app_id)
            .form("scope", &scope);
        if sixty_days {
            call = call.form("set_token_expires_in_60_days", "true");
        }
        let answer: TokenAnswer = self.call(call, budget).await?;
        Ok(answer.into())
    }

    /// A call whose answer is `{"success": true}`.
    pub(crate) async fn call_success(&self, call: Call<'_>, budget: &Budget) -> Result<(), Error> {
        let endpoint = format!("/{}", call.path);
        let answer: Success = self.call(call, budget).await?;
        match answer.success {
            Some(true) => Ok(()),
            _ => Err(Error::Shape {
                endpoint,
                reason: "the answer did not say `success: true`".into(),
            }),
        }
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        call: Call<'_>,
        budget: &Budget,
    ) -> Result<T, Error> {
        self.call_usage(call, budget)
            .await
            .map(|answer| answer.value)
    }

    pub(crate) async fn call_usage<T: DeserializeOwned>(
        &self,
        call: Call<'_>,
        budget: &Budget,
    ) -> Result<Answer<T>, Error> {
        let mut url = self
            .root
            .join(&call.path)
            .expect("a relative path joins onto a base URL");
        let proof = match (call.bearer, &self.app_secret) {
            (Some(Bearer::Token(token)), Some(secret)) => Some(secret.appsecret_proof(token)),
            _ => None,
        };
        let mut form = call.form.clone();
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &call.query {
                pairs.append_pair(k, v);
            }
            match (&proof, &mut form) {
                (Some(proof), Some(form)) if call.json.is_none() => {
                    form.push(("appsecret_proof", proof))
                }
                (Some(proof), _) => {
                    pairs.append_pair("appsecret_proof", proof);
                }
                (None, _) => {}
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        // The body may hold the app secret or a token: built once, zeroed when dropped.
        let body = match (&call.json, form) {
            (Some(json), _) => Some((zeroize::Zeroizing::new(json.clone()), "application/json")),
            (None, Some(form)) => {
                let mut serializer = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in form {
                    serializer.append_pair(k, v);
                }
                Some((
                    zeroize::Zeroizing::new(serializer.finish()),
                    "application/x-www-form-urlencoded",
                ))
            }
            (None, None) => None,
        };
        let endpoint = format!("/{}", call.path);
        let mut attempt = 0;
        loop {
            let left = budget.remaining();
            let result = self
                .send_once::<T>(
                    &call,
                    &url,
                    body.as_ref().map(|(b, kind)| (b.as_str(), *kind)),
                    &endpoint,
                    self.request_timeout.min(left),
                )
                .await;
            self.tally.count(&result);
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            // A rate limit is sent again only after the wait Meta named, never at once (a call
            // made while limited counts against the limit and keeps it in place); a refused call
            // did nothing, whatever its method.
            let regain = match &err {
                Error::Graph { usage, .. } if err.class(call.kind) == ErrorClass::RateLimited => {
                    usage.regain_after
                }
                _ => None,
            };
            let may_retry = call.may_retry(&err) || regain.is_some();
            if !may_retry || attempt >= self.retry.max_retries {
                return Err(err);
            }
            let wait = regain.unwrap_or_else(|| self.retry.backoff(attempt));
            let left = budget.remaining();
            if wait >= left {
                return Err(Error::OutOfTime {
                    endpoint,
                    wait,
                    left,
                    last: Box::new(err),
                });
            }
            tracing::debug!(%endpoint, attempt, wait = %human(wait), error = %err, "retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    pub(crate) async fn send_once<T: DeserializeOwned>(
        &self,
        call: &Call<'_>,
        url: &Url,
        body: Option<(&str, &'static str)>,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Answer<T>, Error> {
        let mut request = self
            .http
            .request(call.method.clone(), url.clone())
            .timeout(timeout);
        if let Some(bearer) = call.bearer {
            let authorization = match bearer {
                Bearer::Token(token) => {
                    zeroize::Zeroizing::new(format!("Bearer {}", token.expose_secret()))
                }
                Bearer::App(app) => {
                    zeroize::Zeroizing::new(format!("Bearer {}", app.expose_secret().as_str()))
                }
            };
            let mut header =
                reqwest::header::HeaderValue::from_str(&authorization).map_err(|_| {
                    Error::Config(
                        "the token holds characters an HTTP header cannot carry; check it was copied whole"
                            .into(),
                    )
                })?;
            header.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, header);
        }
        if let Some((body, kind)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, kind)
                .body(body.to_owned());
        }
        let started = Instant::now();
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(e, timeout))?;
        let status = response.status();
        let usage = Usage::from_headers(response.headers());
        let bytes = match read_capped(response, MAX_ANSWER_BYTES).await {
            Ok(Capped::Whole(bytes)) => bytes,
            Ok(Capped::OverLimit) => {
                return Err(Error::TooLarge {
                    endpoint: endpoint.to_owned(),
                    limit: MAX_ANSWER_BYTES,
                });
            }
            Err(e) => {
                return Err(Error::Truncated {
                    endpoint: endpoint.to_owned(),
                    reason: chain(&e.without_url()),
                });
            }
        };
        // Only names, never values: the query may hold `input_token`, the body a secret.
        tracing::debug!(
            method = %call.method,
            endpoint,
            query = %query_names(url),
            form = %call.form.as_ref().map(|f| f.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(",")).unwrap_or_default(),
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            bytes = bytes.len(),
            app_usage = ?usage.app_percent,
            business_usage = ?usage.business_percent,
            "graph call"
        );
        let value = decode(endpoint, status, usage.clone(), &bytes)?;
        Ok(Answer { value, usage })
    }

    fn transport_error(&self, e: reqwest::Error, timeout: Duration) -> Error {
        let origin = self.root.origin().ascii_serialization();
        let e = e.without_url();
        if let Some(tls) = rustls_error(&e) {
            return Error::Tls {
                origin,
                reason: tls.to_string(),
            };
        }
        let mut reason = if e.is_timeout() {
            format!("no answer within {}", human(timeout))
        } else {
            chain(&e)
        };
        if let Some((proxy, var)) = &self.via {
            reason.push_str(&format!(" (through the proxy {proxy} that `{var}` names)"));
        }
        Error::Transport { origin, reason }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Bearer<'a> {
    Token(&'a AccessToken),
    App(&'a AppToken),
}

/// One request, as the retry loop sends it again and again.
pub(crate) struct Call<'a> {
    method: reqwest::Method,
    path: String,
    query: Vec<(&'a str, &'a str)>,
    /// A form body (POST); values may be secrets.
    form: Option<Vec<(&'a str, &'a str)>>,
    /// A JSON body (POST), instead of a form; `appsecret_proof` then goes in the query.
    json: Option<String>,
    bearer: Option<Bearer<'a>>,
    kind: Endpoint,
}

impl<'a> Call<'a> {
    pub(crate) fn get(path: &str, bearer: Bearer<'a>) -> Self {
        Self {
            method: reqwest::Method::GET,
            path: path.to_owned(),
            query: Vec::new(),
            form: None,
            json: None,
            bearer: Some(bearer),
            kind: Endpoint::Other,
        }
    }

    pub(crate) fn post(path: &str, bearer: Option<Bearer<'a>>, kind: Endpoint) -> Self {
        Self {
            method: reqwest::Method::POST,
            path: path.to_owned(),
            query: Vec::new(),
            form: Some(Vec::new()),
            json: None,
            bearer,
            kind,
        }
    }

    pub(crate) fn query(mut self, name: &'a str, value: &'a str) -> Self {
        self.query.push((name, value));
        self
    }

    /// A JSON body instead of a form.
    pub(crate) fn json(mut self, body: String) -> Self {
        self.form = None;
        self.json = Some(body);
        self
    }

    pub(crate) fn form(mut self, name: &'a str, value: &'a str) -> Self {
        self.form.get_or_insert_with(Vec::new).push((name, value));
        self
    }

    /// A GET is retried on any transient failure. A POST makes something (a token), so it is sent
    /// again only when the server said it did not do it: an error object of a retryable class, or a
    /// 5xx. A cut-short answer or a lost connection may hide a success.
    fn may_retry(&self, err: &Error) -> bool {
        if !err.class(self.kind).is_retryable() {
            return false;
        }
        self.method == reqwest::Method::GET
            || matches!(err, Error::Graph { .. } | Error::Status { .. })
    }
}

/// An answer and the usage headers that came with it.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    /// The answer.
    pub value: T,
    /// `X-App-Usage` and `X-Business-Use-Case-Usage`.
    pub usage: Usage,
}

/// A path segment from an id given by a person: digits only, so nothing can reach another path.
pub(crate) fn path_segment(id: &str) -> Result<&str, Error> {
    if !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        Err(Error::Config(format!(
            "`{id}` is not a Graph API id: ids are numbers (Business Settings → Users → System users shows the system user's)"
        )))
    }
}

pub(crate) fn decode<T: DeserializeOwned>(
    endpoint: &str,
    status: StatusCode,
    usage: Usage,
    body: &[u8],
) -> Result<T, Error> {
    // Only an object is an error envelope: serde reads a struct from an array too, so a batch
    // answer of one entry (`[{"code":400,…}]`) would pass for an error of code 400.
    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if let Some(envelope) = object
        .then(|| serde_json::from_slice::<ErrorEnvelope>(body).ok())
        .flatten()
    {
        let raw = envelope.error;
        return Err(Error::Graph {
            endpoint: endpoint.to_owned(),
            error: Box::new(GraphError {
                message: raw.message.unwrap_or_default(),
                kind: raw.kind,
                code: raw.code,
                subcode: raw.error_subcode,
                user_title: raw.error_user_title,
                user_message: raw.error_user_msg,
                trace_id: raw.fbtrace_id,
                is_transient: raw.is_transient,
                details: raw.error_data.as_ref().and_then(|d| match d {
                    serde_json::Value::Object(o) => o.get("details")?.as_str().map(str::to_owned),
                    serde_json::Value::String(s) => Some(s.clone()),
                    _ => None,
                }),
                http_status: Some(status.as_u16()),
            }),
            usage,
        });
    }
    if !status.is_success() {
        return Err(Error::Status {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
        });
    }
    serde_json::from_slice(body).map_err(|e| {
        let reason = e.to_string();
        let endpoint = endpoint.to_owned();
        match e.classify() {
            serde_json::error::Category::Data => Error::Shape { endpoint, reason },
            _ => Error::Truncated { endpoint, reason },
        }
    })
}

fn root_url(base: &str, version: &str) -> Result<Url, Error> {
    let mut root = Url::parse(base).map_err(|e| {
        Error::Config(format!(
            "`{}` is not a URL ({e}); set `--graph-url` / `PERMATOKEN_GRAPH_URL` to e.g. {DEFAULT_GRAPH_URL}",
            without_userinfo(base)
        ))
    })?;
    if !root.username().is_empty() || root.password().is_some() {
        return Err(Error::Config(format!(
            "`{}` holds a user name or password before `@`; the Graph API takes none (the token travels in a header): remove it from `--graph-url` / `PERMATOKEN_GRAPH_URL`",
            without_userinfo(base)
        )));
    }
    match root.scheme() {
        "https" => {}
        "http" if is_loopback(&root) => {}
        "http" => {
            return Err(Error::Config(format!(
                "`{base}` is plain http:// to a host that is not loopback; tokens would travel in clear text, so use https://"
            )));
        }
        other => {
            return Err(Error::Config(format!(
                "`{base}` has scheme `{other}`; the Graph API is reached over https://"
            )));
        }
    }
    if root.query().is_some() || root.fragment().is_some() {
        return Err(Error::Config(format!(
            "`{base}` must be a plain base URL without query or fragment"
        )));
    }
    let version = version.trim().trim_matches('/');
    let mut path = root.path().trim_end_matches('/').to_owned();
    if !version.is_empty() {
        let v = version.strip_prefix('v').unwrap_or(version);
        let ok = v
            .split_once('.')
            .is_some_and(|(a, b)| is_digits(a) && is_digits(b));
        if !ok {
            return Err(Error::Config(format!(
                "`{version}` is not a Graph API version; versions look like `{DEFAULT_GRAPH_VERSION}`"
            )));
        }
        path = format!("{path}/v{v}");
    }
    root.set_path(&format!("{path}/"));
    Ok(root)
}

/// `base` as it may be shown: whatever stands before an `@` in its authority becomes `…`.
fn without_userinfo(base: &str) -> String {
    let start = base.find("://").map_or(0, |i| i + 3);
    let end = base[start..]
        .find(['/', '?', '#'])
        .map_or(base.len(), |i| start + i);
    match base[start..end].rfind('@') {
        Some(at) => format!("{}…{}", &base[..start], &base[start + at..]),
        None => base.to_owned(),
    }
}

/// For plain http to `localhost`: the addresses it resolves to, all loopback, for the connections
/// to use. `localhost` is trusted with clear text only when it leads to this machine.
fn loopback_name(root: &Url) -> Result<Option<(String, Vec<SocketAddr>)>, Error> {
    let (Some(url::Host::Domain(name)), "http") = (root.host(), root.scheme()) else {
        return Ok(None);
    };
    let port = root.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .map_err(|e| {
            Error::Config(format!(
                "`{name}` does not resolve here ({e}); use http://127.0.0.1:{port}"
            ))
        })?
        .collect();
    only_loopback(name, port, &addrs)?;
    Ok(Some((name.to_owned(), addrs)))
}

fn only_loopback(name: &str, port: u16, addrs: &[SocketAddr]) -> Result<(), Error> {
    if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
        let found: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        return Err(Error::Config(format!(
            "`{name}` resolves to {} here, not only to loopback, so plain http:// to it could leave this machine; use http://127.0.0.1:{port}",
            if found.is_empty() {
                "nothing".to_owned()
            } else {
                found.join(", ")
            }
        )));
    }
    Ok(())
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The TLS set-up every connection of permatoken uses: rustls with the ring provider, the system's
/// roots (through the platform verifier) plus `extra_roots_pem` (`--ca-file`). With `system_roots`
/// false, no root at all: for plain-http clients that never verify a certificate.
pub fn tls_config(
    extra_roots_pem: Option<&[u8]>,
    system_roots: bool,
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // reqwest builds a few TLS pieces of its own; they must find the same, single provider.
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("cannot set up TLS: {e}")))?;
    if !system_roots {
        return Ok(builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth());
    }
    let extra = match extra_roots_pem {
        Some(pem) => parse_pem_certs(pem)?,
        None => Vec::new(),
    };
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider)
        .map_err(|e| {
            Error::Config(format!(
                "cannot load the system's TLS root certificates: {e}"
            ))
        })?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

fn parse_pem_certs(pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Error> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("the CA file is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(
            "the CA file holds no `BEGIN CERTIFICATE` block".into(),
        ));
    }
    Ok(certs)
}

/// The rustls error somewhere down a connection error's sources. It arrives wrapped in `io::Error`s
/// (tokio-rustls, then reqwest's connector), whose `source()` skips the error they wrap, so each one
/// is opened with `get_ref` too.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn query_names(url: &Url) -> String {
    url.query_pairs()
        .map(|(k, _)| format!("{k}=…"))
        .collect::<Vec<_>>()
        .join("&")
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A number in [0, 1) for jitter. `RandomState` is seeded from the OS per instance, which is all the
/// randomness jitter needs, without another dependency.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_urls_carry_the_version_and_refuse_clear_text_to_the_world() {
        let root = root_url("https://graph.facebook.com", "v26.0").unwrap();
        assert_eq!(
            root.join("me").unwrap().as_str(),
            "https://graph.facebook.com/v26.0/me"
        );
        let root = root_url("http://127.0.0.1:8080/", "25.0").unwrap();
        assert_eq!(root.as_str(), "http://127.0.0.1:8080/v25.0/");
        let root = root_url("http://[::1]:8080/graph", "").unwrap();
        assert_eq!(
            root.join("me").unwrap().as_str(),
            "http://[::1]:8080/graph/me"
        );
        assert!(root_url("http://graph.facebook.com", "v26.0").is_err());
        assert!(root_url("ftp://127.0.0.1", "v26.0").is_err());
        assert!(root_url("https://graph.facebook.com", "latest").is_err());
        assert!(root_url("https://u:p@graph.facebook.com", "v1.0").is_err());
    }

    #[test]
    fn a_url_with_a_password_is_refused_without_showing_it() {
        for base in [
            "https://me:PERMATOKENTEST-pw@graph.facebook.com",
            "https://:PERMATOKENTEST-pw@graph.facebook.com/x",
            "http://me:PERMATOKENTEST-pw@127.0.0.1:8080",
            "https://me@graph.facebook.com",
            "https://me:PERMATOKENTEST-pw@graph.facebook.com:99999",
        ] {
            let err = root_url(base, "v26.0").unwrap_err().to_string();
            assert!(!err.contains("PERMATOKENTEST"), "{err}");
            assert!(!err.contains("me@") && !err.contains("me:"), "{err}");
            assert!(
                err.contains("…@graph.facebook.com") || err.contains("…@127.0.0.1"),
                "{err}"
            );
        }
    }

    #[test]
    fn localhost_is_pinned_to_loopback() {
        let root = root_url("http://localhost:8080", "v26.0").unwrap();
        let (name, addrs) = loopback_name(&root).unwrap().expect("localhost is pinned");
        assert_eq!(name, "localhost");
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
        let root = root_url("http://127.0.0.1:8080", "v26.0").unwrap();
        assert!(loopback_name(&root).unwrap().is_none());
        // A hosts file or resolver that sends `localhost` elsewhere is refused, naming where.
        let elsewhere: Vec<SocketAddr> = vec![
            "127.0.0.1:8080".parse().unwrap(),
            "10.0.0.5:8080".parse().unwrap(),
        ];
        let err = only_loopback("localhost", 8080, &elsewhere)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resolves to 127.0.0.1, 10.0.0.5 here"),
            "{err}"
        );
        assert!(only_loopback("localhost", 8080, &[]).is_err());
        assert!(only_loopback("localhost", 8080, &elsewhere[..1]).is_ok());
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_capped() {
        let policy = RetryPolicy::default();
        for attempt in 0..6 {
            let step = policy.base.saturating_mul(1 << attempt).min(policy.cap);
            let wait = policy.backoff(attempt);
            assert!(wait >= step / 2 && wait <= step, "{attempt}: {wait:?}");
        }
        assert!(policy.backoff(40) <= policy.cap);
    }

    #[test]
    fn an_error_object_wins_over_the_status() {
        let body = br#"{"error":{"message":"Error validating access token: Session has expired","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"AbC"}}"#;
        let err = decode::<Me>("/me", StatusCode::OK, Usage::default(), body).unwrap_err();
        let g = err.graph_error().unwrap();
        assert_eq!(
            (g.code, g.subcode, g.trace_id.as_deref()),
            (Some(190), Some(463), Some("AbC"))
        );
        let err =
            decode::<Me>("/me", StatusCode::OK, Usage::default(), br#"{"id":"1","na"#).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        let err =
            decode::<Me>("/me", StatusCode::OK, Usage::default(), br#"{"name":"x"}"#).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        let err =
            decode::<Me>("/me", StatusCode::BAD_GATEWAY, Usage::default(), b"<html>").unwrap_err();
        assert!(matches!(err, Error::Status { status: 502, .. }), "{err}");
    }
}
