//! The HTTP endpoint of `permatoken watch`: `/metrics`, `/healthz`, `/readyz`, `/api/tokens` and the
//! status page `/`, all read from the newest [`Snapshot`], the [`Counters`] and the [`Health`] the
//! daemon tells (`/healthz`: 503 with a JSON reason when the loop is stale, the state cannot be
//! written or reached, or `watch` waits for it; `/readyz`: 200 once the page is served from the
//! state). The charts' history is the one thing read per request:
//! `/api/tokens` asks the [`Store`] for the points of the tokens on the page it answers (at most
//! [`MAX_PER_PAGE`](crate::page::view::MAX_PER_PAGE)), a few requests at a time, so that memory
//! follows the page, not the fleet. When that read fails, `/api/tokens` answers 503 with a JSON
//! `error` (the page's script then keeps what it shows and marks it stale) and the store's error goes
//! to the log; `/`, `/metrics`, `/healthz` and `/readyz` never read the store.
//!
//! [`app`] builds the router apart from serving, so that tests call it without a socket; [`serve`]
//! serves it until a shutdown future completes. On a non-loopback address a [`BearerToken`] is
//! required: it then guards `/` and `/api/*` (compared in constant time), while `/metrics`,
//! `/healthz` and `/readyz` stay open for scrapers and probes.
//!
//! Must never: serve a secret (the snapshot holds none; the bearer token is never echoed or logged),
//! read a request body, or load anything from another origin (the page's CSP forbids it).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use permatoken_state::Store;

use crate::health::{Health, Problem};
use crate::metrics::{self, CounterTotals, Counters};
use crate::page;
use crate::page::view::{TokenPage, TokenQuery};
use crate::snapshot::{Snapshot, Subscriber};

/// Where `watch` listens unless told otherwise: loopback, on the port cert-manager-style exporters
/// leave free.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 9464);

/// The largest request body accepted; the endpoint reads none.
pub const MAX_BODY: usize = 1024;

/// The shortest bearer token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// `/api/tokens` requests reading history at once; more wait their turn, so that a burst of them
/// holds a few pages' points, not one per request.
const HISTORY_READS: usize = 4;

/// Why the endpoint cannot be built or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// A non-loopback address was asked for without a bearer token.
    #[error(
        "`{addr}` is not a loopback address, and serving the status page on it needs a bearer token: give one with `--http-token-file`, or listen on 127.0.0.1"
    )]
    NeedsToken {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The bearer token is too short or holds characters a header cannot carry.
    #[error(
        "the HTTP bearer token must be at least {MIN_TOKEN_LEN} visible ASCII characters with no space: write a long random one to the file (e.g. `openssl rand -hex 32`)"
    )]
    BadToken,
    /// The listener failed.
    #[error("the HTTP endpoint failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The secret that guards `/` and `/api/*` off loopback. Shown by neither `Debug` nor any answer.
pub struct BearerToken(zeroize::Zeroizing<String>);

impl BearerToken {
    /// From the text of the token file (surrounding whitespace, such as a final newline, ignored).
    pub fn new(text: &str) -> Result<Self, HttpError> {
        let text = text.trim();
        if text.len() < MIN_TOKEN_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HttpError::BadToken);
        }
        Ok(Self(zeroize::Zeroizing::new(text.to_owned())))
    }

    fn matches(&self, presented: &[u8]) -> bool {
        // Comparing digests hides the length too; the fold does not stop at the first difference.
        let a = ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes());
        let b = ring::digest::digest(&ring::digest::SHA256, presented);
        a.as_ref()
            .iter()
            .zip(b.as_ref())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(…)")
    }
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    snapshot: Subscriber,
    counters: Counters,
    bearer: Option<BearerToken>,
    /// Empty while `watch` waits for its state at start ([`AppState::set_store`]).
    store: std::sync::OnceLock<Store>,
    history_reads: tokio::sync::Semaphore,
    health: Health,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("guarded", &self.0.bearer.is_some())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The endpoint's state for serving on `listen`, the charts' history read from `store` (the
    /// one the snapshots are made from; on a standby, the shared one). Refuses a non-loopback
    /// `listen` without a bearer token; on loopback a given token guards the page all the same.
    pub fn new(
        listen: SocketAddr,
        bearer: Option<BearerToken>,
        snapshot: Subscriber,
        counters: Counters,
        store: Store,
    ) -> Result<Self, HttpError> {
        let state = Self::waiting(listen, bearer, snapshot, counters)?;
        state.set_store(store);
        Ok(state)
    }

    /// As [`AppState::new`], before the state is open (`watch` waiting for its database,
    /// [`crate::startup`]): `/api/tokens` answers 503 until [`AppState::set_store`].
    pub fn waiting(
        listen: SocketAddr,
        bearer: Option<BearerToken>,
        snapshot: Subscriber,
        counters: Counters,
    ) -> Result<Self, HttpError> {
        if bearer.is_none() && !listen.ip().is_loopback() {
            return Err(HttpError::NeedsToken { addr: listen });
        }
        Ok(Self(Arc::new(Inner {
            snapshot,
            counters,
            bearer,
            store: std::sync::OnceLock::new(),
            history_reads: tokio::sync::Semaphore::new(HISTORY_READS),
            health: Health::default(),
        })))
    }

    /// What `/healthz` and `/readyz` read beside the snapshot: hand it to the daemon
    /// ([`crate::daemon::Daemon::set_health`]).
    pub fn health(&self) -> Health {
        self.0.health.clone()
    }

    /// The store the charts' history is read from, once open; a second one is ignored.
    pub fn set_store(&self, store: Store) {
        let _ = self.0.store.set(store);
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.0.snapshot.borrow().clone()
    }
}

/// The router: every route, guard and header, without a socket.
pub fn app(state: AppState) -> Router {
    let guarded = Router::new()
        .route("/", get(page_handler))
        .route("/api/tokens", get(api_tokens))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .layer(middleware::from_fn(bounded))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` completes, then finishes the requests in flight.
/// Checks the listener's real address: a non-loopback one without a bearer token is refused.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let addr = listener.local_addr()?;
    if state.0.bearer.is_none() && !addr.ip().is_loopback() {
        return Err(HttpError::NeedsToken { addr });
    }
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Refuses request bodies: nothing here reads one, and a large one is only a cost.
async fn bounded(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = match length {
        Some(n) => n > MAX_BODY as u64,
        None => headers.contains_key(header::TRANSFER_ENCODING),
    };
    if too_large {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    }
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.0.bearer {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !presented.is_some_and(|p| token.matches(p)) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required: send `Authorization: Bearer <the token in --http-token-file>`\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// `/metrics`: the text format 0.0.4, or OpenMetrics when the `Accept` header asks for it.
async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = metrics::Format::negotiate(accept);
    // Written a chunk at a time as the connection takes it: never the whole text of a fleet at once.
    let body = metrics::Exposition::new(state.snapshot(), state.0.counters.clone(), format);
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "Accept"),
        ],
        axum::body::Body::new(body),
    )
        .into_response()
}

/// A JSON answer no cache keeps.
fn probe_answer(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("{body}\n"),
    )
        .into_response()
}

/// `/healthz`: 200 `{"status": "ok", "leader", "round_finished", "last_round_at"}`, or 503
/// `{"status": "unhealthy", "problems": [{"reason", "message"}]}`, one for each of
/// [`health_problems`].
async fn healthz(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshot();
    let problems = health_problems(&snapshot, &state.0.health);
    if !problems.is_empty() {
        return probe_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "unhealthy", "problems": problems}),
        );
    }
    let last_round_at = snapshot.last_round_at.filter(|_| snapshot.round_finished);
    probe_answer(
        StatusCode::OK,
        &serde_json::json!({
            "status": "ok",
            "leader": state.0.counters.leads(&snapshot),
            "round_finished": snapshot.round_finished,
            "last_round_at": last_round_at,
        }),
    )
}

/// Why this process is not healthy now; empty when it is. Each condition that fails `/healthz` is
/// one entry here: the snapshot's, then what the daemon told ([`Health::problems`]).
fn health_problems(snapshot: &Snapshot, health: &Health) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(why) = &snapshot.waiting_for_state {
        problems.push(Problem {
            reason: "waiting_for_state",
            message: format!("waiting for the state database: {why}"),
        });
    }
    if let Some(problem) = &snapshot.state_unwritable {
        // A probe must see it: the alerts of this outage live only in this process's memory.
        problems.push(Problem {
            reason: "state_unwritable",
            message: format!(
                "state not writable since {}: {}",
                problem.since, problem.reason
            ),
        });
    }
    problems.extend(health.problems(std::time::Instant::now()));
    problems
}

/// `/readyz`: 200 `{"status": "ready"}` once the daemon serves the page from the state; 503
/// `{"status": "not_ready", "reason", "message"}` before (starting, or waiting for the state).
async fn readyz(State(state): State<AppState>) -> Response {
    if state.0.health.is_ready() {
        return probe_answer(StatusCode::OK, &serde_json::json!({"status": "ready"}));
    }
    let (reason, message) = match &state.snapshot().waiting_for_state {
        Some(why) => (
            "waiting_for_state",
            format!("waiting for the state database: {why}"),
        ),
        None => (
            "starting",
            "watch is starting: the status page is not built from the state yet".to_owned(),
        ),
    };
    probe_answer(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({"status": "not_ready", "reason": reason, "message": message}),
    )
}

/// `/api/tokens`: one page of tokens ([`TokenPage`]: `total`, `page`, `per_page`, `pages`, `q`,
/// `states`, `counts`, `tokens` each with its `history`, and the snapshot's other fields), with the
/// counters' values now.
#[derive(serde::Serialize)]
struct Api<'a> {
    #[serde(flatten)]
    page: TokenPage<'a>,
    counters: CounterTotals,
}

async fn api_tokens(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let query = match TokenQuery::parse(raw.as_deref()) {
        Ok(query) => query,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CACHE_CONTROL, "no-store")],
                format!("{e}\n"),
            )
                .into_response();
        }
    };
    // The permit lasts until the answer is written: the page's points and their JSON are what a
    // burst of requests would multiply.
    let Ok(_permit) = state.0.history_reads.acquire().await else {
        // Never closed.
        return unavailable();
    };
    let Some(store) = state.0.store.get() else {
        return unavailable();
    };
    let snapshot = state.snapshot();
    let mut page = TokenPage::select(&snapshot, &query);
    // The election's word now, not the snapshot's: one cannot be rebuilt while the state is down.
    page.leader = state.0.counters.leads(&snapshot);
    if let Err(e) = page.read_history(store).await {
        tracing::warn!("/api/tokens: cannot read the check history from the state: {e}");
        return unavailable();
    }
    // Room for the whole answer at once (a token's fields take some hundreds of bytes, a point
    // some 35): growing by doubling held the old and the new buffer, 1.5 times the largest page.
    let room = page
        .tokens
        .iter()
        .map(|t| 1024 + 40 * t.history.len())
        .sum::<usize>()
        + 16 * 1024;
    let mut body = Vec::with_capacity(room);
    let body = serde_json::to_writer(
        &mut body,
        &Api {
            page,
            counters: state.0.counters.totals(),
        },
    )
    .map(|()| body);
    match body {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("cannot serialise the snapshot: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The answer when the state cannot be read: what happened and where to look, as JSON. The
/// store's own words go to the log only (they may name a file or a host).
fn unavailable() -> Response {
    let body = serde_json::json!({
        "error": "the check history cannot be read from the state now; see the log of `permatoken watch` for why, and try again",
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn page_handler(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    // A link with a bad query still opens the page, on the default view; the script then writes the
    // view it shows back into the address bar.
    let query = TokenQuery::parse(raw.as_deref()).unwrap_or_default();
    let snapshot = state.snapshot();
    let mut view = TokenPage::select(&snapshot, &query);
    view.leader = state.0.counters.leads(&snapshot);
    let html = page::render(&view);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(csp) = HeaderValue::from_str(page::csp()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    (headers, html).into_response()
}
