//! The secret types of permatoken: access tokens, app secrets and app tokens.
//!
//! This room keeps credentials from leaking by construction. Each secret is a newtype whose `Debug` and
//! `Display` print only a fingerprint (first 4 and last 3 characters and a short SHA-256), whose memory is
//! zeroed on drop, and whose value is reached only through one explicit, greppable call:
//! `expose_secret()`. It also computes the two values derived from secrets that the Graph API needs
//! (`appsecret_proof`) and that we read offline (the app id inside a token).
//!
//! Must never: do I/O, derive `Serialize`, or print a value anywhere but through `expose_secret()`.

use std::fmt;

use ring::{digest, hmac};
use zeroize::Zeroizing;

/// How many leading and trailing characters a fingerprint shows, and below which length it shows none.
const HEAD: usize = 4;
const TAIL: usize = 3;
const MIN_LEN_FOR_ENDS: usize = 20;

/// A WhatsApp Business (Graph API) access token: user, system-user, page or any other kind.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Zeroizing<String>);

/// A Meta app secret (`FACEBOOK_APP_SECRET`), 32 lowercase hex characters for real apps.
#[derive(Clone, PartialEq, Eq)]
pub struct AppSecret(Zeroizing<String>);

/// `WHATSAPP_WEBHOOK_VERIFY_TOKEN`: the string Meta sends back in the webhook verification handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyToken(Zeroizing<String>);

/// The app access token `APP_ID|APP_SECRET`. It holds the secret, so it is a secret too.
#[derive(Clone, PartialEq, Eq)]
pub struct AppToken {
    app_id: String,
    secret: AppSecret,
}

impl AccessToken {
    /// The app id a token carries inside it, decoded offline (`graph-api.md` §11).
    ///
    /// Meta does not document the format; it was observed on public sample tokens: after un-escaping
    /// (`ZA`→`Z`, `ZB`→`+`, `ZC`→`/`, `ZD`→`=`), dropping the leading `E` and base64-decoding, the
    /// first 8 bytes are the app id, big-endian. `None` when the token does not have that shape or the id
    /// is not a plausible app id (10 to 16 digits).
    pub fn embedded_app_id(&self) -> Option<u64> {
        embedded_app_id(&self.0)
    }

    /// Whether the value has the shape of a Meta token (`graph-api.md` §11), so that it may be sent
    /// to Meta at all: a user, system-user or page token (`EAA`, then letters and digits only, at most
    /// [`MAX_TOKEN_LEN`] characters in all), or an app token (`APP_ID|…`: 10 to 16 digits, `|`, and
    /// letters, digits, `-` or `_`).
    ///
    /// A private key, a JSON or `.env` text, a path, a URL, a word or a value of several lines has
    /// not: such a value, read by mistake from the wrong file, must never leave the machine. The rule
    /// is deliberately no stricter: a token cut short while copied keeps the shape and still goes to
    /// Meta, whose own word ("Cannot parse access token") tells that the copy went wrong; and the
    /// `Z` escapes and the embedded app id are left to `scan`, which must tell tokens from prose.
    pub fn has_meta_shape(&self) -> bool {
        has_meta_shape(&self.0)
    }
}

/// The longest access token (`EAA` included): the scanner's bound too.
pub const MAX_TOKEN_LEN: usize = 1024;

fn has_meta_shape(value: &str) -> bool {
    let bytes = value.as_bytes();
    if value.starts_with("EAA") {
        return (4..=MAX_TOKEN_LEN).contains(&bytes.len())
            && bytes.iter().all(u8::is_ascii_alphanumeric);
    }
    let Some((id, secret)) = value.split_once('|') else {
        return false;
    };
    (10..=16).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_digit())
        && (8..=256).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl AppSecret {
    /// `appsecret_proof` for calls made with `token`: lowercase hex of HMAC-SHA256 keyed by this secret.
    pub fn appsecret_proof(&self, token: &AccessToken) -> String {
        self.sign(token.0.as_bytes())
    }

    /// Lowercase hex of HMAC-SHA256 of `message` keyed by this secret: what `X-Hub-Signature-256`
    /// carries (after `sha256=`) for a webhook body.
    pub fn sign(&self, message: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_bytes());
        hex(hmac::sign(&key, message).as_ref())
    }
}

impl AppToken {
    /// The app token of the app `app_id` with secret `secret`.
    pub fn new(app_id: impl Into<String>, secret: AppSecret) -> Self {
        Self {
            app_id: app_id.into(),
            secret,
        }
    }

    /// Reads `APP_ID|APP_SECRET` as written in a file or a config, or with its `|` percent-encoded
    /// (`%7C`), as it appears in a URL someone pasted. `None` when there is no separator or the id part
    /// is not all digits: then the text is no app token, and nobody should split it by hand.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (id, secret) = text.split_once('|').or_else(|| {
            let at = text.to_ascii_lowercase().find("%7c")?;
            Some((&text[..at], &text[at + 3..]))
        })?;
        let plausible_id = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
        (plausible_id && !secret.is_empty()).then(|| Self::new(id, AppSecret::new(secret)))
    }

    /// The app id part, which is not secret.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The app secret part.
    pub fn secret(&self) -> &AppSecret {
        &self.secret
    }

    /// `APP_ID|APP_SECRET`, in memory that is zeroed when the returned value is dropped.
    pub fn expose_secret(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}|{}", self.app_id, self.secret.expose_secret()))
    }

    /// The app id and the secret's fingerprint.
    pub fn fingerprint(&self) -> String {
        format!("{}|{}", self.app_id, self.secret.fingerprint())
    }
}

/// The part every string-backed secret shares: construction (surrounding whitespace, such as a file's
/// trailing newline, dropped), the one exposing call, and the fingerprint.
macro_rules! secret_string {
    ($($ty:ty => $ends_shown:expr),* $(,)?) => {$(
        impl $ty {
            /// Wraps a value. Surrounding whitespace (a trailing newline from a file) is dropped.
            pub fn new(value: impl Into<String>) -> Self {
                Self(Zeroizing::new(trimmed(value.into())))
            }

            /// The value itself. Every call is a place where a secret leaves its box: keep them few.
            pub fn expose_secret(&self) -> &str {
                &self.0
            }

            /// `EAAT…sZD sha256:1a2b3c4d`: enough to tell secrets apart, useless to an attacker.
            pub fn fingerprint(&self) -> String {
                let ends_shown: fn(&str) -> bool = $ends_shown;
                fingerprint(&self.0, ends_shown(&self.0))
            }
        }
    )*};
}

// What was read as a token but has no token's shape may be anything (a private key): its ends are
// not shown.
secret_string!(
    AccessToken => has_meta_shape,
    AppSecret => |_| true,
    VerifyToken => |_| true,
);

macro_rules! fingerprint_only_formatting {
    ($($ty:ty => $label:literal),* $(,)?) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "({})"), self.fingerprint())
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.fingerprint())
            }
        }
    )*};
}

fingerprint_only_formatting!(
    AccessToken => "AccessToken",
    AppSecret => "AppSecret",
    AppToken => "AppToken",
    VerifyToken => "VerifyToken",
);

fn trimmed(mut value: String) -> String {
    let end = value.trim_end().len();
    value.truncate(end);
    let start = value.len() - value.trim_start().len();
    value.drain(..start);
    value
}

fn fingerprint(value: &str, ends_shown: bool) -> String {
    let digest = digest::digest(&digest::SHA256, value.as_bytes());
    let short = hex(&digest.as_ref()[..4]);
    let chars = value.chars().count();
    // A short value would be half revealed by its ends, so only the hash is shown then.
    if chars < MIN_LEN_FOR_ENDS || !ends_shown {
        return format!("sha256:{short}");
    }
    let head: String = value.chars().take(HEAD).collect();
    let tail: String = value.chars().skip(chars - TAIL).collect();
    format!("{head}…{tail} sha256:{short}")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

fn embedded_app_id(token: &str) -> Option<u64> {
    let rest = token.strip_prefix('E')?;
    // 11 base64 characters carry the first 8 bytes; un-escape only what that needs.
    let mut b64 = Vec::with_capacity(12);
    let mut chars = rest.bytes();
    while b64.len() < 12 {
        let c = chars.next()?;
        let c = if c == b'Z' {
            match chars.next()? {
                b'A' => b'Z',
                b'B' => b'+',
                b'C' => b'/',
                b'D' => b'=',
                _ => return None,
            }
        } else {
            c
        };
        b64.push(c);
    }
    let mut bits: u128 = 0;
    for &c in &b64 {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u128::from(v);
    }
    // 12 characters are 72 bits: the first 64 are the app id.
    let id = u64::try_from(bits >> 8).ok()?;
    (1_000_000_000..10_000_000_000_000_000)
        .contains(&id)
        .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding of `graph-api.md` §11, written here from the description so the decoder is tested
    /// against the spec rather than against itself.
    fn token_for(app_id: u64, tail: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bytes = app_id.to_be_bytes().to_vec();
        bytes.extend_from_slice(tail);
        let mut b64 = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            }
            for _ in chunk.len()..3 {
                b64.push('=');
            }
        }
        let mut out = String::from("E");
        for c in b64.chars() {
            match c {
                'Z' => out.push_str("ZA"),
                '+' => out.push_str("ZB"),
                '/' => out.push_str("ZC"),
                '=' => out.push_str("ZD"),
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn decodes_the_app_id_of_a_token_shaped_like_a_real_one() {
        for id in [
            350_685_531_728_u64,
            634_974_688_087_057,
            4_503_599_627_370_495,
        ] {
            let token = AccessToken::new(token_for(id, &[0xfb, 0xff, 0x3e, 7, 9, 200, 1, 2]));
            assert!(token.expose_secret().starts_with("EAA"), "{id}");
            assert_eq!(token.embedded_app_id(), Some(id));
        }
    }

    #[test]
    fn garbage_has_no_app_id() {
        for garbage in [
            "",
            "E",
            "EAA",
            "not a token",
            "EAAZZZZZZZZZZZZZZ",
            "EAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(
                AccessToken::new(garbage).embedded_app_id(),
                None,
                "{garbage}"
            );
        }
    }

    #[test]
    fn tokens_have_metas_shape_and_what_is_no_token_has_not() {
        let long = token_for(634_974_688_087_057, &[7; 120]);
        let cut = long[..60].to_owned();
        for token in [
            long.as_str(),
            cut.as_str(),
            "EAAPERMATOKENTEST",
            "EAAPERMATOKENTEST0123456789abcdefZZ",
            "1234567890|PERMATOKENTESTsecret",
            "634974688087057|0123456789abcdef0123456789abcdef",
        ] {
            assert!(AccessToken::new(token).has_meta_shape(), "{token}");
        }
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";
        let json = format!("{{\"access_token\": \"{long}\"}}");
        let env = format!("WHATSAPP_ACCESS_TOKEN={long}");
        let two_lines = format!("{long}\n{long}");
        let too_long = format!("{long}{}", "A".repeat(MAX_TOKEN_LEN));
        for text in [
            "",
            "EAA",
            "PERMATOKENTEST-token",
            "/srv/orders/.env",
            "EAA/../etc/passwd",
            "https://graph.facebook.com/?access_token=EAAPERMATOKENTEST",
            pem,
            json.as_str(),
            env.as_str(),
            two_lines.as_str(),
            too_long.as_str(),
            "EAAPERMATOKENTEST 0123456789abcdefghijklmn",
            "EAAPERMATOKENTEST-0123456789abcdefghijklmn",
            "12345|PERMATOKENTESTsecret",
            "1234567890|short",
            "1234567890|PERMATOKENTEST/secret",
        ] {
            assert!(!AccessToken::new(text).has_meta_shape(), "{text}");
        }
    }

    #[test]
    fn formatting_shows_only_a_fingerprint() {
        let value = "EAAPERMATOKENTESTxxxxxxxxxxxxxxxxxxxxsZD";
        let token = AccessToken::new(format!("  {value}\n"));
        assert_eq!(token.expose_secret(), value);
        for shown in [
            format!("{token}"),
            format!("{token:?}"),
            format!("{token:#?}"),
        ] {
            assert!(!shown.contains(value), "{shown}");
            assert!(shown.contains("EAAP…sZD sha256:"), "{shown}");
        }
        let secret = AppSecret::new("0123456789abcdef0123456789abcdef");
        let app = AppToken::new("1234567890", secret.clone());
        for shown in [format!("{secret:?}"), format!("{app}"), format!("{app:?}")] {
            assert!(!shown.contains("0123456789abcdef0123"), "{shown}");
        }
        assert_eq!(
            app.expose_secret().as_str(),
            "1234567890|0123456789abcdef0123456789abcdef"
        );
        assert_eq!(format!("{}", AppSecret::new("short")).len(), 15);
        let key = AccessToken::new(
            "-----BEGIN PRIVATE KEY-----\nPERMATOKENTEST\n-----END PRIVATE KEY-----",
        );
        assert!(key.fingerprint().starts_with("sha256:"), "{key}");
    }

    #[test]
    fn an_app_token_is_parsed_into_its_parts() {
        for text in [
            "1234567890|PERMATOKENTESTsecret",
            "1234567890%7CPERMATOKENTESTsecret",
            " 1234567890%7cPERMATOKENTESTsecret\n",
        ] {
            let app = AppToken::parse(text).expect(text);
            assert_eq!(app.app_id(), "1234567890");
            assert_eq!(app.secret().expose_secret(), "PERMATOKENTESTsecret");
        }
        for text in [
            "",
            "|",
            "1234|",
            "|secret",
            "abc|secret",
            "no separator",
            "12%7",
        ] {
            assert!(AppToken::parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn appsecret_proof_is_hmac_sha256_hex() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let proof = AppSecret::new("Jefe")
            .appsecret_proof(&AccessToken::new("what do ya want for nothing?"));
        assert_eq!(
            proof,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
