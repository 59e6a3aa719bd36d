//! Properties of the `.env` document over generated files shaped like real ones: it prints back byte
//! for byte, its values are dotenvy's, and an edit changes only the edited key's line.

use proptest::prelude::*;

/// One generated line.
#[derive(Debug, Clone)]
enum Line {
    Blank(String),
    Comment(String),
    Entry(String),
}

fn key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_.]{0,10}".prop_filter("export is a prefix", |k| k != "export")
}

fn unquoted() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_+/=:.,@%#-]{0,24}"
}

fn single_quoted() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 #\"=$.-]{0,20}".prop_map(|v| format!("'{v}'"))
}

fn double_quoted() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[A-Za-z0-9 #'=.-]",
        1 => Just("\\\\".to_owned()),
        1 => Just("\\\"".to_owned()),
        1 => Just("\\$".to_owned()),
        1 => Just("\\n".to_owned()),
        1 => Just("\n".to_owned()),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn entry() -> impl Strategy<Value = Line> {
    (
        any::<bool>(),
        key(),
        "[ \t]{0,2}",
        "[ \t]{0,2}",
        prop_oneof![unquoted(), single_quoted(), double_quoted()],
        // No quotes or backslashes in inline comments: dotenvy's line joiner reads a quote after two
        // blanks and a `#` as opening a value that spans lines (its parser then calls it a comment).
        prop_oneof![
            Just(String::new()),
            r"[ \t]{1,2}#[ !#-&(-\[\]-~]{0,12}",
            "[ \t]{1,2}"
        ],
    )
        .prop_map(|(export, key, before, after, value, tail)| {
            let export = if export { "export " } else { "" };
            Line::Entry(format!("{export}{key}{before}={after}{value}{tail}"))
        })
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        1 => "[ \t]{0,3}".prop_map(Line::Blank),
        1 => "[ \t]{0,2}#[ -~]{0,20}".prop_map(Line::Comment),
        5 => entry(),
    ]
}

/// A whole file: lines, one line ending, maybe a BOM, maybe no final newline.
fn file() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(line(), 0..12),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(lines, crlf, bom, final_newline)| {
            let ending = if crlf { "\r\n" } else { "\n" };
            let mut text = String::from(if bom { "\u{feff}" } else { "" });
            for line in &lines {
                let body = match line {
                    Line::Blank(s) | Line::Comment(s) => s,
                    Line::Entry(text) => text,
                };
                text.push_str(body);
                text.push_str(ending);
            }
            if !final_newline {
                while text.ends_with(['\n', '\r']) {
                    text.pop();
                }
                // dotenvy refuses a file whose last line ends in a blank without a newline after it.
                while text.ends_with([' ', '\t']) {
                    text.pop();
                }
            }
            text
        })
}

fn dotenvy_reads(text: &str) -> Vec<(String, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    dotenvy::from_read_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("dotenvy refused a generated file ({e}):\n{text:?}"))
}

fn ours(text: &str) -> Vec<(String, String)> {
    permatoken_dotenv::parse(text)
        .unwrap_or_else(|e| panic!("refused a generated file ({e}):\n{text:?}"))
        .entries()
        .map(|e| (e.key.to_owned(), e.value.to_owned()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn prints_back_byte_for_byte(text in file()) {
        let doc = permatoken_dotenv::parse(&text).unwrap();
        prop_assert_eq!(doc.render(), text);
    }

    #[test]
    fn values_are_dotenvys(text in file()) {
        prop_assert_eq!(ours(&text), dotenvy_reads(&text));
    }

    #[test]
    fn an_edit_changes_only_that_keys_line(
        text in file(),
        pick in any::<prop::sample::Index>(),
        value in prop_oneof![
            "EAA[A-Za-z0-9]{20,40}",
            "[ -~]{0,20}",
            "[a-z]{1,5}\n[a-z]{1,5}",
        ],
    ) {
        let mut doc = permatoken_dotenv::parse(&text).unwrap();
        let keys: Vec<String> = doc.entries().map(|e| e.key.to_owned()).collect();
        prop_assume!(!keys.is_empty());
        let key = keys[pick.index(keys.len())].clone();
        doc.set(&key, &value).unwrap();
        let edited = doc.render();

        // Every assignment but the one in effect for `key` reads as before, in dotenvy too.
        let before = dotenvy_reads(&text);
        let after = dotenvy_reads(&edited);
        prop_assert_eq!(before.len(), after.len());
        let last = before.iter().rposition(|(k, _)| *k == key).unwrap();
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            if i == last {
                prop_assert_eq!(&a.0, &key);
                prop_assert_eq!(&a.1, &value);
            } else {
                prop_assert_eq!(b, a);
            }
        }
        prop_assert_eq!(ours(&edited), after);

        // Byte for byte: the bytes that differ start on the edited line and span no more lines than
        // the old value did; everything before and after is the original.
        let line = doc.get(&key).unwrap().line;
        let old_value = &before[last].1;
        let prefix = text.bytes().zip(edited.bytes()).take_while(|(a, b)| a == b).count();
        let room = text.len().min(edited.len()) - prefix;
        let suffix = text.bytes().rev().zip(edited.bytes().rev()).take(room).take_while(|(a, b)| a == b).count();
        let line_start: usize = text.split_inclusive('\n').take(line - 1).map(str::len).sum();
        prop_assert!(prefix >= line_start, "bytes before line {} changed", line);
        let changed = &text[prefix..text.len() - suffix];
        prop_assert!(
            changed.matches('\n').count() <= old_value.matches('\n').count(),
            "the edit reached past line {}: {:?}", line, changed
        );
    }
}
