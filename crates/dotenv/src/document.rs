//! A `.env` file as a list of items that together hold every byte of the file, so that printing it
//! back gives the file byte for byte, and an edit touches only the bytes of one value (or one key).
//!
//! The syntax is dotenvy's (the crate most Rust services load `.env` with), so that a value reads here
//! as the service will read it: keys `[A-Za-z_][A-Za-z0-9_.]*` with an optional `export`; unquoted values
//! end at a space, after which only a `# comment` may follow; `'single'` quotes are literal; `"double"`
//! quotes and unquoted text take the escapes `\\ \' \" \$ \ ` and `\n`; quoted values may span lines;
//! quoting styles may be joined (`a'b'"c"`). Unlike dotenvy, `$VAR` is never expanded.

use std::fmt;
use std::ops::Range;

/// One `KEY=value` assignment as read.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The variable's name.
    pub key: &'a str,
    /// The value, unquoted and unescaped.
    pub value: &'a str,
    /// 1-based line where the assignment starts.
    pub line: usize,
}

impl fmt::Debug for Entry<'_> {
    // Values are secrets: only their length is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("line", &self.line)
            .finish()
    }
}

/// Why a file could not be read, and where. Never quotes the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {reason}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub reason: &'static str,
}

/// A parsed `.env` file that prints back to the same bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Document {
    bom: bool,
    items: Vec<Item>,
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries()).finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
struct Item {
    /// Every byte of the item: its line (or lines, for a quoted value that spans lines) and the line
    /// ending, if any.
    raw: String,
    /// 1-based line where it starts.
    line: usize,
    assignment: Option<Assignment>,
}

#[derive(Clone, PartialEq, Eq)]
struct Assignment {
    key: Range<usize>,
    /// The value as written, quotes included; empty for `KEY=`.
    value: Range<usize>,
    decoded: String,
}

impl Item {
    fn key(&self) -> Option<&str> {
        self.assignment.as_ref().map(|a| &self.raw[a.key.clone()])
    }
}

/// Whitespace within a line, as dotenvy sees it.
fn is_blank(c: char) -> bool {
    c.is_whitespace() && c != '\n' && c != '\r'
}

/// Parses the text of a `.env` file.
pub fn parse(text: &str) -> Result<Document, ParseError> {
    let (bom, body) = match text.strip_prefix('\u{feff}') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut scanner = Scanner {
        text: body,
        pos: 0,
        line: 1,
        line_start: 0,
    };
    let mut items = Vec::new();
    while scanner.pos < body.len() {
        items.push(scanner.item()?);
    }
    Ok(Document { bom, items })
}

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    line_start: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn error(&self, reason: &'static str) -> ParseError {
        self.error_at(self.pos, reason)
    }

    fn error_at(&self, pos: usize, reason: &'static str) -> ParseError {
        let column = self.text[self.line_start..pos.max(self.line_start)]
            .chars()
            .count()
            + 1;
        ParseError {
            line: self.line,
            column,
            reason,
        }
    }

    fn skip_blanks(&mut self) {
        while self.peek().is_some_and(is_blank) {
            self.bump();
        }
    }

    /// At a line ending or the end of the text.
    fn at_eol(&self) -> bool {
        matches!(self.peek(), None | Some('\n' | '\r'))
    }

    /// Consumes one line ending (`\n`, `\r\n`, or a lone `\r`), if there is one.
    fn eol(&mut self) {
        if self.peek() == Some('\r') {
            self.bump();
        }
        if self.peek() == Some('\n') {
            self.bump();
        }
        self.line += 1;
        self.line_start = self.pos;
    }

    fn skip_to_eol(&mut self) {
        while !self.at_eol() {
            self.bump();
        }
    }

    fn key(&mut self) -> Result<Range<usize>, ParseError> {
        let start = self.pos;
        if !self
            .peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            return Err(self.error(
                "expected a variable name: a letter or `_`, then letters, digits, `_` or `.`",
            ));
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            self.bump();
        }
        Ok(start..self.pos)
    }

    fn item(&mut self) -> Result<Item, ParseError> {
        let start = self.pos;
        let line = self.line;
        self.skip_blanks();
        let assignment = if self.at_eol() || self.peek() == Some('#') {
            self.skip_to_eol();
            None
        } else {
            Some(self.assignment(start)?)
        };
        self.eol();
        Ok(Item {
            raw: self.text[start..self.pos].to_owned(),
            line,
            assignment,
        })
    }

    fn assignment(&mut self, start: usize) -> Result<Assignment, ParseError> {
        let mut key = self.key()?;
        self.skip_blanks();
        if &self.text[key.clone()] == "export" && self.peek() != Some('=') {
            key = self.key()?;
            self.skip_blanks();
        }
        if self.peek() != Some('=') {
            return Err(self.error("expected `=` after the variable name"));
        }
        self.bump();
        self.skip_blanks();
        let value_start = self.pos;
        let decoded = if self.peek() == Some('#') {
            String::new()
        } else {
            self.value()?
        };
        let value_end = self.pos;
        self.skip_blanks();
        match self.peek() {
            Some('#') => self.skip_to_eol(),
            _ if self.at_eol() => {}
            _ => {
                return Err(self.error(
                    "unquoted values end at a space; put the value in quotes if it holds spaces",
                ));
            }
        }
        Ok(Assignment {
            key: key.start - start..key.end - start,
            value: value_start - start..value_end - start,
            decoded,
        })
    }

    fn value(&mut self) -> Result<String, ParseError> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some('\n' | '\r') => return Ok(out),
                Some(c) if is_blank(c) => return Ok(out),
                Some(quote @ ('\'' | '"')) => self.quoted(quote, &mut out)?,
                Some('\\') => {
                    self.bump();
                    out.push(self.escape()?);
                }
                Some(c) => {
                    self.bump();
                    out.push(c);
                }
            }
        }
    }

    /// A quoted part of a value, which may span lines: `'…'` literal, `"…"` with escapes.
    fn quoted(&mut self, quote: char, out: &mut String) -> Result<(), ParseError> {
        // Reported where the quote opens: that is where the person has to look.
        let open = self.error("this quote is never closed");
        self.bump();
        loop {
            match self.bump() {
                None => return Err(open),
                Some(c) if c == quote => return Ok(()),
                Some('\\') if quote == '"' => out.push(self.escape()?),
                Some(c) => {
                    if c == '\n' {
                        self.line += 1;
                        self.line_start = self.pos;
                    }
                    out.push(c);
                }
            }
        }
    }

    /// The character after a backslash (already consumed).
    fn escape(&mut self) -> Result<char, ParseError> {
        let at = self.pos;
        match self.bump() {
            Some(c @ ('\\' | '\'' | '"' | '$' | ' ')) => Ok(c),
            Some('n') => Ok('\n'),
            _ => Err(self.error_at(
                at,
                "unknown escape; the known ones are \\\\ \\' \\\" \\$ \\n and a backslash before a space",
            )),
        }
    }
}

/// Why an edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// Not a name dotenvy reads.
    #[error(
        "`{0}` is not a valid variable name (a letter or `_`, then letters, digits, `_` or `.`)"
    )]
    BadKey(String),
    /// The renamed key is not there.
    #[error("`{0}` is not in the file")]
    Missing(String),
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// How a value is written in the style of `previous` (the raw value it replaces).
fn encode(value: &str, previous: &str) -> String {
    let plain = !value.is_empty()
        && !value.starts_with('#')
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !matches!(c, '\'' | '"' | '\\' | '$'));
    // dotenvy's line joiner reads a backslash in single quotes as an escape, so none goes there.
    if previous.starts_with('\'') && !value.contains(['\'', '\n', '\r', '\\']) {
        return format!("'{value}'");
    }
    if plain && !previous.starts_with(['\'', '"']) {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' | '"' | '$' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Document {
    /// The file's bytes: exactly the text parsed, with the edits made since.
    pub fn render(&self) -> String {
        let mut out =
            String::with_capacity(self.items.iter().map(|i| i.raw.len()).sum::<usize>() + 3);
        if self.bom {
            out.push('\u{feff}');
        }
        for item in &self.items {
            out.push_str(&item.raw);
        }
        out
    }

    /// Every assignment, in file order, duplicates included.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        self.items.iter().filter_map(|item| {
            let a = item.assignment.as_ref()?;
            Some(Entry {
                key: &item.raw[a.key.clone()],
                value: &a.decoded,
                line: item.line,
            })
        })
    }

    /// The assignment of `key` in effect: the last one.
    pub fn get(&self, key: &str) -> Option<Entry<'_>> {
        self.entries().filter(|e| e.key == key).last()
    }

    /// Keys assigned more than once, with the lines they are on.
    pub fn duplicates(&self) -> Vec<(&str, Vec<usize>)> {
        let mut out: Vec<(&str, Vec<usize>)> = Vec::new();
        for e in self.entries() {
            match out.iter_mut().find(|(k, _)| *k == e.key) {
                Some((_, lines)) => lines.push(e.line),
                None => out.push((e.key, vec![e.line])),
            }
        }
        out.retain(|(_, lines)| lines.len() > 1);
        out
    }

    /// The line ending the file uses (its first), `\n` when it has none.
    fn line_ending(&self) -> &'static str {
        match self
            .items
            .iter()
            .find(|i| i.raw.ends_with('\n') || i.raw.ends_with('\r'))
        {
            Some(i) if i.raw.ends_with("\r\n") => "\r\n",
            Some(i) if i.raw.ends_with('\r') => "\r",
            _ => "\n",
        }
    }

    /// Sets `key` to `value`. The assignment in effect (the last) changes in place, keeping its quoting
    /// where the value allows, its `export`, spacing and comment; every other byte stays. A key not in
    /// the file is appended.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), EditError> {
        if !valid_key(key) {
            return Err(EditError::BadKey(key.to_owned()));
        }
        if let Some(item) = self.items.iter_mut().rev().find(|i| i.key() == Some(key)) {
            let a = item.assignment.as_mut().expect("found by its key");
            let encoded = encode(value, &item.raw[a.value.clone()]);
            let mut replacement = encoded.clone();
            // `KEY= # note`: the value goes before the comment, a space apart.
            if a.value.is_empty() && item.raw[a.value.end..].starts_with('#') {
                replacement.push(' ');
            }
            item.raw.replace_range(a.value.clone(), &replacement);
            a.value = a.value.start..a.value.start + encoded.len();
            a.decoded = value.to_owned();
            return Ok(());
        }
        let ending = self.line_ending();
        let mut last_ending = ending;
        if let Some(last) = self.items.last_mut()
            && !(last.raw.ends_with('\n') || last.raw.ends_with('\r'))
        {
            // The file had no newline at its end; the new last line will not have one either.
            last.raw.push_str(ending);
            last_ending = "";
        }
        let encoded = encode(value, "");
        let raw = format!("{key}={encoded}{last_ending}");
        let line = self
            .items
            .last()
            .map_or(1, |i| i.line + i.raw.matches('\n').count().max(1));
        self.items.push(Item {
            assignment: Some(Assignment {
                key: 0..key.len(),
                value: key.len() + 1..key.len() + 1 + encoded.len(),
                decoded: value.to_owned(),
            }),
            raw,
            line,
        });
        Ok(())
    }

    /// Removes every assignment of `key`, with its line; returns how many there were.
    pub fn remove(&mut self, key: &str) -> usize {
        let before = self.items.len();
        self.items.retain(|i| i.key() != Some(key));
        before - self.items.len()
    }

    /// Renames every assignment of `from` to `to`, keeping the rest of each line.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), EditError> {
        if !valid_key(to) {
            return Err(EditError::BadKey(to.to_owned()));
        }
        let mut found = false;
        for item in self.items.iter_mut().filter(|i| i.key() == Some(from)) {
            let a = item.assignment.as_mut().expect("found by its key");
            item.raw.replace_range(a.key.clone(), to);
            let shift = to.len() as isize - a.key.len() as isize;
            a.key = a.key.start..a.key.start + to.len();
            a.value =
                (a.value.start as isize + shift) as usize..(a.value.end as isize + shift) as usize;
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(EditError::Missing(from.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, key: &str) -> String {
        parse(text).unwrap().get(key).unwrap().value.to_owned()
    }

    #[test]
    fn reads_what_real_files_hold() {
        let text = "\u{feff}# WhatsApp\r\nexport WHATSAPP_ACCESS_TOKEN=\"EAA x\\\"y\" # primary\r\nFACEBOOK_APP_ID=123 # id\r\n\r\nSECRET='a#b\\n'\nEMPTY=\nHASH=pa#ss\nSPACED = 'two words'  \nJOINED=a'b c'\"d\"\nLAST=end";
        let doc = parse(text).unwrap();
        assert_eq!(doc.render(), text);
        assert_eq!(value(text, "WHATSAPP_ACCESS_TOKEN"), "EAA x\"y");
        assert_eq!(value(text, "FACEBOOK_APP_ID"), "123");
        assert_eq!(value(text, "SECRET"), "a#b\\n");
        assert_eq!(value(text, "EMPTY"), "");
        assert_eq!(value(text, "HASH"), "pa#ss");
        assert_eq!(value(text, "SPACED"), "two words");
        assert_eq!(value(text, "JOINED"), "ab cd");
        assert_eq!(value(text, "LAST"), "end");
        assert_eq!(doc.get("FACEBOOK_APP_ID").unwrap().line, 3);
        assert_eq!(doc.get("LAST").unwrap().line, 10);
    }

    #[test]
    fn multi_line_values_and_duplicates() {
        let text = "A=\"one\ntwo\"\nB=1\nA=3\n";
        let doc = parse(text).unwrap();
        assert_eq!(value(text, "A"), "3");
        assert_eq!(doc.entries().next().unwrap().value, "one\ntwo");
        assert_eq!(doc.get("B").unwrap().line, 3);
        assert_eq!(doc.duplicates(), vec![("A", vec![1, 4])]);
    }

    #[test]
    fn errors_name_line_and_column_but_never_the_value() {
        let err = parse("A=1\nB=\"EAAsecret\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 3));
        assert!(!err.to_string().contains("EAAsecret"));
        let err = parse("A=1\n  = 2\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 3));
        let err = parse("A='x' y\n").unwrap_err();
        assert_eq!((err.line, err.column), (1, 7));
        let err = parse("A=two words\n").unwrap_err();
        assert_eq!((err.line, err.column), (1, 7));
        let err = parse("A=\"\\q\"").unwrap_err();
        assert_eq!((err.line, err.column), (1, 5));
        assert!(parse("1A=2").is_err());
        assert!(parse("A 2").is_err());
    }

    #[test]
    fn debug_hides_values() {
        let doc = parse("T=EAAsecretvalue").unwrap();
        assert!(!format!("{doc:?}").contains("EAAsecretvalue"));
    }

    #[test]
    fn an_edit_keeps_quoting_comment_and_every_other_byte() {
        let text = "# keep\r\nexport WHATSAPP_ACCESS_TOKEN=\"old\"  # primary\r\nOTHER=x\r\n";
        let mut doc = parse(text).unwrap();
        doc.set("WHATSAPP_ACCESS_TOKEN", "EAAnew").unwrap();
        assert_eq!(
            doc.render(),
            "# keep\r\nexport WHATSAPP_ACCESS_TOKEN=\"EAAnew\"  # primary\r\nOTHER=x\r\n"
        );
        doc.set("OTHER", "has space").unwrap();
        assert_eq!(value(&doc.render(), "OTHER"), "has space");
        assert!(doc.render().ends_with("OTHER=\"has space\"\r\n"));
        doc.set("NEW", "v").unwrap();
        assert!(doc.render().ends_with("OTHER=\"has space\"\r\nNEW=v\r\n"));
    }

    #[test]
    fn single_quotes_stay_unless_the_value_forbids_them() {
        let mut doc = parse("A='old'\nB=\n").unwrap();
        doc.set("A", "new").unwrap();
        doc.set("B", "it's").unwrap();
        assert_eq!(doc.render(), "A='new'\nB=\"it's\"\n");
        doc.set("A", "a\"b$c\\d\ne").unwrap();
        assert_eq!(value(&doc.render(), "A"), "a\"b$c\\d\ne");
    }

    #[test]
    fn a_file_without_a_final_newline_keeps_none() {
        let mut doc = parse("A=1").unwrap();
        doc.set("B", "2").unwrap();
        assert_eq!(doc.render(), "A=1\nB=2");
        let mut doc = parse("").unwrap();
        doc.set("A", "1").unwrap();
        assert_eq!(doc.render(), "A=1\n");
        let mut doc = parse("A= # empty for now\n").unwrap();
        doc.set("A", "x").unwrap();
        assert_eq!(doc.render(), "A= x # empty for now\n");
    }

    #[test]
    fn export_is_also_a_key_as_dotenvy_reads_it() {
        // Found by the fuzzer: `export=` assigns the variable `export`, so it can be set too.
        let mut doc = parse("  export=\rJ=1\n").unwrap();
        assert_eq!(doc.get("export").unwrap().value, "");
        doc.set("export", "x").unwrap();
        assert_eq!(doc.render(), "  export=x\rJ=1\n");
    }

    #[test]
    fn duplicates_edit_the_one_in_effect() {
        let mut doc = parse("A=1\nA=2\n").unwrap();
        doc.set("A", "3").unwrap();
        assert_eq!(doc.render(), "A=1\nA=3\n");
    }

    #[test]
    fn remove_and_rename_move_backups_up() {
        let text = "T=dead\nT_BACKUP=b1 # spare\nexport T_BACKUP_2='b2'\n";
        let mut doc = parse(text).unwrap();
        doc.set("T", "b1").unwrap();
        assert_eq!(doc.remove("T_BACKUP"), 1);
        doc.rename("T_BACKUP_2", "T_BACKUP").unwrap();
        assert_eq!(doc.render(), "T=b1\nexport T_BACKUP='b2'\n");
        doc.set("T_BACKUP", "b3").unwrap();
        assert_eq!(doc.render(), "T=b1\nexport T_BACKUP='b3'\n");
        assert!(doc.rename("NOPE", "X").is_err());
        assert!(doc.set("1BAD", "x").is_err());
    }
}
