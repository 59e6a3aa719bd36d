//! Findings: what is wrong or worth knowing about a token, in words a person understands, each with the
//! fix (which console page, which button, which variable). Codes are stable; scripts match on them.

use jiff::{SignedDuration, Timestamp};
use permatoken_graph::{Endpoint, Error as GraphError, ErrorClass, TokenInfo, human};
use serde::Serialize;

use crate::{AppCredentials, Kind, RECOMMENDED_SCOPES, Thresholds, TokenFacts};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; changes no verdict.
    Info,
    /// Needs attention soon, or a problem that left the verdict unknown.
    Warning,
    /// The token does not work, or will not within the critical window.
    Critical,
}

/// The stable code of a finding (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingCode {
    /// 190/463.
    TokenExpired,
    /// Killed early: password change, logout, app removed, role lost.
    TokenInvalidated,
    /// The API cannot use the token and does not say why.
    TokenInvalid,
    /// The value does not have the shape of a Meta access token.
    TokenMalformed,
    /// Expires within the critical window.
    TokenExpiresSoon,
    /// Expires within the warning window.
    TokenExpiring,
    /// A token that expires at all: points to the never-expiring system-user token.
    TokenNotPermanent,
    /// A required permission is missing.
    MissingPermission,
    /// `business_management` is missing.
    MissingRecommendedPermission,
    /// Data access (user tokens) lapses soon.
    DataAccessExpiring,
    /// The token belongs to another app than `FACEBOOK_APP_ID`.
    AppMismatch,
    /// `FACEBOOK_APP_ID` / `FACEBOOK_APP_SECRET` were refused.
    AppCredentialsInvalid,
    /// The app requires `appsecret_proof` and no secret is set.
    AppsecretProofRequired,
    /// Meta shows the token's expiry and permissions only to its app (or a developer of the app), and
    /// `FACEBOOK_APP_ID`/`FACEBOOK_APP_SECRET` are not set: the verdict is unknown.
    AppTokenRequired,
    /// The Graph API could not be reached or failed.
    GraphUnreachable,
    /// The Graph API refused a call for a reason other than the token.
    GraphError,
    /// A rate limit stopped the check.
    RateLimited,
}

impl FindingCode {
    /// The codes that say the API called the token dead (expired, invalidated or invalid): never
    /// a network failure or an outage, which leave the verdict unknown.
    pub const DEAD: [FindingCode; 3] = [
        FindingCode::TokenExpired,
        FindingCode::TokenInvalidated,
        FindingCode::TokenInvalid,
    ];
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable code.
    pub code: FindingCode,
    /// How much it matters.
    pub severity: Severity,
    /// What is the matter, one sentence.
    pub message: String,
    /// What to do.
    pub fix: Option<String>,
    /// Meta's `fbtrace_id`, which Meta support asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

fn finding(
    code: FindingCode,
    severity: Severity,
    message: String,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        code,
        severity,
        message,
        fix: Some(fix.into()),
        trace_id: None,
    }
}

/// The guide's Method 3, the way to a token that never dies.
pub(crate) const SYSTEM_USER_STEPS: &str = "get a token that never expires: in Business Settings → Users → System users, add a system user (role Admin); with Add assets give it your app and your WhatsApp account (full control); then Generate new token: choose the app, Token expiration \"Never\", and the permissions whatsapp_business_messaging, whatsapp_business_management and business_management. Put it in `WHATSAPP_ACCESS_TOKEN` and run `permatoken check`: it shows \"never expires\"";

const COPY_AGAIN: &str = "copy the token again, whole (tokens start with EAA and run 150–260 letters and digits); if it was copied right, generate a new one: ";

/// `2026-12-05 10:00 UTC`.
pub fn human_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// `9 days 14 h`, `3 h 20 min`, `45 s`.
pub fn human_span(d: SignedDuration) -> String {
    let secs = d.as_secs().unsigned_abs();
    let (days, hours, mins) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    let plural = |n: u64, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => plural(d, "day", "days"),
        (d, h, _) => format!("{} {h} h", plural(d, "day", "days")),
    }
}

fn at(unix: Option<i64>) -> Option<Timestamp> {
    unix.filter(|t| *t > 0)
        .and_then(|t| Timestamp::from_second(t).ok())
}

fn code_text(code: Option<i64>, subcode: Option<i64>) -> String {
    match (code, subcode) {
        (Some(c), Some(s)) => format!(" (Graph API code {c}, subcode {s})"),
        (Some(c), None) => format!(" (Graph API code {c})"),
        _ => String::new(),
    }
}

pub(crate) fn app_mismatch(configured: &str, embedded: &str) -> Finding {
    finding(
        FindingCode::AppMismatch,
        Severity::Warning,
        format!(
            "the token belongs to app {embedded}, not to app {configured} of `FACEBOOK_APP_ID`: every call that carries an `appsecret_proof` made with `FACEBOOK_APP_SECRET` would be refused"
        ),
        format!(
            "use a token generated for app {configured} (Business Settings → System users → Generate new token, choose that app), or set `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET` to those of app {embedded}"
        ),
    )
}

/// How the API refused `appsecret_proof`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProofProblem {
    /// A proof was sent and is wrong.
    Wrong,
    /// None was sent and the app requires one.
    Required,
}

pub(crate) fn proof_problem(problem: ProofProblem, app: &AppCredentials) -> Finding {
    let id = app
        .app_id
        .as_deref()
        .map_or_else(|| "your app".to_owned(), |id| format!("app {id}"));
    match problem {
        ProofProblem::Wrong => finding(
            FindingCode::AppCredentialsInvalid,
            Severity::Warning,
            "the Graph API refused the `appsecret_proof` made with `FACEBOOK_APP_SECRET`: that secret is not the secret of the token's app".into(),
            format!("copy the secret of {id} again from App Dashboard → Settings → Basic → App secret → Show into `FACEBOOK_APP_SECRET`; after a secret reset only the new one works"),
        ),
        ProofProblem::Required => finding(
            FindingCode::AppsecretProofRequired,
            Severity::Warning,
            "the app requires `appsecret_proof` on calls from servers (\"Require App Secret\" is on), and `FACEBOOK_APP_SECRET` is not set".into(),
            format!("set `FACEBOOK_APP_SECRET` to the secret of {id} (App Dashboard → Settings → Basic → App secret → Show)"),
        ),
    }
}

pub(crate) fn app_token_refused(app: &AppCredentials) -> Finding {
    let id = app.app_id.as_deref().unwrap_or("?");
    finding(
        FindingCode::AppCredentialsInvalid,
        Severity::Warning,
        format!(
            "the Graph API refused the app token made of `FACEBOOK_APP_ID` ({id}) and `FACEBOOK_APP_SECRET`: the two do not belong together"
        ),
        format!(
            "check both in App Dashboard → Settings → Basic of app {id}: the App ID at the top and App secret → Show"
        ),
    )
}

pub(crate) fn app_token_required(app_id: Option<&str>, works: bool) -> Finding {
    let app = app_id.map_or_else(|| "its app".to_owned(), |id| format!("its app ({id})"));
    let lead = if works {
        "the token works (`/me` answers), but "
    } else {
        ""
    };
    finding(
        FindingCode::AppTokenRequired,
        Severity::Warning,
        format!(
            "{lead}Meta shows a token's expiry and permissions only to {app} or to a developer of that app, so they cannot be checked with the token alone"
        ),
        format!(
            "set `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET` of {} (App Dashboard → Settings → Basic: App ID, and App secret → Show; the guide keeps both in `.env` beside the token): the check then asks with the app token and shows the expiry and permissions",
            app_id.map_or_else(|| "the token's app".to_owned(), |id| format!("app {id}"))
        ),
    )
}

pub(crate) fn dead(
    class: ErrorClass,
    code: Option<i64>,
    subcode: Option<i64>,
    message: &str,
    trace_id: Option<String>,
    facts: &TokenFacts,
    now: Timestamp,
) -> Finding {
    let codes = code_text(code, subcode);
    let mut f = match class {
        ErrorClass::Expired => {
            let when = facts
                .expires_at
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(|t| {
                    format!(
                        " on {} ({} ago)",
                        human_time(t),
                        human_span(now.duration_since(t))
                    )
                })
                .unwrap_or_default();
            let fix = if facts.kind == Kind::SystemUser60d {
                "generate a new token for the system user (Business Settings → Users → System users → Generate new token), and next time renew it within its 60 days; or ".to_owned() + SYSTEM_USER_STEPS
            } else {
                SYSTEM_USER_STEPS.to_owned()
            };
            finding(
                FindingCode::TokenExpired,
                Severity::Critical,
                format!("the token expired{when}{codes}"),
                fix,
            )
        }
        ErrorClass::Invalidated => {
            let (why, fix) = invalidation(code, subcode);
            finding(
                FindingCode::TokenInvalidated,
                Severity::Critical,
                format!("the token no longer works: {why}{codes}"),
                format!("{fix}; to stop depending on a person's session, {SYSTEM_USER_STEPS}"),
            )
        }
        _ => finding(
            FindingCode::TokenInvalid,
            Severity::Critical,
            format!(
                "the Graph API cannot use this token: \"{}\"{codes}",
                message.trim_end_matches('.')
            ),
            format!("{COPY_AGAIN}{SYSTEM_USER_STEPS}"),
        ),
    };
    f.trace_id = trace_id;
    f
}

fn invalidation(code: Option<i64>, subcode: Option<i64>) -> (&'static str, &'static str) {
    match (code, subcode) {
        (_, Some(460)) => (
            "its user changed their Facebook password (or Meta ended the session for security reasons)",
            "generate a new token",
        ),
        (_, Some(458)) => (
            "its user or system user no longer has the app installed",
            "add the app again (Business Settings → System users → the user → Add assets, or the user's Business Integrations), then generate a new token",
        ),
        (_, Some(459)) => (
            "its user's Facebook account is checkpointed (locked until they log in and confirm)",
            "log in to Facebook as that user and clear the checkpoint, then generate a new token",
        ),
        (_, Some(464)) => (
            "its user's Facebook account is not confirmed",
            "confirm the account (the e-mail or phone check Facebook asks for), then generate a new token",
        ),
        (_, Some(466)) => (
            "it was invalidated by an API call (revoked, or the app secret was reset)",
            "generate a new token",
        ),
        (_, Some(467)) => (
            "its session ended (the user logged out, or the token was replaced)",
            "generate a new token",
        ),
        (_, Some(492)) => (
            "its user lost a role the token needs (on the app, the business or the WhatsApp account)",
            "give the role back in Business Settings → Users, then generate a new token",
        ),
        _ => ("Meta invalidated its session", "generate a new token"),
    }
}

/// A value that is no Meta token (`place` names its file and variable, never its content): it was
/// not sent to Meta.
pub(crate) fn not_token_shaped(place: &str) -> Finding {
    finding(
        FindingCode::TokenMalformed,
        Severity::Warning,
        format!(
            "{place} does not hold a Meta access token (EAA followed by letters and digits), so it was not sent to Meta"
        ),
        format!(
            "this file does not hold a Meta access token: check that {place} is the token's (a key, a certificate or a JSON file is not), then put the token there alone, copied whole (tokens start with EAA and run 150–260 letters and digits)"
        ),
    )
}

/// A call that failed for a reason other than the token: the verdict becomes unknown.
pub(crate) fn call_failed(err: &GraphError) -> Finding {
    let class = err.class(Endpoint::Other);
    let trace_id = err.graph_error().and_then(|e| e.trace_id.clone());
    let mut f = match (class, err) {
        (_, GraphError::Tls { .. }) => finding(
            FindingCode::GraphUnreachable,
            Severity::Warning,
            format!(
                "could not reach the Graph API securely, so the token could not be judged: {err}"
            ),
            "if a proxy here inspects TLS, trust its CA with `--ca-file PEM`; otherwise check this machine's clock and its CA certificates (Debian: the ca-certificates package)",
        ),
        (ErrorClass::RateLimited, GraphError::OutOfTime { wait, .. }) => finding(
            FindingCode::RateLimited,
            Severity::Warning,
            format!(
                "the Graph API rate-limited the check and asks to wait {}, longer than the check may take: {err}",
                human(*wait)
            ),
            format!(
                "run the check again in {}; if it keeps happening, fewer calls per hour from this app (the `X-App-Usage` header shows the share used)",
                human(*wait)
            ),
        ),
        (ErrorClass::RateLimited, _) => finding(
            FindingCode::RateLimited,
            Severity::Warning,
            format!("the Graph API rate-limited the check: {err}"),
            "run the check again later, not at once (a call made while limited keeps the limit in place); this app makes too many calls per hour",
        ),
        (ErrorClass::Transient, _) => finding(
            FindingCode::GraphUnreachable,
            Severity::Warning,
            format!(
                "could not get an answer from the Graph API, so the token could not be judged: {err}"
            ),
            "check this machine's network and Meta's status page (metastatus.com), then run again; this says nothing against the token",
        ),
        _ => finding(
            FindingCode::GraphError,
            Severity::Warning,
            format!("the Graph API refused a call of the check: {err}"),
            "if `--graph-url` or `--graph-version` are set, check them; otherwise report this with the trace id",
        ),
    };
    f.trace_id = trace_id;
    f
}

pub(crate) fn alive(
    info: &TokenInfo,
    facts: &TokenFacts,
    thresholds: Thresholds,
    now: Timestamp,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(expires) = at(info.expires_at) {
        let left = expires.duration_since(now);
        let when = format!("{} (in {})", human_time(expires), human_span(left));
        let renew = if facts.kind == Kind::SystemUser60d {
            "renew it within its 60 days: generate a new one for the system user (Business Settings → Users → System users → Generate new token), or by API with `grant_type=fb_exchange_token` and `set_token_expires_in_60_days=true`; or ".to_owned() + SYSTEM_USER_STEPS
        } else {
            SYSTEM_USER_STEPS.to_owned()
        };
        let message = format!("this {} expires on {when}", facts.kind.describe());
        if left <= thresholds.crit {
            out.push(finding(
                FindingCode::TokenExpiresSoon,
                Severity::Critical,
                message,
                renew,
            ));
        } else if left <= thresholds.warn {
            out.push(finding(
                FindingCode::TokenExpiring,
                Severity::Warning,
                message,
                renew,
            ));
        } else {
            // Outside both windows the verdict is ok, and this is where the way out is shown.
            out.push(finding(
                FindingCode::TokenNotPermanent,
                Severity::Info,
                format!(
                    "this is a {}: it stops working on {when}",
                    facts.kind.describe()
                ),
                renew,
            ));
        }
    }
    if !facts.missing_scopes.is_empty() {
        let list = facts.missing_scopes.join(", ");
        out.push(finding(
            FindingCode::MissingPermission,
            Severity::Critical,
            format!("the token lacks the permission{} {list}, so WhatsApp calls fail with code 10 or 200", if facts.missing_scopes.len() > 1 { "s" } else { "" }),
            format!("permissions cannot be added to a token: generate a new one with {list} ticked (Business Settings → System users → Generate new token), and check the app has them under App Dashboard → App Review → Permissions"),
        ));
    }
    let missing_recommended: Vec<&str> = RECOMMENDED_SCOPES
        .iter()
        .copied()
        .filter(|r| !info.scopes.iter().any(|s| s == r))
        .collect();
    if !missing_recommended.is_empty() {
        out.push(finding(
            FindingCode::MissingRecommendedPermission,
            Severity::Info,
            format!("the token lacks {}: messaging works, but business-level reads (verification status) do not", missing_recommended.join(", ")),
            "when you next generate the token, tick business_management too",
        ));
    }
    if let Some(lapses) = at(info.data_access_expires_at) {
        let left = lapses.duration_since(now);
        if left <= thresholds.warn {
            out.push(finding(
                FindingCode::DataAccessExpiring,
                Severity::Info,
                format!("the app's access to this user's data lapses on {} (in {})", human_time(lapses), human_span(left)),
                "the user renews it by using the app again (logging in); system-user tokens have no such limit",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(
            human_span(SignedDuration::from_secs(9 * 86_400 + 14 * 3600 + 5)),
            "9 days 14 h"
        );
        assert_eq!(human_span(SignedDuration::from_secs(86_400)), "1 day");
        assert_eq!(
            human_span(SignedDuration::from_secs(3 * 3600 + 20 * 60)),
            "3 h 20 min"
        );
        assert_eq!(human_span(SignedDuration::from_secs(-120)), "2 min");
        assert_eq!(human_span(SignedDuration::from_secs(45)), "45 s");
    }
}
