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
