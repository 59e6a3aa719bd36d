//! What can go wrong talking to the Graph API, and the one function that decides what an error means.
//!
//! Meta's own tables disagree on HTTP statuses, so the class of an error is decided on its `code` and
//! `error_subcode` (`graph-api.md` §3), never on the status; the message decides only where the code
//! alone cannot (an expiry without a subcode, code 1 from `/oauth/access_token`, §12). Messages here never hold a token, a secret
//! or a URL with a query string.

use std::time::Duration;

use crate::usage::Usage;

/// The error object the Graph API sends, every field kept because Meta support asks for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GraphError {
    /// `message`, as Meta wrote it.
    pub message: String,
    /// `type`, e.g. `OAuthException`, `GraphMethodException`.
    pub kind: Option<String>,
    /// `code`.
    pub code: Option<i64>,
    /// `error_subcode` (or `subcode` inside `/debug_token`'s `data.error`).
    pub subcode: Option<i64>,
    /// `error_user_title`.
    pub user_title: Option<String>,
    /// `error_user_msg`.
    pub user_message: Option<String>,
    /// `fbtrace_id`, the id Meta support asks for.
    pub trace_id: Option<String>,
    /// `is_transient`.
    pub is_transient: Option<bool>,
    /// `error_data.details` (WhatsApp's explanation).
    pub details: Option<String>,
    /// The HTTP status it came with; `None` inside a `/debug_token` answer (HTTP 200).
    pub http_status: Option<u16>,
}

impl GraphError {
    /// The class of this error when it came from `endpoint`.
    pub fn class(&self, endpoint: Endpoint) -> ErrorClass {
        classify(
            self.code,
            self.subcode,
            self.is_transient,
            &self.message,
            endpoint,
        )
    }

    /// `code 190, subcode 463` or `code 190`, for messages.
    pub fn code_text(&self) -> String {
        match (self.code, self.subcode) {
            (Some(code), Some(sub)) => format!("code {code}, subcode {sub}"),
            (Some(code), None) => format!("code {code}"),
            (None, _) => "no error code".to_owned(),
        }
    }
}

impl std::fmt::Display for GraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code_text())
    }
}

/// Which endpoint an error came from, where that changes its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/oauth/access_token`: code 1 there that speaks of the client secret means the app secret is
    /// wrong; any other code 1 there is a bad request.
    OAuthAccessToken,
    /// Every other endpoint.
    Other,
}

/// What an error means for the caller: whether to retry, and what to tell the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The token's time ran out (190/463, or 190 saying "Session has expired").
    Expired,
    /// The token was killed early: password change, logout, app removed, role lost (190/458…492, 102).
    Invalidated,
    /// The token is not valid and the API does not say why (190 without a subcode).
    Invalid,
    /// The token lacks a permission for this call (3, 10, 200–299).
    Permission,
    /// A rate limit was hit: never sent again at once (Meta: "continuing to make calls will
    /// continue to increase your call count"); whose limit it is says [`limit_of`].
    RateLimited,
    /// A passing failure of Meta's side or of the network; retry.
    Transient,
    /// The app id or app secret is wrong (code 1 from `/oauth/access_token` about the client secret);
    /// never retried.
    BadCredentials,
    /// A bad request or anything else; not retried.
    Other,
}

impl ErrorClass {
    /// Whether a call that failed this way may be sent again after a short back-off: only a
    /// passing failure. A rate limit is not: a call made while limited counts against the limit
    /// and keeps it in place, so the caller waits it out (Meta's regain time, or its own pause).
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Transient)
    }

    /// Whether the token is dead, as opposed to the call having failed.
    pub fn token_is_dead(self) -> bool {
        matches!(self, Self::Expired | Self::Invalidated | Self::Invalid)
    }
}

/// The one classifier of Graph API errors (`graph-api.md` §3, §12), on the code and subcode, and on
/// the message where they do not decide.
pub fn classify(
    code: Option<i64>,
    subcode: Option<i64>,
    is_transient: Option<bool>,
    message: &str,
    endpoint: Endpoint,
) -> ErrorClass {
    let says = |words: &str| contains_ignoring_case(message, words);
    match (code, subcode) {
        (Some(190), Some(463)) => ErrorClass::Expired,
        (Some(190), Some(458 | 459 | 460 | 464 | 466 | 467 | 492)) | (Some(102), _) => {
            ErrorClass::Invalidated
        }
        // Captured expiries come without `error_subcode` (WhatsApp endpoints dropped it from v16):
        // "Error validating access token: Session has expired on …".
        (Some(190), _) if says("session has expired") => ErrorClass::Expired,
        // The same for an invalidation: captured 460s come without their subcode too.
        (Some(190), _)
            if says("session has been invalidated")
                || says("session was invalidated")
                || says("session is invalid because") =>
        {
            ErrorClass::Invalidated
        }
        (Some(190), _) => ErrorClass::Invalid,
        // "Error validating client secret." is wrong credentials; "fb_exchange_token parameter not
        // specified" is the same code for a bad request.
        (Some(1), _) if endpoint == Endpoint::OAuthAccessToken => {
            if says("client secret") {
                ErrorClass::BadCredentials
            } else {
                ErrorClass::Other
            }
        }
        (Some(3 | 10 | 200..=299), _) => ErrorClass::Permission,
        _ if limit_of(code).is_some() => ErrorClass::RateLimited,
        (Some(1 | 2 | 131000 | 131016 | 133004), _) => ErrorClass::Transient,
        _ if is_transient == Some(true) => ErrorClass::Transient,
        _ => ErrorClass::Other,
    }
}

/// Whose allowance a rate limit is (`graph-api.md` §7): what a caller must stop calling with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Code 4: the app's allowance (calls made with its app token, as `/debug_token` is): every
    /// call of the app waits.
    App,
    /// Code 17: one user's allowance across all apps (calls made with that user's token, as `/me`
    /// is): only that user's tokens wait.
    User,
    /// Code 32: one Page's allowance (calls made with a Page token): only that token waits.
    Page,
    /// Code 613: a custom limit on one endpoint for the app.
    Endpoint,
    /// Codes 80000–80014: a business use case's allowance (80004–80008 among them, 80007 a
    /// WhatsApp account's, 80008 WhatsApp management), shared by the app's calls on that business.
    BusinessUseCase,
    /// Codes 130429 (throughput), 131056 (one business–user pair) and 131048 (spam): WhatsApp
    /// messaging limits, for sending only.
    Messaging,
}

/// Whose rate limit `code` is, or `None` when it is no rate limit. The one table of rate-limit
/// codes: [`classify`] calls any code it names [`ErrorClass::RateLimited`].
pub fn limit_of(code: Option<i64>) -> Option<Limit> {
    Some(match code? {
        4 => Limit::App,
        17 => Limit::User,
        32 => Limit::Page,
        613 => Limit::Endpoint,
        80000..=80014 => Limit::BusinessUseCase,
        130429 | 131056 | 131048 => Limit::Messaging,
        _ => return None,
    })
}

/// Whether `haystack` holds `needle` (ASCII, any case), without allocating: messages come from the
/// network.
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Everything a Graph API call can fail with. `Clone`, so that one failed batch can be every one of its
/// tokens' answer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API answered with an error object.
    #[error("the Graph API refused `{endpoint}`: {error}")]
    Graph {
        /// The path called, without a query string.
        endpoint: String,
        /// The error object.
        error: Box<GraphError>,
        /// Usage headers sent with the error.
        usage: Usage,
    },
    /// An HTTP error status with no Graph error object (a proxy or an outage page).
    #[error("the Graph API answered `{endpoint}` with HTTP {status} and no error object")]
    Status {
        /// The path called.
        endpoint: String,
        /// The HTTP status.
        status: u16,
    },
    /// The connection failed or timed out.
    #[error("could not reach the Graph API at {origin}: {reason}")]
    Transport {
        /// Scheme, host and port.
        origin: String,
        /// What failed, without the URL.
        reason: String,
    },
    /// The server's TLS certificate was refused: not a passing failure, so never retried.
    #[error("the TLS certificate of {origin} was refused: {reason}")]
    Tls {
        /// Scheme, host and port.
        origin: String,
        /// What rustls said.
        reason: String,
    },
    /// The body was cut short or was not JSON.
    #[error("the Graph API's answer to `{endpoint}` was cut short or not JSON: {reason}")]
    Truncated {
        /// The path called.
        endpoint: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The body was longer than any Graph API answer: a broken proxy or a hostile server. Only the
    /// cap was read.
    #[error(
        "the answer to `{endpoint}` was larger than {}, more than any Graph API answer, so it was not read: something between here and Meta (a proxy?) is not the Graph API",
        crate::body::human_bytes(*limit)
    )]
    TooLarge {
        /// The path called.
        endpoint: String,
        /// The cap, in bytes.
        limit: usize,
    },
    /// The body was JSON but not of the documented shape.
    #[error("the Graph API's answer to `{endpoint}` does not have the documented shape: {reason}")]
    Shape {
        /// The path called.
        endpoint: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A retry would have to wait longer than the time left.
    #[error(
        "gave up on `{endpoint}`: the next try would have to wait {}, longer than the {} left of the time budget; last error: {last}",
        human(*wait), human(*left)
    )]
    OutOfTime {
        /// The path called.
        endpoint: String,
        /// How long the next try would have had to wait.
        wait: Duration,
        /// What was left of the budget.
        left: Duration,
        /// The error that called for the wait.
        last: Box<Error>,
    },
    /// The client was configured wrongly.
    #[error("{0}")]
    Config(String),
    /// A batch answered `null` for this request: Meta did not finish it in time (`graph-api.md` §8).
    /// Passing: asked again alone in a later batch.
    #[error(
        "the Graph API did not finish `{endpoint}` in time (its entry in a batch answer was `null`)"
    )]
    Unfinished {
        /// The path of the sub-request.
        endpoint: String,
    },
}

impl Error {
    /// The class of this error when it came from `endpoint`.
    pub fn class(&self, endpoint: Endpoint) -> ErrorClass {
        match self {
            Self::Graph { error, .. } => error.class(endpoint),
            Self::Status { status, .. } if *status >= 500 => ErrorClass::Transient,
            Self::Transport { .. }
            | Self::Truncated { .. }
            | Self::TooLarge { .. }
            | Self::Unfinished { .. } => ErrorClass::Transient,
            Self::OutOfTime { last, .. } => last.class(endpoint),
            Self::Status { .. } | Self::Shape { .. } | Self::Tls { .. } | Self::Config(_) => {
                ErrorClass::Other
            }
        }
    }

    /// Whose rate limit refused this call, if one did.
    pub fn limit(&self) -> Option<Limit> {
        self.graph_error().and_then(|e| limit_of(e.code))
    }

    /// The Graph error object, if the API sent one (also through a gave-up wait).
    pub fn graph_error(&self) -> Option<&GraphError> {
        match self {
            Self::Graph { error, .. } => Some(error.as_ref()),
            Self::OutOfTime { last, .. } => last.graph_error(),
            _ => None,
        }
    }
}

/// `2 min 30 s`, `800 ms`: how waits are shown.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{} ms", d.as_millis());
    }
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;

    #[test]
    fn classes_follow_the_reference_table() {
        let cases = [
            (Some(190), Some(463), None, Endpoint::Other, Expired),
            (Some(190), Some(460), None, Endpoint::Other, Invalidated),
            (Some(190), Some(458), None, Endpoint::Other, Invalidated),
            (Some(190), Some(492), None, Endpoint::Other, Invalidated),
            (Some(102), None, None, Endpoint::Other, Invalidated),
            (Some(190), None, None, Endpoint::Other, Invalid),
            (Some(190), Some(999), None, Endpoint::Other, Invalid),
            (Some(10), None, None, Endpoint::Other, Permission),
            (Some(200), None, None, Endpoint::Other, Permission),
            (Some(299), None, None, Endpoint::Other, Permission),
            (Some(3), None, None, Endpoint::Other, Permission),
            (Some(4), None, None, Endpoint::Other, RateLimited),
            (Some(80007), None, None, Endpoint::Other, RateLimited),
            (Some(130429), None, None, Endpoint::Other, RateLimited),
            (Some(1), None, None, Endpoint::Other, Transient),
            (Some(2), None, Some(true), Endpoint::Other, Transient),
            (Some(100), None, None, Endpoint::Other, Other),
            (Some(100), None, Some(true), Endpoint::Other, Transient),
            (Some(190), Some(463), Some(true), Endpoint::Other, Expired),
            (None, None, None, Endpoint::Other, Other),
        ];
        for (code, sub, transient, endpoint, want) in cases {
            assert_eq!(
                classify(code, sub, transient, "", endpoint),
                want,
                "{code:?}/{sub:?}"
            );
        }
    }

    #[test]
    fn a_190_without_a_subcode_is_told_by_its_message() {
        let captured = "Error validating access token: Session has expired on Monday, 23-Nov-15 14:00:00 PST. The current time is Tuesday, 24-Nov-15 02:00:00 PST.";
        assert_eq!(
            classify(Some(190), None, None, captured, Endpoint::Other),
            Expired
        );
        assert_eq!(
            classify(
                Some(190),
                None,
                None,
                &captured.to_uppercase(),
                Endpoint::Other
            ),
            Expired
        );
        let invalidated = "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.";
        assert_eq!(
            classify(Some(190), None, None, invalidated, Endpoint::Other),
            Invalidated
        );
        assert_eq!(
            classify(
                Some(190),
                None,
                None,
                "Error validating access token: The session is invalid because the user logged out.",
                Endpoint::Other
            ),
            Invalidated
        );
        // The subcode still wins where it names an invalidation.
        assert_eq!(
            classify(Some(190), Some(460), None, captured, Endpoint::Other),
            Invalidated
        );
        for invalid in [
            "Invalid OAuth access token - Cannot parse access token",
            "The access token could not be decrypted",
            "Invalid OAuth access token signature.",
        ] {
            assert_eq!(
                classify(Some(190), None, None, invalid, Endpoint::Other),
                Invalid,
                "{invalid}"
            );
        }
    }

    #[test]
    fn code_1_from_the_token_endpoint_is_wrong_credentials_only_about_the_secret() {
        let at = Endpoint::OAuthAccessToken;
        assert_eq!(
            classify(Some(1), None, None, "Error validating client secret.", at),
            BadCredentials
        );
        let request = "fb_exchange_token parameter not specified";
        assert_eq!(classify(Some(1), None, None, request, at), Other);
        assert!(!classify(Some(1), None, None, request, at).is_retryable());
        assert_eq!(
            classify(Some(1), None, None, request, Endpoint::Other),
            Transient
        );
    }

    #[test]
    fn each_rate_limit_names_whose_allowance_it_is() {
        let cases = [
            (4, Limit::App),
            (17, Limit::User),
            (32, Limit::Page),
            (613, Limit::Endpoint),
            (80000, Limit::BusinessUseCase),
            (80004, Limit::BusinessUseCase),
            (80007, Limit::BusinessUseCase),
            (80008, Limit::BusinessUseCase),
            (80014, Limit::BusinessUseCase),
            (130429, Limit::Messaging),
            (131056, Limit::Messaging),
            (131048, Limit::Messaging),
        ];
        for (code, limit) in cases {
            assert_eq!(limit_of(Some(code)), Some(limit), "code {code}");
            let class = classify(Some(code), None, Some(true), "", Endpoint::Other);
            assert_eq!(class, RateLimited, "code {code}");
            assert!(
                !class.is_retryable(),
                "code {code} is never sent again at once"
            );
        }
        for code in [80015, 79999, 18, 190, 100] {
            assert_eq!(limit_of(Some(code)), None, "code {code}");
        }
        assert_eq!(limit_of(None), None);
        let err = Error::Graph {
            endpoint: "/me".into(),
            error: Box::new(GraphError {
                code: Some(17),
                ..GraphError::default()
            }),
            usage: Usage::default(),
        };
        assert_eq!(err.limit(), Some(Limit::User));
        assert!(Transient.is_retryable());
    }

    #[test]
    fn code_4_is_a_rate_limit_whatever_the_status() {
        for status in [400, 403, 429] {
            let e = GraphError {
                message: "(#4) Application request limit reached".into(),
                code: Some(4),
                is_transient: Some(true),
                http_status: Some(status),
                ..GraphError::default()
            };
            assert_eq!(e.class(Endpoint::Other), RateLimited, "HTTP {status}");
        }
    }

    #[test]
    fn an_outage_is_transient_whatever_the_body() {
        let err = Error::Status {
            endpoint: "/me".into(),
            status: 503,
        };
        assert_eq!(err.class(Endpoint::Other), Transient);
        let err = Error::Status {
            endpoint: "/me".into(),
            status: 404,
        };
        assert_eq!(err.class(Endpoint::Other), Other);
    }

    #[test]
    fn waits_read_like_a_person_wrote_them() {
        assert_eq!(human(Duration::from_millis(800)), "800 ms");
        assert_eq!(human(Duration::from_secs(90)), "1 min 30 s");
        assert_eq!(human(Duration::from_secs(300)), "5 min");
        assert_eq!(human(Duration::from_secs(3900)), "1 h 5 min");
    }
}
