//! `/metrics`: the exposition of a [`Snapshot`] (gauges, per token) and of the [`Counters`] the
//! scheduler increments as things happen, in the Prometheus text format 0.0.4 or OpenMetrics 1.0
//! (`metrics/format.rs`: which one the `Accept` header asks for, and the encoder of both).
//!
//! Names follow cert-manager's expiry metrics; each token's series carry `token="<name>"`. A token that
//! never expires has no `permatoken_token_expiration_timestamp_seconds` sample at all, so a rule such
//! as `permatoken_token_expiration_timestamp_seconds - time() < 14*86400` never fires on it.
//! `permatoken_token_status{status}` has a sample for each of [`STATUSES`] per token, 1 for its
//! state now, as cert-manager's `certmanager_certificate_ready_status{condition}` does. Counters are
//! there at 0 from the start (per token watched, per alert route, per Graph outcome), so that
//! `increase()` sees their first step.
//!
//! The text is written straight from the snapshot and the counters, a chunk of some 64 KiB at a
//! time sent as it is written (`metrics/exposition.rs`): a scrape of 100,000 tokens holds one chunk,
//! not the whole text (over 100 MB) nor anything per token.
//!
//! Must never: put a secret in a label (no URL, no token: names and fingerprints only).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use crate::snapshot::Snapshot;

mod exposition;
mod format;

pub use exposition::{Exposition, render};
pub use format::{Format, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};

/// The values of `permatoken_token_status`'s `status` label, in the order `/metrics` lists them:
/// the states a token is announced in ([`crate::states::State::ALL`]), and `unknown` while none
/// was decided yet (never checked, or every check so far could not tell for less than
/// `unknown_after`).
pub const STATUSES: [&str; 7] = [
    "ok",
    "expiring",
    "critical",
    "dead",
    "failed_over",
    "cannot_be_checked",
    "unknown",
];

/// The `result` of a check ([`Counters::check`]): each token's `permatoken_checks_total` has them
/// all from the start.
pub const CHECK_RESULTS: [&str; 5] = ["ok", "warning", "critical", "unknown", "error"];

/// The `result` of an alert's delivery ([`Counters::alert`]), there for each route from the start.
pub const ALERT_RESULTS: [&str; 2] = ["delivered", "failed"];

/// The `outcome` of a Graph request ([`permatoken_graph::RequestCounts`]), there from the start.
pub const GRAPH_OUTCOMES: [&str; 4] = ["ok", "api_error", "rate_limited", "unreachable"];

/// The counters, shared by the scheduler (which increments) and the endpoint (which reads). Cloning
/// shares them. They start at zero with the process, as Prometheus expects of counters.
#[derive(Debug, Clone, Default)]
pub struct Counters(Arc<Mutex<CounterTotals>>);

/// The counters' values at one instant; `/api/tokens` serves them as `counters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CounterTotals {
    /// Checks by token and result.
    #[serde(serialize_with = "pairs")]
    pub checks: BTreeMap<(String, String), u64>,
    /// Renewals by token.
    pub renewals: BTreeMap<String, u64>,
    /// Failovers by (primary) token.
    pub failovers: BTreeMap<String, u64>,
    /// Alerts by route and result.
    #[serde(serialize_with = "pairs")]
    pub alerts: BTreeMap<(String, String), u64>,
    /// Graph API requests by outcome.
    pub graph_requests: BTreeMap<String, u64>,
    /// The last usage percent seen per app id and header (`app`: `X-App-Usage`, `business`:
    /// `X-Business-Use-Case-Usage`), rounded up. Gauges, not counters: not in `/api/tokens`.
    #[serde(skip)]
    pub graph_usage: BTreeMap<(String, String), i64>,
    /// Per app id: whether its batches wait out a rate limit's regain time now.
    #[serde(skip)]
    pub graph_paused: BTreeMap<String, bool>,
    /// What `permatoken_leader` says; see [`LeaderGauge`].
    #[serde(skip)]
    pub leader: LeaderGauge,
    /// How long the last round took; `None` before the first.
    #[serde(skip)]
    pub round_took: Option<Duration>,
    /// The shortest `interval` of the tokens watched (set at start and at each round).
    #[serde(skip)]
    pub shortest_interval: Option<Duration>,
}

/// Where `permatoken_leader` comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LeaderGauge {
    /// No election (one `watch` on its state file): the snapshot's `leader`, always true.
    #[default]
    Snapshot,
    /// Replicas elect a leader: this one leads until this instant, the start of its last heartbeat
    /// that succeeded plus the lease (`None`: it stands by). Read at each scrape, so the gauge
    /// turns 0 within the lease of the last good heartbeat even while every later one hangs and
    /// no snapshot can be rebuilt (the database down).
    Until(Option<std::time::Instant>),
}

impl LeaderGauge {
    /// Whether this replica may say it leads now.
    fn leads(self, snapshot: &Snapshot) -> bool {
        match self {
            Self::Snapshot => snapshot.leader,
            Self::Until(until) => until.is_some_and(|t| std::time::Instant::now() < t),
        }
    }
}

fn pairs<S: serde::Serializer>(
    map: &BTreeMap<(String, String), u64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    // JSON keys are strings only: a list of `[a, b, count]` keeps both labels apart.
    s.collect_seq(map.iter().map(|((a, b), n)| (a, b, n)))
}

impl Counters {
    fn lock(&self) -> MutexGuard<'_, CounterTotals> {
        // A panic elsewhere must not stop the counting.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A check of `token` ended with `result` (one of [`CHECK_RESULTS`]): the check's status (`ok`,
    /// `warning`, `critical`, `unknown`) or `error` when it could not run.
    pub fn check(&self, token: &str, result: &str) {
        *self
            .lock()
            .checks
            .entry((token.to_owned(), result.to_owned()))
            .or_default() += 1;
    }

    /// `token` was renewed.
    pub fn renewal(&self, token: &str) {
        *self.lock().renewals.entry(token.to_owned()).or_default() += 1;
    }

    /// A backup replaced `token`.
    pub fn failover(&self, token: &str) {
        *self.lock().failovers.entry(token.to_owned()).or_default() += 1;
    }

    /// An alert was handed to `route`, with `result` (`delivered`, `failed`, …).
    pub fn alert(&self, route: &str, result: &str) {
        *self
            .lock()
            .alerts
            .entry((route.to_owned(), result.to_owned()))
            .or_default() += 1;
    }

    /// `count` more Graph API requests ended with `outcome` (`ok`, `api_error`, `rate_limited`,
    /// `unreachable`: [`permatoken_graph::RequestCounts`]). A zero still makes the series exist.
    pub fn graph_requests(&self, outcome: &str, count: u64) {
        *self
            .lock()
            .graph_requests
            .entry(outcome.to_owned())
            .or_default() += count;
    }

    /// Whether this replica may say it leads now (`permatoken_leader`, and the page's `leader`):
    /// see [`LeaderGauge`].
    pub fn leads(&self, snapshot: &Snapshot) -> bool {
        self.lock().leader.leads(snapshot)
    }

    /// The election's last word on this replica: it leads until `until` (see [`LeaderGauge`]).
    pub fn leader_until(&self, until: Option<std::time::Instant>) {
        self.lock().leader = LeaderGauge::Until(until);
    }

    /// The last usage app `app_id` was told of by `header` (`app` or `business`), in percent.
    pub fn graph_usage(&self, app_id: &str, header: &str, percent: f64) {
        let percent = if percent.is_finite() {
            percent.ceil().clamp(0.0, 1e6) as i64
        } else {
            0
        };
        self.lock()
            .graph_usage
            .insert((app_id.to_owned(), header.to_owned()), percent);
    }

    /// App `app_id` answered a batch: its `permatoken_graph_paused` is there from now on, at 0
    /// until it is paused, so that a rule sees it turn 1.
    pub fn graph_app(&self, app_id: &str) {
        let mut totals = self.lock();
        if !totals.graph_paused.contains_key(app_id) {
            totals.graph_paused.insert(app_id.to_owned(), false);
        }
    }

    /// Whether app `app_id`'s checks wait out a rate limit now.
    pub fn graph_paused(&self, app_id: &str, paused: bool) {
        self.lock().graph_paused.insert(app_id.to_owned(), paused);
    }

    /// A round over some tokens ended after `took`.
    pub fn round(&self, took: Duration) {
        self.lock().round_took = Some(took);
    }

    /// The tokens watched now are checked at least every `shortest` (`None`: there is no token).
    pub fn shortest_interval(&self, shortest: Option<Duration>) {
        self.lock().shortest_interval = shortest;
    }

    /// The values now.
    pub fn totals(&self) -> CounterTotals {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Role, RouteHealth, Status, TokenState, TokenView};

    fn view(name: &str, state: Option<TokenState>, role: Role) -> TokenView {
        TokenView {
            name: name.to_owned(),
            role,
            state: state.unwrap_or(TokenState::CannotBeChecked),
            announced: state.is_some(),
            status: Status::Ok,
            valid: true,
            kind: "System user".to_owned(),
            fingerprint: "PERMATOKENTEST".to_owned(),
            expires_at: Some(1_800_000_000),
            never_expires: false,
            missing_permissions: Vec::new(),
            scopes: Arc::from(Vec::new()),
            last_check: Some(1_700_000_000),
            next_check: None,
            reason: None,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            tokens: vec![
                view("orders", Some(TokenState::Dead), Role::Primary),
                view(
                    "orders-backup",
                    Some(TokenState::Ok),
                    Role::Backup("orders".to_owned()),
                ),
                view("we\"ird\\na\nme", None, Role::Primary),
            ],
            routes: vec![RouteHealth {
                name: "ops".to_owned(),
                last_result: None,
                last_at: None,
                failing_since: None,
            }],
            leader: true,
            started_at: 1_699_999_000,
            ..Snapshot::default()
        }
    }

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn each_token_has_a_status_sample_per_state_and_unknown_before_any_is_decided() {
        let text = render(&snapshot(), &Counters::default(), Format::Text);
        for status in STATUSES {
            let dead = sample(
                &text,
                &format!("permatoken_token_status{{token=\"orders\",status=\"{status}\"}}"),
            );
            assert_eq!(
                dead,
                Some(if status == "dead" { "1" } else { "0" }),
                "{text}"
            );
            let weird = sample(
                &text,
                &format!(
                    "permatoken_token_status{{token=\"we\\\"ird\\\\na\\nme\",status=\"{status}\"}}"
                ),
            );
            assert_eq!(
                weird,
                Some(if status == "unknown" { "1" } else { "0" }),
                "{text}"
            );
        }
        assert_eq!(text.matches("permatoken_token_status{").count(), 3 * 7);
    }

    #[test]
    fn counters_are_there_at_zero_from_the_start() {
        let text = render(&snapshot(), &Counters::default(), Format::Text);
        for token in ["orders", "orders-backup"] {
            for result in CHECK_RESULTS {
                let series =
                    format!("permatoken_checks_total{{token=\"{token}\",result=\"{result}\"}}");
                assert_eq!(sample(&text, &series), Some("0"), "{series}: {text}");
            }
            let series = format!("permatoken_renewals_total{{token=\"{token}\"}}");
            assert_eq!(sample(&text, &series), Some("0"), "{text}");
        }
        // Only a primary fails over.
        assert_eq!(
            sample(&text, "permatoken_failovers_total{token=\"orders\"}"),
            Some("0")
        );
        assert_eq!(
            sample(&text, "permatoken_failovers_total{token=\"orders-backup\"}"),
            None
        );
        for result in ALERT_RESULTS {
            let series = format!("permatoken_alerts_total{{route=\"ops\",result=\"{result}\"}}");
            assert_eq!(sample(&text, &series), Some("0"), "{text}");
        }
        for outcome in GRAPH_OUTCOMES {
            let series = format!("permatoken_graph_requests_total{{outcome=\"{outcome}\"}}");
            assert_eq!(sample(&text, &series), Some("0"), "{text}");
        }
        // Nothing about rounds before the first.
        assert!(!text.contains("permatoken_last_round_timestamp_seconds"));
        assert!(!text.contains("permatoken_round_duration_seconds"));
    }

    #[test]
    fn counted_values_and_the_rounds_show_in_both_formats() {
        let mut snapshot = snapshot();
        snapshot.last_round_at = Some(1_700_000_100);
        let counters = Counters::default();
        counters.check("orders", "error");
        counters.check("orders", "error");
        counters.check("orders", "odd");
        counters.failover("orders");
        counters.alert("gone", "delivered");
        counters.round(Duration::from_millis(1500));
        counters.shortest_interval(Some(Duration::from_secs(3600)));
        for format in [Format::Text, Format::OpenMetrics] {
            let text = render(&snapshot, &counters, format);
            for (series, value) in [
                (
                    "permatoken_checks_total{token=\"orders\",result=\"error\"}",
                    "2",
                ),
                (
                    "permatoken_checks_total{token=\"orders\",result=\"odd\"}",
                    "1",
                ),
                (
                    "permatoken_checks_total{token=\"orders\",result=\"ok\"}",
                    "0",
                ),
                ("permatoken_failovers_total{token=\"orders\"}", "1"),
                (
                    "permatoken_alerts_total{route=\"gone\",result=\"delivered\"}",
                    "1",
                ),
                ("permatoken_last_round_timestamp_seconds", "1700000100"),
                ("permatoken_round_duration_seconds", "1.5"),
                ("permatoken_shortest_interval_seconds", "3600"),
                ("permatoken_leader", "1"),
                ("permatoken_start_time_seconds", "1699999000"),
            ] {
                assert_eq!(
                    sample(&text, series),
                    Some(value),
                    "{format:?} {series}: {text}"
                );
            }
            let version = format!(
                "permatoken_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            );
            assert_eq!(sample(&text, &version), Some("1"), "{text}");
            // Every sample line follows its family's HELP and TYPE.
            let mut family = String::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    family = rest.split(' ').next().unwrap().to_owned();
                } else if !line.starts_with('#') {
                    assert!(
                        line.starts_with(&family),
                        "{format:?}: {line} after {family}"
                    );
                }
            }
            assert_eq!(
                text.matches("# HELP ").count(),
                text.matches("# TYPE ").count()
            );
            assert_eq!(text.ends_with("# EOF\n"), format == Format::OpenMetrics);
        }
    }
}
