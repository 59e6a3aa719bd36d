//! Batched checks (issue 10 §4): before a round's checks run, the `/debug_token` answers of every
//! token whose app credentials are known are asked in Graph batches, grouped by app, a chunk of a
//! few hundred tokens at a time (the chunk's `POST`s all at once), and `/me` only for tokens
//! without an identity from an earlier check (by this process, or read from the state after a
//! restart or a takeover). The answers go to the renewal engine as a [`Known`], which judges each token from them
//! (`permatoken_renew::Ctx::inspect`); a token whose answer failed is simply not in it, and is asked
//! alone as before.
//!
//! Each app has a budget (`graph-api.md` §7): above [`SLOW_FROM`] percent of usage the next chunk
//! waits ([`pace`]). A rate limit of the app (code 4, and every limit but a user's or a Page's)
//! **pauses the app** at once, for all its windows and rounds ([`Budgets`] outlives the round):
//! for Meta's regain time when it names one, else from [`MIN_PAUSE`], doubling up to
//! [`MAX_PAUSE`]. Meta: "continuing to make calls will continue to increase your call count", so a
//! paused app is asked nothing; when the pause is over, **one** call (a `/debug_token` of one due
//! token) tests it, and only when that is answered do the app's checks resume; a refused test
//! doubles the pause. A user's own limit (code 17, or a Page's, 32) pauses only the tokens of that
//! user (`user_id` of their `/debug_token` answer), never the app. A paused check is deferred:
//! not a failed check, never asked one by one; it is announced unknown, so it alerts
//! (`cannot_be_checked`) only once the pause has outlasted `unknown_after`. One log line per
//! pause, per refused test and per resume, never one per token.
//!
//! Pauses are measured on the monotonic clock (the round's [`At::mono`]): a wall clock stepped
//! during a pause neither lengthens it nor ends it early. The wall times in log lines and in a
//! deferred check's message are the round's wall time plus what is left of the pause.
//!
//! Must never: keep a token (only its digest), ask a token of another app with this app's token,
//! call a paused app (its single test call aside), or count a deferred token as a failed check.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use permatoken_graph::{
    BatchOutcome, Budget, Client, Endpoint, ErrorClass, Limit, MAX_BATCH, Usage, human,
};
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
/// The first pause of a rate-limited app (or user) when Meta names no regain time, and the
/// shortest pause whatever it names.
pub(crate) const MIN_PAUSE: Duration = Duration::from_secs(60);
/// The longest pause without a regain time: each refused test doubles the pause up to it.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(3600);

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
    /// Per index into the round's checks: deferred until then on the monotonic clock (its app is
    /// rate-limited).
    pub deferred: HashMap<usize, Instant>,
}

/// The round's moment on both clocks: the monotonic one's to measure pauses on, the wall one's to
/// tell people when a pause ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At {
    /// What is recorded and shown.
    pub wall: Timestamp,
    /// What a pause is measured on.
    pub mono: Instant,
}

impl At {
    /// `until` (on the monotonic clock) on the wall clock, for a person.
    pub(crate) fn wall_of(&self, until: Instant) -> Timestamp {
        crate::schedule::wall_time(until, self.mono, self.wall)
    }
}

/// A rate limit being waited out, by an app or a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pause {
    /// Until when nothing is asked, on the monotonic clock.
    until: Instant,
    /// The pause when Meta names no regain time: doubled by each refused test, up to
    /// [`MAX_PAUSE`].
    step: Duration,
}

impl Pause {
    /// The pause a first refusal at `now` calls for: Meta's regain time, else [`MIN_PAUSE`].
    fn first(now: Instant, regain: Option<Duration>) -> Self {
        Self {
            until: later(now, regain.unwrap_or(MIN_PAUSE)),
            step: MIN_PAUSE,
        }
    }

    /// The pause a refusal at `now` calls for, after this one: Meta's regain time, else twice
    /// this one's step.
    fn again(self, now: Instant, regain: Option<Duration>) -> Self {
        let step = self.step.saturating_mul(2).min(MAX_PAUSE);
        Self {
            until: later(now, regain.unwrap_or(step)),
            step,
        }
    }

    /// How long it lasts from `now`, and until when by the wall clock, for the log.
    fn left(&self, now: At) -> (String, Timestamp) {
        let left = self.until.saturating_duration_since(now.mono);
        (human(left), now.wall_of(self.until))
    }
}

/// `now + wait`, never less than [`MIN_PAUSE`] on (an hour on, past what the clock can hold).
fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait.max(MIN_PAUSE))
        .or_else(|| now.checked_add(MAX_PAUSE))
        .unwrap_or(now)
}

/// The per-app state that outlives a round: the pauses of rate-limited apps and users, and each
/// app's last usage.
#[derive(Default)]
pub(crate) struct Budgets {
    /// Per app id. Kept once its time is over, until the test call is answered.
    apps: HashMap<String, Pause>,
    /// Per app id and user id: a user's own limit (code 17). Kept once over, until that user's
    /// next call is answered, so a refusal again doubles it.
    users: HashMap<(String, String), Pause>,
    /// The highest usage of each app's last chunk: a round goes a window at a time, and the pace
    /// of a window's first chunk follows the window before.
    usage: HashMap<String, f64>,
}

impl Budgets {
    /// Until when the tokens of `user` (of `app_id`) wait, if their user is paused at `now`.
    fn user_waits(&self, app_id: &str, user: &str, now: Instant) -> Option<Instant> {
        self.users
            .get(&(app_id.to_owned(), user.to_owned()))
            .map(|p| p.until)
            .filter(|until| *until > now)
    }

    /// `user`'s call was refused for its own limit at `now`: it waits (longer, if it waited
    /// before).
    fn pause_user(&mut self, app_id: &str, user: &str, now: Instant, regain: Option<Duration>) {
        let key = (app_id.to_owned(), user.to_owned());
        let pause = match self.users.get(&key) {
            Some(pause) => pause.again(now, regain),
            None => {
                tracing::warn!(
                    app_id = %app_id,
                    "a user of app {app_id} reached its own rate limit (code 17): only that user's tokens wait, the app's other checks go on"
                );
                Pause::first(now, regain)
            }
        };
        self.users.insert(key, pause);
    }
}

/// What a check deferred until `until` for a rate limit is, for a person: unknown, with why.
pub(crate) fn deferred(until: Timestamp) -> crate::states::Observation {
    crate::states::Observation {
        observed: crate::states::Observed::Unknown,
        message: format!(
            "not checked: Meta rate-limits its app (or its user), so its checks wait until {until}"
        ),
        fix: Some(
            "nothing, while it passes; if it lasts, the app makes too many calls an hour: fewer tokens per app, or a longer `interval`".into(),
        ),
    }
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

/// Whether `answers` show a rate limit of the app (not a user's own), and Meta's regain time if
/// it named one: `Some(regain)` to pause the app.
fn limited<T>(answers: &Answers<T>) -> Option<Option<Duration>> {
    let refused = answers.results.iter().flatten().any(is_app_limited);
    let regain = answers.usage.iter().filter_map(|u| u.regain_after).max();
    (refused || regain.is_some()).then_some(regain)
}

/// Whether `result` was refused for a rate limit.
fn is_limited<T>(result: &Result<T, permatoken_graph::Error>) -> bool {
    result
        .as_ref()
        .is_err_and(|e| e.class(Endpoint::Other) == ErrorClass::RateLimited)
}

/// Whether `result` was refused for a limit that is not only the caller's own (a user's, or a
/// Page's): the whole app waits.
fn is_app_limited<T>(result: &Result<T, permatoken_graph::Error>) -> bool {
    is_limited(result) && !is_user_limited(result)
}

/// Whether `result` was refused for the limit of the token's own user (or Page) only.
fn is_user_limited<T>(result: &Result<T, permatoken_graph::Error>) -> bool {
    result
        .as_ref()
        .is_err_and(|e| matches!(e.limit(), Some(Limit::User | Limit::Page)))
}

/// Records the usage headers last seen for `app_id`; returns the highest percentage of `usage`.
fn note_usage(counters: &Counters, app_id: &str, usage: &[Usage]) -> Option<f64> {
    counters.graph_app(app_id);
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

/// Asks the batches for `due` (by index into the round's checks) at `now` (the round's moment).
/// `last` is each token
/// digest's previous check.
pub(crate) async fn prefetch(
    due: Vec<(usize, Due)>,
    last: &HashMap<String, LastCheck>,
    budgets: &mut Budgets,
    counters: &Counters,
    now: At,
) -> Prefetch {
    let mut fetched = Prefetch {
        known: Known::new(digest),
        deferred: HashMap::new(),
    };
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
    // A user's pause long over is forgotten: a refusal much later starts from a minute again.
    budgets
        .users
        .retain(|_, p| now.mono.saturating_duration_since(p.until) < MAX_PAUSE);
    for checks in apps {
        if let Some(until) = app_waits(&checks, budgets, counters, now).await {
            for (index, _) in &checks {
                fetched.deferred.insert(*index, until);
            }
            continue;
        }
        ask_app(checks, last, budgets, counters, now, &mut fetched).await;
    }
    fetched
}

/// Until when the checks of the app of `checks` wait: `None` when it may be asked (it is not
/// paused, or its pause is over and the one call that tests it was answered).
async fn app_waits(
    checks: &[(usize, Due)],
    budgets: &mut Budgets,
    counters: &Counters,
    now: At,
) -> Option<Instant> {
    let due = &checks[0].1;
    let app_id = due.app.app_id();
    let pause = *budgets.apps.get(app_id)?;
    if pause.until > now.mono {
        tracing::debug!(app_id = %app_id, "{} check(s) wait: the app is rate-limited", checks.len());
        return Some(pause.until);
    }
    // One call, a single `/debug_token`, before the app is asked anything more.
    let budget = Budget::new(CHUNK_BUDGET);
    let probe = std::slice::from_ref(&due.tokens[0]);
    let (refusal, usage) = match due.client.debug_token_batch(&due.app, probe, &budget).await {
        Ok(outcome) => (
            outcome.results.into_iter().find_map(Result::err),
            outcome.usage,
        ),
        Err(e) => (Some(e), Vec::new()),
    };
    match note_usage(counters, app_id, &usage) {
        Some(p) => budgets.usage.insert(app_id.to_owned(), p),
        None => budgets.usage.remove(app_id),
    };
    let failed = refusal.filter(|e| {
        let class = e.class(Endpoint::Other);
        class == ErrorClass::Transient
            || (class == ErrorClass::RateLimited && e.limit() != Some(Limit::User))
    });
    if let Some(e) = failed {
        let regain = usage.iter().filter_map(|u| u.regain_after).max();
        let next = pause.again(now.mono, regain);
        budgets.apps.insert(app_id.to_owned(), next);
        let (left, until) = next.left(now);
        tracing::warn!(
            app_id = %app_id,
            "app {app_id} is still rate-limited (the one call that tests it failed: {e}): its checks wait {left} more, until {until}"
        );
        return Some(next.until);
    }
    budgets.apps.remove(app_id);
    counters.graph_paused(app_id, false);
    tracing::info!(
        app_id = %app_id,
        "app {app_id} answers again after its rate limit: its checks resume, paced by its usage"
    );
    None
}

/// Asks the batches of one app's `checks`, a chunk at a time, paced by its usage; a rate limit
/// pauses the app and defers the rest.
async fn ask_app(
    checks: Vec<(usize, Due)>,
    last: &HashMap<String, LastCheck>,
    budgets: &mut Budgets,
    counters: &Counters,
    now: At,
    fetched: &mut Prefetch,
) {
    let app_id = checks[0].1.app.app_id().to_owned();
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
    let mut paused: Option<(Pause, usize)> = None;
    for chunk in chunks {
        if let Some((pause, deferred)) = &mut paused {
            for (index, _) in &chunk {
                fetched.deferred.insert(*index, pause.until);
            }
            *deferred += chunk.len();
            continue;
        }
        let wait = pace(usage);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let asked = ask_chunk(&chunk, last, budgets, counters, now, &mut fetched.known).await;
        usage = asked.peak;
        match asked.peak {
            Some(p) => budgets.usage.insert(app_id.clone(), p),
            None => budgets.usage.remove(&app_id),
        };
        for (index, until) in asked.user_waits {
            fetched.deferred.insert(index, until);
        }
        if let Some(regain) = asked.app_limit {
            let pause = Pause::first(now.mono, regain);
            for &index in &asked.defer {
                fetched.deferred.insert(index, pause.until);
            }
            budgets.apps.insert(app_id.clone(), pause);
            counters.graph_paused(&app_id, true);
            paused = Some((pause, asked.defer.len()));
        }
    }
    if let Some((pause, count)) = paused {
        let (left, until) = pause.left(now);
        tracing::warn!(
            app_id = %app_id,
            "app {app_id} is rate-limited: it is asked nothing for {left} (until {until}), then one call tests it; {count} check(s) deferred, none asked one by one"
        );
    }
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
/// check.
fn take_identity(
    known: &mut KnownToken,
    result: Option<Result<permatoken_graph::Me, permatoken_graph::Error>>,
) {
    let Some(result) = result else { return };
    known.me = match result {
        Ok(me) => Some(Ok(Identity::from(&me))),
        Err(e) if e.class(Endpoint::Other).token_is_dead() => Some(Err(e)),
        Err(_) => None,
    };
}

/// What one chunk's batches gave, beside the answers put into `known`.
struct Asked {
    /// The checks to defer when the app is paused: every one without an answer to go on.
    defer: Vec<usize>,
    /// The checks whose user is paused (its own limit), and until when (monotonic).
    user_waits: Vec<(usize, Instant)>,
    /// `Some(regain)`: the app is rate-limited.
    app_limit: Option<Option<Duration>>,
    /// The highest usage seen.
    peak: Option<f64>,
}

/// The user a token's `/debug_token` answer names (else the token itself, its own limit's
/// holder as far as we can tell).
fn user_of(info: &permatoken_graph::TokenInfo, key: &str) -> String {
    info.user_id.clone().unwrap_or_else(|| key.to_owned())
}

/// Asks one chunk: `/debug_token` for every token, then `/me` for those without an earlier
/// identity, except for tokens whose user is paused.
async fn ask_chunk(
    chunk: &[(usize, Due)],
    last: &HashMap<String, LastCheck>,
    budgets: &mut Budgets,
    counters: &Counters,
    now: At,
    known: &mut Known,
) -> Asked {
    let (app, client) = (&chunk[0].1.app, &chunk[0].1.client);
    let (tokens, owners) = unique_tokens(chunk);
    let infos = ask_all(&tokens, |slice| {
        let (client, app) = (client.clone(), app.clone());
        async move {
            let budget = Budget::new(CHUNK_BUDGET);
            client.debug_token_batch(&app, &slice, &budget).await
        }
    })
    .await;
    let mut asked = Asked {
        defer: Vec::new(),
        user_waits: Vec::new(),
        app_limit: limited(&infos),
        peak: note_usage(counters, app.app_id(), &infos.usage),
    };
    let mut answered: Vec<(usize, String, KnownToken)> = Vec::new();
    for (i, result) in infos.results.into_iter().enumerate() {
        let key = digest(&tokens[i]);
        // Without an answer (its `POST` could not go, or it failed): checked alone, which says
        // why, unless the app is paused (below).
        let Some(Ok(info)) = result else { continue };
        let previous = last.get(&key).cloned();
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
    if asked.app_limit.is_none() {
        let on = Identities {
            due: &chunk[0].1,
            tokens: &tokens,
            counters,
            now,
        };
        ask_identities(on, &mut answered, budgets, &mut asked).await;
    }
    // The tokens of a paused user wait, whatever their own answer: nothing is asked with them.
    for (i, key, token) in &answered {
        if let Some(until) = budgets.user_waits(app.app_id(), &user_of(&token.info, key), now.mono)
        {
            asked
                .user_waits
                .extend(owners[*i].iter().map(|&o| (o, until)));
        }
    }
    let waiting: HashSet<usize> = asked.user_waits.iter().map(|(o, _)| *o).collect();
    if asked.app_limit.is_some() {
        // A limited app is asked nothing more this round: a check that would still have to ask
        // (a first `/me`, an answer that failed) waits with the rest.
        let ready: HashSet<usize> = answered
            .iter()
            .filter(|(_, _, t)| t.me.is_some() || t.last.is_some())
            .map(|(i, ..)| *i)
            .collect();
        for (i, owners) in owners.iter().enumerate() {
            if !ready.contains(&i) {
                asked
                    .defer
                    .extend(owners.iter().filter(|o| !waiting.contains(o)));
            }
        }
    }
    for (i, key, token) in answered {
        // A check whose other token waits for its user waits whole.
        if !owners[i].iter().any(|o| waiting.contains(o)) {
            known.insert(key, token);
        }
    }
    asked
}

/// Where a chunk's `/me` goes and what it may change.
struct Identities<'a> {
    due: &'a Due,
    tokens: &'a [AccessToken],
    counters: &'a Counters,
    now: At,
}

/// Asks `/me` in batches for the `answered` tokens without an earlier identity; a refusal for a
/// user's own limit pauses that user and defers its checks, one for the app's limit pauses the
/// app.
async fn ask_identities(
    on: Identities<'_>,
    answered: &mut [(usize, String, KnownToken)],
    budgets: &mut Budgets,
    asked: &mut Asked,
) {
    let app_id = on.due.app.app_id();
    // A paused user's token is not called with.
    let ask_me: Vec<usize> = (0..answered.len())
        .filter(|&a| {
            let (_, key, known) = &answered[a];
            known.last.is_none()
                && budgets
                    .user_waits(app_id, &user_of(&known.info, key), on.now.mono)
                    .is_none()
        })
        .collect();
    if ask_me.is_empty() {
        return;
    }
    let (app, client) = (&on.due.app, &on.due.client);
    let first: Vec<AccessToken> = ask_me
        .iter()
        .map(|&a| on.tokens[answered[a].0].clone())
        .collect();
    let outcome = ask_all(&first, |slice| {
        let (client, app) = (client.clone(), app.clone());
        async move {
            let budget = Budget::new(CHUNK_BUDGET);
            client.me_batch(&app, &slice, &budget).await
        }
    })
    .await;
    let seen = note_usage(on.counters, app.app_id(), &outcome.usage);
    asked.peak = [asked.peak, seen].into_iter().flatten().reduce(f64::max);
    asked.app_limit = limited(&outcome);
    let regain = outcome.usage.iter().filter_map(|u| u.regain_after).max();
    let mut refused: HashSet<String> = HashSet::new();
    let mut answered_users: Vec<String> = Vec::new();
    for (&a, result) in ask_me.iter().zip(outcome.results) {
        let (_, key, known) = &mut answered[a];
        let user = user_of(&known.info, key);
        match &result {
            // Once per user, however many of its tokens were refused.
            Some(r) if is_user_limited(r) && refused.insert(user.clone()) => {
                budgets.pause_user(app_id, &user, on.now.mono, regain);
            }
            Some(Ok(_)) => answered_users.push(user),
            _ => {}
        }
        take_identity(known, result);
    }
    // A user answered again, and refused nowhere in this chunk, is no longer paused.
    for user in answered_users {
        if !refused.contains(&user) {
            budgets.users.remove(&(app_id.to_owned(), user));
        }
    }
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
    fn a_pause_is_measured_on_the_monotonic_clock_and_told_on_the_wall_one() {
        let mono = Instant::now();
        let wall: Timestamp = "2026-12-08T01:00:00Z".parse().unwrap();
        let pause = Pause::first(mono, None);
        assert_eq!(pause.until, mono + MIN_PAUSE);
        // Half a minute later on the monotonic clock, whatever the wall clock reads then (here an
        // hour back): half a minute left, ending half a minute after the wall time it reads.
        let later = At {
            wall: wall - jiff::SignedDuration::from_hours(1),
            mono: mono + Duration::from_secs(30),
        };
        let (left, until) = pause.left(later);
        assert_eq!(left, human(Duration::from_secs(30)));
        assert_eq!(until, later.wall + jiff::SignedDuration::from_secs(30));
        // Refused again: twice the step, from then; Meta's regain time wins, never under a minute.
        let again = pause.again(later.mono, None);
        assert_eq!(again.until, later.mono + 2 * MIN_PAUSE);
        let named = pause.again(later.mono, Some(Duration::from_secs(5)));
        assert_eq!(named.until, later.mono + MIN_PAUSE);
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
