//! exchange, refresh, failover and mint against the sandbox: exit codes, messages, file bytes and
//! modes, backups, the reload command, and the requests the sandbox received.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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

    let (out, _) = run(Test::against(&sandbox).write(".env", &original).args([
        "mint",
        "--system-user",
        &id,
        "--expires-60-days",
        "--json",
        "--dry-run",
    ]));
    out.assert_code(0);
    assert_eq!(out.json()["token"]["kind"], "system_user_60d");

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
