//! `permatoken watch --once` with its state in a real PostgreSQL (a cluster started for the test, see
//! crates/state/tests/it/pg_cluster.rs): the URL from `--state` or from `state =` in the
//! configuration, the password from PGPASSWORD or `state_password_file`, never from the URL.

#[path = "../../../state/tests/it/pg_cluster.rs"]
pub(crate) mod pg_cluster;

use pg_cluster::{PgCluster, WATCH};

use crate::harness::{Test, app_lines, sandbox, token_of};

const CONFIG: &str =
    "[defaults]\ninterval = \"1h\"\n\n[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\n";

#[test]
fn once_keeps_its_state_in_postgres_with_the_password_from_the_environment_or_a_file() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("fleet", WATCH);
    let sandbox = sandbox();
    let token = token_of(&sandbox, "system-user");
    let env = format!("WHATSAPP_ACCESS_TOKEN={token}\n{}", app_lines(&sandbox));
    let url = pg.url(WATCH, "fleet", "?sslmode=disable");

    // --state with PGPASSWORD.
    let out = Test::against(&sandbox)
        .write("permatoken.toml", CONFIG)
        .write("orders.env", &env)
        .env("PGPASSWORD", pg.password())
        .args(["watch", "--config", "permatoken.toml", "--once", "--json"])
        .args(["--state", &url])
        .run();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.json()["tokens"][0]["name"], "orders");
    assert_eq!(
        pg.psql("fleet", "SELECT name FROM tokens;").trim(),
        "orders"
    );
    assert_eq!(pg.psql("fleet", "SELECT count(*) FROM checks;").trim(), "1");

    // `state` and `state_password_file` in the configuration: a second round, a second check.
    let config = format!("state = \"{url}\"\nstate_password_file = \"pg-password\"\n{CONFIG}");
    let out = Test::against(&sandbox)
        .write("permatoken.toml", &config)
        .write("orders.env", &env)
        .write("pg-password", &format!("{}\n", pg.password()))
        .args(["watch", "--config", "permatoken.toml", "--once"])
        .run();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(pg.psql("fleet", "SELECT count(*) FROM checks;").trim(), "2");
    let dump = pg.dump("fleet");
    assert!(!dump.contains(&token), "the token is in the database");

    // A password in the URL: refused before anything, exit 3, the password not repeated.
    let with_password = format!(
        "postgres://{WATCH}:{}@127.0.0.1:{}/fleet?sslmode=disable",
        pg.password(),
        pg.port
    );
    let out = Test::against(&sandbox)
        .write("permatoken.toml", CONFIG)
        .write("orders.env", &env)
        .args(["watch", "--config", "permatoken.toml", "--once"])
        .args(["--state", &with_password])
        .run();
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("holds a password"), "{}", out.stderr);
    assert!(!out.stderr.contains(pg.password()), "{}", out.stderr);
    assert!(!out.stdout.contains(pg.password()), "{}", out.stdout);
    assert_eq!(pg.psql("fleet", "SELECT count(*) FROM checks;").trim(), "2");
}

/// The hex SHA-256 of `text`, as the state keys tokens (by `sha256sum`, not by our own code).
fn sha256_hex(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn a_renewal_claimed_by_another_replica_is_not_done_again_and_one_not_claimed_is_claimed_then_done()
{
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("claims", WATCH);
    let sandbox = sandbox();
    let token = token_of(&sandbox, "system-user-60d");
    let env = format!("WHATSAPP_ACCESS_TOKEN={token}\n{}", app_lines(&sandbox));
    let url = pg.url(WATCH, "claims", "?sslmode=disable");
    // Inside the renewal window from the first round.
    let config = CONFIG.replace("[defaults]\n", "[defaults]\nrenew_days = 61\n");
    let once = || {
        Test::against(&sandbox)
            .write("permatoken.toml", &config)
            .write("orders.env", &env)
            .env("PGPASSWORD", pg.password())
            .args(["watch", "--config", "permatoken.toml", "--once", "--json"])
            .args(["--state", &url])
            .run_keep()
    };
    let exchanges = || {
        sandbox
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/oauth/access_token"))
            .count()
    };
    // The schema exists after a first round; the renewal it did is its own, undone below.
    let (out, _) = once();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(exchanges(), 1, "the unclaimed renewal was done");
    let key = sha256_hex(&token);
    let done = pg.psql(
        "claims",
        &format!(
            "SELECT count(*) FROM claims WHERE key LIKE '{key}:renew:%' AND done_at IS NOT NULL;"
        ),
    );
    assert_eq!(
        done.trim(),
        "1",
        "the renewal was claimed, then marked done"
    );

    // Another replica claimed this token's renewal (this hour and the next, whichever this round
    // falls in): the round checks it and renews nothing.
    pg.psql("claims", "DELETE FROM claims;");
    let hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600;
    for h in [hour, hour + 1] {
        pg.psql(
            "claims",
            &format!(
                "INSERT INTO claims (key, replica, claimed_at) VALUES ('{key}:renew:{h}', 'other', 0);"
            ),
        );
    }
    let (out, dir) = once();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(exchanges(), 1, "a claimed renewal was done again");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("orders.env")).unwrap(),
        env,
        "the file was changed"
    );
    assert!(
        out.stderr.contains("another replica has claimed this"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(&token), "{}", out.stderr);
}
