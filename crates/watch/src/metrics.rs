//! `/metrics`: the Prometheus exposition of a [`Snapshot`] (gauges, per token) and of the [`Counters`]
//! the scheduler increments as things happen.
//!
//! Names follow cert-manager's expiry metrics; each token's series carry `token="<name>"`. A token that
//! never expires has no `permatoken_token_expiration_timestamp_seconds` sample at all, so a rule such
//! as `permatoken_token_expiration_timestamp_seconds - time() < 14*86400` never fires on it. Label
//! values are escaped by `prometheus-client` as the text format requires.
//!
//! Must never: put a secret in a label (no URL, no token: names and fingerprints only).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::snapshot::{Snapshot, Status};

/// Every status, with its `status` label, in the order `/metrics` lists them.
const STATUSES: [(Status, &str); 4] = [
    (Status::Ok, "ok"),
    (Status::Warning, "warning"),
    (Status::Critical, "critical"),
    (Status::Unknown, "unknown"),
];

/// The `Content-Type` of [`render`]'s text (OpenMetrics, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

    /// A check of `token` ended with `result`: the check's status (`ok`, `warning`, `critical`,
    /// `unknown`) or `error` when it could not run.
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

    /// Whether app `app_id`'s checks wait out a rate limit now.
    pub fn graph_paused(&self, app_id: &str, paused: bool) {
        self.lock().graph_paused.insert(app_id.to_owned(), paused);
    }

    /// The values now.
    pub fn totals(&self) -> CounterTotals {
        self.lock().clone()
    }
}

type Labels = Vec<(String, String)>;

/// The whole exposition: gauges from `snapshot`, counters from `counters`.
pub fn render(snapshot: &Snapshot, counters: &Counters) -> String {
    // The series per token are written straight into the text: a registry of 10,000 tokens'
    // label sets, built for each scrape, was the largest allocation of the whole daemon (tens of
    // megabytes at 10,000 tokens). Samples come in the configuration's order, and families with
    // no sample are left out, as the registry's encoder does; the rest goes through the registry.
    let mut text = String::with_capacity(
        snapshot
            .tokens
            .iter()
            .map(|t| 9 * (t.name.len() + 64))
            .sum::<usize>()
            + 4096,
    );
    token_gauges(&mut text, &snapshot.tokens);
    let totals = counters.lock();
    token_counters(&mut text, &totals);
    let registry = registry(&totals, snapshot);
    drop(totals);
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// The families with a sample per token, written straight into the text.
fn token_gauges(text: &mut String, tokens: &[crate::snapshot::TokenView]) {
    gauges(
        text,
        "permatoken_token_valid",
        "Whether the token was valid at its last check (1) or not (0)",
        tokens
            .iter()
            .map(|t| (t.name.as_str(), None, i64::from(t.valid))),
    );
    gauges(
        text,
        "permatoken_token_expiration_timestamp_seconds",
        "When the token expires, in Unix seconds; no sample for a token that never expires",
        tokens
            .iter()
            .filter_map(|t| match (t.never_expires, t.expires_at) {
                (false, Some(at)) => Some((t.name.as_str(), None, at)),
                _ => None,
            }),
    );
    gauges(
        text,
        "permatoken_token_status",
        "The token's last status: 1 for the current one, 0 for the others",
        tokens.iter().flat_map(|t| {
            STATUSES.iter().map(move |(s, name)| {
                (
                    t.name.as_str(),
                    Some(("status", *name)),
                    i64::from(*s == t.status),
                )
            })
        }),
    );
    gauges(
        text,
        "permatoken_token_missing_required_permissions",
        "How many required permissions the token lacks",
        tokens.iter().map(|t| {
            let n = i64::try_from(t.missing_permissions.len()).unwrap_or(i64::MAX);
            (t.name.as_str(), None, n)
        }),
    );
    gauges(
        text,
        "permatoken_token_last_check_timestamp_seconds",
        "When the token was last checked, in Unix seconds",
        tokens
            .iter()
            .filter_map(|t| t.last_check.map(|at| (t.name.as_str(), None, at))),
    );
}

/// The counters per token, written straight into the text.
fn token_counters(text: &mut String, totals: &CounterTotals) {
    write_family(
        text,
        "permatoken_checks",
        "Checks by token and result",
        "counter",
        totals
            .checks
            .iter()
            .map(|((name, result), n)| (name.as_str(), Some(("result", result.as_str())), *n)),
    );
    write_family(
        text,
        "permatoken_renewals",
        "Renewals by token",
        "counter",
        totals
            .renewals
            .iter()
            .map(|(name, n)| (name.as_str(), None, *n)),
    );
    write_family(
        text,
        "permatoken_failovers",
        "Failovers to a backup, by primary token",
        "counter",
        totals
            .failovers
            .iter()
            .map(|(name, n)| (name.as_str(), None, *n)),
    );
}

/// The families without a token label, through the registry's encoder.
fn registry(totals: &CounterTotals, snapshot: &Snapshot) -> Registry {
    let mut registry = Registry::default();
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<Labels, Gauge>::default();
        registry.register(name, help, family.clone());
        family
    };
    // Registered without `_total`: the encoder adds it to every counter.
    let counter = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<Labels, Counter>::default();
        registry.register(name, help, family.clone());
        family
    };
    let alerts = counter(
        &mut registry,
        "permatoken_alerts",
        "Alerts by route and result",
    );
    for ((route, result), n) in &totals.alerts {
        alerts
            .get_or_create(&vec![
                ("route".to_owned(), route.clone()),
                ("result".to_owned(), result.clone()),
            ])
            .inc_by(*n);
    }
    let graph = counter(
        &mut registry,
        "permatoken_graph_requests",
        "Graph API requests by outcome",
    );
    for (outcome, n) in &totals.graph_requests {
        graph
            .get_or_create(&vec![("outcome".to_owned(), outcome.clone())])
            .inc_by(*n);
    }
    let usage = gauge(
        &mut registry,
        "permatoken_graph_usage_percent",
        "The last rate-limit usage the Graph API reported for the app, in percent, by header (app: X-App-Usage, business: X-Business-Use-Case-Usage)",
    );
    for ((app_id, header), percent) in &totals.graph_usage {
        usage
            .get_or_create(&vec![
                ("app_id".to_owned(), app_id.clone()),
                ("header".to_owned(), header.clone()),
            ])
            .set(*percent);
    }
    let paused = gauge(
        &mut registry,
        "permatoken_graph_paused",
        "Whether the app's checks wait out a rate limit's regain time (1) or not (0)",
    );
    for (app_id, is_paused) in &totals.graph_paused {
        paused
            .get_or_create(&vec![("app_id".to_owned(), app_id.clone())])
            .set(i64::from(*is_paused));
    }
    let leader = gauge(
        &mut registry,
        "permatoken_leader",
        "Whether this process is the one that acts (1) or a standby (0)",
    );
    leader
        .get_or_create(&Vec::new())
        .set(i64::from(totals.leader.leads(snapshot)));
    let started = gauge(
        &mut registry,
        "permatoken_start_time_seconds",
        "When the process started, in Unix seconds",
    );
    started.get_or_create(&Vec::new()).set(snapshot.started_at);

    registry
}

/// One family of gauges per token: see [`write_family`].
fn gauges<'a>(
    text: &mut String,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (&'a str, Option<(&'a str, &'a str)>, i64)>,
) {
    write_family(text, name, help, "gauge", samples);
}

/// A family as the registry's OpenMetrics encoder writes it: `# HELP` (with its final full stop),
/// `# TYPE`, then one line per sample labelled `token` (and the optional second label), counters
/// with `_total`. Nothing at all when there is no sample.
fn write_family<'a, V: std::fmt::Display>(
    text: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    samples: impl Iterator<Item = (&'a str, Option<(&'a str, &'a str)>, V)>,
) {
    use std::fmt::Write as _;
    let mut samples = samples.peekable();
    if samples.peek().is_none() {
        return;
    }
    let suffix = if kind == "counter" { "_total" } else { "" };
    // Writing to a String cannot fail.
    let _ = write!(text, "# HELP {name} {help}.\n# TYPE {name} {kind}\n");
    for (token, second, value) in samples {
        let _ = write!(text, "{name}{suffix}{{token=\"");
        escape(text, token);
        if let Some((label, v)) = second {
            let _ = write!(text, "\",{label}=\"");
            escape(text, v);
        }
        let _ = writeln!(text, "\"}} {value}");
    }
}

/// A label value escaped as the text format requires: backslash, double quote and newline.
fn escape(text: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            c => text.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Role, TokenState, TokenView};

    /// What `render` wrote when every family went through the registry, kept to prove the text
    /// written by hand says the same.
    fn by_registry(snapshot: &Snapshot, totals: &CounterTotals) -> String {
        let token = |name: &str| vec![("token".to_owned(), name.to_owned())];
        let mut registry = Registry::default();
        let mut gauge = |name: &str, help: &str| {
            let family = Family::<Labels, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let valid = gauge(
            "permatoken_token_valid",
            "Whether the token was valid at its last check (1) or not (0)",
        );
        let expiration = gauge(
            "permatoken_token_expiration_timestamp_seconds",
            "When the token expires, in Unix seconds; no sample for a token that never expires",
        );
        let status = gauge(
            "permatoken_token_status",
            "The token's last status: 1 for the current one, 0 for the others",
        );
        let missing = gauge(
            "permatoken_token_missing_required_permissions",
            "How many required permissions the token lacks",
        );
        let last_check = gauge(
            "permatoken_token_last_check_timestamp_seconds",
            "When the token was last checked, in Unix seconds",
        );
        for t in &snapshot.tokens {
            valid.get_or_create(&token(&t.name)).set(i64::from(t.valid));
            if let (false, Some(at)) = (t.never_expires, t.expires_at) {
                expiration.get_or_create(&token(&t.name)).set(at);
            }
            for (s, name) in STATUSES {
                let mut labels = token(&t.name);
                labels.push(("status".to_owned(), name.to_owned()));
                status.get_or_create(&labels).set(i64::from(s == t.status));
            }
            missing
                .get_or_create(&token(&t.name))
                .set(i64::try_from(t.missing_permissions.len()).unwrap());
            if let Some(at) = t.last_check {
                last_check.get_or_create(&token(&t.name)).set(at);
            }
        }
        let mut counter = |name: &str, help: &str| {
            let family = Family::<Labels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let checks = counter("permatoken_checks", "Checks by token and result");
        for ((name, result), n) in &totals.checks {
            let mut labels = token(name);
            labels.push(("result".to_owned(), result.clone()));
            checks.get_or_create(&labels).inc_by(*n);
        }
        let renewals = counter("permatoken_renewals", "Renewals by token");
        for (name, n) in &totals.renewals {
            renewals.get_or_create(&token(name)).inc_by(*n);
        }
        let failovers = counter(
            "permatoken_failovers",
            "Failovers to a backup, by primary token",
        );
        for (name, n) in &totals.failovers {
            failovers.get_or_create(&token(name)).inc_by(*n);
        }
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text
    }

    /// The families of an exposition, each with its sample lines sorted (the registry writes
    /// them in hash order).
    fn families(text: &str) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = Vec::new();
        for line in text.lines() {
            if line.starts_with("# HELP") || line == "# EOF" {
                out.push(Vec::new());
            }
            out.last_mut().unwrap().push(line.to_owned());
        }
        for family in &mut out {
            if let Some(samples) = family.get_mut(2..) {
                samples.sort();
            }
        }
        out
    }

    fn view(name: &str, status: Status, expires_at: Option<i64>, never: bool) -> TokenView {
        TokenView {
            name: name.to_owned(),
            role: Role::Primary,
            state: TokenState::Ok,
            status,
            valid: status != Status::Critical,
            kind: "System user".to_owned(),
            fingerprint: "PERMATOKENTEST".to_owned(),
            expires_at,
            never_expires: never,
            missing_permissions: if status == Status::Warning {
                vec!["whatsapp_business_messaging".to_owned()]
            } else {
                Vec::new()
            },
            scopes: Arc::from(Vec::new()),
            last_check: expires_at.map(|_| 1_700_000_000),
            next_check: None,
            reason: None,
        }
    }

    #[test]
    fn the_families_written_by_hand_are_those_of_the_registry() {
        let snapshot = Snapshot {
            tokens: vec![
                view("orders", Status::Ok, Some(1_800_000_000), false),
                view(
                    "we\"ird\\na\nme",
                    Status::Warning,
                    Some(1_700_100_000),
                    false,
                ),
                view("never", Status::Ok, None, true),
                view("dead", Status::Critical, None, false),
            ],
            leader: true,
            started_at: 1_699_999_000,
            ..Snapshot::default()
        };
        let counters = Counters::default();
        counters.check("orders", "ok");
        counters.check("orders", "ok");
        counters.check("we\"ird\\na\nme", "warning");
        counters.check("dead", "error");
        counters.renewal("orders");
        counters.failover("dead");
        counters.alert("ops", "delivered");
        counters.graph_requests("ok", 7);
        let text = render(&snapshot, &counters);
        let expected = families(&by_registry(&snapshot, &counters.totals()));
        let got = families(&text);
        // The per-token families come first, as they did, then the registry's own.
        assert_eq!(got[..expected.len() - 1], expected[..expected.len() - 1]);
        assert!(text.contains("permatoken_token_valid{token=\"we\\\"ird\\\\na\\nme\"} 1\n"));
        assert!(!text.contains("token=\"never\"} 1800000000"));
        let rest: Vec<&str> = got[expected.len() - 1..]
            .iter()
            .map(|f| f[0].as_str())
            .collect();
        assert_eq!(
            rest,
            [
                "# HELP permatoken_alerts Alerts by route and result.",
                "# HELP permatoken_graph_requests Graph API requests by outcome.",
                "# HELP permatoken_leader Whether this process is the one that acts (1) or a standby (0).",
                "# HELP permatoken_start_time_seconds When the process started, in Unix seconds.",
                "# EOF",
            ]
        );
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }
}
