//! exchange, refresh, failover and mint against the sandbox: exit codes, messages, file bytes and
//! modes, backups, the reload command, and the requests the sandbox received.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use permatoken_sandbox::{Faults, Running};

use crate::harness::{Outcome, Test, app_lines, sandbox, token_of};

const HEAD: &str = "# WhatsApp service\r\nexport PORT=8080 # the service's own\r\n";

fn env_text(token: &str, sandbox: &Running, extra: &str) -> String {
    format!(
        "{HEAD}WHATSAPP_ACCESS_TOKEN=\"{token}\" # primary\r\n{}{extra}",
        app_lines(sandbox)
    )
}

fn read(test_dir: &Path, name: &str) -> String {
    fs::read_to_string(test_dir.join(name)).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn backups(home: &Path) -> Vec<PathBuf> {
    let dir = home.join(".local/state/permatoken/backups");
    let mut list: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    list.sort();
    list
}

/// The value of `key` in a `.env` text, as the service would read it.
fn value_of(text: &str, key: &str) -> Option<String> {
    permatoken_dotenv::parse(text)
        .unwrap()
        .get(key)
        .map(|e| e.value.to_owned())
}

/// Runs the test and returns its outcome with its folder (which is also `HOME`).
fn run(test: Test) -> (Outcome, tempfile::TempDir) {
    test.run_keep()
}

#[test]
fn exchange_writes_a_verified_long_lived_token_and_only_that_line() {
    let sandbox = sandbox();
    let short = token_of(&sandbox, "short-lived");
    let original = env_text(&short, &sandbox, "LAST=1");
    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &original)
        .args(["exchange"]));
    out.assert_code(0);
    let now = read(dir.path(), ".env");
    let new = value_of(&now, "WHATSAPP_ACCESS_TOKEN").unwrap();
    assert_ne!(new, short);
    assert_eq!(
        now,
        original.replace(&short, &new),
        "only the token's bytes changed"
    );
    assert_eq!(mode(&dir.path().join(".env")), 0o600);
    // The old file is kept, 0600, outside the project; its path is printed.
    let saved = backups(dir.path());
    assert_eq!(saved.len(), 1);
    assert_eq!(fs::read_to_string(&saved[0]).unwrap(), original);
    assert_eq!(mode(&saved[0]), 0o600);
    assert!(
        out.stdout.contains(&saved[0].display().to_string()),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("long-lived (60-day) user token"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(&new) && !out.stderr.contains(&new),
        "the new token is never printed"
    );

    // The secret travelled in the POST body; no URL held it.
    let secret = sandbox.app_secret().expose_secret().to_owned();
    let requests = sandbox.requests();
    let posts: Vec<_> = requests.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1);
    assert!(posts[0].path.ends_with("/oauth/access_token"));
    assert!(posts[0].body.contains("grant_type=fb_exchange_token"));
    assert!(posts[0].body.contains(&format!("client_secret={secret}")));
    assert_eq!(posts[0].query, None);
    assert!(requests.iter().all(|r| !r.target().contains(&secret)));

    // What was written is what `check` then finds.
    let check = Test::against(&sandbox)
        .write(".env", &now)
        .args(["check", "--json"])
        .run();
    check.assert_code(0);
    assert_eq!(check.json()["token"]["kind"], "long_lived_user");
}

#[test]
fn exchange_failures_name_the_fix_and_leave_files_as_they_were() {
    let sandbox = sandbox();
    let short = token_of(&sandbox, "short-lived");
    let cases: Vec<(String, i32, &str)> = vec![
        (
            env_text(&short, &sandbox, "")
                .replace(sandbox.app_secret().expose_secret(), &"0".repeat(32)),
            2,
            "Error validating client secret",
        ),
        (
            env_text(&token_of(&sandbox, "expired"), &sandbox, ""),
            2,
            "no longer works",
        ),
        (
            env_text(&token_of(&sandbox, "password-changed"), &sandbox, ""),
            2,
            "changed their Facebook password",
        ),
        (
            env_text(&token_of(&sandbox, "other-app"), &sandbox, ""),
            2,
            "belongs to app",
        ),
        (
            env_text(&token_of(&sandbox, "system-user"), &sandbox, ""),
            0,
            "needs no exchange",
        ),
        (
            format!(
                "WHATSAPP_ACCESS_TOKEN={short}\nFACEBOOK_APP_ID={}\n",
                sandbox.app().id
            ),
            3,
            "FACEBOOK_APP_SECRET",
        ),
    ];
    for (text, code, words) in cases {
        let (out, dir) = run(Test::against(&sandbox)
            .write(".env", &text)
            .args(["exchange"]));
        out.assert_code(code);
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(said.contains(words), "`{words}` not in:\n{said}");
        assert_eq!(
            read(dir.path(), ".env"),
            text,
            "the file is byte for byte as it was"
        );
        assert!(
            backups(dir.path()).is_empty(),
            "nothing written, nothing backed up"
        );
    }
    // A wrong secret (code 1) is never retried: one POST only.
    let wrong = env_text(&short, &sandbox, "")
        .replace(sandbox.app_secret().expose_secret(), &"0".repeat(32));
    let before = sandbox.requests().len();
    Test::against(&sandbox)
        .write(".env", &wrong)
        .args(["exchange"])
        .run()
        .assert_code(2);
    let posts = sandbox.requests()[before..]
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1);
}

#[test]
fn a_token_from_the_environment_needs_a_destination() {
    let sandbox = sandbox();
    let out = Test::against(&sandbox)
        .env("WHATSAPP_ACCESS_TOKEN", &token_of(&sandbox, "short-lived"))
        .env("FACEBOOK_APP_ID", &sandbox.app().id.to_string())
        .env("FACEBOOK_APP_SECRET", sandbox.app_secret().expose_secret())
        .args(["exchange", "--json"])
        .run();
    out.assert_code(3);
    assert!(
        out.json()["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("--env-file")
    );
    assert!(sandbox.requests().is_empty(), "stopped before any call");
}

#[test]
fn dry_run_output_and_reveal() {
    let sandbox = sandbox();
    let short = token_of(&sandbox, "short-lived");
    let original = env_text(&short, &sandbox, "");
    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &original)
        .args(["exchange", "--dry-run"]));
    out.assert_code(0);
    assert!(
        out.stdout.contains("would set `WHATSAPP_ACCESS_TOKEN`"),
        "{}",
        out.stdout
    );
    assert_eq!(read(dir.path(), ".env"), original);

    let (out, dir) = run(Test::against(&sandbox).write(".env", &original).args([
        "exchange",
        "--output",
        "token.txt",
        "--reveal",
        "--json",
    ]));
    out.assert_code(0);
    assert_eq!(
        read(dir.path(), ".env"),
        original,
        "--output leaves the .env alone"
    );
    let written = read(dir.path(), "token.txt");
    assert_eq!(mode(&dir.path().join("token.txt")), 0o600);
    assert_eq!(
        out.json()["access_token"].as_str().unwrap(),
        written.trim_end(),
        "--reveal shows it"
    );
    assert!(written.starts_with("EAA") && written.ends_with('\n'));
}

#[test]
fn then_runs_without_secrets_and_a_failed_reload_is_exit_2_with_the_token_kept() {
    let sandbox = sandbox();
    let short = token_of(&sandbox, "short-lived");
    let original = env_text(&short, &sandbox, "");
    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &original)
        .env("WHATSAPP_ACCESS_TOKEN_BACKUP_7", "EAAPERMATOKENTESTbackup")
        .env("FACEBOOK_APP_SECRET", sandbox.app_secret().expose_secret())
        .env("WHATSAPP_WEBHOOK_VERIFY_TOKEN", "PERMATOKENTEST-verify")
        .args(["exchange", "--then", "env > reload-env.txt"]));
    out.assert_code(0);
    let seen = read(dir.path(), "reload-env.txt");
    for name in [
        "WHATSAPP_ACCESS_TOKEN",
        "FACEBOOK_APP_SECRET",
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN",
    ] {
        assert!(!seen.contains(name), "{name} reached the reload command");
    }
    assert!(
        seen.contains("PERMATOKEN_GRAPH_URL="),
        "the rest of the environment is passed on"
    );

    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &original)
        .args(["exchange", "--then", "exit 5"]));
    out.assert_code(2);
    assert!(
        out.stdout.contains("exited 5; the new token stays written"),
        "{}",
        out.stdout
    );
    assert_ne!(read(dir.path(), ".env"), original);
}

#[test]
fn refresh_renews_a_60_day_system_user_token_inside_its_window() {
    let sandbox = sandbox();
    let old = token_of(&sandbox, "system-user-60d");
    let original = env_text(&old, &sandbox, "");
    // 50 days left: outside the 14-day window, so nothing is done.
    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &original)
        .args(["refresh"]));
    out.assert_code(0);
    assert_eq!(read(dir.path(), ".env"), original);
    assert!(sandbox.requests().iter().all(|r| r.method == "GET"));
    // Forty days later, ten are left: renewed, with set_token_expires_in_60_days.
    sandbox.advance_clock(Duration::from_secs(40 * 86_400));
    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &original)
        .args(["refresh", "--json"]));
    out.assert_code(0);
    let report = out.json();
    assert_eq!(report["tokens"][0]["decision"], "renewed");
    assert_eq!(report["tokens"][0]["renewed"]["kind"], "system_user_60d");
    let new = value_of(&read(dir.path(), ".env"), "WHATSAPP_ACCESS_TOKEN").unwrap();
    assert_ne!(new, old);
    let post = sandbox
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert!(
        post.body.contains("set_token_expires_in_60_days=true"),
        "{}",
        post.body
    );
}

#[test]
fn refresh_never_touches_a_permanent_token_and_says_what_cannot_be_renewed() {
    let sandbox = sandbox();
    let (out, _) = run(Test::against(&sandbox)
        .write(
            ".env",
            &env_text(&token_of(&sandbox, "system-user"), &sandbox, ""),
        )
        .args(["refresh", "--renew-days", "3650"]));
    out.assert_code(0);
    assert!(out.stdout.contains("never touched"), "{}", out.stdout);
    assert!(sandbox.requests().iter().all(|r| r.method == "GET"));

    // A long-lived user token in its window: not renewable by a documented call.
    let expiring = env_text(&token_of(&sandbox, "user-expiring"), &sandbox, "");
    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &expiring)
        .args(["refresh"]));
    out.assert_code(1);
    assert!(
        out.stdout.contains("Method 3") && out.stdout.contains("--try-user-token"),
        "{}",
        out.stdout
    );
    assert_eq!(read(dir.path(), ".env"), expiring);
    // Asked to try, the sandbox's exchange gives 60 days, which /debug_token confirms.
    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &expiring)
        .args(["refresh", "--try-user-token"]));
    out.assert_code(0);
    assert_ne!(read(dir.path(), ".env"), expiring);
}

#[test]
fn failover_promotes_the_first_healthy_backup_and_moves_the_rest_up() {
    let sandbox = sandbox();
    let dead = token_of(&sandbox, "expired");
    let (b1, b2, b3) = (
        token_of(&sandbox, "password-changed"),
        token_of(&sandbox, "system-user"),
        token_of(&sandbox, "user-60d"),
    );
    let extra = format!(
        "WHATSAPP_ACCESS_TOKEN_BACKUP={b1}\nWHATSAPP_ACCESS_TOKEN_BACKUP_2={b2} # spare\nWHATSAPP_ACCESS_TOKEN_BACKUP_3='{b3}'\n"
    );
    let original = env_text(&dead, &sandbox, &extra);
    let (out, dir) = run(Test::against(&sandbox).write(".env", &original).args([
        "refresh",
        "--failover",
        "--then",
        "echo reloaded >> reloads.txt",
    ]));
    out.assert_code(0);
    let now = read(dir.path(), ".env");
    // BACKUP is dead too, so BACKUP_2 is promoted; BACKUP_3 moves up to BACKUP_2; BACKUP (dead) stays.
    assert_eq!(value_of(&now, "WHATSAPP_ACCESS_TOKEN").unwrap(), b2);
    assert_eq!(value_of(&now, "WHATSAPP_ACCESS_TOKEN_BACKUP").unwrap(), b1);
    assert_eq!(
        value_of(&now, "WHATSAPP_ACCESS_TOKEN_BACKUP_2").unwrap(),
        b3
    );
    assert_eq!(value_of(&now, "WHATSAPP_ACCESS_TOKEN_BACKUP_3"), None);
    assert!(
        now.contains(&format!("WHATSAPP_ACCESS_TOKEN_BACKUP_2='{b3}'")),
        "quoting kept:\n{now}"
    );
    assert_eq!(now.matches(&b2).count(), 1, "no token stands twice");
    // The dead token is not lost: it is in the 0600 backup copy.
    let saved = backups(dir.path());
    assert_eq!(fs::read_to_string(&saved[0]).unwrap(), original);
    assert_eq!(
        read(dir.path(), "reloads.txt"),
        "reloaded\n",
        "the reload ran once"
    );
}

/// A `.env` a service reads through its group (0640), given to another group first when we are
/// root, so that keeping it is no coincidence. Returns the group.
fn shared_with_a_group(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o640)).unwrap();
    let meta = fs::metadata(path).unwrap();
    let gid = if meta.uid() == 0 { 65534 } else { meta.gid() };
    std::os::unix::fs::chown(path, None, Some(gid)).unwrap();
    gid
}

#[test]
fn a_failover_and_a_renewal_keep_the_files_mode_and_group() {
    use std::os::unix::fs::MetadataExt;
    let sandbox = sandbox();
    let backup = format!(
        "WHATSAPP_ACCESS_TOKEN_BACKUP={}\n",
        token_of(&sandbox, "system-user")
    );
    let original = env_text(&token_of(&sandbox, "expired"), &sandbox, &backup);
    let test = Test::against(&sandbox).write(".env", &original);
    let gid = shared_with_a_group(&test.path().join(".env"));
    let (out, dir) = run(test.args(["refresh", "--failover"]));
    out.assert_code(0);
    let env = dir.path().join(".env");
    assert_ne!(read(dir.path(), ".env"), original, "failed over");
    assert_eq!(
        mode(&env),
        0o640,
        "never tightened: the service's group still reads it"
    );
    assert_eq!(fs::metadata(&env).unwrap().gid(), gid, "group kept");
    let saved = backups(dir.path());
    assert_eq!(mode(&saved[0]), 0o600, "the backup is a file of ours: 0600");

    // A renewal (ten days left on a 60-day system-user token) writes the same way.
    let renewable = env_text(&token_of(&sandbox, "system-user-60d"), &sandbox, "");
    sandbox.advance_clock(Duration::from_secs(40 * 86_400));
    let test = Test::against(&sandbox).write(".env", &renewable);
    let gid = shared_with_a_group(&test.path().join(".env"));
    let (out, dir) = run(test.args(["refresh", "--json"]));
    out.assert_code(0);
    assert_eq!(out.json()["tokens"][0]["decision"], "renewed");
    let env = dir.path().join(".env");
    assert_eq!(mode(&env), 0o640);
    assert_eq!(fs::metadata(&env).unwrap().gid(), gid);
    assert_eq!(mode(&backups(dir.path())[0]), 0o600);
}

#[test]
fn failover_without_a_healthy_backup_changes_nothing() {
    let sandbox = sandbox();
    let extra = format!(
        "WHATSAPP_ACCESS_TOKEN_BACKUP={}\n",
        token_of(&sandbox, "password-changed")
    );
    let original = env_text(&token_of(&sandbox, "expired"), &sandbox, &extra);
    let (out, dir) = run(Test::against(&sandbox).write(".env", &original).args([
        "refresh",
        "--failover",
        "--then",
        "touch reloaded",
    ]));
    out.assert_code(2);
    assert!(
        out.stdout.contains("no backup checks healthy"),
        "{}",
        out.stdout
    );
    assert_eq!(read(dir.path(), ".env"), original);
    assert!(
        !dir.path().join("reloaded").exists(),
        "no reload without a write"
    );

    // An outage is never a reason to fail over.
    sandbox.set_faults(Faults {
        server_errors: 1000,
        ..Faults::default()
    });
    let healthy = format!(
        "WHATSAPP_ACCESS_TOKEN_BACKUP={}\n",
        token_of(&sandbox, "system-user")
    );
    let original = env_text(&token_of(&sandbox, "system-user-60d"), &sandbox, &healthy);
    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &original)
        .args(["refresh", "--failover"]));
    out.assert_code(3);
    assert_eq!(read(dir.path(), ".env"), original);
}

#[test]
fn mint_makes_a_permanent_system_user_token() {
    let sandbox = sandbox();
    let admin = token_of(&sandbox, "admin");
    let original = env_text(&admin, &sandbox, "");
    let id = sandbox.system_user_id().to_owned();
    let (out, dir) =
        run(Test::against(&sandbox)
            .write(".env", &original)
            .args(["mint", "--system-user", &id]));
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("minted and verified: never-expiring system-user token"),
        "{}",
        out.stdout
    );
    let minted = value_of(&read(dir.path(), ".env"), "WHATSAPP_ACCESS_TOKEN").unwrap();
    assert_ne!(minted, admin);
    let check = Test::against(&sandbox)
        .write(".env", &read(dir.path(), ".env"))
        .args(["check", "--json"])
        .run();
    check.assert_code(0);
    assert_eq!(check.json()["token"]["kind"], "system_user_permanent");
    // Installed first, then the token; the proof in the body of both.
    let posts: Vec<_> = sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2);
    assert!(posts[0].path.ends_with(&format!("/{id}/applications")));
    assert!(posts[1].path.ends_with(&format!("/{id}/access_tokens")));
    for p in &posts {
        assert!(p.body.contains("appsecret_proof="), "{}", p.body);
        assert!(
            p.body
                .contains(&format!("business_app={}", sandbox.app().id))
        );
    }
    assert!(posts[1].body.contains(
        "scope=whatsapp_business_messaging%2Cwhatsapp_business_management%2Cbusiness_management"
    ));

    // A dry run checks the admin's token and asks for nothing: no install, no token.
    let posts_before = minting_requests(&sandbox);
    let (out, dir) = run(Test::against(&sandbox).write(".env", &original).args([
        "mint",
        "--system-user",
        &id,
        "--expires-60-days",
        "--json",
        "--dry-run",
    ]));
    out.assert_code(0);
    let report = out.json();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["written"], serde_json::Value::Null);
    assert!(
        report["would"]
            .as_str()
            .unwrap()
            .contains("a new 60-day system-user token"),
        "{report}"
    );
    assert_eq!(read(dir.path(), ".env"), original);
    assert_eq!(minting_requests(&sandbox), posts_before);

    let (out, dir) = run(Test::against(&sandbox).write(".env", &original).args([
        "mint",
        "--system-user",
        "123",
    ]));
    out.assert_code(2);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert_eq!(read(dir.path(), ".env"), original);
}

#[test]
fn the_sandbox_shows_a_renewal_without_writing() {
    let out = Test::new()
        .args(["refresh", "--sandbox", "--renew-days", "60", "--json"])
        .run();
    out.assert_code(0);
    let report = out.json();
    assert_eq!(report["tokens"][0]["decision"], "renewed");
    assert_eq!(report["tokens"][0]["written"], serde_json::Value::Null);
    let out = Test::new().args(["refresh", "--sandbox"]).run();
    out.assert_code(0);
    assert!(out.stdout.contains("nothing to do yet"), "{}", out.stdout);
}

/// Every request that asks Meta for a token or installs an app: what no dry run or refused write may
/// make.
fn minting_requests(sandbox: &Running) -> Vec<String> {
    sandbox
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST"
                || r.path.ends_with("/oauth/access_token")
                || r.path.ends_with("/access_tokens")
        })
        .map(|r| r.path)
        .collect()
}

#[track_caller]
fn assert_no_secret(out: &Outcome, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "a secret was printed:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
}

/// Holds the lock of `<dir>/.env` as another permatoken would, until dropped.
fn hold_lock(dir: &Path) -> fs::File {
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".env.lock"))
        .unwrap();
    lock.lock().unwrap();
    lock
}

#[test]
fn a_held_lock_is_announced_waited_for_then_exit_3_before_any_token_is_minted() {
    for command in ["exchange", "refresh", "mint"] {
        let sandbox = sandbox();
        let token = match command {
            "exchange" => token_of(&sandbox, "short-lived"),
            "refresh" => token_of(&sandbox, "system-user-60d"),
            _ => token_of(&sandbox, "admin"),
        };
        if command == "refresh" {
            // Ten days left: inside the renewal window.
            sandbox.advance_clock(Duration::from_secs(40 * 86_400));
        }
        let original = env_text(&token, &sandbox, "");
        let test = Test::against(&sandbox).write(".env", &original);
        let mut args = vec![command, "--lock-timeout", "300ms"];
        let id = sandbox.system_user_id().to_owned();
        if command == "mint" {
            args.extend(["--system-user", &id]);
        }
        let holder = hold_lock(test.path());
        let (out, dir) = run(test.args(&args));
        drop(holder);
        out.assert_code(3);
        assert!(
            out.stderr.contains("another process holds `./.env.lock`")
                && out.stderr.contains("waiting up to 300ms"),
            "{command}: said at once that it waits:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("(lock file `./.env.lock`)")
                && out
                    .stderr
                    .contains("still locked by another process after 300ms")
                && out.stderr.contains("--lock-timeout"),
            "{command}: the error names the lock:\n{}",
            out.stderr
        );
        assert_eq!(read(dir.path(), ".env"), original, "{command}");
        assert!(backups(dir.path()).is_empty());
        assert_eq!(
            minting_requests(&sandbox),
            Vec::<String>::new(),
            "{command}: Meta was asked for nothing"
        );
        assert_no_secret(&out, &[&token, sandbox.app_secret().expose_secret()]);
    }
}

#[test]
fn lock_timeout_takes_seconds_or_a_humane_duration() {
    let sandbox = sandbox();
    let original = env_text(&token_of(&sandbox, "short-lived"), &sandbox, "");
    for (value, said) in [("0", "after 0ns"), ("1m 30s", "up to 90s")] {
        let test = Test::against(&sandbox).write(".env", &original);
        let holder = hold_lock(test.path());
        let test = test.args(["exchange", "--lock-timeout", value]);
        if value == "0" {
            let out = test.run();
            out.assert_code(3);
            assert!(out.stderr.contains(said), "{}", out.stderr);
        } else {
            // Accepted: released while it waits, the exchange goes through.
            let dir = test.path().to_owned();
            let waiting = start_waiting(&dir, &sandbox, &["exchange", "--lock-timeout", value]);
            assert!(waiting.said.contains(said), "{}", waiting.said);
            drop(holder);
            let out = waiting.finish();
            out.assert_code(0);
            assert_ne!(read(&dir, ".env"), original);
            continue;
        }
        drop(holder);
    }
    let out = Test::against(&sandbox)
        .write(".env", &original)
        .args(["exchange", "--lock-timeout", "soon"])
        .run();
    out.assert_code(3);
    assert!(
        out.stderr.contains("`soon` is not a duration"),
        "{}",
        out.stderr
    );
}

/// permatoken started in a folder, stopped at the point where it says it waits for a lock.
struct Waiting {
    child: std::process::Child,
    /// Standard error up to the line that says it waits.
    said: String,
    rest: std::thread::JoinHandle<String>,
}

/// Starts permatoken in `dir` as the harness would, and reads its standard error until it says it
/// waits for the lock.
fn start_waiting(dir: &Path, sandbox: &Running, args: &[&str]) -> Waiting {
    let mut child = Command::new(env!("CARGO_BIN_EXE_permatoken"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("PERMATOKEN_GRAPH_URL", sandbox.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        said.push_str(&line);
        assert!(n > 0, "ended without waiting for the lock:\n{said}");
        if line.contains("waiting up to") {
            break;
        }
    }
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        rest
    });
    Waiting { child, said, rest }
}

impl Waiting {
    fn finish(self) -> Outcome {
        let out = self.child.wait_with_output().unwrap();
        Outcome {
            code: out.status.code().unwrap(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: self.said + &self.rest.join().unwrap(),
        }
    }
}

#[test]
fn a_dry_run_checks_the_current_token_and_asks_meta_for_no_new_one() {
    for (command, scenario) in [
        ("exchange", "short-lived"),
        ("refresh", "system-user-60d"),
        ("mint", "admin"),
    ] {
        let sandbox = sandbox();
        let token = token_of(&sandbox, scenario);
        if command == "refresh" {
            sandbox.advance_clock(Duration::from_secs(40 * 86_400));
        }
        let original = env_text(&token, &sandbox, "");
        let id = sandbox.system_user_id().to_owned();
        let mut args = vec![command, "--dry-run"];
        if command == "mint" {
            args.extend(["--system-user", &id]);
        }
        let (out, dir) = run(Test::against(&sandbox).write(".env", &original).args(&args));
        out.assert_code(0);
        let masked = sandbox.token(scenario).unwrap().fingerprint();
        // As one line: the report wraps long ones.
        let said = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            said.contains("would set `WHATSAPP_ACCESS_TOKEN`")
                && said.contains(&format!("{masked} →"))
                && said.contains("nothing was asked of Meta"),
            "{command}: the change, masked:\n{}",
            out.stdout
        );
        // The current token was checked, and nothing else was asked.
        let requests = sandbox.requests();
        assert!(
            requests.iter().any(|r| r.path.ends_with("/debug_token")),
            "{command}: the current token is checked"
        );
        assert_eq!(
            minting_requests(&sandbox),
            Vec::<String>::new(),
            "{command}"
        );
        assert_eq!(read(dir.path(), ".env"), original);
        assert!(backups(dir.path()).is_empty());
        assert!(
            !dir.path().join(".env.lock").exists(),
            "{command}: a dry run takes no lock"
        );
        assert_no_secret(&out, &[&token, sandbox.app_secret().expose_secret()]);
    }

    // In JSON, the current token's facts and what would be done.
    let sandbox = sandbox();
    sandbox.advance_clock(Duration::from_secs(40 * 86_400));
    let original = env_text(&token_of(&sandbox, "system-user-60d"), &sandbox, "");
    let out = Test::against(&sandbox)
        .write(".env", &original)
        .args(["refresh", "--dry-run", "--json"])
        .run();
    out.assert_code(0);
    let report = out.json();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["tokens"][0]["decision"], "would_renew");
    assert_eq!(report["tokens"][0]["renewed"], serde_json::Value::Null);
    assert_eq!(report["tokens"][0]["token"]["kind"], "system_user_60d");
    assert_eq!(minting_requests(&sandbox), Vec::<String>::new());
}

#[test]
fn with_no_place_for_backups_nothing_is_written_unless_no_backup_is_given() {
    let sandbox = sandbox();
    let short = token_of(&sandbox, "short-lived");
    let original = env_text(&short, &sandbox, "");
    // No HOME (empty counts as unset) and a relative XDG_STATE_HOME (which the spec ignores).
    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &original)
        .env("HOME", "")
        .env("XDG_STATE_HOME", "state")
        .args(["exchange"]));
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("neither `XDG_STATE_HOME` nor `HOME` is set")
            && out.stderr.contains("--no-backup"),
        "{}",
        out.stderr
    );
    assert_eq!(read(dir.path(), ".env"), original);
    assert!(sandbox.requests().is_empty(), "stopped before any call");
    assert_no_secret(&out, &[&short, sandbox.app_secret().expose_secret()]);

    // Asked for, the write goes through, and no backup lands anywhere.
    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &original)
        .env("HOME", "")
        .args(["exchange", "--no-backup"]));
    out.assert_code(0);
    assert_ne!(read(dir.path(), ".env"), original);
    let mut beside: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, [".env", ".env.lock"]);
    assert!(!out.stdout.contains("backup"), "{}", out.stdout);

    // An absolute XDG_STATE_HOME is enough.
    let state = tempfile::tempdir().unwrap();
    let (out, _dir) = run(Test::against(&sandbox)
        .write(".env", &original)
        .env("HOME", "")
        .env("XDG_STATE_HOME", &state.path().display().to_string())
        .args(["exchange"]));
    out.assert_code(0);
    assert_eq!(
        fs::read_dir(state.path().join("permatoken/backups"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn a_destination_larger_than_any_token_file_is_refused_before_any_token_is_minted() {
    let sandbox = sandbox();
    let short = token_of(&sandbox, "short-lived");
    let original = env_text(&short, &sandbox, "");
    // `--output` at a log by mistake: more than 1 MiB, kept as it is.
    let log = "PERMATOKENTEST a line of a log, not a token\n".repeat(30_000);
    let (out, dir) = run(Test::against(&sandbox)
        .write(".env", &original)
        .write("service.log", &log)
        .args(["exchange", "--output", "service.log"]));
    out.assert_code(3);
    assert!(
        out.stderr.contains(
            "`service.log` is larger than 1 MiB, more than any .env or token file, so it was left as it is"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("check the path"), "{}", out.stderr);
    assert_eq!(read(dir.path(), "service.log"), log, "byte for byte");
    assert_eq!(read(dir.path(), ".env"), original);
    assert!(backups(dir.path()).is_empty());
    assert_eq!(
        minting_requests(&sandbox),
        Vec::<String>::new(),
        "Meta was asked for nothing"
    );
    assert_no_secret(&out, &[&short, sandbox.app_secret().expose_secret()]);
}

#[test]
fn failover_promotes_only_the_value_it_verified() {
    let sandbox = sandbox();
    let (dead, verified, other) = (
        token_of(&sandbox, "expired"),
        token_of(&sandbox, "system-user"),
        token_of(&sandbox, "user-60d"),
    );
    let original = env_text(
        &dead,
        &sandbox,
        &format!("WHATSAPP_ACCESS_TOKEN_BACKUP={verified}\n"),
    );
    let test = Test::against(&sandbox).write(".env", &original);
    let dir = test.path().to_owned();
    let holder = hold_lock(&dir);
    // permatoken checks the backup, then waits for the lock; meanwhile another writer replaces the
    // backup with a token permatoken never checked.
    let waiting = start_waiting(&dir, &sandbox, &["refresh", "--failover"]);
    let edited = original.replace(&verified, &other);
    fs::write(dir.join(".env"), &edited).unwrap();
    drop(holder);
    let out = waiting.finish();
    out.assert_code(3);
    assert!(
        out.stderr.contains(
            "`WHATSAPP_ACCESS_TOKEN_BACKUP` in ./.env changed while permatoken was checking it"
        ) && out
            .stderr
            .contains("only a token that was verified is written"),
        "{}",
        out.stderr
    );
    assert_eq!(
        read(&dir, ".env"),
        edited,
        "left as the other writer left it"
    );
    assert!(backups(&dir).is_empty());
    assert_no_secret(&out, &[&dead, &verified, &other]);
    drop(test);

    // The same for a renewal: the token renewed must be the one still in the file.
    let sandbox = crate::harness::sandbox();
    sandbox.advance_clock(Duration::from_secs(40 * 86_400));
    let old = token_of(&sandbox, "system-user-60d");
    let original = env_text(&old, &sandbox, "");
    let test = Test::against(&sandbox).write(".env", &original);
    let dir = test.path().to_owned();
    let holder = hold_lock(&dir);
    let waiting = start_waiting(&dir, &sandbox, &["refresh"]);
    let edited = original.replace(&old, &token_of(&sandbox, "system-user"));
    fs::write(dir.join(".env"), &edited).unwrap();
    drop(holder);
    let out = waiting.finish();
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("changed while permatoken was checking it"),
        "{}",
        out.stderr
    );
    assert_eq!(read(&dir, ".env"), edited);
    assert_eq!(minting_requests(&sandbox), Vec::<String>::new());
    drop(test);
}

#[test]
fn two_renewals_in_one_file_take_its_lock_once() {
    let sandbox = sandbox();
    let (primary, backup) = (
        token_of(&sandbox, "system-user-60d"),
        token_of(&sandbox, "user-expiring"),
    );
    let original = env_text(
        &primary,
        &sandbox,
        &format!("WHATSAPP_ACCESS_TOKEN_BACKUP={backup}\n"),
    );
    // With no wait allowed, a second lock of the same file by the same run would fail at once.
    let (out, dir) = run(Test::against(&sandbox).write(".env", &original).args([
        "refresh",
        "--renew-days",
        "60",
        "--try-user-token",
        "--lock-timeout",
        "0",
        "--json",
    ]));
    out.assert_code(0);
    let report = out.json();
    assert_eq!(report["tokens"][0]["decision"], "renewed");
    assert_eq!(report["tokens"][1]["decision"], "renewed");
    let now = read(dir.path(), ".env");
    let (new_primary, new_backup) = (
        value_of(&now, "WHATSAPP_ACCESS_TOKEN").unwrap(),
        value_of(&now, "WHATSAPP_ACCESS_TOKEN_BACKUP").unwrap(),
    );
    assert!(new_primary != primary && new_backup != backup);
    assert_eq!(
        now,
        original
            .replace(&primary, &new_primary)
            .replace(&backup, &new_backup)
    );
    assert_eq!(backups(dir.path()).len(), 2, "one backup a write");
    assert!(
        !out.stderr.contains("another process holds"),
        "{}",
        out.stderr
    );
    assert_no_secret(&out, &[&primary, &backup, &new_primary, &new_backup]);
}
