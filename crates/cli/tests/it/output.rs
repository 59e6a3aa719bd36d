//! Colour only on a terminal, and never with `NO_COLOR` or `--color never`. The terminal is a real
//! pseudo-terminal from util-linux's `script` (Debian's essential bsdutils).

use std::process::Command;

fn on_a_terminal(env: &[(&str, &str)], args: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_permatoken");
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{bin} check --sandbox {args}"),
            "/dev/null",
        ])
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env("TERM", "xterm-256color")
        .envs(env.iter().copied())
        .output()
        .expect("script(1) runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn colour_on_a_terminal_only_when_wanted() {
    let coloured = on_a_terminal(&[], "");
    assert!(
        coloured.contains("\x1b[32m"),
        "green ✓ on a terminal:\n{coloured}"
    );
    assert!(coloured.contains("OK"));
    for (env, args) in [(&[("NO_COLOR", "1")][..], ""), (&[][..], "--color never")] {
        let plain = on_a_terminal(env, args);
        assert!(plain.contains("✓ valid"), "{plain}");
        assert!(
            !plain.contains('\x1b'),
            "no escape codes with {env:?} {args}:\n{plain}"
        );
    }
}
