//! Reading `.env` files as real ones are written.
//!
//! Handles comments, blank lines, an `export` prefix, single-quoted (literal), double-quoted (with
//! escapes, may span lines) and unquoted values, inline `# comments` after a value, CRLF line endings,
//! a UTF-8 byte-order mark and a missing final newline. Duplicate keys are reported, the last one wins
//! (as with shells and `dotenvy`).
//!
//! Must never: expand `${VAR}`, or put a value in an error message (values are secrets).

use std::fmt;

/// One `KEY=value` assignment.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The variable's name.
    pub key: String,
    /// The value, unquoted and unescaped.
    pub value: String,
    /// 1-based line where the assignment starts.
    pub line: usize,
}

impl fmt::Debug for Entry {
    // Values are secrets: only their length is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("line", &self.line)
            .finish()
    }
}

/// A parsed file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// Every assignment, in file order, duplicates included.
    pub entries: Vec<Entry>,
}

impl Env {
    /// The value of `key`: the last assignment wins.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }

    /// Keys assigned more than once, with every line they are on.
    pub fn duplicates(&self) -> Vec<(&str, Vec<usize>)> {
        let mut out: Vec<(&str, Vec<usize>)> = Vec::new();
        for e in &self.entries {
            match out.iter_mut().find(|(k, _)| *k == e.key) {
                Some((_, lines)) => lines.push(e.line),
                None => out.push((&e.key, vec![e.line])),
            }
        }
        out.retain(|(_, lines)| lines.len() > 1);
        out
    }
}

/// Why a file could not be read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {reason}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, never quoting the value.
    pub reason: &'static str,
}

/// Parses the text of a `.env` file.
pub fn parse(text: &str) -> Result<Env, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
        line_start: 0,
    };
    let mut env = Env::default();
    while !p.at_end() {
        p.skip_blanks();
        match p.peek() {
            None => break,
            Some('\n' | '\r') => {
                p.newline();
                continue;
            }
            Some('#') => {
                p.skip_to_eol();
                continue;
            }
            _ => {}
        }
        let line = p.line;
        let mut key = p.word();
        if key == "export" && matches!(p.peek(), Some(' ' | '\t')) {
            p.skip_blanks();
            key = p.word();
        }
        if key.is_empty() {
            return Err(p.error("expected a variable name (letters, digits, `_`, `.`, `-`)"));
        }
        if key.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(p.error_at(
                p.pos - key.chars().count(),
                "a variable name cannot start with a digit",
            ));
        }
        p.skip_blanks();
        if p.peek() != Some('=') {
            return Err(p.error("expected `=` after the variable name"));
        }
        p.pos += 1;
        p.skip_blanks();
        let value = match p.peek() {
            Some('\'') => p.quoted('\'')?,
            Some('"') => p.quoted('"')?,
            _ => p.unquoted(),
        };
        p.skip_blanks();
        match p.peek() {
            None | Some('\n' | '\r') => {}
            Some('#') => p.skip_to_eol(),
            Some(_) => return Err(p.error("unexpected text after the closing quote")),
        }
        env.entries.push(Entry { key, value, line });
    }
    Ok(env)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    line_start: usize,
}

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn error(&self, reason: &'static str) -> ParseError {
        self.error_at(self.pos, reason)
    }

    fn error_at(&self, pos: usize, reason: &'static str) -> ParseError {
        ParseError {
            line: self.line,
            column: pos.saturating_sub(self.line_start) + 1,
            reason,
        }
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    /// Consumes one line ending (`\n`, `\r\n` or a lone `\r`).
    fn newline(&mut self) {
        if self.peek() == Some('\r') {
            self.pos += 1;
        }
        if self.peek() == Some('\n') {
            self.pos += 1;
        }
        self.line += 1;
        self.line_start = self.pos;
    }

    fn skip_to_eol(&mut self) {
        while !matches!(self.peek(), None | Some('\n' | '\r')) {
            self.pos += 1;
        }
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn unquoted(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            // `#` starts a comment only after whitespace: `pa#ss` is a value.
            let comment =
                c == '#' && matches!(self.chars.get(self.pos.wrapping_sub(1)), Some(' ' | '\t'));
            if c == '\n' || c == '\r' || comment {
                break;
            }
            self.pos += 1;
        }
        let raw: String = self.chars[start..self.pos].iter().collect();
        raw.trim_end().to_owned()
    }

    fn quoted(&mut self, quote: char) -> Result<String, ParseError> {
        let (open_line, open_col) = (self.line, self.pos - self.line_start + 1);
        self.pos += 1;
        let mut value = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(ParseError {
                    line: open_line,
                    column: open_col,
                    reason: "this quote is never closed",
                });
            };
            match c {
                c if c == quote => {
                    self.pos += 1;
                    return Ok(value);
                }
                '\\' if quote == '"' => {
                    self.pos += 1;
                    let escaped = match self.peek() {
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some(c @ ('"' | '\\' | '$' | '\'')) => c,
                        Some(_) => {
                            // Unknown escapes are kept as written, as dotenvy does.
                            value.push('\\');
                            continue;
                        }
                        None => continue,
                    };
                    value.push(escaped);
                    self.pos += 1;
                }
                '\r' | '\n' => {
                    self.newline();
                    // A value spanning lines keeps a plain newline, whatever the file's line endings.
                    value.push('\n');
                }
                c => {
                    value.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, key: &str) -> String {
        parse(text).unwrap().get(key).unwrap().value.clone()
    }

    #[test]
    fn reads_what_real_files_hold() {
        let text = "\u{feff}# WhatsApp\r\nexport WHATSAPP_ACCESS_TOKEN=\"EAA x\\\"y\" # primary\r\nFACEBOOK_APP_ID=123 # id\r\n\r\nSECRET='a#b\\n'\nEMPTY=\nHASH=pa#ss\nSPACED = two words  \nLAST=end";
        let env = parse(text).unwrap();
        assert_eq!(value(text, "WHATSAPP_ACCESS_TOKEN"), "EAA x\"y");
        assert_eq!(value(text, "FACEBOOK_APP_ID"), "123");
        assert_eq!(value(text, "SECRET"), "a#b\\n");
        assert_eq!(value(text, "EMPTY"), "");
        assert_eq!(value(text, "HASH"), "pa#ss");
        assert_eq!(value(text, "SPACED"), "two words");
        assert_eq!(value(text, "LAST"), "end");
        assert_eq!(env.get("FACEBOOK_APP_ID").unwrap().line, 3);
        assert_eq!(env.get("LAST").unwrap().line, 9);
    }

    #[test]
    fn multi_line_values_and_duplicates() {
        let text = "A=\"one\ntwo\"\nB=1\nA=3\n";
        let env = parse(text).unwrap();
        assert_eq!(value(text, "A"), "3");
        assert_eq!(env.entries[0].value, "one\ntwo");
        assert_eq!(env.get("B").unwrap().line, 3);
        assert_eq!(env.duplicates(), vec![("A", vec![1, 4])]);
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
        assert!(parse("1A=2").is_err());
        assert!(parse("A 2").is_err());
    }

    #[test]
    fn debug_hides_values() {
        let env = parse("T=EAAsecretvalue").unwrap();
        assert!(!format!("{env:?}").contains("EAAsecretvalue"));
    }
}
