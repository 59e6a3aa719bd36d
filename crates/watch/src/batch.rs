//! Batched checks (issue 10 §4): before a round's checks run, the `/debug_token` answers of every
//! token whose app credentials are known are asked in Graph batches, grouped by app, a chunk of a
//! few hundred tokens at a time (the chunk's `POST`s all at once), and `/me` only for tokens
//! without an identity from an earlier check (by this process, or read from the state after a
//! restart or a takeover). The answers go to the renewal engine as a [`Known`], which judges each token from them
//! (`permatoken_renew::Ctx::inspect`); a token whose answer failed is simply not in it, and is asked
//! alone as before.
//!
//! Each app has a budget (`graph-api.md` §7): above [`SLOW_FROM`] percent of usage the next chunk
//! waits ([`pace`]); a chunk that comes back rate-limited stops the asking for that app, and its
//! tokens not answered wait until after the regain time (at least [`MIN_PAUSE`]): they are
//! deferred, never asked one by one (that would hammer an app already limited).
//!
//! Must never: keep a token (only its digest), ask a token of another app with this app's token,
//! or count a deferred token as a failed check.

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use permatoken_graph::{BatchOutcome, Budget, Client, Endpoint, ErrorClass, MAX_BATCH, Usage};
use permatoken_inspect::Identity;
use permatoken_renew::{Known, KnownToken, LastCheck};
use permatoken_secret::{AccessToken, AppToken};

use crate::metrics::Counters;

/// Tokens asked per chunk: a few batch `POST`s, with a look at the usage between chunks.
pub(crate) const CHUNK: usize = 250;
/// The time one chunk's batches may take, retries included.
const CHUNK_BUDGET: Duration = Duration::from_secs(60);
/// Usage (percent) above which the next chunk waits.
pub(crate) const SLOW_FROM: f64 = 75.0;
/// The longest wait between two chunks.
pub(crate) const MAX_PACE: Duration = Duration::from_secs(5);
/// The shortest wait after a rate limit, whatever the regain time said.
pub(crate) const MIN_PAUSE: Duration = Duration::from_secs(60);

/// The wait before the next chunk of an app whose last usage was `percent`: none up to
/// [`SLOW_FROM`], then growing in step with the usage to [`MAX_PACE`] at 100 % and beyond.
pub(crate) fn pace(percent: Option<f64>) -> Duration {
    match percent {
        Some(p) if p > SLOW_FROM => {
            MAX_PACE.mul_f64(((p - SLOW_FROM) / (100.0 - SLOW_FROM)).min(1.0))
        }
        _ => Duration::ZERO,
    }
}

/// The token digest a [`Known`] is keyed by: the hex SHA-256 the state store knows tokens by.
pub(crate) fn digest(token: &AccessToken) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.expose_secret().as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// One due token's check, as far as batching is concerned.
pub(crate) struct Due {
    /// Its app id and app token.
    pub app: AppToken,
    /// The Graph client for its app.
    pub client: Client,
    /// Its tokens (primary and backups) that belong to the app: a token of another app is checked
    /// alone.
    pub tokens: Vec<AccessToken>,
}

impl Due {
    /// The batching of `job`'s check: `None` when its app's id or secret is unknown (its check
    /// asks alone, and says what is missing) or none of its tokens belongs to the app.
    pub(crate) fn of(job: &crate::check::Job) -> Option<Self> {
        let (Some(id), Some(secret)) = (&job.app.app_id, &job.app.app_secret) else {
            return None;
        };
        // A token of another app is checked alone, by itself (`check`'s mismatch); a value that is
        // no token is sent nowhere (its check says so).
        let tokens: Vec<AccessToken> = std::iter::once(&job.spec.primary)
            .chain(&job.spec.backups)
            .map(|s| &s.value)
            .filter(|t| t.has_meta_shape())
            .filter(|t| t.embedded_app_id().is_none_or(|e| e.to_string() == *id))
            .cloned()
            .collect();
        (!tokens.is_empty()).then(|| Self {
            app: AppToken::new(id.clone(), secret.clone()),
            client: job.client.clone(),
            tokens,
        })
    }
}

/// What a round's batches gave.
pub(crate) struct Prefetch {
    /// The answers, by token digest.
    pub known: Known,
    /// Per index into the round's checks: deferred until then (its app is rate-limited).
    pub deferred: HashMap<usize, Timestamp>,
}

/// The per-app state that outlives a round: when a paused app may be asked again.
#[derive(Default)]
pub(crate) struct Budgets {
    paused: HashMap<String, Timestamp>,
    /// The highest usage of each app's last chunk: a round goes a window at a time, and the pace
    /// of a window's first chunk follows the window before.
    usage: HashMap<String, f64>,
}

/// What the batch `POST`s of a chunk gave, put together in the order of its tokens.
struct Answers<T> {
    /// Per token: its answer; `None` when its `POST`s could not be sent (the check asks alone).
    results: Vec<Option<Result<T, permatoken_graph::Error>>>,
    /// The usage headers of every answer.
    usage: Vec<Usage>,
}

/// Asks `tokens` with `ask` in batches of [`MAX_BATCH`], all at once: a batch's sub-requests
/// count against the app's limits one by one whatever the pace, so nothing is saved by sending
/// one `POST` after another, and a window's wall time is one round trip, not five. A `POST` whose
/// app token cannot travel (the whole call refused) leaves its tokens without an answer.
async fn ask_all<T, F, Fut>(tokens: &[AccessToken], ask: F) -> Answers<T>
where
    T: Send + 'static,
    F: Fn(Vec<AccessToken>) -> Fut,
    Fut: std::future::Future<Output = Result<BatchOutcome<T>, permatoken_graph::Error>>
        + Send
        + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for (n, slice) in tokens.chunks(MAX_BATCH).enumerate() {
        let asked = ask(slice.to_vec());
        set.spawn(async move { (n, asked.await) });
    }
    let mut slices: Vec<Option<BatchOutcome<T>>> =
        std::iter::repeat_with(|| None).take(set.len()).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((n, Ok(outcome))) => slices[n] = Some(outcome),
            Ok((_, Err(e))) => tracing::warn!("cannot ask in a batch: {e}"),
            Err(e) => tracing::warn!("a batch stopped before it finished ({e})"),
        }
    }
    let mut answers = Answers {
        results: Vec::with_capacity(tokens.len()),
        usage: Vec::new(),
    };
    for (slice, outcome) in tokens.chunks(MAX_BATCH).zip(slices) {
        match outcome {
            Some(outcome) => {
                answers.usage.extend(outcome.usage);
                answers
                    .results
                    .extend(outcome.results.into_iter().map(Some));
            }
            None => answers.results.extend(slice.iter().map(|_| None)),
        }
    }
    answers
}

/// Whether `answers` show a rate limit, and for how long to stop: Meta's regain time, at least
/// [`MIN_PAUSE`].
fn limited<T>(answers: &Answers<T>) -> Option<Duration> {
    let refused = answers.results.iter().flatten().any(is_limited);
    let regain = answers.usage.iter().filter_map(|u| u.regain_after).max();
    (refused || regain.is_some()).then(|| regain.unwrap_or_default().max(MIN_PAUSE))
}

fn is_limited<T>(result: &Result<T, permatoken_graph::Error>) -> bool {
    result
        .as_ref()
        .is_err_and(|e| e.class(Endpoint::Other) == ErrorClass::RateLimited)
}

/// Records the usage headers last seen for `app_id`; returns the highest percentage of `usage`.
fn note_usage(counters: &Counters, app_id: &str, usage: &[Usage]) -> Option<f64> {
    if let Some(p) = usage.iter().rev().find_map(|u| u.app_percent) {
        counters.graph_usage(app_id, "app", p);
    }
    if let Some(p) = usage.iter().rev().find_map(|u| u.business_percent) {
        counters.graph_usage(app_id, "business", p);
    }
    usage
        .iter()
        .flat_map(|u| [u.app_percent, u.business_percent])
        .flatten()
        .reduce(f64::max)
}

/// Asks the batches for `due` (by index into the round's checks) at `now`. `last` is each token
/// digest's previous check.
pub(crate) async fn prefetch(
    due: Vec<(usize, Due)>,
    last: &HashMap<String, LastCheck>,
    budgets: &mut Budgets,
    counters: &Counters,
    now: Timestamp,
) -> Prefetch {
    let mut known = Known::new(digest);
    let mut deferred = HashMap::new();
    // By app, in the round's order.
    let mut apps: Vec<Vec<(usize, Due)>> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (index, check) in due {
        let slot = *by_id
            .entry(check.app.app_id().to_owned())
            .or_insert_with(|| {
                apps.push(Vec::new());
                apps.len() - 1
            });
        apps[slot].push((index, check));
    }
    for checks in apps {
        let app_id = checks[0].1.app.app_id().to_owned();
        match budgets.paused.get(&app_id) {
            Some(until) if *until > now => {
                for (index, _) in &checks {
                    deferred.insert(*index, *until);
                }
                tracing::info!(
                    app_id = %app_id,
                    "{} check(s) of app {app_id} wait until {until}: the app is rate-limited",
                    checks.len()
                );
                continue;
            }
            Some(_) => {
                budgets.paused.remove(&app_id);
                counters.graph_paused(&app_id, false);
            }
            None => {}
        }
        let mut chunks: Vec<Vec<(usize, Due)>> = vec![Vec::new()];
        let mut size = 0;
        for check in checks {
            if size >= CHUNK {
                chunks.push(Vec::new());
                size = 0;
            }
            size += check.1.tokens.len();
            chunks.last_mut().expect("one chunk at least").push(check);
        }
        let mut usage = budgets.usage.get(&app_id).copied();
        let mut pause: Option<Duration> = None;
        let deferred_before = deferred.len();
        for chunk in chunks {
            if let Some(wait) = pause {
                let until = now + SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX);
                for (index, _) in &chunk {
                    deferred.insert(*index, until);
                }
                continue;
            }
            let wait = pace(usage);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let (found, limit, peak) = ask_chunk(&chunk, last, &mut known, counters).await;
            usage = peak;
            match peak {
                Some(p) => budgets.usage.insert(app_id.clone(), p),
                None => budgets.usage.remove(&app_id),
            };
            if let Some(wait) = limit {
                let until = now + SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX);
                for index in found {
                    deferred.insert(index, until);
                }
                budgets.paused.insert(app_id.clone(), until);
                counters.graph_paused(&app_id, true);
                pause = Some(wait);
            }
        }
        if let Some(wait) = pause {
            let count = deferred.len() - deferred_before;
            tracing::warn!(
                app_id = %app_id,
                "app {app_id} is rate-limited: its checks not yet answered wait {} ({count} deferred this round), and are not asked one by one",
                permatoken_graph::human(wait)
            );
        }
    }
    Prefetch { known, deferred }
}

/// The chunk's tokens, each once even when it stands under two names, and the checks (indexes into
/// the round's) each belongs to.
fn unique_tokens(chunk: &[(usize, Due)]) -> (Vec<AccessToken>, Vec<Vec<usize>>) {
    let mut tokens: Vec<AccessToken> = Vec::new();
    let mut keys: HashMap<String, usize> = HashMap::new();
    let mut owners: Vec<Vec<usize>> = Vec::new();
    for (index, check) in chunk {
        for token in &check.tokens {
            let at = *keys.entry(digest(token)).or_insert_with(|| {
                tokens.push(token.clone());
                owners.push(Vec::new());
                tokens.len() - 1
            });
            owners[at].push(*index);
        }
    }
    (tokens, owners)
}

/// Takes a `/me` answer (`None`: its `POST` could not go) into `known`. An answer, or a dead
/// token's refusal, is what `/me` alone would give; any other failure is asked again alone by the
/// check. Returns whether it was refused for the rate limit.
fn take_identity(
    known: &mut KnownToken,
    result: Option<Result<permatoken_graph::Me, permatoken_graph::Error>>,
) -> bool {
    let Some(result) = result else { return false };
    let limited = is_limited(&result);
    known.me = match result {
        Ok(me) => Some(Ok(Identity::from(&me))),
        Err(e) if e.class(Endpoint::Other).token_is_dead() => Some(Err(e)),
        Err(_) => None,
    };
    limited
}

/// Asks one chunk: `/debug_token` for every token, then `/me` for those without an earlier
/// identity. Returns the checks to defer (a token refused for the rate limit), the pause the
/// chunk called for, and its highest usage.
async fn ask_chunk(
    chunk: &[(usize, Due)],
    last: &HashMap<String, LastCheck>,
    known: &mut Known,
    counters: &Counters,
) -> (Vec<usize>, Option<Duration>, Option<f64>) {
    let (app, client) = (&chunk[0].1.app, &chunk[0].1.client);
    let (tokens, owners) = unique_tokens(chunk);
    let mut defer: Vec<usize> = Vec::new();
    let infos = ask_all(&tokens, |slice| {
        let (client, app) = (client.clone(), app.clone());
        async move {
            let budget = Budget::new(CHUNK_BUDGET);
            client.debug_token_batch(&app, &slice, &budget).await
        }
    })
    .await;
    let mut peak = note_usage(counters, app.app_id(), &infos.usage);
    let mut pause = limited(&infos);
    let mut answered: Vec<(usize, String, KnownToken)> = Vec::new();
    let mut ask_me: Vec<usize> = Vec::new();
    for (i, result) in infos.results.into_iter().enumerate() {
        let key = digest(&tokens[i]);
        // Without an answer (its `POST` could not go): checked alone, which says why.
        let Some(result) = result else { continue };
        match result {
            Ok(info) => {
                let previous = last.get(&key).cloned();
                if previous.is_none() {
                    ask_me.push(answered.len());
                }
                answered.push((
                    i,
                    key,
                    KnownToken {
                        info,
                        me: None,
                        last: previous,
                    },
                ));
            }
            Err(e) if e.class(Endpoint::Other) == ErrorClass::RateLimited => {
                defer.extend(&owners[i]);
            }
            // Not known: asked alone by the check, which retries it.
            Err(_) => {}
        }
    }
    if pause.is_none() && !ask_me.is_empty() {
        let first: Vec<AccessToken> = ask_me
            .iter()
            .map(|&a| tokens[answered[a].0].clone())
            .collect();
        let outcome = ask_all(&first, |slice| {
            let (client, app) = (client.clone(), app.clone());
            async move {
                let budget = Budget::new(CHUNK_BUDGET);
                client.me_batch(&app, &slice, &budget).await
            }
        })
        .await;
        let seen = note_usage(counters, app.app_id(), &outcome.usage);
        peak = [peak, seen].into_iter().flatten().reduce(f64::max);
        pause = limited(&outcome);
        for (&a, result) in ask_me.iter().zip(outcome.results) {
            let (token, _, known) = &mut answered[a];
            if take_identity(known, result) {
                defer.extend(&owners[*token]);
            }
        }
    }
    if pause.is_some() {
        // A limited app is asked nothing more this round: a check that would still have to ask
        // (a first `/me`, an answer that failed) waits with the rest.
        let ready: std::collections::HashSet<usize> = answered
            .iter()
            .filter(|(_, _, t)| t.me.is_some() || t.last.is_some())
            .map(|(i, ..)| *i)
            .collect();
        for (i, owners) in owners.iter().enumerate() {
            if !ready.contains(&i) {
                defer.extend(owners);
            }
        }
    }
    for (_, key, token) in answered {
        known.insert(key, token);
    }
    (defer, pause, peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_grows_with_the_usage_above_three_quarters_and_is_capped() {
        assert_eq!(pace(None), Duration::ZERO);
        assert_eq!(pace(Some(0.0)), Duration::ZERO);
        assert_eq!(pace(Some(75.0)), Duration::ZERO);
        let at = |p| pace(Some(p));
        assert!(at(80.0) > Duration::ZERO);
        assert!(at(80.0) < at(90.0) && at(90.0) < at(99.0));
        assert_eq!(at(100.0), MAX_PACE);
        assert_eq!(at(250.0), MAX_PACE);
        assert_eq!(at(f64::INFINITY), MAX_PACE);
        assert_eq!(at(f64::NAN), Duration::ZERO);
        assert_eq!(at(87.5), MAX_PACE / 2);
    }

    #[test]
    fn the_digest_is_the_stores_key() {
        let token = AccessToken::new("PERMATOKENTEST-digest");
        let hex = digest(&token);
        assert_eq!(hex.len(), 64);
        assert!(permatoken_state::TokenKey::parse(&hex).is_ok());
        assert_ne!(hex, digest(&AccessToken::new("PERMATOKENTEST-other")));
    }
}
