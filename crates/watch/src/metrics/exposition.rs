//! The exposition of a snapshot and the counters, written a chunk at a time: [`Exposition`] is the
//! body `/metrics` sends, each chunk written when the connection takes the previous one, so that a
//! scrape of a fleet holds one chunk (some 64 KiB), never the whole text; [`render`] joins the
//! chunks into one text, for tests.
//!
//! The families come in a fixed order: the process's, then the per-token gauges and counters (the
//! tokens in the configuration's order, each family's samples together), then the alert routes'
//! and the Graph apps'. The counters are read under their lock once per chunk, so a scrape never
//! holds it while the connection is slow.
//!
//! Must never: hold a copy of the fleet (names, label sets) for a scrape, or the counters' lock
//! between two chunks.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;

use super::format::{Family, Writer};
use super::{
    ALERT_RESULTS, CHECK_RESULTS, CounterTotals, Counters, Format, GRAPH_OUTCOMES, STATUSES,
};
use crate::snapshot::{Role, Snapshot, TokenView};

/// The size past which a chunk is sent.
const CHUNK: usize = 64 * 1024;

const BUILD: Family = Family::info(
    "permatoken_build",
    "The version of permatoken serving these metrics, as the label version; always 1",
);
const START: Family = Family::gauge(
    "permatoken_start_time_seconds",
    "When the process started, in Unix seconds",
);
const LEADER: Family = Family::gauge(
    "permatoken_leader",
    "Whether this process is the one that acts (1) or a standby (0)",
);
const LAST_ROUND: Family = Family::gauge(
    "permatoken_last_round_timestamp_seconds",
    "When the last round of checks ran, in Unix seconds; no sample before the first round",
);
const ROUND_DURATION: Family = Family::gauge(
    "permatoken_round_duration_seconds",
    "How long the last round of checks took, in seconds; no sample before the first round",
);
const SHORTEST_INTERVAL: Family = Family::gauge(
    "permatoken_shortest_interval_seconds",
    "The shortest check interval of the tokens watched: a leader runs a round at least this often",
);
const VALID: Family = Family::gauge(
    "permatoken_token_valid",
    "Whether the token was valid at its last check (1) or not (0)",
);
const EXPIRATION: Family = Family::gauge(
    "permatoken_token_expiration_timestamp_seconds",
    "When the token expires, in Unix seconds; no sample for a token that never expires",
);
const STATUS: Family = Family::gauge(
    "permatoken_token_status",
    "The token's state: 1 for the current one, 0 for the others",
);
const MISSING: Family = Family::gauge(
    "permatoken_token_missing_required_permissions",
    "How many required permissions the token lacks",
);
const LAST_CHECK: Family = Family::gauge(
    "permatoken_token_last_check_timestamp_seconds",
    "When the token was last checked, in Unix seconds",
);
const CHECKS: Family = Family::counter("permatoken_checks", "Checks by token and result");
const RENEWALS: Family = Family::counter("permatoken_renewals", "Renewals by token");
const FAILOVERS: Family = Family::counter(
    "permatoken_failovers",
    "Failovers to a backup, by primary token",
);
const ALERTS: Family = Family::counter("permatoken_alerts", "Alerts by route and result");
const GRAPH_REQUESTS: Family =
    Family::counter("permatoken_graph_requests", "Graph API requests by outcome");
const GRAPH_USAGE: Family = Family::gauge(
    "permatoken_graph_usage_percent",
    "The last rate-limit usage the Graph API reported for the app, in percent, by header (app: X-App-Usage, business: X-Business-Use-Case-Usage)",
);
const GRAPH_PAUSED: Family = Family::gauge(
    "permatoken_graph_paused",
    "Whether the app's checks wait out a rate limit's regain time (1) or not (0)",
);

/// The families with samples per token, in the order they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PerToken {
    Valid,
    Expiration,
    Status,
    Missing,
    LastCheck,
    Checks,
    Renewals,
    Failovers,
}

impl PerToken {
    const ALL: [Self; 8] = [
        Self::Valid,
        Self::Expiration,
        Self::Status,
        Self::Missing,
        Self::LastCheck,
        Self::Checks,
        Self::Renewals,
        Self::Failovers,
    ];

    fn family(self) -> Family {
        match self {
            Self::Valid => VALID,
            Self::Expiration => EXPIRATION,
            Self::Status => STATUS,
            Self::Missing => MISSING,
            Self::LastCheck => LAST_CHECK,
            Self::Checks => CHECKS,
            Self::Renewals => RENEWALS,
            Self::Failovers => FAILOVERS,
        }
    }

    /// Whether it has a sample for `t`: a family with none at all is left out.
    fn has_sample(self, t: &TokenView) -> bool {
        match self {
            Self::Expiration => expires(t).is_some(),
            Self::LastCheck => t.last_check.is_some(),
            Self::Failovers => t.role == Role::Primary,
            _ => true,
        }
    }
}

/// Where the exposition stands between two chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Process,
    /// The per-token family at this index of [`PerToken::ALL`], from this token on.
    Tokens(usize, usize),
    Others,
    Done,
}

/// The exposition being sent: an HTTP body of chunks, written as they are asked for.
pub struct Exposition {
    snapshot: Arc<Snapshot>,
    counters: Counters,
    format: Format,
    part: Part,
}

impl Exposition {
    /// The exposition of `snapshot` and `counters` in `format`.
    pub fn new(snapshot: Arc<Snapshot>, counters: Counters, format: Format) -> Self {
        Self {
            snapshot,
            counters,
            format,
            part: Part::Process,
        }
    }

    /// The next chunk; `None` after the last.
    fn chunk(&mut self) -> Option<String> {
        let mut w = Writer::new(self.format, CHUNK + 8 * 1024);
        let totals = self.counters.lock();
        self.part = write(&mut w, self.part, &self.snapshot, &totals);
        drop(totals);
        (w.len() > 0).then(|| w.into_text())
    }
}

impl axum::body::HttpBody for Exposition {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let chunk = self.get_mut().chunk();
        Poll::Ready(chunk.map(|c| Ok(http_body::Frame::data(Bytes::from(c)))))
    }

    fn is_end_stream(&self) -> bool {
        self.part == Part::Done
    }
}

/// The whole exposition in `format`, as one text: gauges from `snapshot`, counters from `counters`.
pub fn render(snapshot: &Snapshot, counters: &Counters, format: Format) -> String {
    let mut text = String::new();
    let mut part = Part::Process;
    while part != Part::Done {
        let mut w = Writer::new(format, CHUNK + 8 * 1024);
        part = write(&mut w, part, snapshot, &counters.lock());
        text.push_str(&w.into_text());
    }
    text
}

/// Writes from `part` on until the chunk is full or the exposition ends; where it stopped.
fn write(w: &mut Writer, mut part: Part, snapshot: &Snapshot, totals: &CounterTotals) -> Part {
    let tokens = &snapshot.tokens;
    while w.len() < CHUNK {
        part = match part {
            Part::Process => {
                process(w, snapshot, totals);
                Part::Tokens(0, 0)
            }
            Part::Tokens(family, _) if family == PerToken::ALL.len() => Part::Others,
            Part::Tokens(family, from) => {
                let f = PerToken::ALL[family];
                if from == 0 && tokens.iter().any(|t| f.has_sample(t)) {
                    w.family(f.family());
                }
                let mut next = from;
                while next < tokens.len() && w.len() < CHUNK {
                    samples(w, f, &tokens[next], totals);
                    next += 1;
                }
                if next < tokens.len() {
                    Part::Tokens(family, next)
                } else {
                    Part::Tokens(family + 1, 0)
                }
            }
            Part::Others => {
                others(w, snapshot, totals);
                w.eof();
                Part::Done
            }
            Part::Done => return Part::Done,
        };
    }
    part
}

/// The families of the process: version, start, leadership, rounds.
fn process(w: &mut Writer, snapshot: &Snapshot, totals: &CounterTotals) {
    w.family(BUILD);
    w.sample(BUILD, &[("version", env!("CARGO_PKG_VERSION"))], 1);
    w.family(START);
    w.sample(START, &[], snapshot.started_at);
    w.family(LEADER);
    w.sample(LEADER, &[], i64::from(totals.leader.leads(snapshot)));
    if let Some(at) = snapshot.last_round_at {
        w.family(LAST_ROUND);
        w.sample(LAST_ROUND, &[], at);
    }
    if let Some(took) = totals.round_took {
        w.family(ROUND_DURATION);
        w.sample(ROUND_DURATION, &[], took.as_secs_f64());
    }
    if let Some(interval) = totals.shortest_interval {
        w.family(SHORTEST_INTERVAL);
        w.sample(SHORTEST_INTERVAL, &[], interval.as_secs_f64());
    }
}

fn expires(t: &TokenView) -> Option<i64> {
    match (t.never_expires, t.expires_at) {
        (false, Some(at)) => Some(at),
        _ => None,
    }
}

/// The samples of `per` for token `t`. Counters not counted yet are 0.
fn samples(w: &mut Writer, per: PerToken, t: &TokenView, totals: &CounterTotals) {
    if !per.has_sample(t) {
        return;
    }
    let family = per.family();
    let token = ("token", t.name.as_str());
    match per {
        PerToken::Valid => w.sample(family, &[token], i64::from(t.valid)),
        PerToken::Expiration => {
            w.sample(family, &[token], expires(t).unwrap_or_default());
        }
        PerToken::Status => {
            let now = if t.announced {
                t.state.as_str()
            } else {
                "unknown"
            };
            for status in STATUSES {
                w.sample(
                    family,
                    &[token, ("status", status)],
                    i64::from(status == now),
                );
            }
        }
        PerToken::Missing => {
            let n = u64::try_from(t.missing_permissions.len()).unwrap_or(u64::MAX);
            w.sample(family, &[token], n);
        }
        PerToken::LastCheck => {
            w.sample(family, &[token], t.last_check.unwrap_or_default());
        }
        PerToken::Checks => checks(w, t, totals),
        PerToken::Renewals => {
            let n = totals.renewals.get(&t.name).copied().unwrap_or(0);
            w.sample(family, &[token], n);
        }
        PerToken::Failovers => {
            let n = totals.failovers.get(&t.name).copied().unwrap_or(0);
            w.sample(family, &[token], n);
        }
    }
}

/// A token's checks by result: each of [`CHECK_RESULTS`] (0 until counted), then any other.
fn checks(w: &mut Writer, t: &TokenView, totals: &CounterTotals) {
    // A token's results are together in the map, in order: one walk from its first.
    let counted = || {
        totals
            .checks
            .range((t.name.clone(), String::new())..)
            .take_while(|((name, _), _)| *name == t.name)
            .map(|((_, result), n)| (result.as_str(), *n))
    };
    for result in CHECK_RESULTS {
        let n = counted().find(|(r, _)| *r == result).map_or(0, |(_, n)| n);
        w.sample(CHECKS, &[("token", &t.name), ("result", result)], n);
    }
    for (result, n) in counted().filter(|(r, _)| !CHECK_RESULTS.contains(r)) {
        w.sample(CHECKS, &[("token", &t.name), ("result", result)], n);
    }
}

/// The counters and gauges of alert routes and Graph apps: each route's and outcome's at 0 until
/// counted.
fn others(w: &mut Writer, snapshot: &Snapshot, totals: &CounterTotals) {
    let mut alerts: BTreeMap<(&str, &str), u64> = snapshot
        .routes
        .iter()
        .flat_map(|r| ALERT_RESULTS.map(|result| ((r.name.as_str(), result), 0)))
        .collect();
    for ((route, result), n) in &totals.alerts {
        alerts.insert((route, result), *n);
    }
    if !alerts.is_empty() {
        w.family(ALERTS);
        for ((route, result), n) in alerts {
            w.sample(ALERTS, &[("route", route), ("result", result)], n);
        }
    }
    w.family(GRAPH_REQUESTS);
    for outcome in GRAPH_OUTCOMES {
        let n = totals.graph_requests.get(outcome).copied().unwrap_or(0);
        w.sample(GRAPH_REQUESTS, &[("outcome", outcome)], n);
    }
    for (outcome, n) in &totals.graph_requests {
        if !GRAPH_OUTCOMES.contains(&outcome.as_str()) {
            w.sample(GRAPH_REQUESTS, &[("outcome", outcome)], *n);
        }
    }
    if !totals.graph_usage.is_empty() {
        w.family(GRAPH_USAGE);
        for ((app_id, header), percent) in &totals.graph_usage {
            w.sample(
                GRAPH_USAGE,
                &[("app_id", app_id), ("header", header)],
                *percent,
            );
        }
    }
    if !totals.graph_paused.is_empty() {
        w.family(GRAPH_PAUSED);
        for (app_id, paused) in &totals.graph_paused {
            w.sample(GRAPH_PAUSED, &[("app_id", app_id)], i64::from(*paused));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Status, TokenState};

    fn fleet(n: usize) -> Snapshot {
        let tokens = (0..n)
            .map(|i| TokenView {
                name: format!("shop-{i:05}"),
                role: Role::Primary,
                state: TokenState::Ok,
                announced: i % 2 == 0,
                status: Status::Ok,
                valid: true,
                kind: String::new(),
                fingerprint: String::new(),
                expires_at: (i % 3 == 0).then_some(1_800_000_000),
                never_expires: false,
                missing_permissions: Vec::new(),
                scopes: Arc::from(Vec::new()),
                last_check: None,
                next_check: None,
                reason: None,
            })
            .collect();
        Snapshot {
            tokens,
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_fleet_is_sent_in_bounded_chunks_that_make_the_whole_text() {
        let snapshot = Arc::new(fleet(5_000));
        let counters = Counters::default();
        counters.check("shop-00042", "error");
        for format in [Format::Text, Format::OpenMetrics] {
            let mut exposition = Exposition::new(snapshot.clone(), counters.clone(), format);
            let mut chunks = Vec::new();
            while let Some(chunk) = exposition.chunk() {
                chunks.push(chunk);
            }
            assert!(chunks.len() > 10, "{}", chunks.len());
            // A chunk ends after the token that filled it: at most one token's lines more.
            assert!(chunks.iter().all(|c| c.len() < CHUNK + 1024));
            assert!(chunks.iter().all(|c| c.ends_with('\n')));
            let text = chunks.concat();
            assert_eq!(text, render(&snapshot, &counters, format));
            assert_eq!(
                text.matches("# TYPE ").count(),
                text.matches("# HELP ").count()
            );
            // Each family once, whatever chunk it began in; none without a sample.
            for name in [
                "permatoken_token_status",
                "permatoken_token_expiration_timestamp_seconds",
            ] {
                assert_eq!(
                    text.matches(&format!("# TYPE {name} gauge")).count(),
                    1,
                    "{name}"
                );
            }
            assert!(!text.contains("permatoken_token_last_check_timestamp_seconds"));
            assert_eq!(text.matches("permatoken_token_status{").count(), 5_000 * 7);
            assert!(
                text.contains("permatoken_checks_total{token=\"shop-00042\",result=\"error\"} 1\n")
            );
            assert!(
                text.contains(
                    "permatoken_token_status{token=\"shop-00001\",status=\"unknown\"} 1\n"
                )
            );
            assert_eq!(
                text.matches("# EOF").count(),
                usize::from(format == Format::OpenMetrics)
            );
            assert!(exposition.chunk().is_none());
        }
    }
}
