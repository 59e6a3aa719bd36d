//! The truth about one token: what `check` reports.
//!
//! This room asks the Graph API about a token (`/me` and `/debug_token`, concurrently), and turns the
//! answers into a [`Report`]: identity, type, derived kind, expiry, scopes, findings with fixes, and a
//! verdict on the monitoring-plugin scale of DESIGN §4. It decides what an answer *means* for the person
//! (the Graph client only says what was answered).
//!
//! Must never: print, read files or the environment, or put a secret into a report (reports are
//! serialised to JSON as they are).

mod findings;
mod kind;

use jiff::{SignedDuration, Timestamp};
use permatoken_graph::{
    Budget, Caller, Client, Endpoint, Error as GraphError, ErrorClass, TokenInfo,
};
use permatoken_secret::{AccessToken, AppSecret, AppToken};
use serde::{Deserialize, Serialize};

pub use findings::{Finding, FindingCode, Severity, human_span, human_time};
pub use kind::{Kind, derive_kind};

/// Permissions without which WhatsApp does not work.
pub const REQUIRED_SCOPES: &[&str] = &[
    "whatsapp_business_messaging",
    "whatsapp_business_management",
];
/// Permissions that business-level reads need.
pub const RECOMMENDED_SCOPES: &[&str] = &["business_management"];

/// The verdict, on the monitoring-plugin scale: the exit code is its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Valid, and never expires or expires outside the warning window.
    Ok,
    /// Valid, but expires within the warning window.
    Warning,
    /// Could not tell.
    Unknown,
    /// Dead, dying within the critical window, or missing a required permission.
    Critical,
}

impl Status {
    /// The exit code of DESIGN §4.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Warning => 1,
            Self::Critical => 2,
            Self::Unknown => 3,
        }
    }

    /// The worse of two, ordered critical > unknown > warning > ok.
    pub fn worst(self, other: Self) -> Self {
        self.max(other)
    }
}

/// The warning and critical windows.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// `--warn-days`.
    pub warn: SignedDuration,
    /// `--crit-days`.
    pub crit: SignedDuration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            warn: SignedDuration::from_hours(14 * 24),
            crit: SignedDuration::from_hours(3 * 24),
        }
    }
}

/// The app credentials, as far as they are known.
#[derive(Debug, Clone, Default)]
pub struct AppCredentials {
    /// `FACEBOOK_APP_ID`.
    pub app_id: Option<String>,
    /// `FACEBOOK_APP_SECRET`.
    pub app_secret: Option<AppSecret>,
}

/// What `check` says about one token. Serialised as the `--json` object of DESIGN §4.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The verdict.
    pub status: Status,
    /// The token's facts.
    pub token: TokenFacts,
    /// Who the token acts as, from `/me`.
    pub identity: Option<Identity>,
    /// What is worth saying, worst first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether the API said the token is dead (expired, invalidated or invalid): never true for a
    /// network failure or an outage, which leave the verdict unknown.
    pub fn is_dead(&self) -> bool {
        self.findings
            .iter()
            .any(|f| FindingCode::DEAD.contains(&f.code))
    }

    /// Whether the token works and holds the required permissions, by the API's own word.
    pub fn is_healthy(&self) -> bool {
        self.token.valid == Some(true)
            && self.token.missing_scopes.is_empty()
            && matches!(self.status, Status::Ok | Status::Warning)
    }

    /// The first (worst) finding's message: what a one-line summary should say.
    pub fn headline(&self) -> String {
        self.findings
            .first()
            .map(|f| f.message.clone())
            .unwrap_or_default()
    }

    /// When the token expires; `None` if never or unknown.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.token.expires_at.as_deref()?.parse().ok()
    }
}

/// The facts about a token; `null` where the API did not say.
#[derive(Debug, Clone, Serialize)]
pub struct TokenFacts {
    /// Where the token came from (`./.env`, `the environment`, …).
    pub source: String,
    /// The variable it was read from.
    pub variable: Option<String>,
    /// `EAAT…sZD sha256:1a2b3c4d`: never the token.
    pub fingerprint: String,
    /// `type` from `/debug_token`, as Meta sent it.
    #[serde(rename = "type")]
    pub token_type: Option<String>,
    /// The derived kind.
    pub kind: Kind,
    /// The app the API says the token belongs to, or else the one decoded from the token.
    pub app_id: Option<String>,
    /// The app id decoded offline from the token itself.
    pub embedded_app_id: Option<String>,
    /// The app's name.
    pub application: Option<String>,
    /// Whether the token works.
    pub valid: Option<bool>,
    /// Whether it never expires.
    pub never_expires: Option<bool>,
    /// RFC 3339, UTC.
    pub issued_at: Option<String>,
    /// RFC 3339, UTC.
    pub expires_at: Option<String>,
    /// RFC 3339, UTC.
    pub data_access_expires_at: Option<String>,
    /// Permissions the token holds.
    pub scopes: Option<Vec<String>>,
    /// Required permissions it lacks.
    pub missing_scopes: Vec<String>,
    /// Permissions limited to some targets (WhatsApp Business Account ids); `target_ids` null means all.
    pub granular_scopes: Vec<GranularScope>,
}

/// A permission and the ids it is limited to.
#[derive(Debug, Clone, Serialize)]
pub struct GranularScope {
    /// The permission.
    pub scope: String,
    /// The ids, or null for all.
    pub target_ids: Option<Vec<String>>,
}

/// `/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The user or system-user id.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
}

/// The token to check and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The token.
    pub token: &'a AccessToken,
    /// Where it came from, as the report should say it.
    pub source: &'a str,
    /// The variable it came from.
    pub variable: Option<&'a str>,
}

impl From<&permatoken_graph::Me> for Identity {
    fn from(me: &permatoken_graph::Me) -> Self {
        Self {
            id: me.id.clone(),
            name: me.name.clone(),
        }
    }
}

/// Answers about a token already fetched (by a batch of `/debug_token` asked with the app token, and
/// maybe a batch of `/me`), for [`check_prefetched`].
#[derive(Debug, Clone)]
pub struct Prefetched {
    /// `/debug_token` asked with the app token: only an answer (a dead token is one, with
    /// `is_valid: false`); a failed call is no prefetched answer, and is asked again alone.
    pub info: TokenInfo,
    /// `/me`: its answer, or `None` to ask it now (one call).
    pub me: Option<Result<Identity, GraphError>>,
}

/// The answers of one round of calls.
struct Answers {
    me: Result<Identity, GraphError>,
    info: Result<TokenInfo, GraphError>,
}

/// Checks one token: calls `/me` and `/debug_token` concurrently and judges the answers at `now`.
pub async fn check(
    client: &Client,
    subject: Subject<'_>,
    app: &AppCredentials,
    thresholds: Thresholds,
    now: Timestamp,
    budget: &Budget,
) -> Report {
    judge(client, subject, app, thresholds, now, budget, None).await
}

/// Checks one token from answers already fetched, asking only what `prefetched` lacks (`/me` when
/// it is `None`): the same judgement as [`check`] on the same answers. Answers asked with the app
/// token are no use for a token of another app (or without the app's credentials): such a token is
/// checked as [`check`] does, asking again.
pub async fn check_prefetched(
    client: &Client,
    subject: Subject<'_>,
    app: &AppCredentials,
    thresholds: Thresholds,
    now: Timestamp,
    budget: &Budget,
    prefetched: Prefetched,
) -> Report {
    judge(
        client,
        subject,
        app,
        thresholds,
        now,
        budget,
        Some(prefetched),
    )
    .await
}

/// The one judging path of [`check`] and [`check_prefetched`].
async fn judge(
    client: &Client,
    subject: Subject<'_>,
    app: &AppCredentials,
    thresholds: Thresholds,
    now: Timestamp,
    budget: &Budget,
    prefetched: Option<Prefetched>,
) -> Report {
    let token = subject.token;
    if !token.has_meta_shape() {
        return malformed(subject, now);
    }
    let mut findings = Vec::new();
    let mut unknown = false;
    let embedded = token.embedded_app_id().map(|id| id.to_string());
    let mismatch = match (&app.app_id, &embedded) {
        (Some(configured), Some(embedded)) if configured != embedded => {
            findings.push(findings::app_mismatch(configured, embedded));
            true
        }
        _ => false,
    };
    // A token of another app can neither carry our proof nor be inspected by our app token; asking
    // with them would only produce a puzzling error, so it inspects itself.
    let client = if mismatch {
        client.without_app_secret()
    } else {
        client.clone()
    };
    let app_token = match (&app.app_id, &app.app_secret) {
        (Some(id), Some(secret)) if !mismatch => Some(AppToken::new(id.clone(), secret.clone())),
        _ => None,
    };
    let caller = app_token.as_ref().map_or(Caller::Token(token), Caller::App);
    let mut answers = match prefetched.filter(|_| app_token.is_some()) {
        Some(Prefetched { info, me }) => Answers {
            me: match me {
                Some(me) => me,
                None => client.me(token, budget).await.map(|me| Identity::from(&me)),
            },
            info: Ok(info),
        },
        None => ask(&client, token, caller, budget).await,
    };
    let mut inspected_itself = app_token.is_none();

    let proof_refused = answers.me.as_ref().err().and_then(proof_problem);
    let app_token_refused = app_token.is_some()
        && answers
            .info
            .as_ref()
            .err()
            .and_then(GraphError::graph_error)
            .is_some_and(|e| {
                matches!(e.code, Some(190 | 101))
                    || e.class(Endpoint::Other) == ErrorClass::Permission
            });
    if let Some(problem) = proof_refused {
        findings.push(findings::proof_problem(problem, app));
        unknown = true;
    }
    if app_token_refused {
        findings.push(findings::app_token_refused(app));
        unknown = true;
    }
    let wrong_credentials =
        matches!(proof_refused, Some(findings::ProofProblem::Wrong)) || app_token_refused;
    if wrong_credentials {
        // Say what can still be said: ask again the way that needs no app credentials.
        answers = ask(
            &client.without_app_secret(),
            token,
            Caller::Token(token),
            budget,
        )
        .await;
        inspected_itself = true;
    }
    // Only the app (or a developer of it) may inspect a token: a system-user token asking about
    // itself gets code 100 (`graph-api.md` §5). Not an error of the check: the limit of what can be
    // known without the app's credentials.
    let app_token_needed = inspected_itself
        && answers
            .info
            .as_ref()
            .err()
            .is_some_and(|e| needs_app_token(e) && proof_problem(e).is_none());

    let info = answers.info.as_ref().ok();
    // The offline decoding is observed, not documented: when the API itself names the configured
    // app, the API wins and there is no mismatch to report.
    if mismatch && info.and_then(|i| i.app_id.as_ref()) == app.app_id.as_ref() {
        findings.retain(|f| f.code != FindingCode::AppMismatch);
    }
    let mut facts = facts(subject, info, embedded, now);
    let identity = answers.me.as_ref().ok().cloned();

    // Dead or alive: `/debug_token` knows best (it keeps the subcode WhatsApp endpoints drop); a
    // failed `/me` tells the same when `/debug_token` could not be asked.
    let death = info
        .filter(|i| i.is_valid == Some(false))
        .map(|i| {
            let err = i.error.clone().unwrap_or_default();
            let class = permatoken_graph::classify(
                err.code,
                err.subcode,
                None,
                err.message.as_deref().unwrap_or(""),
                Endpoint::Other,
            );
            (
                class,
                err.code,
                err.subcode,
                err.message.unwrap_or_default(),
                None,
            )
        })
        .or_else(|| {
            [answers.me.as_ref().err(), answers.info.as_ref().err()]
                .into_iter()
                .flatten()
                .filter_map(GraphError::graph_error)
                .find(|e| e.class(Endpoint::Other).token_is_dead())
                .map(|e| {
                    (
                        e.class(Endpoint::Other),
                        e.code,
                        e.subcode,
                        e.message.clone(),
                        e.trace_id.clone(),
                    )
                })
        });

    if let Some((class, code, subcode, message, trace_id)) = death {
        facts.valid = Some(false);
        findings.push(findings::dead(
            class, code, subcode, &message, trace_id, &facts, now,
        ));
    } else {
        if let Err(err) = &answers.me {
            // A refused proof is explained by its own finding already.
            if proof_problem(err).is_none() {
                findings.push(findings::call_failed(err));
            }
            unknown = true;
        }
        if let Err(err) = &answers.info {
            if app_token_needed {
                // Refused app credentials are explained by their own finding already.
                if !wrong_credentials {
                    findings.push(findings::app_token_required(
                        embedded_app(token).as_deref(),
                        answers.me.is_ok(),
                    ));
                }
            } else if proof_problem(err).is_none() {
                findings.push(findings::call_failed(err));
            }
            unknown = true;
        }
        if let Some(info) = info.filter(|i| i.is_valid == Some(true)) {
            facts.valid = Some(true);
            findings.extend(findings::alive(info, &facts, thresholds, now));
        } else if info.is_some() && answers.me.is_ok() {
            // `is_valid` missing: Meta did not say.
            unknown = true;
        }
    }
    if facts.valid.is_none() && answers.me.is_ok() && answers.info.is_err() {
        facts.valid = Some(true);
    }

    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let worst = findings.iter().map(|f| f.severity).max();
    let status = match worst {
        Some(Severity::Critical) => Status::Critical,
        _ if unknown => Status::Unknown,
        Some(Severity::Warning) => Status::Warning,
        _ => Status::Ok,
    };
    Report {
        status,
        token: facts,
        identity,
        findings,
    }
}

/// The report on a value without the shape of a Meta token ([`AccessToken::has_meta_shape`]): the
/// verdict unknown, and no call made. A private key or a JSON text read from the wrong file must not
/// leave the machine in a URL, and Meta's "cannot parse" would call it dead.
fn malformed(subject: Subject<'_>, now: Timestamp) -> Report {
    let place = match subject.variable {
        Some(var) => format!("`{var}` in {}", subject.source),
        None => subject.source.to_owned(),
    };
    Report {
        status: Status::Unknown,
        token: facts(subject, None, None, now),
        identity: None,
        findings: vec![findings::not_token_shaped(&place)],
    }
}

async fn ask(client: &Client, token: &AccessToken, caller: Caller<'_>, budget: &Budget) -> Answers {
    let (me, info) = tokio::join!(
        client.me(token, budget),
        client.debug_token(token, caller, budget)
    );
    Answers {
        me: me.map(|me| Identity::from(&me)),
        info,
    }
}

fn embedded_app(token: &AccessToken) -> Option<String> {
    token.embedded_app_id().map(|id| id.to_string())
}

/// Code 100 from `/debug_token` asked by the token itself: "(#100) You must provide an app access
/// token, or a user access token that is an owner or developer of the app". The code decides (Meta
/// rewords messages); the proof's own code-100 errors are told apart by the caller.
fn needs_app_token(err: &GraphError) -> bool {
    err.graph_error().is_some_and(|e| e.code == Some(100))
}

/// Code 100 about `appsecret_proof`: the only way to tell it from other bad requests is the message.
fn proof_problem(err: &GraphError) -> Option<findings::ProofProblem> {
    let e = err.graph_error()?;
    if e.code != Some(100) {
        return None;
    }
    let message = e.message.to_ascii_lowercase();
    if message.contains("require an appsecret_proof") {
        Some(findings::ProofProblem::Required)
    } else if message.contains("appsecret_proof") {
        Some(findings::ProofProblem::Wrong)
    } else {
        None
    }
}

fn rfc3339(unix: Option<i64>) -> Option<String> {
    unix.filter(|t| *t > 0)
        .and_then(|t| Timestamp::from_second(t).ok())
        .map(|t| t.to_string())
}

fn facts(
    subject: Subject<'_>,
    info: Option<&TokenInfo>,
    embedded: Option<String>,
    now: Timestamp,
) -> TokenFacts {
    let kind = info.map_or(Kind::Unknown, |i| derive_kind(i, now));
    let scopes = info
        .filter(|i| i.is_valid == Some(true) || !i.scopes.is_empty())
        .map(|i| i.scopes.clone());
    let missing_scopes = match (&scopes, info.and_then(|i| i.is_valid)) {
        (Some(scopes), Some(true)) => REQUIRED_SCOPES
            .iter()
            .filter(|r| !scopes.iter().any(|s| s == *r))
            .map(|s| s.to_string())
            .collect(),
        _ => Vec::new(),
    };
    TokenFacts {
        source: subject.source.to_owned(),
        variable: subject.variable.map(str::to_owned),
        fingerprint: subject.token.fingerprint(),
        token_type: info.and_then(|i| i.token_type.clone()),
        kind,
        app_id: info
            .and_then(|i| i.app_id.clone())
            .or_else(|| embedded.clone()),
        embedded_app_id: embedded,
        application: info.and_then(|i| i.application.clone()),
        valid: None,
        // 0 is "never" only on a valid token: an invalidated one shows 0 too (§12).
        never_expires: info.and_then(|i| match i.expires_at? {
            0 if i.is_valid == Some(true) => Some(true),
            0 => None,
            _ => Some(false),
        }),
        issued_at: rfc3339(info.and_then(|i| i.issued_at)),
        expires_at: rfc3339(info.and_then(|i| i.expires_at)),
        data_access_expires_at: rfc3339(info.and_then(|i| i.data_access_expires_at)),
        scopes,
        missing_scopes,
        granular_scopes: info
            .map(|i| {
                i.granular_scopes
                    .iter()
                    .map(|g| GranularScope {
                        scope: g.scope.clone(),
                        target_ids: g.target_ids.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
