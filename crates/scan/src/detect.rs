//! The detectors: Meta access tokens, app tokens (`APP_ID|APP_SECRET`) and app secrets, found in a
//! byte buffer by literal prefilters (memchr, aho-corasick) and checked by their shape, so that a scan
//! runs at the speed of a grep and finds only what is real.
//!
//! - An access token is `EAA` and 100 to 1024 letters and digits, on a word boundary, not inside base64
//!   (no `+`, `/` or `=` right after it), whose `Z` escapes are all `ZA`–`ZD`, and which decodes to a
//!   plausible app id (`graph-api.md` §11). `EAAAAAA…` inside base64 data decodes to 0 and is not one.
//! - An app token is 10 to 16 digits, `|` (or `%7C`), and 32 lowercase hex characters.
//! - An app secret is 32 lowercase hex characters assigned to a Meta key (`FACEBOOK_APP_SECRET`,
//!   `fb_app_secret`, …), or to a generic one (`app_secret`, `client_secret`) with Meta context nearby
//!   (`graph.facebook.com`, `facebook`, `fb_`, `whatsapp`, a Meta token or app id); other OAuth
//!   providers also issue 32-hex secrets, so a bare `client_secret` is not enough.
//!
//! Every detector is linear in the buffer, whatever it holds: each match looks at a fixed window
//! around it (a key at most [`KEY_WINDOW`] bytes either side of `secret`, a value within
//! [`VALUE_WINDOW`] bytes of its key, Meta context within [`CONTEXT`] bytes), never to the start or end
//! of the buffer or line. A pull request must not be able to stall a CI job with a crafted file.
//!
//! Must never: scan back or forth without a bound, or allocate in proportion to the buffer per match.

use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use memchr::memmem;
use permatoken_secret::AccessToken;

/// What was found.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A user, system-user or page token (`EAA…`).
    AccessToken,
    /// `APP_ID|APP_SECRET`.
    AppToken,
    /// A bare app secret.
    AppSecret,
}

/// One detection in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) kind: Kind,
    /// The secret's bytes.
    pub(crate) range: Range<usize>,
    /// The app it belongs to, when known.
    pub(crate) app_id: Option<String>,
}

/// App ids are below 2^52 today (why tokens start with `EAA`) and have 10 to 16 digits (§11).
fn plausible_app_id(id: u64) -> bool {
    (1_000_000_000..(1u64 << 52)).contains(&id)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// The detectors, built once and shared by every thread.
pub(crate) struct Detectors {
    eaa: memmem::Finder<'static>,
    secret_words: AhoCorasick,
    context: AhoCorasick,
    app_id_keys: AhoCorasick,
}

/// How far around a generic secret key Meta context is looked for.
const CONTEXT: usize = 400;
/// How far a key is read either side of the word `secret`: `FACEBOOK_APP_SECRET` and its kin are far
/// shorter, and a longer key is read only in part (its value is then not found, never a wrong one).
const KEY_WINDOW: usize = 64;
/// How far after its key a secret's value may start (past `=`, `:`, quotes and blanks).
const VALUE_WINDOW: usize = 64;
/// The longest access token (`EAA` included).
const MAX_TOKEN: usize = permatoken_secret::MAX_TOKEN_LEN;
/// App ids have at most 16 digits (§11).
const MAX_APP_ID_DIGITS: usize = 16;

impl Detectors {
    pub(crate) fn new() -> Self {
        let ci = |patterns: &[&str]| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostFirst)
                .build(patterns)
                .expect("fixed patterns build")
        };
        Self {
            eaa: memmem::Finder::new(b"EAA"),
            secret_words: ci(&["secret"]),
            context: ci(&[
                "graph.facebook.com",
                "facebook",
                "fb_",
                "fb.",
                "whatsapp",
                "meta_app",
            ]),
            app_id_keys: ci(&["app_id", "appid", "app-id", "client_id", "clientid"]),
        }
    }

    /// Every detection in `text`, in order, overlaps removed (an app token's secret is not reported
    /// again as a bare secret).
    pub(crate) fn detect(&self, text: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        self.access_tokens(text, &mut hits);
        self.app_tokens(text, &mut hits);
        self.app_secrets(text, &mut hits);
        hits.sort_by_key(|h| (h.range.start, h.range.end));
        let mut kept: Vec<Hit> = Vec::with_capacity(hits.len());
        for hit in hits {
            match kept.last() {
                Some(last) if hit.range.start < last.range.end => {}
                _ => kept.push(hit),
            }
        }
        kept
    }

    fn access_tokens(&self, text: &[u8], hits: &mut Vec<Hit>) {
        let mut next = 0;
        for start in self.eaa.find_iter(text) {
            if start < next || (start > 0 && is_word(text[start - 1])) {
                continue;
            }
            // One more than the longest token: a longer word is no token, and the `EAA`s inside it
            // are skipped because a word character precedes them.
            let end = start
                + text[start..]
                    .iter()
                    .take(MAX_TOKEN + 1)
                    .take_while(|b| is_word(**b))
                    .count();
            next = end;
            let len = end - start;
            if !(100..=MAX_TOKEN).contains(&len) {
                continue;
            }
            if matches!(text.get(end), Some(b'+' | b'/' | b'=')) {
                continue; // a base64 blob that happens to start with EAA
            }
            let candidate = &text[start..end];
            let escapes_ok = candidate
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'Z')
                .all(|(i, _)| matches!(candidate.get(i + 1), Some(b'A'..=b'D')));
            let token = AccessToken::new(String::from_utf8_lossy(candidate).into_owned());
            // At least the shape `check` and `watch` require before sending a token; then what
            // tells a token from prose: its escapes and the app id inside it.
            if !token.has_meta_shape() || !escapes_ok {
                continue;
            }
            match token.embedded_app_id() {
                Some(id) if plausible_app_id(id) => hits.push(Hit {
                    kind: Kind::AccessToken,
                    range: start..end,
                    app_id: Some(id.to_string()),
                }),
                _ => {}
            }
        }
    }

    fn app_tokens(&self, text: &[u8], hits: &mut Vec<Hit>) {
        let mut check = |sep: usize, sep_len: usize| {
            let digits = text[..sep]
                .iter()
                .rev()
                .take(MAX_APP_ID_DIGITS + 1)
                .take_while(|b| b.is_ascii_digit())
                .count();
            let start = sep - digits;
            if !(10..=MAX_APP_ID_DIGITS).contains(&digits)
                || (start > 0 && is_word(text[start - 1]))
            {
                return;
            }
            let secret = sep + sep_len;
            let hex = text[secret..]
                .iter()
                .take(33)
                .take_while(|b| is_hex(**b))
                .count();
            let end = secret + hex;
            if hex != 32 || text.get(end).is_some_and(|b| is_word(*b)) {
                return;
            }
            let id = std::str::from_utf8(&text[start..sep]).unwrap_or_default();
            if id.parse::<u64>().is_ok_and(plausible_app_id) {
                hits.push(Hit {
                    kind: Kind::AppToken,
                    range: start..end,
                    app_id: Some(id.to_owned()),
                });
            }
        };
        for sep in memchr::memchr_iter(b'|', text) {
            check(sep, 1);
        }
        for pattern in [&b"%7C"[..], b"%7c"] {
            for sep in memmem::find_iter(text, pattern) {
                check(sep, 3);
            }
        }
    }

    fn app_secrets(&self, text: &[u8], hits: &mut Vec<Hit>) {
        let key_char = |b: &&u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
        // A key holding `secret` twice (`SECRET_SECRET`) is read once.
        let mut previous_key_end = 0;
        for m in self.secret_words.find_iter(text) {
            if m.start() < previous_key_end {
                continue;
            }
            // The key the word is part of: `FACEBOOK_APP_SECRET`, `client_secret`, `appSecret`, …
            let floor = m.start().saturating_sub(KEY_WINDOW);
            let key_start = m.start()
                - text[floor..m.start()]
                    .iter()
                    .rev()
                    .take_while(key_char)
                    .count();
            let ceiling = (m.end() + KEY_WINDOW).min(text.len());
            let key_end = m.end() + text[m.end()..ceiling].iter().take_while(key_char).count();
            previous_key_end = key_end;
            // The value: after the key, past `=`, `:`, quotes and blanks (none of them ends a line).
            let rest = &text[key_end..(key_end + VALUE_WINDOW).min(text.len())];
            let skip = rest
                .iter()
                .take_while(|b| {
                    matches!(
                        b,
                        b' ' | b'\t' | b'=' | b':' | b'"' | b'\'' | b'>' | b',' | b'`'
                    )
                })
                .count();
            if skip == 0 {
                continue;
            }
            let start = key_end + skip;
            let hex = text[start..]
                .iter()
                .take(33)
                .take_while(|b| is_hex(**b))
                .count();
            let end = start + hex;
            if hex != 32 || text.get(end).is_some_and(|b| is_word(*b)) {
                continue;
            }
            let key = String::from_utf8_lossy(&text[key_start..key_end]).to_ascii_lowercase();
            let meta_key = key.contains("facebook")
                || key.starts_with("fb")
                || key.contains("_fb")
                || key.contains("whatsapp")
                || key.contains("meta");
            let around = &text[key_start.saturating_sub(CONTEXT)..(end + CONTEXT).min(text.len())];
            if !meta_key && self.context.find(around).is_none() && self.eaa.find(around).is_none() {
                continue;
            }
            hits.push(Hit {
                kind: Kind::AppSecret,
                range: start..end,
                app_id: self.app_id_near(around),
            });
        }
    }

    /// An app id assigned near a secret (`FACEBOOK_APP_ID=…`, `"client_id": "…"`).
    fn app_id_near(&self, around: &[u8]) -> Option<String> {
        for m in self.app_id_keys.find_iter(around) {
            let after = &around[m.end()..];
            let skip = after
                .iter()
                .take(8)
                .take_while(|b| {
                    !b.is_ascii_digit()
                        && matches!(
                            b,
                            b' ' | b'\t' | b'=' | b':' | b'"' | b'\'' | b'_' | b'>' | b','
                        )
                })
                .count();
            let digits = after[skip..]
                .iter()
                .take(MAX_APP_ID_DIGITS + 1)
                .take_while(|b| b.is_ascii_digit())
                .count();
            let id = &after[skip..skip + digits];
            if (10..=MAX_APP_ID_DIGITS).contains(&digits)
                && !after.get(skip + digits).is_some_and(|b| is_word(*b))
            {
                let id = String::from_utf8_lossy(id).into_owned();
                if id.parse::<u64>().is_ok_and(plausible_app_id) {
                    return Some(id);
                }
            }
        }
        None
    }
}
