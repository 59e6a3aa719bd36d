//! Batch requests (`graph-api.md` §8): `POST /` (or `/vNN.N/`) with a form body holding `batch`, a
//! JSON array of at most 50 `{"method", "relative_url", "body"}` requests, answered as an array of
//! `{"code", "headers", "body"}` (the body a JSON *string*), `null` for one that did not finish in time.
//!
//! Each sub-request is answered by the same handlers as the call alone ([`api::dispatch`]), so
//! statuses, bodies and `appsecret_proof` checks cannot drift apart; each is logged and takes the
//! faults as a call alone would (each counts against Meta's limits). The batch itself takes only the
//! latency: one HTTP answer, one wait.
//!
//! Must never: answer a sub-request by other rules than the call alone, or drop one from the log.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::{self, Fault, Params};
use crate::{Request, State};

/// Meta's limit on requests in one batch.
pub(crate) const MAX_BATCH: usize = 50;

/// The most bytes of one sub-answer's body the sandbox reads back from its own handler (its own
/// answers are a few KiB).
const MAX_SUB_BODY: usize = 1024 * 1024;

pub(crate) async fn answer(
    state: &State,
    uri: &Uri,
    headers: &HeaderMap,
    authorization: Option<String>,
    body: &Bytes,
) -> Response {
    let (latency, usage, omit_headers) = {
        let mut inner = state.lock();
        inner.requests.push(Request {
            method: "POST".to_owned(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            authorization: authorization.clone(),
            body: String::from_utf8_lossy(body).into_owned(),
            batched: false,
        });
        (
            Duration::from_millis(inner.faults.latency_ms),
            inner.faults.app_usage_percent,
            inner.faults.batch_headers_omitted,
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let params = Params::new(uri.query(), headers, body);
    let top_token = api::bearer_of(authorization.as_deref(), &params);
    let Some(batch) = params.get("batch") else {
        return api::error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "OAuthException",
            "(#100) The parameter batch is required",
        );
    };
    let Ok(requests) = serde_json::from_str::<Vec<Value>>(batch) else {
        return api::error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "GraphBatchException",
            "(#100) The parameter batch must be a JSON array of requests",
        );
    };
    if requests.len() > MAX_BATCH {
        return api::error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "GraphBatchException",
            "Too many requests in batch message. Maximum batch size is 50",
        );
    }
    let include_headers = params.get("include_headers") != Some("false") && !omit_headers;
    // `/v26.0/` → `/v26.0`: a relative URL without a version of its own takes the batch's.
    let prefix = uri.path().trim_end_matches('/');
    let mut answers = Vec::with_capacity(requests.len());
    let mut limited: Option<Limited> = None;
    for request in &requests {
        let (answer, limit) = sub_answer(
            state,
            request,
            prefix,
            authorization.as_deref(),
            top_token.as_deref(),
            include_headers,
        )
        .await;
        if limit.is_some() {
            limited = limit;
        }
        answers.push(answer);
    }
    // The usage headers of the whole answer: at the limit when a sub-request hit it.
    let mut response = Json(Value::Array(answers)).into_response();
    let limit = match limited {
        Some(Limited::Counted(regain)) => api::rate_limited(regain),
        Some(Limited::Throttled) => api::throttled(),
        None => {
            response
                .headers_mut()
                .insert("x-app-usage", api::app_usage(usage));
            return response;
        }
    };
    for name in ["x-app-usage", "x-business-use-case-usage"] {
        if let Some(value) = limit.headers().get(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// The rate limit a sub-request met.
enum Limited {
    /// The `rate_limits` fault, with its regain time in minutes.
    Counted(Option<u32>),
    /// The app's throttle: no regain time.
    Throttled,
}

/// One sub-request's answer, and the app's rate limit when it met one.
async fn sub_answer(
    state: &State,
    request: &Value,
    prefix: &str,
    authorization: Option<&str>,
    top_token: Option<&str>,
    include_headers: bool,
) -> (Value, Option<Limited>) {
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let relative = request
        .get("relative_url")
        .and_then(Value::as_str)
        .unwrap_or("");
    let form = request.get("body").and_then(Value::as_str);
    let (path, query) = match relative.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (relative, None),
    };
    let path = format!("/{}", path.trim_start_matches('/'));
    let full_path = if api::version_major(&path).is_some() {
        path
    } else {
        format!("{prefix}{path}")
    };
    let params = Params::from_parts(query, form);
    // A token in the relative URL is this sub-request's caller, whatever the batch's.
    let bearer = params
        .get("access_token")
        .map(str::to_owned)
        .or_else(|| top_token.map(str::to_owned));
    let fault = {
        let mut inner = state.lock();
        inner.requests.push(Request {
            method: method.clone(),
            path: full_path.clone(),
            query: query.map(str::to_owned),
            authorization: authorization.map(str::to_owned),
            body: form.unwrap_or("").to_owned(),
            batched: true,
        });
        api::take_fault(&mut inner, true, api::is_app_token(bearer.as_deref()))
    };
    let mut limit = None;
    let response = match fault {
        Some(Fault::Null) => return (Value::Null, None),
        Some(Fault::Outage) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Some(Fault::RateLimit(minutes)) => {
            limit = Some(Limited::Counted(minutes));
            api::rate_limited(minutes)
        }
        Some(Fault::Throttled) => {
            limit = Some(Limited::Throttled);
            api::throttled()
        }
        Some(Fault::UserLimit) => api::user_limited(),
        Some(Fault::Truncate) | None => {
            let Ok(method) = Method::from_bytes(method.as_bytes()) else {
                return (
                    json!({"code": 400, "headers": [], "body": r#"{"error":{"message":"(#100) Unsupported method","type":"GraphBatchException","code":100}}"#}),
                    None,
                );
            };
            api::dispatch(
                state,
                &method,
                &full_path,
                bearer.as_deref(),
                &params,
                form.unwrap_or("").as_bytes(),
            )
        }
    };
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_SUB_BODY)
        .await
        .unwrap_or_default();
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if let Some(Fault::Truncate) = fault {
        let mut cut = text.len() / 2;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let mut answer = json!({"code": parts.status.as_u16()});
    if include_headers {
        let headers: Vec<Value> = parts
            .headers
            .iter()
            .filter(|(name, _)| *name != axum::http::header::CONTENT_LENGTH)
            .filter_map(|(name, value)| {
                let value = HeaderValue::to_str(value).ok()?;
                Some(json!({"name": header_name(name.as_str()), "value": value}))
            })
            .collect();
        answer["headers"] = Value::Array(headers);
    }
    answer["body"] = Value::String(text);
    (answer, limit)
}

/// `content-type` → `Content-Type`, as Meta's batch answers spell header names.
fn header_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}
