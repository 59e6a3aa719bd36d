//! Everything a person reads: reports, errors and warnings. The one place errors are rendered.
//!
//! Output reads the same without colour; colour roles are fixed (red error, yellow warning, green
//! success, cyan hints and paths) and appear only on a terminal, never with `NO_COLOR`. Data goes to
//! standard output, errors and warnings to standard error.

use std::io::Write;

use anstyle::{AnsiColor, Style};
use jiff::Timestamp;
use permatoken_inspect::{Finding, Report, Severity, Status, human_span, human_time};

const RED: Style = AnsiColor::Red.on_default().bold();
const YELLOW: Style = AnsiColor::Yellow.on_default().bold();
const GREEN: Style = AnsiColor::Green.on_default().bold();
const CYAN: Style = AnsiColor::Cyan.on_default();
const DIM: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();

/// Wrap width for fixes: readable in an 80-column terminal with the indent.
const WIDTH: usize = 96;

pub(crate) fn stderr_has_colour() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}

/// `error: …` and, when there is one, `hint: …`.
pub(crate) fn error(message: &str, hint: Option<&str>) {
    let mut err = anstream::stderr().lock();
    // Messages quote the Graph API, file names and git: made safe for the terminal here, once.
    let _ = writeln!(err, "{RED}error:{RED:#} {}", sanitise(message));
    if let Some(hint) = hint {
        let _ = writeln!(err, "{CYAN}hint:{CYAN:#} {}", wrap(&sanitise(hint), 6));
    }
}

/// One JSON object on standard output. A reader that went away (`| head -c1`) is not an error of
/// ours: the exit code still tells the verdict, so a closed pipe is ignored rather than a panic.
pub(crate) fn stdout_json(value: &serde_json::Value) {
    let _ = writeln!(anstream::stdout().lock(), "{value:#}");
}

/// The one JSON object of a command that failed, on standard output:
/// `{"status", "action"?, "error": {"message", "hint", "code"?}}` (README, "Secrets and safety").
pub(crate) fn json_error(
    status: Status,
    action: Option<&str>,
    code: Option<&str>,
    message: &str,
    hint: Option<&str>,
) {
    let mut object = serde_json::json!({"status": status});
    if let Some(action) = action {
        object["action"] = action.into();
    }
    object["error"] = serde_json::json!({"message": message, "hint": hint});
    if let Some(code) = code {
        object["error"]["code"] = code.into();
    }
    stdout_json(&object);
}

/// Bytes on standard output as they are (a completion script), a closed pipe ignored.
pub(crate) fn stdout_bytes(bytes: &[u8]) {
    let _ = std::io::stdout().lock().write_all(bytes);
}

/// What the panic hook prints: where, never the panic's message, which could quote a secret
/// (`Result::unwrap` on a value, a failed assertion on a token).
pub(crate) fn internal_error(location: Option<&str>) {
    let at = location.map(|l| format!(" at {l}")).unwrap_or_default();
    error(
        &format!(
            "permatoken stopped on an internal error{at} (its message is not shown: it could hold a secret)"
        ),
        Some(
            "this is a bug in permatoken: please report it with the command you ran; nothing was written",
        ),
    );
}

/// `warning: …`.
pub(crate) fn warning(message: &str) {
    let _ = writeln!(
        anstream::stderr().lock(),
        "{YELLOW}warning:{YELLOW:#} {}",
        sanitise(message)
    );
}

fn mark(ok: bool) -> String {
    if ok {
        format!("{GREEN}✓{GREEN:#}")
    } else {
        format!("{RED}✗{RED:#}")
    }
}

fn status_word(status: Status) -> String {
    let (style, word) = match status {
        Status::Ok => (GREEN, "OK"),
        Status::Warning => (YELLOW, "WARNING"),
        Status::Critical => (RED, "CRITICAL"),
        Status::Unknown => (YELLOW, "UNKNOWN"),
    };
    format!("{style}{word}{style:#}")
}

fn when(rfc3339: Option<&str>, now: Timestamp) -> Option<String> {
    let t: Timestamp = rfc3339?.parse().ok()?;
    let span = human_span(t.duration_since(now));
    Some(if t > now {
        format!("{} (in {span})", human_time(t))
    } else {
        format!("{} ({span} ago)", human_time(t))
    })
}

/// The human report of one token.
pub(crate) fn report(out: &mut dyn Write, r: &Report, now: Timestamp) -> std::io::Result<()> {
    let t = &r.token;
    let from = match &t.variable {
        Some(var) => format!("`{var}` from {CYAN}{}{CYAN:#}", t.source),
        None => format!("from {CYAN}{}{CYAN:#}", t.source),
    };
    writeln!(out, "{BOLD}Token{BOLD:#} {from}")?;
    let row = |out: &mut dyn Write, label: &str, value: &str| writeln!(out, "  {label:<13}{value}");
    row(out, "fingerprint", &t.fingerprint)?;
    let validity = match (t.valid, &r.identity) {
        (Some(true), Some(id)) => format!(
            "{} valid — acts as {} (id {})",
            mark(true),
            sanitise(id.name.as_deref().unwrap_or("(no name)")),
            sanitise(&id.id)
        ),
        (Some(true), None) => format!("{} valid", mark(true)),
        (Some(false), _) => format!("{} not valid", mark(false)),
        (None, _) => format!("{YELLOW}?{YELLOW:#} could not tell"),
    };
    row(out, "status", &validity)?;
    let kind = match &t.token_type {
        Some(ty) => format!("{} — {}", sanitise(ty), t.kind.describe()),
        None => t.kind.describe().to_owned(),
    };
    row(out, "kind", &kind)?;
    let app = match (&t.application, &t.app_id) {
        (Some(name), Some(id)) => format!("{} ({})", sanitise(name), sanitise(id)),
        (None, Some(id)) => format!("{} (decoded from the token)", sanitise(id)),
        _ => "unknown".to_owned(),
    };
    row(out, "app", &app)?;
    if let Some(issued) = when(t.issued_at.as_deref(), now) {
        row(out, "issued", &issued)?;
    }
    let expires = match (t.never_expires, when(t.expires_at.as_deref(), now)) {
        (Some(true), _) => format!("{GREEN}never{GREEN:#}"),
        (_, Some(at)) => at,
        _ => "unknown".to_owned(),
    };
    row(out, "expires", &expires)?;
    if let Some(lapses) = when(t.data_access_expires_at.as_deref(), now) {
        row(out, "data access", &format!("until {lapses}"))?;
    } else if t.never_expires == Some(true) {
        row(out, "data access", "no limit")?;
    }
    if let Some(scopes) = &t.scopes {
        let required = permatoken_inspect::REQUIRED_SCOPES
            .iter()
            .map(|s| format!("{} {s}", mark(scopes.iter().any(|x| x == s))))
            .collect::<Vec<_>>()
            .join("  ");
        row(out, "required", &required)?;
        let recommended = permatoken_inspect::RECOMMENDED_SCOPES
            .iter()
            .map(|s| {
                if scopes.iter().any(|x| x == s) {
                    format!("{} {s}", mark(true))
                } else {
                    format!("{YELLOW}–{YELLOW:#} {s} (missing)")
                }
            })
            .collect::<Vec<_>>()
            .join("  ");
        row(out, "recommended", &recommended)?;
        let others: Vec<&str> = scopes
            .iter()
            .map(String::as_str)
            .filter(|s| {
                !permatoken_inspect::REQUIRED_SCOPES.contains(s)
                    && !permatoken_inspect::RECOMMENDED_SCOPES.contains(s)
            })
            .collect();
        if !others.is_empty() {
            row(out, "other scopes", &sanitise(&others.join(", ")))?;
        }
    }
    for (i, g) in t.granular_scopes.iter().enumerate() {
        let targets = match &g.target_ids {
            Some(ids) if g.scope.starts_with("whatsapp_") => {
                format!("WhatsApp Business Account {}", ids.join(", "))
            }
            Some(ids) => ids.join(", "),
            None => "all".to_owned(),
        };
        row(
            out,
            if i == 0 { "granted on" } else { "" },
            &sanitise(&format!("{} → {targets}", g.scope)),
        )?;
    }
    if !r.findings.is_empty() {
        writeln!(out)?;
    }
    let mut previous_fix = None;
    for f in &r.findings {
        let repeated = f.fix.is_some() && f.fix == previous_fix;
        finding(out, f, repeated)?;
        previous_fix = f.fix.clone();
    }
    writeln!(out)?;
    writeln!(
        out,
        "{} (exit {})",
        status_word(r.status),
        r.status.exit_code()
    )
}

/// One labelled line of a report.
pub(crate) fn line(out: &mut dyn Write, label: &str, text: &str) -> std::io::Result<()> {
    writeln!(out, "  {label:<12} {}", wrap(text, 15))
}

/// The head of `exchange` and `mint`: what the new token is.
pub(crate) fn new_token(
    out: &mut dyn Write,
    action: &str,
    t: &permatoken_inspect::TokenFacts,
) -> std::io::Result<()> {
    let done = match action {
        "mint" => "minted",
        _ => "exchanged",
    };
    writeln!(
        out,
        "{} {done} and verified: {}",
        mark(true),
        t.kind.describe()
    )?;
    line(out, "new token", &t.fingerprint)?;
    let expires = match (t.never_expires, t.expires_at.as_deref()) {
        (Some(true), _) => "never".to_owned(),
        (_, Some(at)) => when(Some(at), Timestamp::now()).unwrap_or_else(|| at.to_owned()),
        _ => "unknown".to_owned(),
    };
    line(out, "expires", &expires)?;
    if let Some(scopes) = &t.scopes {
        line(out, "permissions", &sanitise(&scopes.join(", ")))?;
    }
    Ok(())
}

/// Where a token was written, and the backup of what was there.
pub(crate) fn written(
    out: &mut dyn Write,
    destination: &str,
    backup: Option<&std::path::Path>,
) -> std::io::Result<()> {
    line(out, "written", &format!("{CYAN}{destination}{CYAN:#}"))?;
    if let Some(backup) = backup {
        line(
            out,
            "backup",
            &format!(
                "{CYAN}{}{CYAN:#} (the previous file, 0600)",
                backup.display()
            ),
        )?;
    }
    Ok(())
}

/// What the `--then` command did.
pub(crate) fn reload(out: &mut dyn Write, r: &permatoken_renew::Reload) -> std::io::Result<()> {
    let text = match (&r.error, r.exit_code) {
        (Some(e), _) => format!("{} `{}`: {e}", mark(false), r.command),
        (None, Some(0)) => format!("{} `{}` exited 0", mark(true), r.command),
        (None, Some(code)) => format!(
            "{} `{}` exited {code}; the new token stays written",
            mark(false),
            r.command
        ),
        (None, None) => format!(
            "{} `{}` was killed by a signal; the new token stays written",
            mark(false),
            r.command
        ),
    };
    line(out, "reload", &text)
}

/// One token of `refresh`.
pub(crate) fn refresh_outcome(
    out: &mut dyn Write,
    variable: Option<&str>,
    source: &str,
    decision: &permatoken_renew::Decision,
    message: &str,
    steps: Option<&str>,
) -> std::io::Result<()> {
    use permatoken_renew::Decision;
    let sign = match decision {
        Decision::NothingNeeded | Decision::Renewed | Decision::WouldRenew => mark(true),
        Decision::CannotRenew => format!("{YELLOW}⚠{YELLOW:#}"),
        Decision::Dead => mark(false),
        Decision::Unknown => format!("{YELLOW}?{YELLOW:#}"),
    };
    let name = variable.unwrap_or("the token");
    // Wrapped as one line, so the first line's length counts; the colour goes on afterwards.
    let text = wrap(&sanitise(&format!("`{name}` from {source}: {message}")), 2);
    let text = text.replacen(source, &format!("{CYAN}{source}{CYAN:#}"), 1);
    writeln!(out, "{sign} {text}")?;
    if let Some(steps) = steps {
        writeln!(out, "  {CYAN}fix:{CYAN:#} {}", wrap(&sanitise(steps), 7))?;
    }
    Ok(())
}

/// `doctor`'s checklist: a line an item, the evidence under it, the fix for anything not ✓.
pub(crate) fn checklist(
    out: &mut dyn Write,
    c: &permatoken_doctor::Checklist,
) -> std::io::Result<()> {
    use permatoken_doctor::ItemStatus as S;
    for item in &c.items {
        let sign = match item.status {
            S::Ok => format!("{GREEN}✓{GREEN:#}"),
            S::Warning => format!("{YELLOW}⚠{YELLOW:#}"),
            S::Critical => format!("{RED}✗{RED:#}"),
            S::Unknown => format!("{YELLOW}?{YELLOW:#}"),
            S::Skipped => format!("{DIM}–{DIM:#}"),
        };
        writeln!(
            out,
            "{sign} {BOLD}{}{BOLD:#}  {DIM}[{}]{DIM:#}",
            item.title, item.id
        )?;
        // Evidence quotes what the Graph API and the webhook answered.
        for fact in &item.evidence {
            writeln!(out, "    {}", wrap(&sanitise(fact), 4))?;
        }
        if item.status != S::Ok
            && let Some(fix) = &item.fix
        {
            writeln!(out, "  {CYAN}fix:{CYAN:#} {}", wrap(&sanitise(fix), 7))?;
        }
    }
    let status = match c.status {
        S::Ok | S::Skipped => Status::Ok,
        S::Warning => Status::Warning,
        S::Critical => Status::Critical,
        S::Unknown => Status::Unknown,
    };
    writeln!(out, "\n{} (exit {})", status_word(status), c.exit_code())
}

/// `send-test`'s success.
pub(crate) fn sent(
    out: &mut dyn Write,
    template: &str,
    to: &str,
    wa_id: &str,
    id: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{} `{template}` accepted for +{to} (WhatsApp id {wa_id})",
        mark(true)
    )?;
    line(out, "message id", id)?;
    line(
        out,
        "note",
        "accepted is not delivered: delivery (or its failure) arrives later on the webhook, as a `statuses` notification",
    )
}

/// Text from outside (a Graph API message or name, a file name, git's stderr) made safe for a
/// terminal: control characters and bidirectional overrides, which could hide or reorder what is
/// shown or drive the terminal, become `\u{…}` escapes.
pub(crate) fn sanitise(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}');
            if c.is_control() || bidi {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `scan`'s findings, for people.
pub(crate) fn scan(
    out: &mut dyn Write,
    scan: &permatoken_scan::Scan,
    seconds: f64,
) -> std::io::Result<()> {
    use permatoken_scan::{Kind, Verified};
    let mut previous_fix = None;
    for f in &scan.findings {
        let what = match f.kind {
            Kind::AccessToken => "access token",
            Kind::AppToken => "app token",
            Kind::AppSecret => "app secret",
        };
        let mut head = format!(
            "{RED}✗{RED:#} {what:<12} {CYAN}{}:{}:{}{CYAN:#}  {}",
            sanitise(&f.path),
            f.line,
            f.column,
            f.fingerprint
        );
        if let Some(app) = &f.app_id {
            head.push_str(&format!("  app {app}"));
        }
        if let Some(commit) = &f.commit {
            let short = &commit[..commit.len().min(12)];
            let where_ = if f.at_head == Some(true) {
                "still at HEAD"
            } else {
                "only in history"
            };
            head.push_str(&format!("  commit {short}, {where_}"));
        }
        match f.verified {
            Some(Verified::Live) => head.push_str(&format!("  {RED}LIVE{RED:#}")),
            Some(v) => head.push_str(&format!(
                "  {}",
                serde_json::to_value(v)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )),
            None => {}
        }
        writeln!(out, "{head}")?;
        let fix = crate::commands::scan_fix(f.kind, f.app_id.as_deref());
        if previous_fix.as_ref() == Some(&fix) {
            writeln!(out, "  {CYAN}fix:{CYAN:#} as above")?;
        } else {
            writeln!(out, "  {CYAN}fix:{CYAN:#} {}", wrap(&fix, 7))?;
        }
        previous_fix = Some(fix);
    }
    let s = &scan.stats;
    let read = if s.blobs > 0 {
        format!("{} blobs of {} commits", s.files, s.commits)
    } else {
        format!("{} files", s.files)
    };
    let mut skipped = Vec::new();
    for (n, what) in [
        (s.skipped_binary, "binary"),
        (s.skipped_large, "too large"),
        (s.unreadable, "unreadable"),
        (s.allowed, "allowed by comment"),
        (s.baselined, "in the baseline"),
    ] {
        if n > 0 {
            skipped.push(format!("{n} {what}"));
        }
    }
    let skipped = if skipped.is_empty() {
        String::new()
    } else {
        format!("; left out: {}", skipped.join(", "))
    };
    let verdict = if scan.findings.is_empty() {
        format!("{GREEN}clean{GREEN:#}")
    } else {
        format!(
            "{RED}{} finding{}{RED:#}",
            scan.findings.len(),
            if scan.findings.len() == 1 { "" } else { "s" }
        )
    };
    writeln!(
        out,
        "\n{verdict}: read {read}, {:.1} MB in {seconds:.2} s{skipped}",
        s.bytes as f64 / 1e6
    )
}

/// The last line of `check --all`.
pub(crate) fn overall(out: &mut dyn Write, tokens: usize, status: Status) -> std::io::Result<()> {
    writeln!(
        out,
        "\nOverall: {} (exit {}), the worst of {tokens} token{}",
        status_word(status),
        status.exit_code(),
        if tokens == 1 { "" } else { "s" }
    )
}

fn finding(out: &mut dyn Write, f: &Finding, fix_repeated: bool) -> std::io::Result<()> {
    let (style, sign) = match f.severity {
        Severity::Critical => (RED, "✗"),
        Severity::Warning => (YELLOW, "⚠"),
        Severity::Info => (CYAN, "ℹ"),
    };
    let code = serde_json::to_value(f.code).ok();
    let code = code.as_ref().and_then(|c| c.as_str()).unwrap_or("");
    writeln!(
        out,
        "{style}{sign}{style:#} {}  {DIM}[{code}]{DIM:#}",
        wrap(&sanitise(&f.message), 2)
    )?;
    match &f.fix {
        Some(_) if fix_repeated => writeln!(out, "  {CYAN}fix:{CYAN:#} as above")?,
        Some(fix) => writeln!(out, "  {CYAN}fix:{CYAN:#} {}", wrap(&sanitise(fix), 7))?,
        None => {}
    }
    if let Some(trace) = &f.trace_id {
        writeln!(
            out,
            "  {DIM}fbtrace_id {} (Meta support asks for it){DIM:#}",
            sanitise(trace)
        )?;
    }
    Ok(())
}

/// Wraps at word boundaries; continuation lines are indented by `indent`. A `quoted command` is never
/// broken, so it can be copied whole.
fn wrap(text: &str, indent: usize) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut open = false;
    for word in text.split(' ') {
        match words.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(word);
            }
            _ => words.push(word.to_owned()),
        }
        if word.matches('`').count() % 2 == 1 {
            open = !open;
        }
    }
    let mut out = String::new();
    let mut col = indent;
    for (i, word) in words.iter().enumerate() {
        let len = word.chars().count();
        if i > 0 {
            if col + 1 + len > WIDTH {
                out.push('\n');
                out.extend(std::iter::repeat_n(' ', indent));
                col = indent;
            } else {
                out.push(' ');
                col += 1;
            }
        }
        out.push_str(word);
        col += len;
    }
    out
}

/// A usage error (clap's, or a relation between arguments clap cannot express): clap's text on
/// standard error as clap writes it, and, when the command line asked for JSON, the one object
/// scripts wait for on standard output, `{"status": "unknown", "error": {"code": "usage", …}}`.
/// Exit 3 ("could not tell", DESIGN §4), never clap's 2, which means "critical" here; help and
/// version are printed as they are and exit 0.
pub(crate) fn usage_error(e: &clap::Error, json: Option<Option<&str>>) -> u8 {
    if !e.use_stderr() {
        let _ = e.print();
        return 0;
    }
    if let Some(action) = json {
        let text = e.render().to_string();
        let mut paragraphs = text.split("\n\n");
        let first = paragraphs.next().unwrap_or_default();
        let message = first.trim().trim_start_matches("error:").trim();
        // clap's tips ("a similar argument exists: '--json'") are the hint; `--help` is always one.
        let mut hints: Vec<String> = paragraphs
            .flat_map(str::lines)
            .filter_map(|l| l.trim().strip_prefix("tip:").map(|t| t.trim().to_owned()))
            .collect();
        hints.push("`--help` lists the options and their values".to_owned());
        json_error(
            Status::Unknown,
            action,
            Some("usage"),
            message,
            Some(&hints.join("; ")),
        );
    }
    let _ = e.print();
    3
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wraps_between_words_but_never_inside_a_quoted_command() {
        let text = format!(
            "{} then run `permatoken check --sandbox` to see",
            "word ".repeat(17)
        );
        let wrapped = wrap(&text, 4);
        assert!(
            wrapped.contains("`permatoken check --sandbox`"),
            "{wrapped}"
        );
        assert!(wrapped.lines().count() > 1);
        assert!(wrapped.lines().skip(1).all(|l| l.starts_with("    ")));
        assert!(
            wrapped.lines().all(|l| l.chars().count() <= super::WIDTH),
            "{wrapped}"
        );
    }
}
