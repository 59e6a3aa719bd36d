//! Any text: the parser returns a document or a located error, never panics; a document prints back
//! byte for byte; setting, renaming and removing any key gives text that parses again with the new
//! value in effect.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let doc = match permatoken_dotenv::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            assert!(e.line >= 1 && e.column >= 1);
            return;
        }
    };
    assert_eq!(doc.render(), text);
    let keys: Vec<String> = doc.entries().map(|e| e.key.to_owned()).collect();
    for key in keys.iter().take(4) {
        for value in ["EAAPERMATOKENTEST", "", "a b#\"'$\\\n"] {
            let mut edited = doc.clone();
            edited.set(key, value).unwrap();
            let again = permatoken_dotenv::parse(&edited.render()).expect("an edit keeps the file valid");
            assert_eq!(again.get(key).unwrap().value, value);
        }
        let mut renamed = doc.clone();
        renamed.rename(key, "PERMATOKEN_FUZZ_RENAMED").unwrap();
        permatoken_dotenv::parse(&renamed.render()).expect("a rename keeps the file valid");
        let mut removed = doc.clone();
        removed.remove(key);
        let again = permatoken_dotenv::parse(&removed.render()).expect("a removal keeps the file valid");
        assert!(again.get(key).is_none());
    }
});
