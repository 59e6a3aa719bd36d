//! The kind of a token (DESIGN §4), derived from `/debug_token`'s `type` and lifetime.

use jiff::Timestamp;
use permatoken_graph::TokenInfo;
use serde::Serialize;

/// What kind of token this is, which decides how it dies and how it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// `SYSTEM_USER` with `expires_at` 0: the production token.
    #[serde(rename = "system_user_permanent")]
    SystemUserPermanent,
    /// `SYSTEM_USER` that expires (60 days), renewable by API within its lifetime.
    #[serde(rename = "system_user_60d")]
    SystemUser60d,
    /// `USER`, about 60 days: made by an exchange.
    #[serde(rename = "long_lived_user")]
    LongLivedUser,
    /// `USER`, about a day: WhatsApp → API Setup.
    #[serde(rename = "temporary")]
    Temporary,
    /// `USER`, one to two hours: a login or the Graph API Explorer.
    #[serde(rename = "short_lived_user")]
    ShortLivedUser,
    /// `PAGE`.
    #[serde(rename = "page")]
    Page,
    /// `APP`.
    #[serde(rename = "app")]
    App,
    /// Anything the API did not say enough about.
    #[serde(rename = "unknown")]
    Unknown,
}

impl Kind {
    /// How the kind reads in a sentence.
    pub fn describe(self) -> &'static str {
        match self {
            Self::SystemUserPermanent => "never-expiring system-user token",
            Self::SystemUser60d => "60-day system-user token",
            Self::LongLivedUser => "long-lived (60-day) user token",
            Self::Temporary => "temporary token (WhatsApp → API Setup, about 24 hours)",
            Self::ShortLivedUser => {
                "short-lived user token (a login or Graph API Explorer, 1–2 hours; or a temporary API Setup token near its end)"
            }
            Self::Page => "Page token",
            Self::App => "app token",
            Self::Unknown => "token of unknown kind",
        }
    }
}

/// A short-lived token lives 1–2 h; a little slack for clock skew and rounding.
const SHORT_LIVED_MAX_SECS: i64 = 2 * 3600 + 10 * 60;
/// A temporary (API Setup) token lives about a day; anything up to two days is taken as one.
const TEMPORARY_MAX_SECS: i64 = 2 * 86_400;

/// Derives the kind: `SYSTEM_USER` by whether it expires, `USER` by its lifetime (`expires_at −
/// issued_at`, or the time left when `issued_at` is absent, as Meta sends it only for long-lived
/// tokens).
///
/// `expires_at` 0 means "never expires" only on a valid token: an invalidated token shows 0 too
/// (`graph-api.md` §12), so a dead token's 0 tells nothing. A valid `USER` token with 0 is a
/// long-lived user token that does not expire by time (its data access still lapses).
pub fn derive_kind(info: &TokenInfo, now: Timestamp) -> Kind {
    let token_type = info.token_type.as_deref().unwrap_or("");
    let never = info.expires_at == Some(0) && info.is_valid == Some(true);
    if token_type.eq_ignore_ascii_case("SYSTEM_USER") {
        return match info.expires_at {
            Some(0) if never => Kind::SystemUserPermanent,
            Some(0) | None => Kind::Unknown,
            Some(_) => Kind::SystemUser60d,
        };
    }
    if token_type.eq_ignore_ascii_case("PAGE") {
        return Kind::Page;
    }
    if token_type.eq_ignore_ascii_case("APP") {
        return Kind::App;
    }
    if !token_type.eq_ignore_ascii_case("USER") {
        return Kind::Unknown;
    }
    if never {
        return Kind::LongLivedUser;
    }
    let Some(expires) = info.expires_at.filter(|e| *e > 0) else {
        return Kind::Unknown;
    };
    let lifetime = match info.issued_at.filter(|i| *i > 0 && *i < expires) {
        Some(issued) => expires - issued,
        None => expires - now.as_second(),
    };
    match lifetime {
        l if l <= SHORT_LIVED_MAX_SECS => Kind::ShortLivedUser,
        l if l <= TEMPORARY_MAX_SECS => Kind::Temporary,
        _ => Kind::LongLivedUser,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(t: &str, issued: Option<i64>, expires: i64) -> TokenInfo {
        let json = serde_json::json!({"data_access_expires_at": 0, "type": t, "issued_at": issued, "expires_at": expires, "is_valid": true});
        serde_json::from_value(json).unwrap()
    }

    fn dead(t: &str, expires: i64) -> TokenInfo {
        let mut info = info(t, None, expires);
        info.is_valid = Some(false);
        info
    }

    #[test]
    fn kinds_follow_design_section_4() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let n = now.as_second();
        let cases = [
            (
                info("SYSTEM_USER", Some(n - 100), 0),
                Kind::SystemUserPermanent,
            ),
            (
                info("SYSTEM_USER", Some(n - 100), n + 50 * 86_400),
                Kind::SystemUser60d,
            ),
            (
                info("USER", Some(n - 3 * 86_400), n + 57 * 86_400),
                Kind::LongLivedUser,
            ),
            // Long-lived, near its end: the lifetime decides, not the time left.
            (
                info("USER", Some(n - 59 * 86_400), n + 3600),
                Kind::LongLivedUser,
            ),
            (info("USER", None, n + 22 * 3600), Kind::Temporary),
            (info("USER", None, n + 90 * 60), Kind::ShortLivedUser),
            (info("USER", Some(n - 60), n + 7140), Kind::ShortLivedUser),
            (info("user", None, n + 86_400), Kind::Temporary),
            (info("PAGE", None, 0), Kind::Page),
            (info("APP", None, 0), Kind::App),
            (info("SOMETHING_NEW", None, 0), Kind::Unknown),
            // Valid with 0: a long-lived user token that does not expire by time (§12).
            (info("USER", None, 0), Kind::LongLivedUser),
            (info("USER", Some(n - 100), 0), Kind::LongLivedUser),
            // Dead with 0: an invalidated token shows 0; it says nothing about its lifetime.
            (dead("USER", 0), Kind::Unknown),
            (dead("SYSTEM_USER", 0), Kind::Unknown),
        ];
        for (info, want) in cases {
            assert_eq!(derive_kind(&info, now), want, "{info:?}");
        }
    }
}
