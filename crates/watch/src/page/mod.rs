//! The status page: one self-contained HTML document (inline CSS and JavaScript, no font, script or
//! image from anywhere), rendered on the server so that it reads before any script runs, then kept
//! fresh by its script, which fetches `api/tokens` every few seconds. At 10,000 tokens it shows one
//! page of them at a time: the search, the state filter, the page number, the view (cards or a
//! table) and the order (worst first or soonest expiry) live in the page's URL
//! (`?q=&state=&page=&view=table&sort=expiry`, read by [`view::TokenQuery::parse`]), the server
//! renders that page first ([`markup`]: a whole card for each token not ok, with its reason and fix;
//! a short one for each ok token; or the table), and the script fetches only that page. The view
//! and order are links, so they work without the script; times read as a person says them
//! ([`humane`]).
//!
//! A page is at most [`view::MAX_PER_PAGE`] tokens (50 unless the link asks), in cards or in the
//! table alike, whatever the fleet's size: it is written into one buffer, its embedded JSON too.
//!
//! Must never: insert untrusted text unescaped (token and route names come from a configuration file;
//! the server escapes them here, the script uses `textContent` only), or load anything from another
//! origin: the Content-Security-Policy allows only the page's own inline style and script (by hash)
//! and fetches to its own origin.

use std::fmt::Write as _;
use std::sync::LazyLock;

pub mod humane;
mod markup;
pub mod view;

use view::{SEVERITY, TokenPage, View};

const TEMPLATE: &str = include_str!("index.html");
const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("script.js");

static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256_base64(STYLE),
        sha256_base64(SCRIPT)
    )
});

/// The `Content-Security-Policy` the page is served with.
pub fn csp() -> &'static str {
    &CSP
}

fn sha256_base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = String::new();
    for chunk in digest.as_ref().chunks(3) {
        let mut n = [0u8; 3];
        n[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from(n[0]) << 16 | u32::from(n[1]) << 8 | u32::from(n[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    markup::text(&mut out, text);
    out
}

/// Writes what serde_json writes into the page's buffer, so that `<`, `>` and `&` never appear
/// inside `<script type="application/json">` (no end of the element, no comment) and the JSON is
/// not first made apart. serde_json writes whole UTF-8 pieces (it cuts strings only at the ASCII
/// characters it escapes); a piece that were not would fail the serialisation, not the page.
struct EmbeddedJson<'o>(&'o mut String);

impl std::io::Write for EmbeddedJson<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let piece = std::str::from_utf8(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        for c in piece.chars() {
            match c {
                '<' => self.0.push_str("\\u003c"),
                '>' => self.0.push_str("\\u003e"),
                '&' => self.0.push_str("\\u0026"),
                c => self.0.push(c),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The page's data for its script, as JSON, or `null` (the server-rendered tokens then stay).
fn embedded_json(out: &mut String, page: &TokenPage<'_>) {
    let mark = out.len();
    if serde_json::to_writer(EmbeddedJson(out), page).is_err() {
        out.truncate(mark);
        out.push_str("null");
    }
}

/// `10000` as `10,000`, as the script writes it too.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The filter chips: "all", then each state worst first, with how many tokens are in it.
fn chips(out: &mut String, page: &TokenPage<'_>) {
    let _ = write!(
        out,
        "<button type=\"button\" class=\"chip\" data-state=\"\" aria-pressed=\"{}\">all <span class=\"n\">{}</span></button>",
        page.states.is_empty(),
        thousands(page.all())
    );
    for state in SEVERITY {
        let _ = write!(
            out,
            "<button type=\"button\" class=\"chip st-{name}\" data-state=\"{name}\" aria-pressed=\"{pressed}\">{label} <span class=\"n\">{n}</span></button>",
            name = state.as_str(),
            pressed = page.states.contains(&state.as_str()),
            label = state.label(),
            n = thousands(page.counts.get(state)),
        );
    }
}

/// "101–150 of 10,000", or "0 of N" for an empty page.
pub fn range_text(page: &TokenPage<'_>) -> String {
    match page.range() {
        Some((first, last)) => format!(
            "{}–{} of {}",
            thousands(first),
            thousands(last),
            thousands(page.total)
        ),
        None => format!("0 of {}", thousands(page.total)),
    }
}

/// The rest of the state problem's paragraph: `hidden>` while the state can be written.
fn unwritable_text(page: &TokenPage<'_>) -> String {
    match page.state_unwritable {
        Some(problem) => format!(">{}", escape(&unwritable_words(problem))),
        None => " hidden>".to_owned(),
    }
}

/// What the page says while the state cannot be written (the script says the same).
pub fn unwritable_words(problem: &crate::snapshot::StateProblem) -> String {
    let since = jiff::Timestamp::from_second(problem.since)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    format!(
        "The state cannot be written since {since} ({}): alerts are still delivered; what is decided is recorded once it can be written.",
        problem.reason
    )
}

/// The whole page, showing `page` (the first page of the query in the page's own URL).
pub fn render(page: &TokenPage<'_>) -> String {
    // One pass over the template only: a token named `{{INITIAL}}` stays a name.
    // One buffer for the page: a token's markup and its JSON come to some 2 kB, so it is sized
    // for the page's tokens at once rather than grown by doubling (which holds two copies).
    let room = TEMPLATE.len() + STYLE.len() + SCRIPT.len() + 16_384 + 2_048 * page.tokens.len();
    let mut out = String::with_capacity(room);
    let mut rest = TEMPLATE;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            rest = &rest[start..];
            break;
        };
        match &after[..end] {
            "STYLE" => out.push_str(STYLE),
            "SCRIPT" => out.push_str(SCRIPT),
            "TOKENS" => match page.view {
                View::Cards => markup::cards(&mut out, page),
                View::Table => markup::table(&mut out, page),
            },
            "VIEWS" => markup::views(&mut out, page),
            "PREV" => markup::step(&mut out, page, "prev", "‹ Prev", page.page.checked_sub(1)),
            "NEXT" => {
                let next = (page.page < page.pages).then_some(page.page + 1);
                markup::step(&mut out, page, "next", "Next ›", next);
            }
            "CHIPS" => chips(&mut out, page),
            "Q" => markup::text(&mut out, page.q),
            "RANGE" => out.push_str(&range_text(page)),
            "UNWRITABLE" => out.push_str(&unwritable_text(page)),
            "INITIAL" => embedded_json(&mut out, page),
            other => {
                out.push_str("{{");
                out.push_str(other);
                out.push_str("}}");
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            escape("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn the_embedded_json_cannot_end_its_script_element() {
        let mut snapshot = crate::snapshot::Snapshot::default();
        snapshot.routes.push(crate::snapshot::RouteHealth {
            name: "</script><!--&é".to_owned(),
            last_result: None,
            last_at: None,
            failing_since: None,
        });
        let query = view::TokenQuery::default();
        let page = TokenPage::select(&snapshot, &query);
        let mut out = String::new();
        embedded_json(&mut out, &page);
        assert!(
            out.contains(r#""\u003c/script\u003e\u003c!--\u0026é""#),
            "{out}"
        );
        assert!(!out.contains(['<', '>', '&']), "{out}");
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["routes"][0]["name"], "</script><!--&é");
    }

    #[test]
    fn thousands_are_separated_by_commas() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_digest_is_base64_of_sha256() {
        // `printf '' | openssl dgst -sha256 -binary | base64`
        assert_eq!(
            sha256_base64(""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
