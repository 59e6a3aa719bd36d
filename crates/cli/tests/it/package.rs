//! What the Debian package is made of that the binary generates (contrib/deb/build): the man
//! pages, one per command, from the same definitions as `--help`. The package itself is built,
//! installed and purged by `.ci/deb`.

use crate::harness::Test;

#[test]
fn man_pages_are_written_one_per_command() {
    let (out, dir) = Test::new().args(["man-pages", "man"]).run_keep();
    out.assert_code(0);
    let mut pages: Vec<String> = std::fs::read_dir(dir.path().join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "permatoken-check.1",
            "permatoken-completions.1",
            "permatoken-doctor.1",
            "permatoken-exchange.1",
            "permatoken-mint.1",
            "permatoken-refresh.1",
            "permatoken-sandbox.1",
            "permatoken-scan.1",
            "permatoken-send-test.1",
            "permatoken-watch.1",
            "permatoken.1",
        ],
        "the hidden man-pages command has no page of its own"
    );
    let watch = std::fs::read_to_string(dir.path().join("man/permatoken-watch.1")).unwrap();
    assert!(watch.contains("\n.TH permatoken-watch 1 "), "{watch}");
    for word in ["check\\-config", "SIGHUP", "Exit codes"] {
        assert!(watch.contains(word), "`{word}` not in the watch page");
    }
    // The main page lists the commands.
    let main = std::fs::read_to_string(dir.path().join("man/permatoken.1")).unwrap();
    assert!(main.contains("permatoken\\-watch(1)"), "{main}");
}

#[test]
fn man_pages_into_a_file_is_refused_with_exit_3() {
    let out = Test::new()
        .write("taken", "")
        .args(["man-pages", "taken"])
        .run();
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("cannot write the man pages into `taken`"),
        "{}",
        out.stderr
    );
}
