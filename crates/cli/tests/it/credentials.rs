//! Where the token comes from, and what happens when it does not.

use crate::harness::{Test, sandbox, sandbox_with, token_of};

#[test]
fn no_token_is_unknown_with_what_to_set() {
    let out = Test::new().args(["check"]).run();
    out.assert_code(3);
    assert!(
        out.stderr.contains("error: no access token found"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("WHATSAPP_ACCESS_TOKEN"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("permatoken check --sandbox"),
        "{}",
        out.stderr
    );
    let json = Test::new().args(["check", "--json"]).run();
    json.assert_code(3);
    assert_eq!(json.json()["status"], "unknown");
    assert!(
        json.json()["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("--token-file")
    );
}

#[test]
fn the_report_names_where_the_token_came_from() {
    let sandbox = sandbox();
    let token = token_of(&sandbox, "system-user");
    let source = |t: Test, args: &[&str]| {
        t.args(["check", "--json"]).args(args).run().json()["token"]["source"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    assert_eq!(
        source(
            Test::against(&sandbox).env("WHATSAPP_ACCESS_TOKEN", &token),
            &[]
        ),
        "the environment"
    );
    assert_eq!(
        source(
            Test::against(&sandbox).stdin(&format!("{token}\n")),
            &["--token-stdin"]
        ),
        "standard input"
    );
    let t = Test::against(&sandbox).write(
        "prod.env",
        &format!("export WHATSAPP_ACCESS_TOKEN=\"{token}\" # primary\n"),
    );
    assert_eq!(source(t, &["--env-file", "prod.env"]), "prod.env");
    let t = Test::against(&sandbox).write("token.txt", &format!("{token}\n"));
    assert_eq!(source(t, &["--token-file", "token.txt"]), "token.txt");
    // Explicit before implicit: a token file wins over the environment, the environment over ./.env.
    let t = Test::against(&sandbox)
        .write("token.txt", &token)
        .env("WHATSAPP_ACCESS_TOKEN", "EAAPERMATOKENTESTnotused");
    assert_eq!(source(t, &["--token-file", "token.txt"]), "token.txt");
    let t = Test::against(&sandbox)
        .dotenv(&sandbox, "expired", false)
        .env("WHATSAPP_ACCESS_TOKEN", &token);
    assert_eq!(source(t, &[]), "the environment");
}

#[test]
fn a_token_is_never_taken_from_the_command_line() {
    let out = Test::new()
        .args(["check", "--token", "EAAPERMATOKENTEST"])
        .run();
    out.assert_code(3);
    assert!(!out.stderr.contains("EAAPERMATOKENTEST"), "{}", out.stderr);
}

#[test]
fn usage_errors_are_unknown_and_help_is_success() {
    Test::new()
        .args(["check", "--warn-days", "soon"])
        .run()
        .assert_code(3);
    Test::new().args(["frobnicate"]).run().assert_code(3);
    let help = Test::new().args(["check", "--help"]).run();
    help.assert_code(0);
    for word in [
        "--token-file",
        "--token-stdin",
        "--env-file",
        "--graph-url",
        "--warn-days",
        "--sandbox",
        "Exit codes",
    ] {
        assert!(help.stdout.contains(word), "{word} not in --help");
    }
    Test::new().args(["--version"]).run().assert_code(0);
    let bash = Test::new().args(["completions", "bash"]).run();
    bash.assert_code(0);
    assert!(
        bash.stdout.contains("permatoken"),
        "a bash completion script"
    );
}

#[test]
fn a_critical_window_wider_than_the_warning_window_is_a_usage_error() {
    // Every command taking both windows; nothing is read or asked (no token exists here).
    for command in ["check", "exchange", "refresh", "mint"] {
        let mut args = vec![command, "--crit-days", "20", "--warn-days", "10"];
        if command == "mint" {
            args.extend(["--system-user", "1"]);
        }
        let out = Test::new().args(&args).run();
        out.assert_code(3);
        assert!(
            out.stderr
                .contains("`--crit-days` (20) is more than `--warn-days` (10)"),
            "{command}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!("Usage: permatoken {command}")),
            "{}",
            out.stderr
        );
        assert_eq!(out.stdout, "", "{command}");
        // The default critical window (3) is wider than a warning window of 2.
        let out = Test::new()
            .args([command, "--warn-days", "2", "--json"])
            .run();
        out.assert_code(3);
        assert_eq!(out.json()["error"]["code"], "usage", "{command}");
    }
    // Equal windows are fine: it reaches the credentials (and finds none).
    let out = Test::new()
        .args(["check", "--crit-days", "10", "--warn-days", "10"])
        .run();
    out.assert_code(3);
    assert!(!out.stderr.contains("--crit-days"), "{}", out.stderr);
}

#[test]
fn usage_errors_with_json_are_the_json_error_object() {
    for args in [
        &["check", "--json", "--warn-days", "abc"][..],
        &["check", "--warn-days", "abc", "--json"],
        &["check", "--json", "--no-such-flag"],
        &["doctor", "--json", "--jsno"],
        &["watch", "--json", "--listen", "nowhere"],
        &["refresh", "--json", "--renew-days", "-1"],
        &["--color", "never", "exchange", "--json", "--bogus"],
    ] {
        let out = Test::new().args(args).run();
        out.assert_code(3);
        let object = out.json();
        assert_eq!(object["status"], "unknown", "{args:?}: {object:#}");
        assert_eq!(object["error"]["code"], "usage", "{args:?}: {object:#}");
        let message = object["error"]["message"].as_str().unwrap();
        assert!(
            !message.is_empty() && !message.starts_with("error:"),
            "{args:?}: {object:#}"
        );
        assert!(object["error"]["hint"].is_string(), "{args:?}: {object:#}");
        // People still read clap's text on standard error.
        assert!(
            out.stderr.starts_with("error: "),
            "{args:?}: {}",
            out.stderr
        );
        let action = args
            .iter()
            .find(|a| ["exchange", "refresh"].contains(a))
            .copied();
        assert_eq!(object["action"].as_str(), action, "{args:?}: {object:#}");
    }
    let out = Test::new()
        .args(["check", "--json", "--warn-days", "abc"])
        .run();
    assert!(
        out.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'abc' for '--warn-days <DAYS>'"),
        "{}",
        out.stdout
    );
    // clap's suggestion is the hint.
    let out = Test::new().args(["doctor", "--json", "--jsno"]).run();
    assert!(
        out.json()["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("--json"),
        "{}",
        out.stdout
    );
    // Without --json, or after `--`, clap's text alone; help and version stay as they are.
    let out = Test::new().args(["check", "--warn-days", "abc"]).run();
    out.assert_code(3);
    assert_eq!(out.stdout, "");
    let out = Test::new().args(["check", "--json", "--help"]).run();
    out.assert_code(0);
    assert!(
        out.stdout.starts_with("Tell what a token is"),
        "{}",
        out.stdout
    );
    let out = Test::new().args(["check", "--json", "--version"]).run();
    out.assert_code(0);
    assert!(
        out.stdout.starts_with("permatoken-check "),
        "{}",
        out.stdout
    );
}

#[test]
fn bad_files_get_line_and_column() {
    let out = Test::new()
        .write(
            ".env",
            "FACEBOOK_APP_ID=1\nWHATSAPP_ACCESS_TOKEN=\"EAAPERMATOKENTESTunclosed\n",
        )
        .args(["check"])
        .run();
    out.assert_code(3);
    assert!(out.stderr.contains("line 2, column 23"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("EAAPERMATOKENTESTunclosed"),
        "{}",
        out.stderr
    );
    let out = Test::new()
        .args(["check", "--env-file", "missing.env"])
        .run();
    out.assert_code(3);
    assert!(out.stderr.contains("missing.env"), "{}", out.stderr);
    let out = Test::new()
        .write(
            ".env",
            "WHATSAPP_ACCESS_TOKEN=EAAPERMATOKENTEST\nFACEBOOK_APP_ID=my-app\n",
        )
        .args(["check"])
        .run();
    out.assert_code(3);
    assert!(out.stderr.contains("Settings → Basic"), "{}", out.stderr);
}

#[test]
fn a_wrong_app_secret_is_named_and_the_report_still_made() {
    let sandbox = sandbox();
    let token = token_of(&sandbox, "system-user");
    let env = format!(
        "WHATSAPP_ACCESS_TOKEN={token}\nFACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\n",
        sandbox.app().id,
        "0".repeat(32)
    );
    let out = Test::against(&sandbox)
        .write(".env", &env)
        .args(["check", "--json"])
        .run();
    out.assert_code(3);
    let report = out.json();
    assert_eq!(
        report["status"], "unknown",
        "bad configuration is unknown (DESIGN §4)"
    );
    assert!(
        out.codes().contains(&"app_credentials_invalid".to_owned()),
        "{report:#}"
    );
    // Asked again without the app credentials, `/me` still reports; a system-user token may not
    // inspect itself (`graph-api.md` §5), so its type stays unknown, with no second finding about it.
    assert_eq!(report["token"]["type"], serde_json::Value::Null);
    assert_eq!(report["token"]["valid"], true);
    assert_eq!(report["identity"]["name"], "Sandbox System User");
    assert!(
        out.codes().iter().all(|c| c == "app_credentials_invalid"),
        "{report:#}"
    );
}

#[test]
fn an_app_that_requires_the_proof_says_which_variable_to_set() {
    let sandbox = sandbox_with(&permatoken_sandbox::Options {
        require_proof: true,
        ..Default::default()
    });
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", false)
        .args(["check", "--json"])
        .run();
    out.assert_code(3);
    assert_eq!(out.codes(), ["appsecret_proof_required"]);
    assert!(out.stdout.contains("FACEBOOK_APP_SECRET"));
    // With the secret, the same sandbox is satisfied.
    Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .args(["check"])
        .run()
        .assert_code(0);
}

#[test]
fn loose_file_modes_are_warned_about() {
    let sandbox = sandbox();
    let t = Test::against(&sandbox).dotenv(&sandbox, "system-user", true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            t.path().join(".env"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let out = t.args(["check"]).run();
    out.assert_code(0);
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let out = Test::new()
        .env("WHATSAPP_ACCESS_TOKEN", "EAAPERMATOKENTEST")
        .env("PERMATOKEN_GRAPH_URL", "http://graph.example.invalid")
        .args(["check"])
        .run();
    out.assert_code(3);
    assert!(out.stderr.contains("https://"), "{}", out.stderr);
}

#[test]
fn a_file_larger_than_any_env_or_token_file_is_refused_with_exit_3() {
    // A token line first: the file is refused for its size, whatever it holds.
    let mut big = String::from("WHATSAPP_ACCESS_TOKEN=EAAPERMATOKENTESTcanary\n");
    big.push_str(&"#".repeat((1 << 20) + 1 - big.len()));
    for (file, args, what) in [
        (".env", &["check"][..], "an env file"),
        (
            "prod.env",
            &["check", "--env-file", "prod.env"],
            "an env file",
        ),
        (
            "token.txt",
            &["check", "--token-file", "token.txt"],
            "a token file",
        ),
    ] {
        for json in [false, true] {
            let mut args = args.to_vec();
            if json {
                args.push("--json");
            }
            let out = Test::new().write(file, &big).args(&args).run();
            out.assert_code(3);
            let said = format!("{file}` is larger than 1 MiB: it is not {what}");
            if json {
                let error = &out.json()["error"];
                assert!(
                    error["message"].as_str().unwrap().contains(&said),
                    "{error}"
                );
                assert!(error["hint"].as_str().unwrap().contains("check the path"));
            } else {
                assert!(out.stderr.contains(&said), "{args:?}: {}", out.stderr);
                assert!(
                    out.stderr.contains("hint: check the path"),
                    "{}",
                    out.stderr
                );
            }
            assert!(!out.stdout.contains("canary") && !out.stderr.contains("canary"));
        }
    }
}

#[test]
fn standard_input_larger_than_any_token_is_refused_with_exit_3() {
    // `--token-stdin < service.log` by mistake: a token line first, then more than 1 MiB.
    let mut big = String::from("EAAPERMATOKENTESTcanary\n");
    big.push_str(&"#".repeat((1 << 20) + 1 - big.len()));
    let out = Test::new()
        .stdin(&big)
        .args(["check", "--token-stdin"])
        .run();
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("standard input holds more than 1 MiB: it is not a token"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: pipe the token in"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("canary") && !out.stderr.contains("canary"));
}
