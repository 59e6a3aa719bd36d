//! The two exposition formats `/metrics` writes, and which one a scraper asked for: the Prometheus
//! text format 0.0.4 (the default, what `promtool check metrics` reads) and OpenMetrics 1.0 (when
//! the `Accept` header asks for `application/openmetrics-text`, as Prometheus itself does).
//!
//! Our own small encoder, not the `prometheus-client` crate: its encoder writes OpenMetrics only
//! (counters' `# TYPE` without `_total`, a final `# EOF`), which `promtool check metrics` reads as
//! untyped families without help, and building its registry of per-token label sets for each scrape
//! cost tens of megabytes at a fleet's size. Here every sample goes straight into the chunk being
//! sent.
//!
//! The two formats differ only in: the name a counter's or an info's `# HELP`/`# TYPE` carry (text:
//! the sample's name, `_total`/`_info` included; OpenMetrics: the family's name without it), the
//! `info` type (text: a `gauge`), which characters `# HELP` escapes (OpenMetrics also `"`), and
//! OpenMetrics' final `# EOF`. Label values are escaped alike: backslash, double quote, newline.
//!
//! Must never: write a sample outside its family's `# HELP`/`# TYPE`, or a label value unescaped.

use std::fmt::{Display, Write as _};

/// Which exposition format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

/// The `Content-Type` of the text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `Content-Type` of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a weight at least that of any text type it accepts
    /// (`text/plain`, `text/*`, `*/*`), the text format otherwise and without a header.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Self::Text;
        };
        let (mut open, mut text) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .filter(|q| q.is_finite())
                .map_or(1.0, |q| q.clamp(0.0, 1.0));
            match media.as_str() {
                "application/openmetrics-text" => open = open.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if open > 0.0 && open >= text {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    /// The `Content-Type` of what is written in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => TEXT_CONTENT_TYPE,
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// What a family counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Gauge,
    /// Its samples are named `<name>_total`.
    Counter,
    /// A constant 1 whose labels are the information; its samples are named `<name>_info`.
    Info,
}

/// A metric family: its name (without `_total` or `_info`), help (one sentence, no final full
/// stop) and kind.
#[derive(Debug, Clone, Copy)]
pub(super) struct Family {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) kind: Kind,
}

impl Family {
    pub(super) const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind: Kind::Gauge,
        }
    }

    pub(super) const fn counter(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind: Kind::Counter,
        }
    }

    pub(super) const fn info(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind: Kind::Info,
        }
    }

    fn suffix(self) -> &'static str {
        match self.kind {
            Kind::Gauge => "",
            Kind::Counter => "_total",
            Kind::Info => "_info",
        }
    }
}

/// The exposition being written.
pub(super) struct Writer {
    text: String,
    format: Format,
}

impl Writer {
    /// An empty exposition with room for `capacity` bytes (sized to the output, so that the buffer
    /// is not grown by doubling, which held the old and the new one at once).
    pub(super) fn new(format: Format, capacity: usize) -> Self {
        Self {
            text: String::with_capacity(capacity),
            format,
        }
    }

    /// The family's `# HELP` and `# TYPE` lines; its samples follow with [`Writer::sample`].
    pub(super) fn family(&mut self, family: Family) {
        let (name, suffix, kind) = match (self.format, family.kind) {
            (Format::Text, Kind::Gauge | Kind::Info) => (family.name, family.suffix(), "gauge"),
            (Format::Text, Kind::Counter) => (family.name, family.suffix(), "counter"),
            (Format::OpenMetrics, Kind::Gauge) => (family.name, "", "gauge"),
            (Format::OpenMetrics, Kind::Counter) => (family.name, "", "counter"),
            (Format::OpenMetrics, Kind::Info) => (family.name, "", "info"),
        };
        let _ = write!(self.text, "# HELP {name}{suffix} ");
        for c in family.help.chars() {
            match c {
                '\\' => self.text.push_str("\\\\"),
                '\n' => self.text.push_str("\\n"),
                '"' if self.format == Format::OpenMetrics => self.text.push_str("\\\""),
                c => self.text.push(c),
            }
        }
        // Writing to a String cannot fail.
        let _ = write!(self.text, ".\n# TYPE {name}{suffix} {kind}\n");
    }

    /// One sample of `family` (whose lines [`Writer::family`] wrote last).
    pub(super) fn sample(&mut self, family: Family, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(family.name);
        self.text.push_str(family.suffix());
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                escape(&mut self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// How many bytes are written.
    pub(super) fn len(&self) -> usize {
        self.text.len()
    }

    /// The end of the exposition: OpenMetrics' `# EOF` line (nothing in the text format).
    pub(super) fn eof(&mut self) {
        if self.format == Format::OpenMetrics {
            self.text.push_str("# EOF\n");
        }
    }

    /// What is written.
    pub(super) fn into_text(self) -> String {
        self.text
    }

    /// The whole exposition.
    #[cfg(test)]
    pub(super) fn finish(mut self) -> String {
        self.eof();
        self.text
    }
}

/// A label value escaped as both formats require: backslash, double quote and newline.
fn escape(text: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            c => text.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKS: Family = Family::counter("permatoken_checks", "Checks \"by\" token\\result");
    const BUILD: Family = Family::info("permatoken_build", "The version");
    const VALID: Family = Family::gauge("permatoken_token_valid", "Whether it is valid");

    fn write(format: Format) -> String {
        let mut w = Writer::new(format, 0);
        w.family(CHECKS);
        w.sample(CHECKS, &[("token", "we\"ird\\na\nme"), ("result", "ok")], 2);
        w.family(BUILD);
        w.sample(BUILD, &[("version", "0.1.0")], 1);
        w.family(VALID);
        w.sample(VALID, &[], 0);
        w.finish()
    }

    #[test]
    fn the_text_format_names_counters_with_total_and_has_no_eof() {
        assert_eq!(
            write(Format::Text),
            "# HELP permatoken_checks_total Checks \"by\" token\\\\result.\n\
             # TYPE permatoken_checks_total counter\n\
             permatoken_checks_total{token=\"we\\\"ird\\\\na\\nme\",result=\"ok\"} 2\n\
             # HELP permatoken_build_info The version.\n\
             # TYPE permatoken_build_info gauge\n\
             permatoken_build_info{version=\"0.1.0\"} 1\n\
             # HELP permatoken_token_valid Whether it is valid.\n\
             # TYPE permatoken_token_valid gauge\n\
             permatoken_token_valid 0\n"
        );
    }

    #[test]
    fn openmetrics_names_families_without_suffix_types_info_and_ends_with_eof() {
        assert_eq!(
            write(Format::OpenMetrics),
            "# HELP permatoken_checks Checks \\\"by\\\" token\\\\result.\n\
             # TYPE permatoken_checks counter\n\
             permatoken_checks_total{token=\"we\\\"ird\\\\na\\nme\",result=\"ok\"} 2\n\
             # HELP permatoken_build The version.\n\
             # TYPE permatoken_build info\n\
             permatoken_build_info{version=\"0.1.0\"} 1\n\
             # HELP permatoken_token_valid Whether it is valid.\n\
             # TYPE permatoken_token_valid gauge\n\
             permatoken_token_valid 0\n\
             # EOF\n"
        );
    }

    #[test]
    fn the_accept_header_chooses_openmetrics_only_when_it_asks_for_it_first() {
        use Format::{OpenMetrics, Text};
        for (accept, format) in [
            (None, Text),
            (Some(""), Text),
            (Some("text/plain"), Text),
            (Some("text/plain;version=0.0.4"), Text),
            (Some("*/*"), Text),
            (Some("application/json"), Text),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                OpenMetrics,
            ),
            // What Prometheus 2 sends.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            (
                Some("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"),
                Text,
            ),
            (Some("application/openmetrics-text;q=0"), Text),
            (Some("APPLICATION/OpenMetrics-Text;q=bad"), OpenMetrics),
        ] {
            assert_eq!(Format::negotiate(accept), format, "{accept:?}");
        }
    }
}
