//! The server's rendering of a page of tokens, written straight into the page's one output buffer:
//! the cards (a whole card for each token not ok: its reason and fix first; a short one for each ok
//! token), or the table (one row per token), and the links that switch between them, sort them and
//! step through the pages.
//! The script builds the same markup from `/api/tokens` (`card`, `compactCard`, `table` in
//! `script.js`) and keeps it live; without a script this is what a reader sees, and the links work.
//!
//! Must never: write untrusted text unescaped (every name, reason, fix and permission goes through
//! [`text`] or [`breakable`]), or copy a token's text into a buffer of its own first: at 500 tokens
//! a page, one buffer for the page is the memory a request costs.

use std::fmt::Write as _;

use super::humane;
use super::view::{PageToken, Sort, TokenPage, View};
use crate::snapshot::{Role, Status, TokenState, UnixSeconds};

/// Escapes `s` into `out`, for element content and quoted attribute values.
pub(super) fn text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// [`text`], with a line-break opportunity (`<wbr>`) after each `_` and `/`: a permission such as
/// `whatsapp_business_messaging` or a file's path wraps there on a phone, never inside a word.
pub(super) fn breakable(out: &mut String, s: &str) {
    let mut rest = s.len();
    for piece in s.split_inclusive(['_', '/']) {
        text(out, piece);
        rest -= piece.len();
        if rest > 0 && piece.ends_with(['_', '/']) {
            out.push_str("<wbr>");
        }
    }
}

/// A list of permissions, comma-separated, each breakable at its underscores.
fn permissions(out: &mut String, list: &[String]) {
    if list.is_empty() {
        out.push('—');
    }
    for (i, p) in list.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        breakable(out, p);
    }
}

pub(super) fn utc(at: UnixSeconds) -> String {
    jiff::Timestamp::from_second(at)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// `2026-12-08 10:00 UTC (3 hours ago)`.
fn when(out: &mut String, at: UnixSeconds, now: UnixSeconds) {
    let _ = write!(out, "{} ({})", utc(at), humane::relative(at, now));
}

fn role(out: &mut String, role: &Role) {
    match role {
        Role::Primary => out.push_str("primary"),
        Role::Backup(of) => {
            out.push_str("backup of ");
            breakable(out, of);
        }
    }
}

fn status_words(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Warning => "warning",
        Status::Critical => "critical",
        Status::Unknown => "unknown",
    }
}

/// The class of a token's element: its state, and `backup` under its primary.
fn classes(out: &mut String, t: &PageToken<'_>, base: &str) {
    let _ = write!(out, "{base} st-{}", t.state.as_str());
    if matches!(t.role, Role::Backup(_)) {
        out.push_str(" backup");
    }
}

/// Whether the token has expired by `now`.
fn expired(t: &PageToken<'_>, now: UnixSeconds) -> bool {
    !t.never_expires && t.expires_at.is_some_and(|at| at <= now)
}

/// The words of what is left, in an element the script keeps counting down.
fn left(out: &mut String, tag: &str, t: &PageToken<'_>, now: UnixSeconds) {
    let class = if expired(t, now) {
        "left expired"
    } else {
        "left"
    };
    let _ = write!(
        out,
        "<{tag} class=\"{class}\" data-left>{}</{tag}>",
        humane::left(t.never_expires, t.expires_at, now)
    );
}

/// The reason and the fix, as paragraphs of a card.
fn reason(out: &mut String, t: &PageToken<'_>) {
    let Some(r) = &t.reason else { return };
    out.push_str("<p class=\"why\">");
    breakable(out, &r.words.message);
    out.push_str("</p>");
    if let Some(fix) = &r.words.fix {
        out.push_str("<p class=\"fix\"><b>Fix:</b> ");
        breakable(out, fix);
        out.push_str("</p>");
    }
}

fn row(out: &mut String, term: &str, class: Option<&str>, value: impl FnOnce(&mut String)) {
    let _ = write!(out, "<dt>{term}</dt>");
    match class {
        Some(class) => {
            let _ = write!(out, "<dd class=\"{class}\">");
        }
        None => out.push_str("<dd>"),
    }
    value(out);
    out.push_str("</dd>");
}

/// The facts of a card: status, expiry, permissions, and the checks' times.
fn facts(out: &mut String, t: &PageToken<'_>, now: UnixSeconds) {
    out.push_str("<dl>");
    row(out, "status", None, |out| match t.last_check {
        Some(_) => {
            let valid = if t.valid { "valid" } else { "not valid" };
            let _ = write!(out, "{}, {valid}", status_words(t.status));
        }
        None => out.push_str("unknown: no check has answered yet"),
    });
    row(out, "expires", None, |out| {
        match (t.never_expires, t.expires_at) {
            (true, _) => out.push_str("never"),
            (false, Some(at)) => out.push_str(&utc(at)),
            (false, None) => out.push_str("unknown"),
        }
    });
    if !t.missing_permissions.is_empty() {
        row(out, "missing", Some("missing"), |out| {
            permissions(out, &t.missing_permissions);
        });
    }
    row(out, "permissions", None, |out| permissions(out, &t.scopes));
    row(out, "last check", None, |out| match t.last_check {
        Some(at) => when(out, at, now),
        None => out.push_str("never answered"),
    });
    if let Some(r) = t.reason.as_ref().filter(|r| r.unknown) {
        row(out, "last tried", None, |out| when(out, r.tried_at, now));
    }
    row(out, "next check", None, |out| match t.next_check {
        Some(at) => when(out, at, now),
        None => out.push('—'),
    });
    out.push_str("</dl>");
}

/// A token not ok: everything, its reason and fix first.
fn card(out: &mut String, t: &PageToken<'_>, now: UnixSeconds) {
    out.push_str("<article class=\"");
    classes(out, t, "token");
    out.push_str("\"><header><h2 class=\"name\">");
    breakable(out, &t.name);
    let _ = write!(
        out,
        "</h2><span class=\"badge\">{}</span></header><p class=\"meta\">",
        t.state.label()
    );
    role(out, &t.role);
    out.push_str(" · ");
    text(
        out,
        if t.kind.is_empty() {
            "kind unknown"
        } else {
            &t.kind
        },
    );
    out.push_str(" · ");
    text(out, &t.fingerprint);
    out.push_str("</p>");
    left(out, "p", t, now);
    reason(out, t);
    facts(out, t, now);
    out.push_str("</article>");
}

/// An ok token: its name and what is left (and whose backup it is), on two short lines.
fn compact_card(out: &mut String, t: &PageToken<'_>, now: UnixSeconds) {
    out.push_str("<article class=\"");
    classes(out, t, "token compact");
    out.push_str("\"><header><h2 class=\"name\">");
    breakable(out, &t.name);
    let _ = write!(
        out,
        "</h2><span class=\"badge\">{}</span></header><p class=\"meta\">",
        t.state.label()
    );
    left(out, "span", t, now);
    if matches!(t.role, Role::Backup(_)) {
        out.push_str(" · ");
        role(out, &t.role);
    }
    out.push_str("</p></article>");
}

/// What the page says when there is no token to show.
fn empty(out: &mut String, page: &TokenPage<'_>) {
    if page.all() == 0 {
        out.push_str("<p class=\"empty\">No token is watched yet.</p>");
    } else if page.tokens.is_empty() {
        out.push_str("<p class=\"empty\">No token matches.</p>");
    }
}

/// The cards of this page's tokens.
pub(super) fn cards(out: &mut String, page: &TokenPage<'_>) {
    empty(out, page);
    let now = page.served_at;
    for t in &page.tokens {
        if t.state == TokenState::Ok {
            compact_card(out, t, now);
        } else {
            card(out, t, now);
        }
    }
}

/// The table of this page's tokens: state, name, expiry, reason and fix, last check.
pub(super) fn table(out: &mut String, page: &TokenPage<'_>) {
    empty(out, page);
    if page.tokens.is_empty() {
        return;
    }
    let now = page.served_at;
    out.push_str("<table class=\"table\"><thead><tr><th scope=\"col\">");
    sort_link(out, page, Sort::State, "State");
    out.push_str("</th><th scope=\"col\">Token</th><th scope=\"col\">");
    sort_link(out, page, Sort::Expiry, "Expires");
    out.push_str(
        "</th><th scope=\"col\">Why</th><th scope=\"col\">Last check</th></tr></thead><tbody>",
    );
    for t in &page.tokens {
        out.push_str("<tr class=\"");
        classes(out, t, "row");
        let _ = write!(
            out,
            "\"><td class=\"state\"><span class=\"badge\">{}</span></td><td><span class=\"name\">",
            t.state.label()
        );
        breakable(out, &t.name);
        out.push_str("</span> <span class=\"meta\">");
        if matches!(t.role, Role::Backup(_)) {
            role(out, &t.role);
            out.push_str(" · ");
        }
        text(out, &t.fingerprint);
        out.push_str("</span></td>");
        left(out, "td", t, now);
        out.push_str("<td class=\"why\">");
        if let Some(r) = &t.reason {
            breakable(out, &r.words.message);
            if let Some(fix) = &r.words.fix {
                out.push_str(" <span class=\"fix\"><b>Fix:</b> ");
                breakable(out, fix);
                out.push_str("</span>");
            }
        }
        out.push_str("</td><td class=\"checked\">");
        checked(out, t, now);
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table>");
}

/// The table's last-check cell: when a check last answered, or when it was last tried.
fn checked(out: &mut String, t: &PageToken<'_>, now: UnixSeconds) {
    match (t.reason.as_ref().filter(|r| r.unknown), t.last_check) {
        (Some(r), _) => {
            let _ = write!(out, "tried {}", humane::relative(r.tried_at, now));
        }
        (None, Some(at)) => out.push_str(&humane::relative(at, now)),
        (None, None) => out.push_str("never answered"),
    }
}

/// A query string's value, percent-encoded (what the script's `encodeURIComponent` leaves is left).
fn encode(out: &mut String, value: &str) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The link to this page's query in `view` and `sort`: the search and filter kept; the page kept
/// when only the view changes, back to the first when the order does.
fn href(out: &mut String, page: &TokenPage<'_>, view: View, sort: Sort) {
    let number = if sort == page.sort { page.page } else { 1 };
    href_to(out, page, view, sort, number);
}

/// The link to page `number` of this page's query in `view` and `sort`.
fn href_to(out: &mut String, page: &TokenPage<'_>, view: View, sort: Sort, number: usize) {
    // Written into an attribute: `&` as `&amp;`.
    let mut sep = "?";
    let mut param = |out: &mut String, name: &str| {
        out.push_str(sep);
        out.push_str(name);
        out.push('=');
        sep = "&amp;";
    };
    if !page.q.is_empty() {
        param(out, "q");
        encode(out, page.q);
    }
    if !page.states.is_empty() {
        param(out, "state");
        out.push_str(&page.states.join(","));
    }
    if number > 1 {
        param(out, "page");
        let _ = write!(out, "{number}");
    }
    if page.per_page != super::view::DEFAULT_PER_PAGE {
        param(out, "per_page");
        let _ = write!(out, "{}", page.per_page);
    }
    if view != View::Cards {
        param(out, "view");
        out.push_str(view.as_str());
    }
    if sort != Sort::State {
        param(out, "sort");
        out.push_str(sort.as_str());
    }
    if sep == "?" {
        out.push('?');
    }
}

/// The pager's link `id` to page `to` of the same query; without one (the first page has no
/// previous), a link to nowhere, marked disabled.
pub(super) fn step(
    out: &mut String,
    page: &TokenPage<'_>,
    id: &str,
    label: &str,
    to: Option<usize>,
) {
    let _ = write!(out, "<a id=\"{id}\" class=\"step\" rel=\"{id}\"");
    match to.filter(|n| *n >= 1) {
        Some(number) => {
            out.push_str(" href=\"");
            href_to(out, page, page.view, page.sort, number);
            out.push('"');
        }
        None => out.push_str(" aria-disabled=\"true\""),
    }
    let _ = write!(out, ">{label}</a>");
}

/// A link to `sort`, marked as the current one when it is.
fn sort_link(out: &mut String, page: &TokenPage<'_>, sort: Sort, label: &str) {
    out.push_str("<a class=\"sort\" data-sort=\"");
    out.push_str(sort.as_str());
    out.push_str("\" href=\"");
    href(out, page, page.view, sort);
    let current = if page.sort == sort {
        " aria-current=\"true\""
    } else {
        ""
    };
    let _ = write!(out, "\"{current}>{label}</a>");
}

/// The switch between cards and table, and the two orders.
pub(super) fn views(out: &mut String, page: &TokenPage<'_>) {
    out.push_str("<span class=\"views-label\">View</span>");
    for (view, label) in [(View::Cards, "cards"), (View::Table, "table")] {
        let _ = write!(
            out,
            "<a class=\"view\" data-view=\"{}\" href=\"",
            view.as_str()
        );
        href(out, page, view, page.sort);
        let current = if page.view == view {
            " aria-current=\"true\""
        } else {
            ""
        };
        let _ = write!(out, "\"{current}>{label}</a>");
    }
    out.push_str("<span class=\"views-label\">Sort</span>");
    sort_link(out, page, Sort::State, "worst first");
    sort_link(out, page, Sort::Expiry, "soonest expiry");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut String)) -> String {
        let mut out = String::new();
        f(&mut out);
        out
    }

    #[test]
    fn names_break_after_underscores_and_slashes_and_stay_escaped() {
        assert_eq!(
            with(|o| breakable(o, "whatsapp_business_messaging")),
            "whatsapp_<wbr>business_<wbr>messaging"
        );
        assert_eq!(with(|o| breakable(o, "<a>/x_")), "&lt;a&gt;/<wbr>x_");
        assert_eq!(with(|o| breakable(o, "")), "");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(with(|o| encode(o, "a b&c=é")), "a%20b%26c%3D%C3%A9");
    }
}
