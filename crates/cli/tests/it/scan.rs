//! `permatoken scan` as a user runs it: exit codes, JSON and SARIF fields, standard input, baselines,
//! `--git`, `--verify` against the sandbox, and no secret printed.

use std::io::Write as _;

use permatoken_sandbox::Faults;
use serde_json::Value;

use crate::harness::{Test, app_lines, sandbox, token_of};

fn findings(out: &crate::harness::Outcome) -> Vec<Value> {
    out.json()["findings"].as_array().unwrap().clone()
}

#[test]
fn clean_is_0_findings_are_1_errors_are_3() {
    let clean = Test::new()
        .write("readme.md", "nothing here\n")
        .args(["scan", "."])
        .run();
    clean.assert_code(0);
    assert!(clean.stdout.contains("clean"), "{}", clean.stdout);
    let sandbox = sandbox();
    let token = token_of(&sandbox, "system-user");
    let found = Test::new()
        .write(".env", &format!("WHATSAPP_ACCESS_TOKEN={token}\n"))
        .args(["scan", "--format", "json"])
        .run();
    found.assert_code(1);
    let f = &findings(&found)[0];
    assert_eq!(f["kind"], "access_token");
    assert_eq!(f["path"], "./.env");
    assert_eq!(
        (f["line"].as_u64(), f["column"].as_u64()),
        (Some(1), Some(23))
    );
    assert_eq!(
        f["app_id"],
        sandbox.app().id.to_string(),
        "decoded offline from the token"
    );
    assert_eq!(
        (
            f["commit"].clone(),
            f["at_head"].clone(),
            f["verified"].clone()
        ),
        (Value::Null, Value::Null, Value::Null)
    );
    assert!(f["fingerprint"].as_str().unwrap().contains("sha256:"));
    assert!(!found.stdout.contains(&token), "never the secret");
    assert_eq!(found.json()["stats"]["files"], 1);
    Test::new()
        .args(["scan", "missing-folder"])
        .run()
        .assert_code(3);
}

#[test]
fn standard_input_is_dash() {
    let sandbox = sandbox();
    let text = format!(
        "+FACEBOOK_APP_SECRET={}\n",
        sandbox.app_secret().expose_secret()
    );
    let out = Test::new()
        .stdin(&text)
        .args(["scan", "-", "--format", "json"])
        .run();
    out.assert_code(1);
    let f = &findings(&out)[0];
    assert_eq!(
        (f["kind"].as_str(), f["path"].as_str(), f["column"].as_u64()),
        (Some("app_secret"), Some("-"), Some(22))
    );
}

#[test]
fn sarif_for_dashboards() {
    let sandbox = sandbox();
    let out = Test::new()
        .write(
            "src/app.py",
            &format!(
                "APP_TOKEN = '{}|{}'\n",
                sandbox.app().id,
                sandbox.app_secret().expose_secret()
            ),
        )
        .args(["scan", "--format", "sarif"])
        .run();
    out.assert_code(1);
    let sarif = out.json();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert_eq!(run["columnKind"], "unicodeCodePoints");
    assert_eq!(run["tool"]["driver"]["rules"].as_array().unwrap().len(), 3);
    let result = &run["results"][0];
    assert_eq!(result["ruleId"], "app_token");
    let location = &result["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], "src/app.py");
    assert_eq!(location["region"]["startLine"], 1);
    assert_eq!(location["region"]["startColumn"], 14);
    assert!(result["partialFingerprints"]["secretSha256/v1"].is_string());
    assert!(!out.stdout.contains(sandbox.app_secret().expose_secret()));
}

#[test]
fn a_baseline_keeps_known_secrets_quiet() {
    let sandbox = sandbox();
    let token = token_of(&sandbox, "user-60d");
    let (out, dir) = Test::new()
        .write("notes.txt", &format!("token: {token}\n"))
        .args(["scan", "notes.txt", "--write-baseline", "baseline.json"])
        .run_keep();
    out.assert_code(1);
    let baseline = std::fs::read_to_string(dir.path().join("baseline.json")).unwrap();
    assert!(
        !baseline.contains(&token),
        "the baseline holds hashes, not secrets"
    );
    let out = Test::new()
        .write("notes.txt", &format!("\n\nmoved: {token}\n"))
        .write("baseline.json", &baseline)
        .args(["scan", "notes.txt", "--baseline", "baseline.json"])
        .run();
    out.assert_code(0);
    assert!(out.stdout.contains("1 in the baseline"), "{}", out.stdout);
}

#[test]
fn a_baseline_larger_than_any_baseline_is_refused_with_exit_3() {
    let (out, dir) = Test::new()
        .write("notes.txt", "nothing here\n")
        .args(["scan", "notes.txt", "--baseline", "baseline.json"])
        .run_keep();
    // No such file yet: named, with what to do.
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("cannot read the baseline `baseline.json`")
    );
    // A sparse file of 64 MiB and a byte: read up to the cap, never whole.
    let file = std::fs::File::create(dir.path().join("baseline.json")).unwrap();
    file.set_len((64 << 20) + 1).unwrap();
    let out = Test::new()
        .write("notes.txt", "nothing here\n")
        .args([
            "scan",
            "notes.txt",
            "--baseline",
            dir.path().join("baseline.json").to_str().unwrap(),
        ])
        .run();
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("baseline.json`: it is larger than 64 MiB"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: make one with --write-baseline FILE"),
        "{}",
        out.stderr
    );
}

#[test]
fn git_history_findings_name_their_commit() {
    let sandbox = sandbox();
    let token = token_of(&sandbox, "system-user");
    let test = Test::new().write(".env", &format!("WHATSAPP_ACCESS_TOKEN={token}\n"));
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .arg("-C")
            .arg(test.path())
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", ".env"]);
    git(&["commit", "-qm", "oops"]);
    git(&["rm", "-q", ".env"]);
    git(&["commit", "-qm", "remove it"]);
    let out = test.args(["scan", "--git", "--format", "json"]).run();
    out.assert_code(1);
    let f = &findings(&out)[0];
    assert_eq!(f["path"], ".env");
    assert_eq!(f["commit"].as_str().unwrap().len(), 40);
    assert_eq!(f["at_head"], false);
    assert_eq!(out.json()["stats"]["commits"], 2);
}

#[test]
fn verify_says_live_expired_invalid_or_unknown_and_live_is_exit_2() {
    let sandbox = sandbox();
    let text = format!(
        "WHATSAPP_ACCESS_TOKEN={}\nOLD={}\n{}FB_APP_TOKEN={}|{}\n",
        token_of(&sandbox, "system-user"),
        token_of(&sandbox, "expired"),
        app_lines(&sandbox),
        sandbox.app().id,
        "0".repeat(32)
    );
    let out = Test::against(&sandbox)
        .write(".env", &text)
        .args(["scan", "--verify", "--format", "json"])
        .run();
    out.assert_code(2);
    let verdicts: Vec<(String, String)> = findings(&out)
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["verified"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("access_token".to_owned(), "live".to_owned()),
            ("access_token".to_owned(), "expired".to_owned()),
            ("app_secret".to_owned(), "live".to_owned()),
            ("app_token".to_owned(), "invalid".to_owned()),
        ]
    );
    // An outage is unknown, never a verdict.
    sandbox.set_faults(Faults {
        server_errors: 10_000,
        ..Faults::default()
    });
    let out = Test::against(&sandbox)
        .write(".env", &text)
        .args(["scan", "--verify", "--format", "json"])
        .run();
    out.assert_code(1);
    assert!(findings(&out).iter().all(|f| f["verified"] == "unknown"));
    for secret in [
        token_of(&sandbox, "system-user"),
        sandbox.app_secret().expose_secret().to_owned(),
    ] {
        assert!(!out.stdout.contains(&secret) && !out.stderr.contains(&secret));
    }
}

#[test]
fn file_names_are_sanitised_before_they_reach_a_terminal() {
    let sandbox = sandbox();
    let name = "evil\u{1b}[2J\u{202e}.env";
    let out = Test::new()
        .write(
            name,
            &format!(
                "WHATSAPP_ACCESS_TOKEN={}\n",
                token_of(&sandbox, "system-user")
            ),
        )
        .env("NO_COLOR", "1")
        .args(["scan"])
        .run();
    out.assert_code(1);
    assert!(
        !out.stdout.contains('\u{1b}') && !out.stdout.contains('\u{202e}'),
        "{:?}",
        out.stdout
    );
    assert!(
        out.stdout.contains("evil\\u{1b}[2J\\u{202e}.env"),
        "{}",
        out.stdout
    );
}

#[test]
fn verify_sends_app_credentials_only_in_the_authorization_header() {
    let sandbox = sandbox();
    let secret = sandbox.app_secret().expose_secret().to_owned();
    let other = format!("{}|{}", sandbox.other_app().id, "1".repeat(32));
    let text = format!(
        "{}APP_TOKEN={}|{secret}\nOTHER={other}\n",
        app_lines(&sandbox),
        sandbox.app().id
    );
    let out = Test::against(&sandbox)
        .write("config.env", &text)
        .args(["scan", "--verify", "--format", "json"])
        .run();
    out.assert_code(2);
    let verdicts: Vec<(String, String)> = findings(&out)
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["verified"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("app_secret".to_owned(), "live".to_owned()),
            ("app_token".to_owned(), "live".to_owned()),
            ("app_token".to_owned(), "invalid".to_owned()),
        ]
    );
    let requests = sandbox.requests();
    assert_eq!(requests.len(), 3, "one call per finding: {requests:?}");
    for request in &requests {
        assert_eq!(request.method, "GET");
        let target = request.target();
        assert!(
            !target.contains(&secret) && !target.contains(&"1".repeat(32)),
            "no secret in a URL: {target}"
        );
        assert!(!target.contains("debug_token"), "{target}");
        assert!(!request.body.contains(&secret));
    }
    assert!(
        requests
            .iter()
            .any(|r| r.bearer() == Some(&format!("{}|{secret}", sandbox.app().id))),
        "the app token went in the Authorization header"
    );
    assert!(!out.stdout.contains(&secret) && !out.stderr.contains(&secret));
}

#[test]
fn verify_counts_a_token_live_when_me_answers_without_app_credentials() {
    // Without the app's id and secret, a system-user token cannot inspect itself (the real
    // `/debug_token` answers code 100): `/me` answering is enough to call it live.
    let sandbox = sandbox();
    let token = token_of(&sandbox, "system-user");
    let out = Test::against(&sandbox)
        .write("deploy.env", &format!("WHATSAPP_ACCESS_TOKEN={token}\n"))
        .args(["scan", "--verify", "--format", "json"])
        .run();
    out.assert_code(2);
    assert_eq!(findings(&out)[0]["verified"], "live");
    assert!(
        sandbox
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/me") && r.bearer() == Some(&token)),
        "asked /me"
    );
    assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
}

#[test]
fn crafted_files_are_read_in_linear_time() {
    // Megabytes of what a detector stops at: each took the scan quadratic time (hours at this size),
    // and a pull request could stall CI with one. No timing is asserted: a regression does not finish.
    let sandbox = sandbox();
    let token = token_of(&sandbox, "system-user");
    const SIZE: usize = 2 << 20;
    let mut test = Test::new();
    for (name, unit) in [
        ("secret.txt", "secret"),
        ("eaa.txt", "EAA"),
        ("pipes.txt", "|"),
        ("equals.txt", "="),
        ("keys.txt", "FACEBOOK_APP_SECRET="),
    ] {
        test = test.write(name, &unit.repeat(SIZE / unit.len()));
    }
    // One real token at the end of a 2 MB line: found, at its column.
    let line = "secret ".repeat(SIZE / 7);
    test = test.write("long-line.txt", &format!("{line}{token}\n"));
    let out = test.args(["scan", "--format", "json"]).run();
    out.assert_code(1);
    let found = findings(&out);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["path"], "./long-line.txt");
    assert_eq!(
        (found[0]["line"].as_u64(), found[0]["column"].as_u64()),
        (Some(1), Some(line.len() as u64 + 1))
    );
    assert_eq!(out.json()["stats"]["files"], 6);
    assert!(!out.stdout.contains(&token));
}

/// Runs git in `dir` with a throwaway identity; its standard output.
fn git_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A repository in `dir` with two commits: `.env` holding `token`, then `notes.txt` holding
/// `secret`. Its objects are loose, one file each.
fn history(dir: &std::path::Path, token: &str, secret: &str) {
    std::fs::create_dir_all(dir).unwrap();
    git_in(dir, &["init", "-q"]);
    std::fs::write(dir.join(".env"), format!("WHATSAPP_ACCESS_TOKEN={token}\n")).unwrap();
    git_in(dir, &["add", ".env"]);
    git_in(dir, &["commit", "-qm", "one"]);
    std::fs::write(
        dir.join("notes.txt"),
        format!("FACEBOOK_APP_SECRET={secret}\n"),
    )
    .unwrap();
    git_in(dir, &["add", "notes.txt"]);
    git_in(dir, &["commit", "-qm", "two"]);
}

fn loose_object(dir: &std::path::Path, rev: &str) -> std::path::PathBuf {
    let id = git_in(dir, &["rev-parse", rev]);
    dir.join(".git/objects").join(&id[..2]).join(&id[2..])
}

#[test]
fn a_blob_the_history_names_but_git_cannot_give_is_exit_3_never_clean() {
    let sandbox = sandbox();
    let token = token_of(&sandbox, "system-user");
    let secret = sandbox.app_secret().expose_secret().to_owned();
    let test = Test::new();
    history(test.path(), &token, &secret);
    let blob = git_in(test.path(), &["rev-parse", "HEAD:notes.txt"]);
    std::fs::remove_file(loose_object(test.path(), "HEAD:notes.txt")).unwrap();
    let out = test.args(["scan", "--git", "--format", "json"]).run();
    out.assert_code(3);
    assert!(
        out.stdout.is_empty(),
        "no report of a partial scan: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains(&blob) && out.stderr.contains("notes.txt"),
        "names what could not be read: {}",
        out.stderr
    );
    assert!(out.stderr.contains("git fsck"), "{}", out.stderr);
    for s in [&token, &secret] {
        assert!(!out.stdout.contains(s.as_str()) && !out.stderr.contains(s.as_str()));
    }
}

#[test]
fn git_failing_while_giving_the_history_is_exit_3_with_its_words_sanitised() {
    let sandbox = sandbox();
    let token = token_of(&sandbox, "system-user");
    let secret = sandbox.app_secret().expose_secret().to_owned();
    let test = Test::new();
    // The repository's folder name reaches the message: it must not reach a terminal raw.
    let name = "repo\u{1b}[2J\u{202e}";
    let repo = test.path().join(name);
    history(&repo, &token, &secret);
    // Pack it, then corrupt the packed bytes of one blob: `git log` still works (trees and commits are
    // intact), `git cat-file` dies on the blob with status 128.
    git_in(&repo, &["gc", "-q"]);
    let blob = git_in(&repo, &["rev-parse", "HEAD:notes.txt"]);
    let pack_dir = repo.join(".git/objects/pack");
    let (mut pack, mut index) = (None, None);
    for entry in std::fs::read_dir(&pack_dir).unwrap() {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("pack") => pack = Some(path),
            Some("idx") => index = Some(path),
            _ => {}
        }
    }
    let (pack, index) = (pack.unwrap(), index.unwrap());
    let listing = git_in(&repo, &["verify-pack", "-v", index.to_str().unwrap()]);
    let fields: Vec<usize> = listing
        .lines()
        .find(|l| l.starts_with(&blob))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();
    let (stored, offset) = (fields[0], fields[1]);
    let mut bytes = std::fs::read(&pack).unwrap();
    for b in &mut bytes[offset + 4..offset + stored] {
        *b ^= 0xff;
    }
    let mut perms = std::fs::metadata(&pack).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&pack, perms).unwrap();
    std::fs::write(&pack, bytes).unwrap();
    let out = test.args(["scan", "--git", "--format", "json", name]).run();
    out.assert_code(3);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains("cat-file") && out.stderr.contains("corrupt"),
        "git's own words: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains('\u{1b}') && !out.stderr.contains('\u{202e}'),
        "{:?}",
        out.stderr
    );
    for s in [&token, &secret] {
        assert!(!out.stdout.contains(s.as_str()) && !out.stderr.contains(s.as_str()));
    }
}

/// A Graph API stand-in on loopback that answers as Meta does for a system-user token without the
/// app's credentials: `/me` works, `/debug_token` refuses the token as its own inspector (code 100).
fn graph_refusing_self_inspection() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let target = request_line.split(' ').nth(1).unwrap_or("").to_owned();
            log.lock().unwrap().push(target.clone());
            let (status, body) = if target.contains("/me") {
                (
                    "200 OK",
                    r#"{"id":"104169029247128","name":"PERMATOKENTEST system user"}"#,
                )
            } else {
                (
                    "400 Bad Request",
                    r#"{"error":{"message":"(#100) You must provide an app access token, or a user access token that is an owner or developer of the app","type":"OAuthException","code":100,"fbtrace_id":"PERMATOKENTEST"}}"#,
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

#[test]
fn verify_counts_a_token_live_when_debug_token_refuses_to_let_it_inspect_itself() {
    let token = permatoken_sandbox::fake_token(634_974_688_087_057)
        .expose_secret()
        .to_owned();
    let (url, seen) = graph_refusing_self_inspection();
    let out = Test::new()
        .env("PERMATOKEN_GRAPH_URL", &url)
        .write(".env", &format!("WHATSAPP_ACCESS_TOKEN={token}\n"))
        .args(["scan", "--verify", "--format", "json"])
        .run();
    out.assert_code(2);
    assert_eq!(findings(&out)[0]["verified"], "live");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|t| t.contains("/debug_token")) && seen.iter().any(|t| t.contains("/me")),
        "{seen:?}"
    );
    assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
}

#[test]
fn standard_input_over_the_size_limit_is_an_error_not_clean() {
    let out = Test::new()
        .stdin(&"x".repeat((1 << 20) + 1))
        .args(["scan", "-", "--max-file-size", "1"])
        .run();
    out.assert_code(3);
    assert!(out.stderr.contains("--max-file-size"), "{}", out.stderr);
    let out = Test::new()
        .stdin(&"x".repeat(1 << 20))
        .args(["scan", "-", "--max-file-size", "1"])
        .run();
    out.assert_code(0);
}
