//! One page of tokens, searched and filtered: what `/api/tokens` answers and what the status page
//! renders first. [`TokenQuery::parse`] reads the query string (`q`, `state`, `page`, `per_page`,
//! `view`, `sort`) strictly; [`TokenPage::select`] picks the matching tokens from a snapshot, in the
//! order asked for (worst state first, or soonest expiry first; then by name), each backup right
//! under its primary, and cuts out the page asked for; [`TokenPage::read_history`] then reads the chart
//! points of that page's tokens (at most [`MAX_PER_PAGE`] of them) from the store.
//!
//! Must never: read the history of a token not on the page, do more than linear work in the number of tokens plus a sort of the matches, hold the
//! query string or `q` uncapped (both are bounded before any work), or echo a byte of the query that
//! was not valid (errors name the parameter, and quote at most a short, sanitised piece of the value).

use jiff::{SignedDuration, Timestamp};
use permatoken_state as store;
use serde::Serialize;

use std::collections::HashMap;

use crate::snapshot::{
    Event, HistoryPoint, Role, RouteHealth, Snapshot, StateProblem, Status, TokenState, TokenView,
    UnixSeconds,
};

/// Tokens per page when `per_page` is not given.
pub const DEFAULT_PER_PAGE: usize = 50;
/// The largest `per_page` accepted.
pub const MAX_PER_PAGE: usize = 500;
/// The longest `q` accepted, in characters.
pub const MAX_Q_CHARS: usize = 100;
/// The longest query string accepted, in bytes (before decoding).
pub const MAX_QUERY_BYTES: usize = 2048;
/// The largest `page` accepted (far beyond 10,000 tokens at one per page).
pub const MAX_PAGE: usize = 1_000_000;
/// Chart points per token: its newest checks.
pub const HISTORY_POINTS: u32 = 200;
/// How far back a chart goes, at most.
pub const HISTORY_SPAN: SignedDuration = SignedDuration::from_hours(24 * 30);

/// The states in the order the page lists them: worst first.
pub const SEVERITY: [TokenState; 6] = [
    TokenState::Dead,
    TokenState::FailedOver,
    TokenState::Critical,
    TokenState::CannotBeChecked,
    TokenState::Expiring,
    TokenState::Ok,
];

fn rank(state: TokenState) -> usize {
    SEVERITY
        .iter()
        .position(|s| *s == state)
        .unwrap_or(SEVERITY.len())
}

/// Why a query string was refused. Each message says which parameter and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The whole query string is longer than [`MAX_QUERY_BYTES`].
    #[error("the query string is longer than {MAX_QUERY_BYTES} bytes")]
    TooLong,
    /// A `%` escape is broken or the decoded text is not UTF-8.
    #[error("the query string is not valid percent-encoded UTF-8 (in `{0}`)")]
    Encoding(String),
    /// A parameter this endpoint does not know.
    #[error("unknown parameter `{0}`: the parameters are q, state, page, per_page, view and sort")]
    Unknown(String),
    /// `q`, `page`, `per_page`, `view` or `sort` given twice.
    #[error("`{0}` is given more than once")]
    Repeated(&'static str),
    /// `q` is longer than [`MAX_Q_CHARS`].
    #[error("`q` is longer than {MAX_Q_CHARS} characters")]
    QTooLong,
    /// A `state` that is not one of the six.
    #[error(
        "unknown state `{0}`: use dead, failed_over, critical, cannot_be_checked, expiring or ok (repeat `state` or separate them with commas)"
    )]
    State(String),
    /// `page` is not a whole number from 1 to [`MAX_PAGE`].
    #[error("`page` must be a whole number from 1 to {MAX_PAGE}")]
    Page,
    /// `per_page` is not a whole number from 1 to [`MAX_PER_PAGE`].
    #[error("`per_page` must be a whole number from 1 to {MAX_PER_PAGE}")]
    PerPage,
    /// `view` is not `cards` or `table`.
    #[error("`view` must be `cards` or `table`")]
    View,
    /// `sort` is not `state` or `expiry`.
    #[error("`sort` must be `state` (worst first) or `expiry` (soonest first)")]
    Sort,
}

/// How the page shows its tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// A card for each token not ok, a line for each ok one.
    #[default]
    Cards,
    /// A table, one row per token.
    Table,
}

impl View {
    /// The name in the URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cards => "cards",
            Self::Table => "table",
        }
    }
}

/// The order of the tokens (each backup stays under its primary either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Worst state first, then by name.
    #[default]
    State,
    /// Soonest expiry first (the expired before them, longest expired first), then those whose
    /// expiry is unknown, then those that never expire; then by name.
    Expiry,
}

impl Sort {
    /// The name in the URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Expiry => "expiry",
        }
    }
}

/// What a reader asked for. The default is every token, first page of [`DEFAULT_PER_PAGE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenQuery {
    /// Case-insensitive substring of the name; empty matches every name.
    pub q: String,
    /// The states to show, in [`SEVERITY`] order; empty means every state.
    pub states: Vec<TokenState>,
    /// The page, from 1.
    pub page: usize,
    /// Tokens per page.
    pub per_page: usize,
    /// Cards or a table.
    pub view: View,
    /// The order.
    pub sort: Sort,
}

impl Default for TokenQuery {
    fn default() -> Self {
        Self {
            q: String::new(),
            states: Vec::new(),
            page: 1,
            per_page: DEFAULT_PER_PAGE,
            view: View::Cards,
            sort: Sort::State,
        }
    }
}

/// A short, printable piece of untrusted text for an error message.
fn quote(text: &str) -> String {
    text.chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn decode(raw: &str) -> Result<String, QueryError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| QueryError::Encoding(quote(raw)))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| QueryError::Encoding(quote(raw)))
}

fn number(text: &str, max: usize) -> Option<usize> {
    // Digits only: no sign, no space, no exponent; at most seven of them, so no overflow.
    if text.is_empty() || text.len() > 7 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = text.parse().ok()?;
    (1..=max).contains(&n).then_some(n)
}

impl TokenQuery {
    /// Reads a query string (without the `?`); `None` or empty gives the default.
    ///
    /// `state` may repeat and may hold several states separated by commas; an empty `state` or `q`
    /// means no filter. Anything else unexpected is an error: an unknown parameter, a repeated `q`,
    /// `page` or `per_page`, a number out of range, a `q` over [`MAX_Q_CHARS`] characters.
    pub fn parse(raw: Option<&str>) -> Result<Self, QueryError> {
        let mut query = Self::default();
        let raw = raw.unwrap_or("");
        if raw.len() > MAX_QUERY_BYTES {
            return Err(QueryError::TooLong);
        }
        let (mut seen_q, mut seen_page, mut seen_per_page) = (false, false, false);
        let (mut seen_view, mut seen_sort) = (false, false);
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key)?;
            let value = decode(value)?;
            match key.as_str() {
                "q" => {
                    if std::mem::replace(&mut seen_q, true) {
                        return Err(QueryError::Repeated("q"));
                    }
                    if value.chars().count() > MAX_Q_CHARS {
                        return Err(QueryError::QTooLong);
                    }
                    query.q = value;
                }
                "state" => {
                    if value.is_empty() {
                        continue;
                    }
                    for name in value.split(',') {
                        let state = SEVERITY
                            .into_iter()
                            .find(|s| s.as_str() == name)
                            .ok_or_else(|| QueryError::State(quote(name)))?;
                        if !query.states.contains(&state) {
                            query.states.push(state);
                        }
                    }
                }
                "page" => {
                    if std::mem::replace(&mut seen_page, true) {
                        return Err(QueryError::Repeated("page"));
                    }
                    query.page = number(&value, MAX_PAGE).ok_or(QueryError::Page)?;
                }
                "per_page" => {
                    if std::mem::replace(&mut seen_per_page, true) {
                        return Err(QueryError::Repeated("per_page"));
                    }
                    query.per_page = number(&value, MAX_PER_PAGE).ok_or(QueryError::PerPage)?;
                }
                "view" => {
                    if std::mem::replace(&mut seen_view, true) {
                        return Err(QueryError::Repeated("view"));
                    }
                    query.view = [View::Cards, View::Table]
                        .into_iter()
                        .find(|v| v.as_str() == value)
                        .ok_or(QueryError::View)?;
                }
                "sort" => {
                    if std::mem::replace(&mut seen_sort, true) {
                        return Err(QueryError::Repeated("sort"));
                    }
                    query.sort = [Sort::State, Sort::Expiry]
                        .into_iter()
                        .find(|v| v.as_str() == value)
                        .ok_or(QueryError::Sort)?;
                }
                other => return Err(QueryError::Unknown(quote(other))),
            }
        }
        query.states.sort_by_key(|s| rank(*s));
        Ok(query)
    }

    fn matches(&self, token: &TokenView, needle: &str) -> bool {
        (self.states.is_empty() || self.states.contains(&token.state))
            && (needle.is_empty() || token.name.to_lowercase().contains(needle))
    }
}

/// How many tokens are in each state, over every token (not only the matching ones): the filter
/// chips' numbers. Serialised as `{"dead": n, …, "ok": n}`, worst first, zeros included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(pub [usize; 6]);

impl Counts {
    /// The number in `state`.
    pub fn get(&self, state: TokenState) -> usize {
        self.0.get(rank(state)).copied().unwrap_or(0)
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(SEVERITY.len()))?;
        for (state, n) in SEVERITY.iter().zip(self.0) {
            map.serialize_entry(state.as_str(), &n)?;
        }
        map.end()
    }
}

/// One page of tokens with the snapshot's other fields: the body of `/api/tokens` (the HTTP layer
/// adds `counters`) and the data the page is first rendered from.
#[derive(Debug, Clone, Serialize)]
pub struct TokenPage<'a> {
    /// How many tokens match the query (over every page).
    pub total: usize,
    /// The page shown, from 1 (may lie past the last page: then `tokens` is empty).
    pub page: usize,
    /// Tokens per page.
    pub per_page: usize,
    /// How many pages the matches fill (at least 1).
    pub pages: usize,
    /// The query as understood: `q` and the states filtered on.
    pub q: &'a str,
    /// The states filtered on, worst first; empty when every state is shown.
    pub states: Vec<&'static str>,
    /// Cards or a table.
    pub view: View,
    /// The order.
    pub sort: Sort,
    /// Tokens in each state, over every token.
    pub counts: Counts,
    /// This page's tokens, in the order asked for, each backup under its primary.
    pub tokens: Vec<PageToken<'a>>,
    /// When the snapshot was made.
    pub generated_at: UnixSeconds,
    /// Now, when this page was cut out: what the page's times are counted from ("3 hours ago"),
    /// and the script's measure of how far its own clock is off.
    pub served_at: UnixSeconds,
    /// When the process started.
    pub started_at: UnixSeconds,
    /// Whether this process is the one that acts.
    pub leader: bool,
    /// Whether a round of checks has finished since start.
    pub round_finished: bool,
    /// When the last round finished.
    pub last_round_at: Option<UnixSeconds>,
    /// Why the state cannot be opened yet, while `watch` waits for its database at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_state: Option<&'a str>,
    /// Recent events, newest first.
    pub events: &'a [Event],
    /// The alert routes' health.
    pub routes: &'a [RouteHealth],
    /// Set while the state cannot be written.
    pub state_unwritable: Option<&'a StateProblem>,
}

/// A token on a page: its view in the snapshot, and its chart, read for this page only.
#[derive(Debug, Clone, Serialize)]
pub struct PageToken<'a> {
    /// What the snapshot says of it.
    #[serde(flatten)]
    pub token: &'a TokenView,
    /// Its recent checks, oldest first ([`TokenPage::read_history`]); empty until read.
    pub history: Vec<HistoryPoint>,
}

impl std::ops::Deref for PageToken<'_> {
    type Target = TokenView;

    fn deref(&self) -> &TokenView {
        self.token
    }
}

/// The primary a token stands under: itself, or the primary it is a backup of.
fn primary_of(token: &TokenView) -> &str {
    match &token.role {
        Role::Primary => &token.name,
        Role::Backup(of) => of,
    }
}

/// Where a token's expiry puts it in the `expiry` order: the expired and soonest first, then the
/// unknown, then those that never expire.
fn expiry_key(token: &TokenView) -> (u8, UnixSeconds) {
    match (token.never_expires, token.expires_at) {
        (true, _) => (2, 0),
        (false, Some(at)) => (0, at),
        (false, None) => (1, 0),
    }
}

/// Sorts `matching` by `sort`, each primary followed by its backups. A primary and its backups go
/// where the most urgent of them would (a dead backup brings its primary up with it, since it must
/// be replaced); within that, by the primary's name without regard to case, then byte by byte so
/// that the order is total; the primary first, then its backups by name. Each key is made once,
/// not at every comparison.
fn order(matching: &mut [&TokenView], sort: Sort) {
    let mut urgency: HashMap<&str, (usize, (u8, UnixSeconds))> =
        HashMap::with_capacity(matching.len());
    for t in matching.iter() {
        let key = (rank(t.state), expiry_key(t));
        urgency
            .entry(primary_of(t))
            .and_modify(|u| {
                u.0 = u.0.min(key.0);
                u.1 = u.1.min(key.1);
            })
            .or_insert(key);
    }
    matching.sort_by_cached_key(|t| {
        let t: &TokenView = t;
        let primary = primary_of(t);
        let (state, expiry) = urgency.get(primary).copied().unwrap_or_default();
        let urgent = match sort {
            Sort::State => (state, (0, 0)),
            Sort::Expiry => (0, expiry),
        };
        let backup = matches!(t.role, Role::Backup(_));
        let name = backup.then(|| t.name.to_lowercase());
        (
            urgent,
            primary.to_lowercase(),
            primary,
            backup,
            name,
            t.name.as_str(),
        )
    });
}

impl<'a> TokenPage<'a> {
    /// The page of `snapshot` that `query` asks for. A `page` or `per_page` out of range (as only a
    /// query built by hand can hold) is brought back into it.
    pub fn select(snapshot: &'a Snapshot, query: &'a TokenQuery) -> Self {
        let page = query.page.clamp(1, MAX_PAGE);
        let per_page = query.per_page.clamp(1, MAX_PER_PAGE);
        let mut counts = [0usize; 6];
        let needle = query.q.to_lowercase();
        let mut matching = Vec::new();
        for token in &snapshot.tokens {
            if let Some(n) = counts.get_mut(rank(token.state)) {
                *n += 1;
            }
            if query.matches(token, &needle) {
                matching.push(token);
            }
        }
        order(&mut matching, query.sort);
        let total = matching.len();
        let start = (page - 1).saturating_mul(per_page).min(total);
        let end = start.saturating_add(per_page).min(total);
        let tokens = matching
            .drain(start..end)
            .map(|token| PageToken {
                token,
                history: Vec::new(),
            })
            .collect();
        Self {
            total,
            page,
            per_page,
            pages: total.div_ceil(per_page).max(1),
            q: &query.q,
            states: query.states.iter().map(|s| s.as_str()).collect(),
            view: query.view,
            sort: query.sort,
            counts: Counts(counts),
            tokens,
            generated_at: snapshot.generated_at,
            served_at: Timestamp::now().as_second(),
            started_at: snapshot.started_at,
            leader: snapshot.leader,
            round_finished: snapshot.round_finished,
            last_round_at: snapshot.last_round_at,
            waiting_for_state: snapshot.waiting_for_state.as_deref(),
            events: &snapshot.events,
            routes: &snapshot.routes,
            state_unwritable: snapshot.state_unwritable.as_ref(),
        }
    }

    /// Reads the chart of each token on the page from `store`: its newest [`HISTORY_POINTS`] checks
    /// in the [`HISTORY_SPAN`] before the snapshot was made, oldest first. One read for the page,
    /// whatever its size; a token never checked keeps an empty history.
    pub async fn read_history(&mut self, store: &store::Store) -> Result<(), store::Error> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let names = self.tokens.iter().map(|t| t.token.name.clone()).collect();
        let made = Timestamp::from_second(self.generated_at).unwrap_or(Timestamp::UNIX_EPOCH);
        // As the snapshot saw them: the checks up to the second it was made.
        let to = made
            .saturating_add(SignedDuration::from_secs(1))
            .unwrap_or(made);
        let from = made.saturating_sub(HISTORY_SPAN).unwrap_or(Timestamp::MIN);
        let mut points: std::collections::HashMap<String, Vec<store::StatusPoint>> = store
            .history_points_of(names, from, to, HISTORY_POINTS)
            .await?
            .into_iter()
            .collect();
        for t in &mut self.tokens {
            if let Some(points) = points.remove(&t.token.name) {
                t.history = points
                    .into_iter()
                    .map(|p| HistoryPoint {
                        at: p.checked_at.as_second(),
                        status: match p.status {
                            store::Status::Ok => Status::Ok,
                            store::Status::Warning => Status::Warning,
                            store::Status::Critical => Status::Critical,
                            store::Status::Unknown => Status::Unknown,
                        },
                    })
                    .collect();
            }
        }
        Ok(())
    }

    /// The first and last positions shown, from 1 (`None` when the page is empty).
    pub fn range(&self) -> Option<(usize, usize)> {
        let first = self
            .page
            .saturating_sub(1)
            .saturating_mul(self.per_page)
            .saturating_add(1);
        (!self.tokens.is_empty()).then(|| (first, first + self.tokens.len() - 1))
    }

    /// Every token watched, over all states.
    pub fn all(&self) -> usize {
        self.counts.0.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_parameter_and_refuses_the_rest() {
        let q = TokenQuery::parse(Some(
            "q=Shop+%C3%A9&state=ok,dead&state=critical&page=3&per_page=20",
        ))
        .unwrap();
        assert_eq!(q.q, "Shop é");
        assert_eq!(
            q.states,
            [TokenState::Dead, TokenState::Critical, TokenState::Ok]
        );
        assert_eq!((q.page, q.per_page), (3, 20));
        assert_eq!(TokenQuery::parse(None).unwrap(), TokenQuery::default());
        assert_eq!(
            TokenQuery::parse(Some("q=&state=")).unwrap(),
            TokenQuery::default()
        );
        for bad in [
            "page=0",
            "page=-1",
            "page=+2",
            "page=1e3",
            "page=99999999999999999999",
            "per_page=501",
            "per_page=",
            "state=recovered",
            "state=dead,",
            "q=a&q=b",
            "page=1&page=2",
            "sort=name",
            "q=%zz",
            "q=%ff",
        ] {
            assert!(TokenQuery::parse(Some(bad)).is_err(), "{bad} was accepted");
        }
        let long = format!("q={}", "a".repeat(MAX_Q_CHARS + 1));
        assert_eq!(TokenQuery::parse(Some(&long)), Err(QueryError::QTooLong));
        let huge = "q=a&".repeat(MAX_QUERY_BYTES);
        assert_eq!(TokenQuery::parse(Some(&huge)), Err(QueryError::TooLong));
    }

    #[test]
    fn a_query_built_by_hand_out_of_range_is_brought_back_into_it() {
        let snapshot = Snapshot::default();
        let query = TokenQuery {
            page: 0,
            per_page: 0,
            ..TokenQuery::default()
        };
        let page = TokenPage::select(&snapshot, &query);
        assert_eq!((page.page, page.per_page, page.pages), (1, 1, 1));
        assert_eq!(page.range(), None);
    }

    fn token(name: &str, role: Role, state: TokenState, expires_at: Option<i64>) -> TokenView {
        TokenView {
            name: name.to_owned(),
            role,
            state,
            announced: true,
            status: Status::Ok,
            valid: true,
            kind: String::new(),
            fingerprint: String::new(),
            expires_at,
            never_expires: false,
            missing_permissions: Vec::new(),
            scopes: std::sync::Arc::from(Vec::new()),
            last_check: None,
            next_check: None,
            reason: None,
        }
    }

    fn names(snapshot: &Snapshot, query: &str) -> Vec<String> {
        let query = TokenQuery::parse(Some(query)).unwrap();
        let page = TokenPage::select(snapshot, &query);
        page.tokens.iter().map(|t| t.name.clone()).collect()
    }

    #[test]
    fn backups_stay_under_their_primary_in_either_order() {
        let backup = |of: &str| Role::Backup(of.to_owned());
        let mut never = token("b-never", Role::Primary, TokenState::Ok, None);
        never.never_expires = true;
        let snapshot = Snapshot {
            tokens: vec![
                token("A-ok", Role::Primary, TokenState::Ok, Some(500)),
                token("z-spare", backup("A-ok"), TokenState::Dead, Some(100)),
                token("a-spare", backup("A-ok"), TokenState::Ok, Some(900)),
                token("b-critical", Role::Primary, TokenState::Critical, Some(50)),
                token(
                    "c-unknown",
                    Role::Primary,
                    TokenState::CannotBeChecked,
                    None,
                ),
                never,
                token("d-expiring", Role::Primary, TokenState::Expiring, Some(300)),
            ],
            ..Snapshot::default()
        };
        // The dead spare brings its ok primary (and the other spare) up with it.
        assert_eq!(
            names(&snapshot, ""),
            [
                "A-ok",
                "a-spare",
                "z-spare",
                "b-critical",
                "c-unknown",
                "d-expiring",
                "b-never"
            ]
        );
        assert_eq!(
            names(&snapshot, "sort=expiry"),
            [
                "b-critical",
                "A-ok",
                "a-spare",
                "z-spare",
                "d-expiring",
                "c-unknown",
                "b-never"
            ]
        );
        // A filter keeps the order of what it lets through.
        assert_eq!(names(&snapshot, "state=ok"), ["A-ok", "a-spare", "b-never"]);
        let query = TokenQuery::parse(Some("view=table&sort=expiry")).unwrap();
        assert_eq!((query.view, query.sort), (View::Table, Sort::Expiry));
    }

    #[test]
    fn errors_quote_little_and_no_control_character() {
        let err = TokenQuery::parse(Some(&format!("x%0A{}=1", "y".repeat(200)))).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.len() < 160, "{text}");
    }
}
