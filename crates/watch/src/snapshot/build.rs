//! Building a [`Snapshot`] from the state store and what the daemon remembers ([`Sources`]).
//!
//! A fleet's snapshot is built while the previous one is still served: what is read for it is taken
//! apart as it is used, and each store read is dropped before the next one comes in (10,000 tokens'
//! checks, announcements and histories all at once made most of the daemon's peak memory). No
//! history: `/api/tokens` reads the chart points of the page it answers from the store when asked,
//! so that no snapshot holds 200 points of each of 10,000 tokens.
//!
//! Must never: write to the store, or show a route's URL (only its name and health).

use std::collections::HashMap;

use jiff::Timestamp;
use permatoken_state as store;

use super::{
    Event, EventKind, Role, RouteHealth, Snapshot, StateProblem, Status, TokenState, TokenView,
};
use crate::config::{Route, TokenConfig};
use crate::memory::Memory;
use crate::records::status_from_store;
use crate::schedule::{Schedule, wall_time};

/// Events on the page.
const RECENT_EVENTS: u32 = 50;

/// What a snapshot is built from, besides the store.
pub(crate) struct Sources<'a> {
    /// The state.
    pub(crate) store: &'a store::Store,
    /// The tokens watched now, in the configuration's order.
    pub(crate) tokens: &'a [TokenConfig],
    /// The alert routes.
    pub(crate) routes: &'a [Route],
    /// The backups, keys and permissions of the tokens' last checks.
    pub(crate) memory: &'a Memory,
    /// When each token is checked next, on the monotonic clock.
    pub(crate) schedule: &'a Schedule,
    /// Now on the wall clock and the monotonic one, read together: the next checks are shown on
    /// the wall clock of now.
    pub(crate) clocks: (Timestamp, std::time::Instant),
    /// When the process started.
    pub(crate) started_at: Timestamp,
    /// Whether this replica leads.
    pub(crate) leader: bool,
    /// When the last round finished.
    pub(crate) last_round_at: Option<Timestamp>,
    /// Whether, since when and why the state cannot be written.
    pub(crate) unwritable: Option<crate::delivery::Unwritable>,
    /// The announced states the state does not have yet (decided while it could not be written).
    pub(crate) unrecorded: HashMap<String, TokenState>,
}

/// The picture the endpoint serves at `now`.
pub(crate) async fn build(from: &Sources<'_>, now: Timestamp) -> Result<Snapshot, store::Error> {
    let tokens = token_views(from).await?;
    let events = from
        .store
        .recent_events(RECENT_EVENTS)
        .await?
        .into_iter()
        .map(event)
        .collect();
    let health = from.store.route_health().await?;
    let routes = from
        .routes
        .iter()
        .map(|r| route_health(r, health.iter().find(|h| h.route == r.name)))
        .collect();
    Ok(Snapshot {
        generated_at: now.as_second(),
        started_at: from.started_at.as_second(),
        leader: from.leader,
        round_finished: from.last_round_at.is_some(),
        last_round_at: from.last_round_at.map(|t| t.as_second()),
        waiting_for_state: None,
        tokens,
        events,
        routes,
        state_unwritable: from.unwritable.as_ref().map(|u| StateProblem {
            since: u.since.as_second(),
            reason: u.reason.clone(),
        }),
    })
}

fn event(e: store::Event) -> Event {
    Event {
        at: e.at.as_second(),
        kind: match e.kind {
            store::EventKind::Renewal | store::EventKind::RenewalFailed => EventKind::Renewal,
            store::EventKind::Failover => EventKind::Failover,
            store::EventKind::Alert => EventKind::Alert,
            _ => EventKind::Reload,
        },
        token: e.token_name,
        text: e.detail,
    }
}

fn route_health(route: &Route, h: Option<&store::RouteHealth>) -> RouteHealth {
    RouteHealth {
        name: route.name.clone(),
        last_result: h.map(|h| match &h.last_error {
            Some(e) if h.failed > 0 || h.pending > 0 => e.clone(),
            _ => "delivered".to_owned(),
        }),
        last_at: h.and_then(|h| h.last_at).map(|t| t.as_second()),
        // Failing only while the latest attempt failed.
        failing_since: h
            .filter(|h| h.last_error.is_some())
            .and_then(|h| h.failing_since)
            .map(|t| t.as_second()),
    }
}

/// Every watched token, primaries each followed by its backups: from the latest checks and the
/// announced states.
async fn token_views(from: &Sources<'_>) -> Result<Vec<TokenView>, store::Error> {
    let mut announced: HashMap<String, TokenState> = from
        .store
        .all_announced()
        .await?
        .into_iter()
        .filter_map(|a| {
            let state = TokenState::parse(&a.announcement?.state)?;
            Some((a.token_name, state))
        })
        .collect();
    // Decided, though not yet recorded: the page shows what the alerts said.
    announced.extend(from.unrecorded.iter().map(|(n, s)| (n.clone(), *s)));
    let latest = from.store.latest_statuses().await?;
    let mut newest: HashMap<&str, &store::LatestStatus> = HashMap::with_capacity(latest.len());
    for l in &latest {
        let Some(check) = &l.check else { continue };
        let slot = newest.entry(l.name.as_str()).or_insert(l);
        if slot
            .check
            .as_ref()
            .is_none_or(|c| c.checked_at < check.checked_at)
        {
            *slot = l;
        }
    }
    let by_key: HashMap<&store::TokenKey, &store::LatestStatus> =
        latest.iter().map(|l| (&l.key, l)).collect();
    let count = from.tokens.len()
        + from
            .tokens
            .iter()
            .map(|t| from.memory.backups(&t.name).len())
            .sum::<usize>();
    let mut tokens = Vec::with_capacity(count);
    let view = |name: &str, role: Role| {
        let decided = announced.get(name).copied();
        let state = decided.unwrap_or(TokenState::CannotBeChecked);
        let latest = from
            .memory
            .key(name)
            .and_then(|key| by_key.get(key))
            .or_else(|| newest.get(name));
        let check = latest.and_then(|l| l.check.as_ref());
        let primary_name = match &role {
            Role::Primary => name,
            Role::Backup(of) => of.as_str(),
        };
        let reason = from.memory.reason(name).cloned();
        TokenView {
            state,
            announced: decided.is_some(),
            // A check that could not tell writes no check: the last one that could is not news.
            status: match check {
                Some(c) if !reason.as_ref().is_some_and(|r| r.unknown) => {
                    status_from_store(c.status)
                }
                _ => Status::Unknown,
            },
            valid: check.and_then(|c| c.valid).unwrap_or(false),
            kind: check.and_then(|c| c.kind.clone()).unwrap_or_default(),
            fingerprint: latest.map(|l| l.fingerprint.clone()).unwrap_or_default(),
            expires_at: check.and_then(|c| c.expires_at).map(|t| t.as_second()),
            never_expires: check.is_some_and(|c| c.never_expires),
            missing_permissions: check.map(|c| c.missing_scopes.clone()).unwrap_or_default(),
            scopes: from.memory.scope_list(name),
            last_check: check.map(|c| c.checked_at.as_second()),
            next_check: from
                .schedule
                .scheduled(primary_name)
                .map(|at| wall_time(at, from.clocks.1, from.clocks.0).as_second()),
            reason,
            name: name.to_owned(),
            role,
        }
    };
    for t in from.tokens {
        tokens.push(view(&t.name, Role::Primary));
        for b in from.memory.backups(&t.name) {
            tokens.push(view(b, Role::Backup(t.name.clone())));
        }
    }
    Ok(tokens)
}
