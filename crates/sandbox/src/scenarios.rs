//! The sandbox's apps and scenario tokens, generated at start so that no token is ever committed.
//!
//! Tokens are shaped like Meta's (`graph-api.md` §11): `E` + the Z-escaped base64 of the app id
//! (8 bytes, big-endian) followed by random bytes, so they start with `EAA`, decode offline to their app
//! id, and are about 180 characters long. The encoder is written here from the reference, not shared with
//! the client's decoder, so that a misreading in one is caught by the other.

use permatoken_secret::{AccessToken, AppSecret};
use ring::rand::{SecureRandom, SystemRandom};

/// An app as the sandbox knows it.
#[derive(Debug, Clone)]
pub struct App {
    /// Its id: 15 digits, like apps of the last decade.
    pub id: u64,
    /// Its name, `application` in `/debug_token`.
    pub name: String,
    /// Its secret: 32 lowercase hex characters.
    pub secret: AppSecret,
}

/// Which of the sandbox's two apps a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Ours,
    Other,
}

/// Why a token is dead before its time: what `/debug_token` and every other endpoint say.
#[derive(Debug, Clone)]
pub(crate) struct Death {
    pub(crate) subcode: Option<i64>,
    pub(crate) message: &'static str,
}

/// A token the sandbox issued, and everything `/debug_token` says about it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) scenario: &'static str,
    pub(crate) token: AccessToken,
    pub(crate) owner: Owner,
    pub(crate) token_type: &'static str,
    pub(crate) user_id: String,
    pub(crate) name: &'static str,
    /// Unix seconds, before the clock offset; `None`: not reported (short-lived tokens).
    pub(crate) issued_at: Option<i64>,
    /// Unix seconds, before the clock offset; 0: never expires.
    pub(crate) expires_at: i64,
    /// Unix seconds, before the clock offset; 0: never.
    pub(crate) data_access_expires_at: i64,
    pub(crate) scopes: Vec<&'static str>,
    pub(crate) granular_to_waba: bool,
    pub(crate) death: Option<Death>,
    /// Its expiry errors carry no `error_subcode`: WhatsApp endpoints dropped it from v16 on, and
    /// captured 190 errors show the same (`graph-api.md` §3, §12).
    pub(crate) drops_subcode: bool,
}

/// A scenario: a named token with a story, for `--scenario NAME` and for tests.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The name used on the command line.
    pub name: &'static str,
    /// What kind of token it is, in a sentence.
    pub about: &'static str,
}

pub(crate) const WABA_ID: &str = "102290129340398";

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;
const ALL: &[&str] = &[
    "whatsapp_business_messaging",
    "whatsapp_business_management",
    "business_management",
];
const WHATSAPP_ONLY: &[&str] = &[
    "whatsapp_business_messaging",
    "whatsapp_business_management",
];

/// The scenarios, in the order they are printed. The first is the default.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "system-user",
        about: "never-expiring system-user token with every permission (the production setup)",
    },
    Scenario {
        name: "system-user-60d",
        about: "system-user token that expires 60 days after it was made (50 days left)",
    },
    Scenario {
        name: "user-60d",
        about: "long-lived (60-day) user token from an exchange, 57 days left",
    },
    Scenario {
        name: "user-expiring",
        about: "long-lived user token inside the warning window: 10 days left",
    },
    Scenario {
        name: "user-expires-soon",
        about: "long-lived user token inside the critical window: 2 days left",
    },
    Scenario {
        name: "temporary",
        about: "temporary token from WhatsApp → API Setup with an hour left",
    },
    Scenario {
        name: "temporary-fresh",
        about: "temporary token from WhatsApp → API Setup, made 2 hours ago (22 hours left)",
    },
    Scenario {
        name: "short-lived",
        about: "short-lived login token (Graph API Explorer), 90 minutes left",
    },
    Scenario {
        name: "expired",
        about: "long-lived user token that expired 2 days ago",
    },
    Scenario {
        name: "expired-no-subcode",
        about: "user token that expired a day ago, its errors without `error_subcode` (as WhatsApp endpoints answer)",
    },
    Scenario {
        name: "user-no-expiry",
        about: "valid user token with `expires_at` 0: no expiry by time, data access lapses in 87 days",
    },
    Scenario {
        name: "password-changed",
        about: "user token invalidated because its user changed password",
    },
    Scenario {
        name: "malformed",
        about: "a token cut short when it was copied: the API cannot parse it",
    },
    Scenario {
        name: "missing-permission",
        about: "never-expiring system-user token without `whatsapp_business_messaging`",
    },
    Scenario {
        name: "no-business-management",
        about: "never-expiring system-user token without the recommended `business_management`",
    },
    Scenario {
        name: "admin",
        about: "a business admin's long-lived user token, for `permatoken mint`",
    },
    Scenario {
        name: "other-app",
        about: "never-expiring system-user token of another app than the sandbox's",
    },
];

pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source works");
    bytes
}

fn random_digits(n: usize) -> String {
    random_bytes(n)
        .iter()
        .enumerate()
        .map(|(i, b)| {
            // A leading zero would shorten the number.
            let d = if i == 0 { 1 + b % 9 } else { b % 10 };
            char::from(b'0' + d)
        })
        .collect()
}

pub(crate) fn new_app(name: &str) -> App {
    let secret: String = random_bytes(16)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    App {
        id: random_digits(15).parse().expect("15 digits fit in a u64"),
        name: name.to_owned(),
        secret: AppSecret::new(secret),
    }
}

/// How many random bytes follow the app id in a token.
const TOKEN_RANDOM: usize = 124;

/// A token of `app_id` in Meta's shape (`graph-api.md` §11).
pub(crate) fn mint(app_id: u64) -> AccessToken {
    mint_with(app_id, &random_bytes(TOKEN_RANDOM))
}

/// [`mint`] with the random part given: many tokens then cost one call to the random source.
fn mint_with(app_id: u64, random: &[u8]) -> AccessToken {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = app_id.to_be_bytes().to_vec();
    bytes.extend_from_slice(random);
    let mut b64 = Vec::with_capacity(bytes.len() * 4 / 3 + 4);
    for chunk in bytes.chunks(3) {
        let mut n = [0u8; 3];
        n[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from(n[0]) << 16 | u32::from(n[1]) << 8 | u32::from(n[2]);
        for i in 0..4 {
            b64.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63]
            } else {
                b'='
            });
        }
    }
    let mut token = String::from("E");
    for c in b64 {
        match c {
            b'Z' => token.push_str("ZA"),
            b'+' => token.push_str("ZB"),
            b'/' => token.push_str("ZC"),
            b'=' => token.push_str("ZD"),
            c => token.push(char::from(c)),
        }
    }
    AccessToken::new(token)
}

/// Whether `token` has the whole shape [`mint`] gives: `E`, then the Z-escaped base64 of exactly the
/// 132 bytes of a token. A token with one character changed keeps it; one cut short does not.
pub(crate) fn well_formed(token: &str) -> bool {
    let Some(rest) = token.strip_prefix('E') else {
        return false;
    };
    let mut chars = rest.bytes();
    let mut len = 0;
    while let Some(c) = chars.next() {
        let ok = match c {
            b'Z' => matches!(chars.next(), Some(b'A' | b'B' | b'C' | b'D')),
            c => c.is_ascii_alphanumeric(),
        };
        if !ok {
            return false;
        }
        len += 1;
    }
    // 132 bytes are 44 groups of three: 176 characters, no padding.
    len == 176
}

/// The sandbox business's one system user: every system-user token of our app acts as it.
pub(crate) fn new_system_user_id() -> String {
    random_digits(15)
}

pub(crate) fn build(ours: &App, other: &App, system_user_id: &str, now: i64) -> Vec<Record> {
    let user = |scenario, token_type, name, issued: Option<i64>, expires: i64| Record {
        scenario,
        token: mint(ours.id),
        owner: Owner::Ours,
        token_type,
        user_id: if token_type == "SYSTEM_USER" {
            system_user_id.to_owned()
        } else {
            random_digits(15)
        },
        name,
        issued_at: issued.map(|i| now + i),
        expires_at: if expires == 0 { 0 } else { now + expires },
        data_access_expires_at: if token_type == "SYSTEM_USER" {
            0
        } else {
            now + 87 * DAY
        },
        scopes: ALL.to_vec(),
        granular_to_waba: true,
        death: None,
        drops_subcode: false,
    };
    let mut records = vec![
        user(
            "system-user",
            "SYSTEM_USER",
            "Sandbox System User",
            Some(-30 * DAY),
            0,
        ),
        user(
            "system-user-60d",
            "SYSTEM_USER",
            "Sandbox System User",
            Some(-10 * DAY),
            50 * DAY,
        ),
        user(
            "user-60d",
            "USER",
            "Sandbox Developer",
            Some(-3 * DAY),
            57 * DAY,
        ),
        user(
            "user-expiring",
            "USER",
            "Sandbox Developer",
            Some(-50 * DAY),
            10 * DAY,
        ),
        user(
            "user-expires-soon",
            "USER",
            "Sandbox Developer",
            Some(-58 * DAY),
            2 * DAY,
        ),
        user("temporary", "USER", "Sandbox Developer", None, HOUR),
        user(
            "temporary-fresh",
            "USER",
            "Sandbox Developer",
            None,
            22 * HOUR,
        ),
        user("short-lived", "USER", "Sandbox Developer", None, 90 * 60),
        user(
            "expired",
            "USER",
            "Sandbox Developer",
            Some(-62 * DAY),
            -2 * DAY,
        ),
        Record {
            drops_subcode: true,
            ..user(
                "expired-no-subcode",
                "USER",
                "Sandbox Developer",
                Some(-61 * DAY),
                -DAY,
            )
        },
        user(
            "user-no-expiry",
            "USER",
            "Sandbox Developer",
            Some(-3 * DAY),
            0,
        ),
        // An invalidated token's `/debug_token` shows `expires_at: 0` and no `issued_at` (§12): a
        // dead token's 0 does not mean "never expires".
        Record {
            death: Some(Death {
                subcode: Some(460),
                message: "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
            }),
            ..user("password-changed", "USER", "Sandbox Developer", None, 0)
        },
        Record {
            scopes: vec!["whatsapp_business_management", "business_management"],
            ..user(
                "missing-permission",
                "SYSTEM_USER",
                "Sandbox System User",
                Some(-30 * DAY),
                0,
            )
        },
        Record {
            scopes: WHATSAPP_ONLY.to_vec(),
            ..user(
                "no-business-management",
                "SYSTEM_USER",
                "Sandbox System User",
                Some(-30 * DAY),
                0,
            )
        },
        Record {
            token: mint(other.id),
            owner: Owner::Other,
            user_id: random_digits(15),
            ..user(
                "other-app",
                "SYSTEM_USER",
                "Other App System User",
                Some(-30 * DAY),
                0,
            )
        },
        user(
            "admin",
            "USER",
            "Sandbox Business Admin",
            Some(-5 * DAY),
            55 * DAY,
        ),
    ];
    // A token cut short while being copied: the API cannot parse it, so it is in no table of Meta's.
    // It is recorded only so that `--scenario malformed` can hand it out.
    let cut = records[0].token.expose_secret()[..60].to_owned();
    records.push(Record {
        token: AccessToken::new(cut),
        death: Some(Death {
            subcode: None,
            message: "Invalid OAuth access token - Cannot parse access token",
        }),
        ..user("malformed", "USER", "", None, 0)
    });
    debug_assert_eq!(records.len(), SCENARIOS.len());
    records
}

/// The scenario name of every extra token (`--extra-tokens`): no scenario has it.
pub(crate) const EXTRA: &str = "extra";

/// `n` extra valid tokens for tests and benchmarks: each a never-expiring system-user token of our
/// app with every WhatsApp permission, like `system-user`. One call to the random source for all.
pub(crate) fn extras(ours: &App, system_user_id: &str, now: i64, n: usize) -> Vec<Record> {
    let random = random_bytes(n * TOKEN_RANDOM);
    random
        .chunks_exact(TOKEN_RANDOM)
        .map(|chunk| Record {
            scenario: EXTRA,
            token: mint_with(ours.id, chunk),
            owner: Owner::Ours,
            token_type: "SYSTEM_USER",
            user_id: system_user_id.to_owned(),
            name: "Sandbox System User",
            issued_at: Some(now - 30 * DAY),
            expires_at: 0,
            data_access_expires_at: 0,
            scopes: ALL.to_vec(),
            granular_to_waba: true,
            death: None,
            drops_subcode: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_like_metas_and_decode_to_their_app() {
        let app = new_app("x");
        for _ in 0..50 {
            let token = mint(app.id);
            let text = token.expose_secret();
            assert!(text.starts_with("EAA"), "{text}");
            assert!(text.bytes().all(|b| b.is_ascii_alphanumeric()), "{text}");
            assert!((150..=260).contains(&text.len()), "{}", text.len());
            assert_eq!(token.embedded_app_id(), Some(app.id));
            // What `check` and `watch` send at all (a cut one keeps the shape: Meta tells it is cut).
            assert!(token.has_meta_shape());
            assert!(AccessToken::new(&text[..60]).has_meta_shape());
        }
    }

    #[test]
    fn a_whole_token_is_well_formed_and_a_cut_one_is_not() {
        let token = mint(new_app("x").id);
        let text = token.expose_secret();
        assert!(well_formed(text));
        assert!(!well_formed(&text[..60]));
        assert!(!well_formed(&text[1..]));
        assert!(!well_formed(&format!("{text}A")));
    }

    #[test]
    fn extra_tokens_are_distinct_and_well_formed() {
        let app = new_app("x");
        let extras = extras(&app, "100000000000001", 1_800_000_000, 500);
        assert_eq!(extras.len(), 500);
        let distinct: std::collections::HashSet<_> =
            extras.iter().map(|r| r.token.expose_secret()).collect();
        assert_eq!(distinct.len(), 500);
        for r in &extras {
            assert!(well_formed(r.token.expose_secret()));
            assert_eq!(r.token.embedded_app_id(), Some(app.id));
            assert_eq!(r.expires_at, 0);
        }
    }

    #[test]
    fn every_scenario_has_a_token() {
        let (a, b) = (new_app("a"), new_app("b"));
        let records = build(&a, &b, "100000000000001", 1_800_000_000);
        for s in SCENARIOS {
            assert!(records.iter().any(|r| r.scenario == s.name), "{}", s.name);
        }
        assert_eq!(records.len(), SCENARIOS.len());
    }
}
