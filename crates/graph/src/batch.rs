//! Graph batch requests (`graph-api.md` §8): many `/debug_token` (or `/me`) calls in few HTTP round
//! trips, for fleets of tokens. Up to [`MAX_BATCH`] sub-requests go in one `POST /`; each answer is
//! parsed into the same typed result, with the same error classifier, as the call alone; a `null` entry
//! or a passing sub-error (5xx, `is_transient` without a rate limit) is asked again **alone** — with
//! the other such entries, never with the ones already answered — in a later batch, within the time
//! budget. A rate limit is never asked again: once one sub-request (or a whole `POST`) is refused
//! for a rate limit, the run sends nothing more, and every token not answered holds that refusal
//! (`graph-api.md` §7: a call made while limited keeps the limit in place; waiting is the caller's).
//! Answers without `headers` (`include_headers=false`) are read as well: their usage is the whole
//! answer's.
//!
//! Where the tokens travel: the app token only in the `Authorization` header; the tokens inspected
//! (`input_token`) and, for [`Client::me_batch`], each token with its `appsecret_proof` (as the
//! sub-request's `access_token`, Graph's only way to give a sub-request its own caller) only inside the
//! form body of the `POST`: never in a URL the HTTP client sends, so never in a proxy's or server's
//! access log. The body is built once per `POST` and zeroed when dropped, as for the other calls.
//!
//! Each sub-request counts against Meta's rate limits, so each is counted in
//! [`Client::request_counts`] by its outcome (a whole `POST` that failed counts once); the usage
//! headers of every batch answer are returned, for the caller to slow down above 75 % and to wait out
//! a rate limit's regain time between calls (a fleet is best inspected a few hundred tokens per call,
//! looking at [`BatchOutcome::peak_usage`] between calls).
//!
//! Must never: put a token in a URL, ask again a sub-request that was answered, send anything
//! after a rate limit, or decide policy.

use std::time::Duration;

use permatoken_secret::{AccessToken, AppToken};
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::client::{Bearer, Call, decode};
use crate::error::{Endpoint, Error, ErrorClass};
use crate::types::{DebugTokenEnvelope, Me, TokenInfo};
use crate::usage::Usage;
use crate::{Budget, Client};

/// The most sub-requests Meta takes in one batch.
pub const MAX_BATCH: usize = 50;

/// What a batch run gave: one result per token, in the order the tokens were given, and the usage
/// every batch answer reported.
#[derive(Debug)]
#[non_exhaustive]
pub struct BatchOutcome<T> {
    /// One result per token, in order: the same value, or the same error (code, subcode, type,
    /// message, trace id), as the call alone would give. A token still unanswered when the retries
    /// or the budget ran out holds the last error ([`Error::Unfinished`] for a `null`; wrapped in
    /// [`Error::OutOfTime`] when the budget ran out); one not asked (or not asked again) because
    /// the app was rate-limited holds that rate limit.
    pub results: Vec<Result<T, Error>>,
    /// The usage headers of each batch answer (and of each failed `POST` that carried them), in the
    /// order they came.
    pub usage: Vec<Usage>,
    /// How many `POST`s were sent.
    pub posts: u32,
    /// How many sub-requests were sent, the ones asked again included.
    pub sub_requests: u32,
}

impl<T> BatchOutcome<T> {
    /// The highest usage seen over the run, field by field: what to pace the next call on.
    pub fn peak_usage(&self) -> Usage {
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.usage.iter().fold(Usage::default(), |mut peak, u| {
            peak.app_percent = max(peak.app_percent, u.app_percent);
            peak.business_percent = max(peak.business_percent, u.business_percent);
            peak.regain_after = peak.regain_after.max(u.regain_after);
            peak
        })
    }
}

/// One entry of a batch answer. Deliberately no `Debug`: a body is shown only once parsed.
#[derive(Deserialize)]
struct SubAnswer {
    code: u16,
    #[serde(default)]
    headers: Vec<SubHeader>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
struct SubHeader {
    name: String,
    value: String,
}

impl SubAnswer {
    /// The usage headers of this entry, if it has any.
    fn usage(&self) -> Usage {
        let mut map = reqwest::header::HeaderMap::new();
        for header in &self.headers {
            let usage_header = ["x-app-usage", "x-business-use-case-usage"]
                .iter()
                .any(|n| header.name.eq_ignore_ascii_case(n));
            if !usage_header {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(header.name.as_bytes()),
                reqwest::header::HeaderValue::from_str(&header.value),
            ) {
                map.insert(name, value);
            }
        }
        Usage::from_headers(&map)
    }
}

impl Client {
    /// `/debug_token` for each of `tokens`, asked by the app token `app`, in batches of up to
    /// [`MAX_BATCH`]. Each result is what [`Client::debug_token`] would give for that token (a dead
    /// token is `Ok` with `is_valid: false` and its `error`). Fails as a whole only when the app token
    /// cannot travel in a header; a failed `POST` ends the run, and its error is the result of every
    /// token not yet answered.
    pub async fn debug_token_batch(
        &self,
        app: &AppToken,
        tokens: &[AccessToken],
        budget: &Budget,
    ) -> Result<BatchOutcome<TokenInfo>, Error> {
        let relative = tokens
            .iter()
            .map(|token| {
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("input_token", token.expose_secret())
                    .finish();
                Zeroizing::new(format!("debug_token?{query}"))
            })
            .collect();
        let outcome = self
            .batch::<DebugTokenEnvelope>(app, relative, "/debug_token", budget)
            .await?;
        Ok(BatchOutcome {
            results: outcome
                .results
                .into_iter()
                .map(|r| r.map(|envelope| envelope.data))
                .collect(),
            usage: outcome.usage,
            posts: outcome.posts,
            sub_requests: outcome.sub_requests,
        })
    }

    /// `/me?fields=id,name` with each of `tokens` as its own caller (with `appsecret_proof` when the
    /// client knows the app secret), in batches of up to [`MAX_BATCH`] sent with the app token `app`.
    /// Each token and its proof travel in the sub-request's relative URL, which is inside the `POST`
    /// body, never in a URL. Each result is what [`Client::me`] would give.
    pub async fn me_batch(
        &self,
        app: &AppToken,
        tokens: &[AccessToken],
        budget: &Budget,
    ) -> Result<BatchOutcome<Me>, Error> {
        let relative = tokens
            .iter()
            .map(|token| {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query
                    .append_pair("fields", "id,name")
                    .append_pair("access_token", token.expose_secret());
                if let Some(secret) = self.app_secret() {
                    query.append_pair("appsecret_proof", &secret.appsecret_proof(token));
                }
                Zeroizing::new(format!("me?{}", query.finish()))
            })
            .collect();
        self.batch::<Me>(app, relative, "/me", budget).await
    }

    /// Sends `relative` (URLs relative to the versioned root, each holding secrets) as GET
    /// sub-requests in batches, asks again what did not finish, and parses each answer as `T`.
    async fn batch<T: DeserializeOwned>(
        &self,
        app: &AppToken,
        relative: Vec<Zeroizing<String>>,
        endpoint: &'static str,
        budget: &Budget,
    ) -> Result<BatchOutcome<T>, Error> {
        // Checked once here, so that a token that cannot be sent fails the call, not each token.
        let header = Zeroizing::new(format!("Bearer {}", app.expose_secret().as_str()));
        if reqwest::header::HeaderValue::from_str(&header).is_err() {
            return Err(Error::Config(
                "the app token holds characters an HTTP header cannot carry; check FACEBOOK_APP_ID and FACEBOOK_APP_SECRET were copied whole".into(),
            ));
        }
        let (policy, request_timeout) = self.limits();
        let whole = format!("/ (a batch of {endpoint})");
        let mut results: Vec<Option<Result<T, Error>>> = std::iter::repeat_with(|| None)
            .take(relative.len())
            .collect();
        let mut tries = vec![0u32; relative.len()];
        let mut outcome = BatchOutcome {
            results: Vec::new(),
            usage: Vec::new(),
            posts: 0,
            sub_requests: 0,
        };
        let mut pending: Vec<usize> = (0..relative.len()).collect();
        let mut round = 0;
        // Once the app is refused for a rate limit, nothing more is sent in this run: every call
        // made while limited counts against the limit and keeps it in place (`graph-api.md` §7).
        let mut limited: Option<Error> = None;
        'rounds: while !pending.is_empty() {
            let mut again = Vec::new();
            for (n, chunk) in pending.chunks(MAX_BATCH).enumerate() {
                let unsent = || pending[n * MAX_BATCH..].iter().chain(&again);
                if let Some(err) = &limited {
                    not_sent(&mut results, unsent(), err);
                    break 'rounds;
                }
                let left = budget.remaining();
                if left.is_zero() {
                    out_of_time(&mut results, unsent(), Duration::ZERO, left, &whole);
                    break 'rounds;
                }
                let requests: Vec<serde_json::Value> = chunk
                    .iter()
                    .map(|&i| serde_json::json!({"method": "GET", "relative_url": relative[i].as_str()}))
                    .collect();
                let batch = Zeroizing::new(serde_json::Value::Array(requests).to_string());
                let body = Zeroizing::new(
                    url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("batch", &batch)
                        .append_pair("include_headers", "true")
                        .finish(),
                );
                let call = Call::post("", Some(Bearer::App(app)), Endpoint::Other)
                    .form("batch", "")
                    .form("include_headers", "true");
                outcome.posts += 1;
                outcome.sub_requests += chunk.len() as u32;
                let answer = self
                    .send_once::<Vec<Option<SubAnswer>>>(
                        &call,
                        self.root(),
                        Some((body.as_str(), "application/x-www-form-urlencoded")),
                        &whole,
                        request_timeout.min(left),
                    )
                    .await
                    // serde's complaint may quote the answer, which could echo a request's token.
                    .map_err(|err| match err {
                        Error::Shape { endpoint, .. } => Error::Shape {
                            endpoint,
                            reason: "not an array of `{code, headers, body}` entries".into(),
                        },
                        err => err,
                    })
                    .and_then(|answer| {
                        if answer.value.len() == chunk.len() {
                            Ok(answer)
                        } else {
                            Err(Error::Shape {
                                endpoint: whole.clone(),
                                reason: format!(
                                    "{} answers to {} requests",
                                    answer.value.len(),
                                    chunk.len()
                                ),
                            })
                        }
                    });
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(err) => {
                        self.count(&Err::<(), _>(err.clone()));
                        if let Error::Graph { usage, .. } = &err {
                            outcome.usage.push(usage.clone());
                        }
                        // Nothing in it was answered: the whole chunk is asked again when the
                        // failure passes; otherwise every token not yet answered fails so.
                        let class = err.class(Endpoint::Other);
                        for &i in chunk {
                            results[i] = Some(Err(err.clone()));
                            tries[i] += 1;
                            if class.is_retryable() && tries[i] <= policy.max_retries {
                                again.push(i);
                            }
                        }
                        if class == ErrorClass::RateLimited {
                            limited = Some(err);
                        } else if !class.is_retryable() {
                            let rest = pending[((n + 1) * MAX_BATCH).min(pending.len())..]
                                .iter()
                                .chain(&again);
                            not_sent(&mut results, rest, &err);
                            break 'rounds;
                        }
                        continue;
                    }
                };
                for (&i, entry) in chunk.iter().zip(answer.value) {
                    let result = sub_result::<T>(entry, endpoint, &answer.usage);
                    self.count(&result);
                    if let Err(err) = &result {
                        let class = err.class(Endpoint::Other);
                        if class == ErrorClass::RateLimited {
                            limited.get_or_insert_with(|| err.clone());
                        } else if class.is_retryable() {
                            tries[i] += 1;
                            if tries[i] <= policy.max_retries {
                                again.push(i);
                            }
                        }
                    }
                    results[i] = Some(result);
                }
                outcome.usage.push(answer.usage);
            }
            if let Some(err) = &limited {
                not_sent(&mut results, again.iter(), err);
                break;
            }
            if again.is_empty() {
                break;
            }
            let wait = policy.backoff(round);
            let left = budget.remaining();
            if wait >= left {
                out_of_time(&mut results, again.iter(), wait, left, endpoint);
                break;
            }
            tracing::debug!(
                endpoint,
                round,
                again = again.len(),
                wait = %crate::error::human(wait),
                "asking again what a batch left unanswered"
            );
            tokio::time::sleep(wait).await;
            pending = again;
            round += 1;
        }
        outcome.results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::Unfinished {
                        endpoint: endpoint.to_owned(),
                    })
                })
            })
            .collect();
        Ok(outcome)
    }
}

/// One entry of a batch answer as the call alone would have ended: `null` is
/// [`Error::Unfinished`]; an entry without usage headers of its own (`include_headers=false`, or
/// headers Meta left out) takes those of the whole answer.
fn sub_result<T: DeserializeOwned>(
    entry: Option<SubAnswer>,
    endpoint: &str,
    whole: &Usage,
) -> Result<T, Error> {
    let Some(sub) = entry else {
        return Err(Error::Unfinished {
            endpoint: endpoint.to_owned(),
        });
    };
    let usage = match sub.usage() {
        u if u == Usage::default() => whole.clone(),
        u => u,
    };
    match StatusCode::from_u16(sub.code) {
        Ok(status) => decode::<T>(
            endpoint,
            status,
            usage,
            sub.body.as_deref().unwrap_or("").as_bytes(),
        ),
        Err(_) => Err(Error::Shape {
            endpoint: endpoint.to_owned(),
            reason: format!("`{}` is no HTTP status", sub.code),
        }),
    }
}

/// The tokens `unsent` were not (or not again) asked because of `err`: a rate limit that stopped
/// the run, or a failure that will not pass. One asked before keeps its answer if it had one.
fn not_sent<'a, T>(
    results: &mut [Option<Result<T, Error>>],
    unsent: impl Iterator<Item = &'a usize>,
    err: &Error,
) {
    for &i in unsent {
        if !matches!(results[i], Some(Ok(_))) {
            results[i] = Some(Err(err.clone()));
        }
    }
}

/// The tokens `unanswered` gave up on: their last error, wrapped to say the budget ran out.
fn out_of_time<'a, T>(
    results: &mut [Option<Result<T, Error>>],
    unanswered: impl Iterator<Item = &'a usize>,
    wait: Duration,
    left: Duration,
    endpoint: &str,
) {
    for &i in unanswered {
        let last = match results[i].take() {
            Some(Err(err)) => err,
            Some(Ok(value)) => {
                results[i] = Some(Ok(value));
                continue;
            }
            None => Error::Unfinished {
                endpoint: endpoint.to_owned(),
            },
        };
        results[i] = Some(Err(Error::OutOfTime {
            endpoint: endpoint.to_owned(),
            wait,
            left,
            last: Box::new(last),
        }));
    }
}
