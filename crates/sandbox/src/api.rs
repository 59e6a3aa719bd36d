//! The HTTP surface: Graph endpoints written from `graph-api.md` §2–§7, and the `/_sandbox/` admin API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use permatoken_secret::AppToken;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::scenarios::{self, Owner, Record, WABA_ID};
use crate::{App, Faults, Inner, Request, State, whatsapp};

type Shared = Arc<State>;

/// `expires_in` of a long-lived token, as Meta sends it (`graph-api.md` §6).
const LONG_LIVED_SECONDS: i64 = 5_183_944;
/// A 60-day system-user token.
const SIXTY_DAYS: i64 = 60 * 86_400;
/// The permissions the sandbox grants when asked for them.
const KNOWN_SCOPES: &[&str] = &[
    "whatsapp_business_messaging",
    "whatsapp_business_management",
    "business_management",
];

pub(crate) fn router(state: Shared) -> axum::Router {
    axum::Router::new()
        .route("/_sandbox/faults", get(get_faults).post(set_faults))
        .route("/_sandbox/clock", post(advance_clock))
        .route("/_sandbox/throttle", get(get_throttle))
        .route(
            "/_sandbox/requests",
            get(list_requests).delete(clear_requests),
        )
        .route("/_sandbox/scenarios", get(list_scenarios))
        // Only the admin routes above: Graph calls are answered as Meta would, whoever sends them.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin_only,
        ))
        .fallback(graph)
        .with_state(state)
}

/// The header that carries the run's admin secret ([`crate::ADMIN_HEADER`]).
async fn admin_only(
    Extract(state): Extract<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = request
        .headers()
        .get(crate::ADMIN_HEADER)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if equal_in_constant_time(given, state.admin_secret.as_bytes()) {
        next.run(request).await
    } else {
        // The request log holds what clients sent, the scenario list the tokens and secret, and the
        // faults and clock steer every answer: none of it for another local user.
        (
            StatusCode::UNAUTHORIZED,
            format!(
                "the sandbox's admin API needs the header `{}` with the admin secret printed when it started\n",
                crate::ADMIN_HEADER
            ),
        )
            .into_response()
    }
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub(crate) enum Fault {
    /// A batch sub-request that "did not finish in time": `null` in the batch answer.
    Null,
    Outage,
    RateLimit(Option<u32>),
    /// The app is throttled: code 4 with `X-App-Usage` only (`graph-api.md` §7).
    Throttled,
    /// The caller's own limit: code 17.
    UserLimit,
    Truncate,
}

/// The fault the next Graph request takes, if any; `null`s only inside a batch. `by_app`: the call
/// is made with the app token (`APP_ID|APP_SECRET`), not a user's.
pub(crate) fn take_fault(inner: &mut Inner, in_batch: bool, by_app: bool) -> Option<Fault> {
    if let Some(end) = inner.throttled_until {
        let now = std::time::Instant::now();
        if end > now {
            // A call made while throttled counts, and keeps the app throttled longer.
            inner.throttled_until =
                Some(end + Duration::from_millis(inner.faults.throttle_grow_ms));
            inner.throttle_refused += 1;
            return Some(Fault::Throttled);
        }
    }
    let faults = &mut inner.faults;
    if in_batch && faults.batch_nulls > 0 {
        faults.batch_nulls -= 1;
        Some(Fault::Null)
    } else if faults.server_errors > 0 {
        faults.server_errors -= 1;
        Some(Fault::Outage)
    } else if faults.rate_limits > 0 {
        faults.rate_limits -= 1;
        Some(Fault::RateLimit(faults.regain_minutes))
    } else if !by_app && faults.user_rate_limits > 0 {
        faults.user_rate_limits -= 1;
        Some(Fault::UserLimit)
    } else if faults.truncate > 0 {
        faults.truncate -= 1;
        Some(Fault::Truncate)
    } else {
        None
    }
}

/// Whether `bearer` is an app token (`APP_ID|APP_SECRET`).
pub(crate) fn is_app_token(bearer: Option<&str>) -> bool {
    bearer.is_some_and(|b| b.contains('|'))
}

/// The caller's token: the `Authorization` header, else `access_token` among the parameters.
pub(crate) fn bearer_of(authorization: Option<&str>, params: &Params) -> Option<String> {
    authorization
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("OAuth "))
        })
        .map(str::to_owned)
        .or_else(|| params.get("access_token").map(str::to_owned))
}

/// `X-App-Usage` at `percent` of the hourly allowance (default 1).
pub(crate) fn app_usage(percent: Option<u32>) -> HeaderValue {
    let usage = percent.unwrap_or(1);
    let usage = format!(r#"{{"call_count":{usage},"total_cputime":1,"total_time":1}}"#);
    HeaderValue::from_str(&usage).expect("digits and JSON punctuation")
}

async fn graph(
    Extract(state): Extract<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A batch takes no fault of its own: its sub-requests do, one by one (`batch.rs`).
    if method == Method::POST && strip_version(uri.path()) == Some("/") {
        return crate::batch::answer(&state, &uri, &headers, authorization, &body).await;
    }
    let params = Params::new(uri.query(), &headers, &body);
    let bearer = bearer_of(authorization.as_deref(), &params);
    let (latency, fault, usage) = {
        let mut inner = state.lock();
        inner.requests.push(Request {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            authorization: authorization.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            batched: false,
        });
        let fault = take_fault(&mut inner, false, is_app_token(bearer.as_deref()));
        (
            Duration::from_millis(inner.faults.latency_ms),
            fault,
            inner.faults.app_usage_percent,
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(Fault::Outage) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Some(Fault::RateLimit(regain)) => return rate_limited(regain),
        Some(Fault::Throttled) => return throttled(),
        Some(Fault::UserLimit) => return user_limited(),
        _ => {}
    }
    let mut response = dispatch(
        &state,
        &method,
        uri.path(),
        bearer.as_deref(),
        &params,
        &body,
    );
    response
        .headers_mut()
        .insert("x-app-usage", app_usage(usage));
    if let Some(Fault::Truncate) = fault {
        return truncate(response).await;
    }
    response
}

/// The answer to one Graph call at `full_path` (version prefix included), with faults already
/// applied: the same for a call alone and for a batch's sub-request.
pub(crate) fn dispatch(
    state: &State,
    method: &Method,
    full_path: &str,
    bearer: Option<&str>,
    params: &Params,
    body: &[u8],
) -> Response {
    let path = strip_version(full_path);
    let major = version_major(full_path);
    match (method, path) {
        (&Method::GET, Some("/me")) => me(state, bearer, params),
        (&Method::GET, Some("/debug_token")) => debug_token(state, bearer, params),
        (&Method::GET | &Method::POST, Some("/oauth/access_token")) => exchange(state, params),
        (&Method::GET, Some(path)) if app_node_of(state, path).is_some() => {
            app_node(state, bearer, params, path)
        }
        (&Method::POST, Some(path)) if system_user_edge(path).is_some() => {
            let (id, edge) = system_user_edge(path).expect("just matched");
            system_user(state, bearer, params, id, edge)
        }
        (_, Some(path))
            if whatsapp_answer(state, method, path, bearer, params, body, major).is_some() =>
        {
            whatsapp_answer(state, method, path, bearer, params, body, major).expect("just matched")
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            2500,
            None,
            "OAuthException",
            &format!("Unknown path components: {full_path}"),
        ),
    }
}

/// `/v26.0/me` → `/me`; `/me` stays; a malformed prefix is no known path.
pub(crate) fn strip_version(path: &str) -> Option<&str> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Some(path);
    };
    let (version, rest) = rest.split_once('/')?;
    let (major, minor) = version.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(major) && digits(minor)).then(|| &path[path.len() - rest.len() - 1..])
}

/// The major version of a `/vNN.N/…` path; `None` without a prefix (the app's default version,
/// taken as the newest).
pub(crate) fn version_major(path: &str) -> Option<u32> {
    let rest = path.strip_prefix("/v")?;
    rest[..rest.find('.')?].parse().ok()
}

/// The WhatsApp nodes and edges (`whatsapp.rs`), if `path` is one of theirs.
fn whatsapp_answer(
    state: &State,
    method: &Method,
    path: &str,
    bearer: Option<&str>,
    params: &Params,
    body: &[u8],
    major: Option<u32>,
) -> Option<Response> {
    let rest = path.strip_prefix('/')?;
    let (id, edge) = match rest.split_once('/') {
        Some((id, edge)) => (id, Some(edge)),
        None => (rest, None),
    };
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match (method, edge) {
        (&Method::GET, None) => whatsapp::node(state, bearer, params, id, major),
        (&Method::GET | &Method::POST, Some(edge)) => whatsapp::edge(
            state,
            bearer,
            params,
            id,
            edge,
            (method == Method::POST).then_some(body),
            major,
        ),
        _ => None,
    }
}

/// `/{digits}/applications` or `/{digits}/access_tokens` → the id and the edge.
fn system_user_edge(path: &str) -> Option<(&str, &str)> {
    let (id, edge) = path.strip_prefix('/')?.split_once('/')?;
    let digits = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    (digits && matches!(edge, "applications" | "access_tokens")).then_some((id, edge))
}

/// Parameters from the query and, for form posts, the body: the Graph API takes them from either.
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn new(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut map: HashMap<String, String> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            map.extend(url::form_urlencoded::parse(body).into_owned());
        }
        Self(map)
    }

    /// A batch sub-request's parameters: its relative URL's query and its `body` (a form).
    pub(crate) fn from_parts(query: Option<&str>, form: Option<&str>) -> Self {
        let mut map: HashMap<String, String> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        if let Some(form) = form {
            map.extend(url::form_urlencoded::parse(form.as_bytes()).into_owned());
        }
        Self(map)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

pub(crate) fn trace_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    scenarios::random_bytes(11)
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

pub(crate) fn error(
    status: StatusCode,
    code: i64,
    subcode: Option<i64>,
    kind: &str,
    message: &str,
) -> Response {
    let mut error = json!({
        "message": message,
        "type": kind,
        "code": code,
        "fbtrace_id": trace_id(),
    });
    if let Some(sub) = subcode {
        error["error_subcode"] = json!(sub);
    }
    // Rate-limit bodies say they pass; captured 190 errors carry no `is_transient` (§12).
    if code == 4 {
        error["is_transient"] = json!(true);
    }
    (status, Json(json!({ "error": error }))).into_response()
}

pub(crate) fn rate_limited(regain_minutes: Option<u32>) -> Response {
    let mut response = error(
        StatusCode::BAD_REQUEST,
        4,
        None,
        "OAuthException",
        "(#4) Application request limit reached",
    );
    let headers = response.headers_mut();
    headers.insert(
        "x-app-usage",
        HeaderValue::from_static(r#"{"call_count":100,"total_cputime":25,"total_time":30}"#),
    );
    // Always present in captured headers, 0 when Meta names no wait (§12).
    let usage = json!({"type": "whatsapp_business_management", "call_count": 100, "total_cputime": 25, "total_time": 30,
        "estimated_time_to_regain_access": regain_minutes.unwrap_or(0)});
    let buc = json!({ WABA_ID: [usage] }).to_string();
    headers.insert(
        "x-business-use-case-usage",
        HeaderValue::from_str(&buc).expect("JSON is a valid header value"),
    );
    response
}

/// An app over its hourly allowance (`graph-api.md` §7): code 4, `X-App-Usage` at 100 %, and no
/// time to regain access (app-token calls carry no `X-Business-Use-Case-Usage`).
pub(crate) fn throttled() -> Response {
    let mut response = error(
        StatusCode::BAD_REQUEST,
        4,
        None,
        "OAuthException",
        "(#4) Application request limit reached",
    );
    response.headers_mut().insert(
        "x-app-usage",
        HeaderValue::from_static(r#"{"call_count":100,"total_cputime":12,"total_time":14}"#),
    );
    response
}

/// One user over its limit across apps (`graph-api.md` §7): code 17.
pub(crate) fn user_limited() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        17,
        None,
        "OAuthException",
        "(#17) User request limit reached",
    )
}

async fn truncate(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    (parts, bytes.slice(..bytes.len() / 2)).into_response()
}

/// What the API thinks of a token string at this moment.
enum Seen {
    Valid(Record),
    Dead(Record, Option<i64>, String),
    /// Not a token the API knows: no fields but the error, whose message this is.
    Garbage(&'static str),
}

const CANNOT_PARSE: &str = "Invalid OAuth access token - Cannot parse access token";
/// A token whose shape is whole but whose content is not one the API issued (one character
/// changed): `graph-api.md` §3, §12.
const CANNOT_DECRYPT: &str = "The access token could not be decrypted";

fn see(state: &State, token: &str) -> Seen {
    let inner = state.lock();
    let Some(record) = inner
        .index
        .get(token)
        .map(|&i| &inner.records[i])
        .filter(|r| r.scenario != "malformed")
    else {
        return Seen::Garbage(if scenarios::well_formed(token) {
            CANNOT_DECRYPT
        } else {
            CANNOT_PARSE
        });
    };
    let record = aged(record, inner.clock_offset);
    if let Some(death) = &record.death {
        let message = death.message.to_owned();
        return Seen::Dead(record.clone(), death.subcode, message);
    }
    let now = unix_now() + inner.now_offset;
    if record.expires_at != 0 && record.expires_at <= now {
        let message = format!(
            "Error validating access token: Session has expired on {}. The current time is {}.",
            meta_time(record.expires_at),
            meta_time(now)
        );
        let subcode = (!record.drops_subcode).then_some(463);
        return Seen::Dead(record, subcode, message);
    }
    Seen::Valid(record)
}

/// The record as it looks after the clock moved `offset` seconds: every time that much earlier.
fn aged(record: &Record, offset: i64) -> Record {
    let shift = |t: i64| if t == 0 { 0 } else { t - offset };
    Record {
        issued_at: record.issued_at.map(shift),
        expires_at: shift(record.expires_at),
        data_access_expires_at: shift(record.data_access_expires_at),
        ..record.clone()
    }
}

/// "Wednesday, 16-Nov-22 07:45:51 PST", the shape of Meta's expiry messages: US Pacific time
/// (`graph-api.md` §3, §12).
pub(crate) fn meta_time(unix: i64) -> String {
    match jiff::Timestamp::from_second(unix) {
        Ok(t) => {
            let (local, zone) = pacific(t);
            format!("{} {zone}", local.strftime("%A, %d-%b-%y %H:%M:%S"))
        }
        Err(_) => unix.to_string(),
    }
}

/// US Pacific time, computed by hand: jiff knows named time zones only with a time-zone database,
/// and bundling one would weigh more than the sandbox itself. The rule is the one in force since
/// 2007 (Energy Policy Act of 2005): daylight time (PDT, UTC−7) from the second Sunday of March at
/// 02:00 PST (10:00 UTC) to the first Sunday of November at 02:00 PDT (09:00 UTC); standard time
/// (PST, UTC−8) otherwise. The sandbox's clock only moves forward from now, so earlier rules never
/// apply.
fn pacific(t: jiff::Timestamp) -> (jiff::civil::DateTime, &'static str) {
    use jiff::civil::{Weekday, date};
    use jiff::tz::Offset;
    let year = Offset::UTC.to_datetime(t).year();
    let change = |month: i8, nth: i8, utc_hour: i8| {
        let day = date(year, month, 1)
            .nth_weekday_of_month(nth, Weekday::Sunday)
            .ok()?;
        Offset::UTC.to_timestamp(day.at(utc_hour, 0, 0, 0)).ok()
    };
    let daylight = match (change(3, 2, 10), change(11, 1, 9)) {
        (Some(start), Some(end)) => start <= t && t < end,
        _ => false,
    };
    let (hours, zone) = if daylight { (-7, "PDT") } else { (-8, "PST") };
    (Offset::constant(hours).to_datetime(t), zone)
}

/// The token's record if it works, else the error every endpoint answers for a token that does not.
pub(crate) fn valid(state: &State, token: &str) -> Result<Record, Response> {
    let (subcode, message) = match see(state, token) {
        Seen::Valid(record) => return Ok(record),
        Seen::Dead(_, sub, message) => (sub, message),
        Seen::Garbage(message) => (None, message.to_owned()),
    };
    Err(error(
        StatusCode::BAD_REQUEST,
        190,
        subcode,
        "OAuthException",
        &message,
    ))
}

fn app_of(state: &State, owner: Owner) -> &App {
    match owner {
        Owner::Ours => &state.ours,
        Owner::Other => &state.other,
    }
}

/// `appsecret_proof` as the real API checks it (`graph-api.md` §2), computed here on its own.
pub(crate) fn check_proof(state: &State, params: &Params, record: &Record) -> Option<Response> {
    let app = app_of(state, record.owner);
    let expected = {
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            app.secret.expose_secret().as_bytes(),
        );
        let tag = ring::hmac::sign(&key, record.token.expose_secret().as_bytes());
        tag.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    match params.get("appsecret_proof") {
        Some(proof) if proof == expected => None,
        Some(_) => Some(error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "GraphMethodException",
            "Invalid appsecret_proof provided in the API argument",
        )),
        None if state.require_proof && record.owner == Owner::Ours => Some(error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "GraphMethodException",
            "API calls from the server require an appsecret_proof argument",
        )),
        None => None,
    }
}

fn me(state: &State, bearer: Option<&str>, params: &Params) -> Response {
    let Some(token) = bearer.filter(|t| !t.contains('|')) else {
        return error(
            StatusCode::BAD_REQUEST,
            2500,
            None,
            "OAuthException",
            "An active access token must be used to query information about the current user.",
        );
    };
    let record = match valid(state, token) {
        Ok(record) => record,
        Err(response) => return response,
    };
    if let Some(response) = check_proof(state, params, &record) {
        return response;
    }
    let fields = params.get("fields").unwrap_or("id,name");
    let mut body = serde_json::Map::new();
    for field in fields.split(',').map(str::trim) {
        match field {
            "id" => body.insert("id".into(), json!(record.user_id)),
            "name" => body.insert("name".into(), json!(record.name)),
            _ => None,
        };
    }
    body.entry("id").or_insert(json!(record.user_id));
    Json(Value::Object(body)).into_response()
}

const MUST_PROVIDE_APP_TOKEN: &str = "(#100) You must provide an app access token, or a user access token that is an owner or developer of the app";

fn debug_token(state: &State, bearer: Option<&str>, params: &Params) -> Response {
    let Some(caller) = bearer else {
        return error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "OAuthException",
            MUST_PROVIDE_APP_TOKEN,
        );
    };
    let Some(input) = params.get("input_token") else {
        return error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "OAuthException",
            "(#100) The parameter input_token is required",
        );
    };
    let viewing_app = if let Some(caller) = AppToken::parse(caller) {
        let Some(app) = [&state.ours, &state.other]
            .into_iter()
            .find(|a| a.id.to_string() == caller.app_id())
        else {
            return error(
                StatusCode::BAD_REQUEST,
                101,
                None,
                "OAuthException",
                "Error validating application. Invalid application ID.",
            );
        };
        if app.secret != *caller.secret() {
            return error(
                StatusCode::BAD_REQUEST,
                190,
                None,
                "OAuthException",
                "Invalid OAuth access token signature.",
            );
        }
        app
    } else {
        let record = match valid(state, caller) {
            Ok(record) => record,
            Err(response) => return response,
        };
        if let Some(response) = check_proof(state, params, &record) {
            return response;
        }
        // Only the app, or a person who is an owner or developer of it, may inspect tokens: a system
        // user is neither, so a system-user token cannot inspect itself (§5, §12). The sandbox's user
        // tokens stand for its developers.
        if record.token_type == "SYSTEM_USER" {
            return error(
                StatusCode::BAD_REQUEST,
                100,
                None,
                "OAuthException",
                MUST_PROVIDE_APP_TOKEN,
            );
        }
        app_of(state, record.owner)
    };
    // An app token inspected: valid when its secret is the app's (`type: APP`, no expiry).
    if let Some(input) = AppToken::parse(input) {
        let app = [&state.ours, &state.other]
            .into_iter()
            .find(|a| a.id.to_string() == input.app_id() && a.secret == *input.secret());
        return Json(match app {
            Some(app) => json!({"data": {
                "app_id": app.id.to_string(),
                "type": "APP",
                "application": app.name,
                "is_valid": true,
                "scopes": [],
            }}),
            None => json!({"data": {
                "error": {"code": 190, "message": "Invalid OAuth access token signature."},
                "is_valid": false,
                "scopes": [],
            }}),
        })
        .into_response();
    }
    let (record, dead) = match see(state, input) {
        Seen::Garbage(message) => {
            return Json(json!({"data": {
                "error": {"code": 190, "message": message},
                "is_valid": false,
                "scopes": [],
            }}))
            .into_response();
        }
        Seen::Valid(record) => (record, None),
        Seen::Dead(record, subcode, message) => (record, Some((subcode, message))),
    };
    let app = app_of(state, record.owner);
    if app.id != viewing_app.id {
        return error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "OAuthException",
            "(#100) The App_id in the input_token did not match the Viewing App",
        );
    }
    let granular: Vec<Value> = record
        .scopes
        .iter()
        .map(|scope| {
            if record.granular_to_waba && scope.starts_with("whatsapp_") {
                json!({"scope": scope, "target_ids": whatsapp::granted_accounts()})
            } else {
                json!({"scope": scope})
            }
        })
        .collect();
    let mut data = json!({
        "app_id": app.id.to_string(),
        "type": record.token_type,
        "application": app.name,
        "data_access_expires_at": record.data_access_expires_at,
        "expires_at": record.expires_at,
        "is_valid": dead.is_none(),
        "scopes": record.scopes,
        "granular_scopes": granular,
        "user_id": record.user_id,
    });
    if let Some(issued) = record.issued_at {
        data["issued_at"] = json!(issued);
    }
    if let Some((subcode, message)) = dead {
        let mut err = json!({"code": 190, "message": message});
        if let Some(sub) = subcode {
            err["subcode"] = json!(sub);
        }
        data["error"] = err;
    }
    Json(json!({ "data": data })).into_response()
}

/// `/{app-id}` of one of the sandbox's apps.
fn app_node_of<'a>(state: &'a State, path: &str) -> Option<&'a App> {
    let id = path.strip_prefix('/')?;
    [&state.ours, &state.other]
        .into_iter()
        .find(|a| a.id.to_string() == id)
}

/// `GET /{app-id}?fields=id,name`: an app's public fields, for its own app token or any valid token.
/// An app token whose secret is wrong is refused as `/debug_token` refuses such a caller.
fn app_node(state: &State, bearer: Option<&str>, params: &Params, path: &str) -> Response {
    let app = app_node_of(state, path).expect("matched by the router");
    let Some(caller) = bearer else {
        return error(
            StatusCode::BAD_REQUEST,
            104,
            None,
            "OAuthException",
            "An access token is required to request this resource.",
        );
    };
    if let Some((id, secret)) = caller.split_once('|') {
        let Some(caller_app) = [&state.ours, &state.other]
            .into_iter()
            .find(|a| a.id.to_string() == id)
        else {
            return error(
                StatusCode::BAD_REQUEST,
                101,
                None,
                "OAuthException",
                "Error validating application. Invalid application ID.",
            );
        };
        if caller_app.secret.expose_secret() != secret {
            return error(
                StatusCode::BAD_REQUEST,
                190,
                None,
                "OAuthException",
                "Invalid OAuth access token signature.",
            );
        }
    } else {
        let record = match valid(state, caller) {
            Ok(record) => record,
            Err(response) => return response,
        };
        if let Some(response) = check_proof(state, params, &record) {
            return response;
        }
    }
    let fields = params.get("fields").unwrap_or("id,name");
    let mut body = serde_json::Map::new();
    for field in fields.split(',').map(str::trim) {
        match field {
            "id" => body.insert("id".into(), json!(app.id.to_string())),
            "name" => body.insert("name".into(), json!(app.name)),
            _ => None,
        };
    }
    body.entry("id").or_insert(json!(app.id.to_string()));
    Json(Value::Object(body)).into_response()
}

fn exchange(state: &State, params: &Params) -> Response {
    if params.get("grant_type") != Some("fb_exchange_token") {
        return error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "OAuthException",
            "(#100) Unsupported grant_type; this sandbox knows `fb_exchange_token`",
        );
    }
    let Some(app) = [&state.ours, &state.other]
        .into_iter()
        .find(|a| params.get("client_id") == Some(a.id.to_string().as_str()))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            101,
            None,
            "OAuthException",
            "Error validating application. Invalid application ID.",
        );
    };
    if params.get("client_secret") != Some(app.secret.expose_secret()) {
        return error(
            StatusCode::BAD_REQUEST,
            1,
            None,
            "OAuthException",
            "Error validating client secret.",
        );
    }
    // Code 1, as captured (§12): the same code as a wrong secret, told apart only by the message.
    let Some(input) = params.get("fb_exchange_token") else {
        return error(
            StatusCode::BAD_REQUEST,
            1,
            None,
            "OAuthException",
            "fb_exchange_token parameter not specified",
        );
    };
    let record = match valid(state, input) {
        Ok(record) => record,
        Err(response) => return response,
    };
    if app_of(state, record.owner).id != app.id {
        return error(
            StatusCode::BAD_REQUEST,
            190,
            Some(458),
            "OAuthException",
            &format!(
                "Error validating access token: The user has not authorized application {}.",
                app.id
            ),
        );
    }
    // The answer may lack `expires_in` (§12); the sandbox leaves it out, deterministically, when the
    // token exchanged is a temporary API Setup token, so clients must learn the lifetime from
    // `/debug_token`.
    let omit_lifetime = record.scenario.starts_with("temporary");
    let now = unix_now() + state.lock().now_offset;
    let token = scenarios::mint(app.id);
    // A 60-day system-user token renewed with `set_token_expires_in_60_days` gets 60 days more.
    let lifetime = if record.token_type == "SYSTEM_USER" {
        SIXTY_DAYS
    } else {
        LONG_LIVED_SECONDS
    };
    let minted = Record {
        scenario: "exchanged",
        token: token.clone(),
        issued_at: Some(now),
        expires_at: now + lifetime,
        data_access_expires_at: if record.token_type == "SYSTEM_USER" {
            0
        } else {
            now + 90 * 86_400
        },
        death: None,
        drops_subcode: false,
        ..record
    };
    store(state, minted);
    let mut answer = json!({
        "access_token": token.expose_secret(),
        "token_type": "bearer",
    });
    if !omit_lifetime {
        answer["expires_in"] = json!(lifetime);
    }
    Json(answer).into_response()
}

fn store(state: &State, record: Record) {
    let mut inner = state.lock();
    // Stored un-aged: `see` applies the clock offset to every record alike.
    let offset = inner.clock_offset;
    let shift = |t: i64| if t == 0 { 0 } else { t + offset };
    let at = inner.records.len();
    inner
        .index
        .insert(record.token.expose_secret().to_owned(), at);
    inner.records.push(Record {
        issued_at: record.issued_at.map(shift),
        expires_at: shift(record.expires_at),
        data_access_expires_at: shift(record.data_access_expires_at),
        ..record
    });
}

/// `POST /{system-user-id}/applications` and `/access_tokens` (`graph-api.md` §6), called with a
/// business admin's token.
fn system_user(
    state: &State,
    bearer: Option<&str>,
    params: &Params,
    id: &str,
    edge: &str,
) -> Response {
    if id != state.system_user_id {
        return error(
            StatusCode::BAD_REQUEST,
            100,
            Some(33),
            "GraphMethodException",
            &format!(
                "Unsupported post request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
            ),
        );
    }
    let Some(token) = bearer else {
        return error(
            StatusCode::BAD_REQUEST,
            104,
            None,
            "OAuthException",
            "An access token is required to request this resource.",
        );
    };
    let admin = match valid(state, token) {
        Ok(record) => record,
        Err(response) => return response,
    };
    if let Some(response) = check_proof(state, params, &admin) {
        return response;
    }
    if !admin.scopes.contains(&"business_management") {
        return error(
            StatusCode::FORBIDDEN,
            200,
            None,
            "OAuthException",
            "(#200) Requires business_management permission to manage the object",
        );
    }
    let app = &state.ours;
    if params.get("business_app") != Some(app.id.to_string().as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "OAuthException",
            "(#100) Param business_app must be a valid app ID of an app owned by this business",
        );
    }
    if edge == "applications" {
        let mut inner = state.lock();
        if !inner.installed.contains(&app.id) {
            inner.installed.push(app.id);
        }
        return Json(json!({"success": true})).into_response();
    }
    if params.get("appsecret_proof").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "GraphMethodException",
            "API calls from the server require an appsecret_proof argument",
        );
    }
    if !state.lock().installed.contains(&app.id) {
        return error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "OAuthException",
            "(#100) The app must be installed for the system user before it can be given a token",
        );
    }
    let scopes: Vec<&'static str> = params
        .get("scope")
        .unwrap_or("")
        .split(',')
        .filter_map(|s| KNOWN_SCOPES.iter().copied().find(|k| *k == s.trim()))
        .collect();
    let now = unix_now() + state.lock().now_offset;
    let sixty_days = params.get("set_token_expires_in_60_days") == Some("true");
    let token = scenarios::mint(app.id);
    store(
        state,
        Record {
            scenario: "minted",
            token: token.clone(),
            owner: Owner::Ours,
            token_type: "SYSTEM_USER",
            user_id: state.system_user_id.clone(),
            name: "Sandbox System User",
            issued_at: Some(now),
            expires_at: if sixty_days { now + SIXTY_DAYS } else { 0 },
            data_access_expires_at: 0,
            scopes,
            granular_to_waba: true,
            death: None,
            drops_subcode: false,
        },
    );
    Json(json!({"access_token": token.expose_secret()})).into_response()
}

async fn get_faults(Extract(state): Extract<Shared>) -> Json<Faults> {
    Json(state.lock().faults.clone())
}

async fn set_faults(Extract(state): Extract<Shared>, Json(faults): Json<Faults>) -> Json<Faults> {
    state.lock().set_faults(faults.clone());
    Json(faults)
}

async fn get_throttle(Extract(state): Extract<Shared>) -> Json<crate::Throttle> {
    Json(state.lock().throttle())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    advance_seconds: i64,
}

async fn advance_clock(Extract(state): Extract<Shared>, Json(advance): Json<Advance>) -> Response {
    if advance.advance_seconds < 0 {
        return (StatusCode::BAD_REQUEST, "the clock only moves forward\n").into_response();
    }
    let mut inner = state.lock();
    inner.clock_offset = inner.clock_offset.saturating_add(advance.advance_seconds);
    Json(json!({"offset_seconds": inner.clock_offset})).into_response()
}

async fn list_requests(Extract(state): Extract<Shared>) -> Json<Vec<Request>> {
    Json(state.lock().requests.clone())
}

async fn clear_requests(Extract(state): Extract<Shared>) -> StatusCode {
    state.lock().requests.clear();
    StatusCode::NO_CONTENT
}

async fn list_scenarios(Extract(state): Extract<Shared>) -> Json<Value> {
    let inner = state.lock();
    let list: Vec<Value> = scenarios::SCENARIOS
        .iter()
        .filter_map(|s| {
            let record = inner.records.iter().find(|r| r.scenario == s.name)?;
            Some(json!({"name": s.name, "about": s.about, "token": record.token.expose_secret()}))
        })
        .collect();
    Json(json!({
        "app_id": state.ours.id.to_string(),
        "app_secret": state.ours.secret.expose_secret(),
        "scenarios": list,
    }))
}

#[cfg(test)]
mod tests {
    use super::meta_time;

    fn at(rfc3339: &str) -> i64 {
        rfc3339.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    #[test]
    fn expiry_times_read_like_metas_in_pacific_time() {
        // The captured message of `graph-api.md` §12.
        assert_eq!(
            meta_time(at("2015-11-23T22:00:00Z")),
            "Monday, 23-Nov-15 14:00:00 PST"
        );
        assert_eq!(
            meta_time(at("2022-11-17T05:45:51Z")),
            "Wednesday, 16-Nov-22 21:45:51 PST"
        );
        assert_eq!(
            meta_time(at("2026-07-01T12:00:00Z")),
            "Wednesday, 01-Jul-26 05:00:00 PDT"
        );
        // 2026: daylight time from Sunday 8 March 02:00 PST to Sunday 1 November 02:00 PDT.
        assert_eq!(
            meta_time(at("2026-03-08T09:59:59Z")),
            "Sunday, 08-Mar-26 01:59:59 PST"
        );
        assert_eq!(
            meta_time(at("2026-03-08T10:00:00Z")),
            "Sunday, 08-Mar-26 03:00:00 PDT"
        );
        assert_eq!(
            meta_time(at("2026-11-01T08:59:59Z")),
            "Sunday, 01-Nov-26 01:59:59 PDT"
        );
        assert_eq!(
            meta_time(at("2026-11-01T09:00:00Z")),
            "Sunday, 01-Nov-26 01:00:00 PST"
        );
    }
}
