//! What a fleet of `watch` replicas owes its users, shown with a real PostgreSQL and two real
//! replicas (the helpers of watch_leader.rs): a dead token is alerted once across both, even after
//! the leader is killed and the new one checks it again; a hundred dead at once make one grouped
//! alert; each token is checked once per interval across both, the second time by the new leader;
//! no secret reaches the shared database (`pg_dump`) or the replicas' logs; and a standby's page
//! lists a `[[token_set]]`'s tokens from the shared state.
//!
//! Every token is a canary (`PERMATOKENTEST`) that neither replica's sandbox knows, so both say it
//! is invalid: dead by the API's word from the first check. (Two sandboxes never share tokens, and
//! a sandbox has no admin call that kills one.) The state tables are read with `psql`, so the
//! counts do not depend on how the daemon shapes its Graph calls.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::watch::receiver;
use crate::watch_leader::{Replica, elect, eventually, eventually_within};
use crate::watch_postgres::pg_cluster::{PgCluster, WATCH};

/// The marker every secret of these tests carries.
const MARK: &str = "PERMATOKENTEST";

/// Long enough for a minute's interval, its jitter and a takeover on a loaded machine.
const SECOND_ROUND: Duration = Duration::from_secs(120);

/// The interval of these tests: the shortest the daemon allows between two checks of a token.
const INTERVAL_SECONDS: i64 = 60;

/// A database for two replicas, a folder for their configuration and token files, and every secret
/// written there so far.
struct Fleet {
    pg: PgCluster,
    dir: tempfile::TempDir,
    url: String,
    secrets: Vec<String>,
    app_lines: String,
}

impl Fleet {
    fn new() -> Option<Self> {
        let pg = PgCluster::start()?;
        pg.create_database("fleet", WATCH);
        let url = pg.url(WATCH, "fleet", "?sslmode=disable");
        let app_secret = format!("{MARK}-app-secret-{}", std::process::id());
        Some(Self {
            app_lines: format!("FACEBOOK_APP_ID=1234567890\nFACEBOOK_APP_SECRET={app_secret}\n"),
            secrets: vec![app_secret],
            pg,
            dir: tempfile::tempdir().unwrap(),
            url,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `name` in the folder, 0600 as a careful user keeps secrets.
    fn write(&self, name: &str, text: &str) {
        let path = self.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// An env file `name` holding a new canary token and the app's credentials; returns the token.
    fn env_file(&mut self, name: &str) -> String {
        let token = format!(
            "EAA{MARK}x{}x{}xZZcanaryZD",
            std::process::id(),
            self.secrets.len()
        );
        self.write(
            name,
            &format!("WHATSAPP_ACCESS_TOKEN={token}\n{}", self.app_lines),
        );
        self.secrets.push(token.clone());
        token
    }

    /// `[[token_set]] clients` over `clients/*/.env`: `count` tokens `clients/c000`, … and their
    /// values in that order.
    fn clients(&mut self, count: usize) -> Vec<(String, String)> {
        (0..count)
            .map(|i| {
                let token = self.env_file(&format!("clients/c{i:03}/.env"));
                (format!("clients/c{i:03}"), token)
            })
            .collect()
    }

    /// A webhook route `ops` to `hook`, its URL ending in a secret path and its bodies signed:
    /// the configuration's lines for it.
    fn route(&mut self, hook: &str) -> String {
        let secret_path = format!("{MARK}-route-{}", std::process::id());
        let signing = format!("{MARK}-signing-{}", std::process::id());
        self.write("ops.url", &format!("{hook}/{secret_path}\n"));
        self.write("ops.key", &format!("{signing}\n"));
        self.secrets.extend([secret_path, signing]);
        "\n[[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl_file = \"ops.url\"\nsecret_file = \"ops.key\"\n"
            .to_owned()
    }

    /// Starts two replicas of `config` on the one database: (leader, standby).
    fn start(&self, config: &str) -> (Replica, Replica) {
        self.write("permatoken.toml", config);
        let a = Replica::start_with(self.path(), &self.url, &self.pg, &[]);
        let b = Replica::start_with(self.path(), &self.url, &self.pg, &[]);
        elect(a, b)
    }

    fn sql(&self, sql: &str) -> String {
        self.pg.psql("fleet", sql).trim().to_owned()
    }

    /// Each token name's checks in the shared state, oldest first (unix seconds).
    fn checks(&self) -> BTreeMap<String, Vec<i64>> {
        let mut checks: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let rows = self.sql(
            "SELECT t.name, c.checked_at FROM checks c JOIN tokens t USING (token_sha256) \
             ORDER BY t.name, c.checked_at;",
        );
        for row in rows.lines() {
            let (name, at) = row.split_once('|').expect("name|checked_at");
            checks
                .entry(name.to_owned())
                .or_default()
                .push(at.parse().unwrap());
        }
        checks
    }

    /// Fails if `text` holds a secret of this fleet, whole or half.
    #[track_caller]
    fn assert_clean(&self, what: &str, text: &str) {
        assert!(!text.contains(MARK), "a secret is in {what}");
        for secret in &self.secrets {
            let (first, second) = secret.split_at(secret.len() / 2);
            assert!(
                !text.contains(first) && !text.contains(second),
                "half a secret is in {what}"
            );
        }
    }

    /// Stops both replicas and checks that neither their logs nor a `pg_dump` of the state holds a
    /// secret (the database's password included).
    fn finish(&self, replicas: [Replica; 2]) {
        for replica in replicas {
            let log = replica.stop().join("\n");
            self.assert_clean("a replica's log", &log);
            assert!(!log.contains(self.pg.password()), "the password is logged");
        }
        let dump = self.pg.dump("fleet");
        assert!(dump.contains("COPY public.checks"), "the dump has the data");
        self.assert_clean("the pg_dump of the state", &dump);
    }
}

/// The leader's own `last_round_at` on its page: set once a step has checked tokens, delivered
/// what was due and published.
fn round_finished(replica: &Replica) -> bool {
    replica
        .page()
        .is_some_and(|p| p["leader"] == true && p["last_round_at"].is_i64())
}

fn bodies(seen: &Arc<Mutex<Vec<String>>>) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).expect("an alert is JSON"))
        .collect()
}

#[test]
fn a_dead_token_is_alerted_once_across_both_replicas_and_a_takeover() {
    let Some(mut fleet) = Fleet::new() else {
        return;
    };
    let (hook, seen) = receiver(200);
    let token = fleet.env_file("orders.env");
    let route = fleet.route(&hook);
    let config = format!(
        "[defaults]\ninterval = \"1m\"\n\n[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\nalerts = [\"ops\"]\n{route}"
    );
    let (leader, mut standby) = fleet.start(&config);

    eventually("the receiver gets the alert", || {
        !seen.lock().unwrap().is_empty()
    });
    // Settled in the shared state before the kill: a leader killed between the POST and the
    // settlement makes the next one send it again (with the same id), as documented.
    eventually("the delivery is settled in the shared state", || {
        fleet.sql("SELECT status FROM deliveries;") == "delivered"
    });
    let alerts = bodies(&seen);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert["token"], "orders", "{alert}");
    assert_eq!(alert["state"], "dead", "{alert}");
    assert_eq!(alert["previous_state"], Value::Null, "{alert}");
    assert_eq!(alert["kind"], "change", "{alert}");
    assert!(
        alert["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{alert}"
    );
    assert!(alert.get("fix").is_some(), "{alert}");
    let id = alert["id"].as_str().expect("an id").to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(
        alert["time"]
            .as_str()
            .is_some_and(|t| t.contains('T') && t.ends_with('Z')),
        "{alert}"
    );
    assert_eq!(standby.graph_calls(), 0, "a standby called the Graph API");

    leader.signal("-KILL");
    eventually("the standby leads once the leader is killed", || {
        standby.leader() == Some(1)
    });
    standby.wait_for("this replica now leads");
    // The new leader checks the dead token again, from the state the old one announced.
    eventually_within(SECOND_ROUND, "the new leader checks the token", || {
        round_finished(&standby)
    });
    assert!(
        standby.calls_about(&token) > 0,
        "the new leader did not check it"
    );
    assert_eq!(fleet.checks()["orders"].len(), 2);
    let alerts = bodies(&seen);
    assert_eq!(
        alerts.len(),
        1,
        "alerted again after the takeover: {alerts:?}"
    );
    assert_eq!(alerts[0]["id"], id.as_str());
    assert_eq!(fleet.sql("SELECT count(*) FROM alerts;"), "1");
    for body in seen.lock().unwrap().iter() {
        fleet.assert_clean("an alert", body);
    }
    fleet.finish([leader, standby]);
}

#[test]
fn a_hundred_tokens_dead_at_once_make_one_grouped_alert() {
    let Some(mut fleet) = Fleet::new() else {
        return;
    };
    let (hook, seen) = receiver(200);
    let clients = fleet.clients(100);
    let route = fleet.route(&hook);
    let config = format!(
        "[defaults]\ninterval = \"1h\"\n\n[[token_set]]\nname = \"clients\"\nenv_files = \"clients/*/.env\"\nalerts = [\"ops\"]\n{route}"
    );
    let (leader, standby) = fleet.start(&config);

    // Every delivery settled: nothing more is due, so what the receiver has is all it gets.
    eventually("the hundred deliveries are settled", || {
        fleet.sql("SELECT count(*) FROM deliveries WHERE status = 'delivered';") == "100"
    });
    eventually("the leader's round is finished", || round_finished(&leader));
    let alerts = bodies(&seen);
    assert_eq!(alerts.len(), 1, "not one grouped alert: {alerts:?}");
    let group = &alerts[0];
    assert_eq!(group["kind"], "group", "{group}");
    assert_eq!(group["count"], 100, "{group}");
    assert_eq!(
        group["message"], "100 tokens changed state: 100 dead",
        "{group}"
    );
    let members = group["alerts"].as_array().expect("the members");
    let mut names: Vec<&str> = members
        .iter()
        .map(|a| a["token"].as_str().expect("a member names its token"))
        .collect();
    names.sort_unstable();
    let expected: Vec<&str> = clients.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, expected);
    assert!(
        members
            .iter()
            .all(|a| a["state"] == "dead" && a["kind"] == "change"),
        "{group}"
    );
    assert_eq!(standby.graph_calls(), 0, "a standby called the Graph API");
    fleet.assert_clean("the grouped alert", &seen.lock().unwrap()[0]);
    fleet.finish([leader, standby]);
}

#[test]
fn each_token_is_checked_once_per_interval_across_both_and_a_takeover() {
    let Some(mut fleet) = Fleet::new() else {
        return;
    };
    let clients = fleet.clients(20);
    let config = format!(
        "[defaults]\ninterval = \"{INTERVAL_SECONDS}s\"\n\n[[token_set]]\nname = \"clients\"\nenv_files = \"clients/*/.env\"\n"
    );
    let (leader, mut standby) = fleet.start(&config);

    eventually("the leader's first round is finished", || {
        round_finished(&leader)
    });
    let first = fleet.checks();
    assert_eq!(first.len(), clients.len(), "{first:?}");
    assert!(first.values().all(|c| c.len() == 1), "{first:?}");
    for (name, token) in &clients {
        assert!(
            leader.calls_about(token) > 0,
            "the leader did not ask about {name}"
        );
    }
    assert_eq!(standby.graph_calls(), 0, "a standby called the Graph API");

    leader.signal("-KILL");
    eventually("the standby leads once the leader is killed", || {
        standby.leader() == Some(1)
    });
    standby.wait_for("this replica now leads");
    eventually_within(SECOND_ROUND, "every token is checked a second time", || {
        fleet.checks().values().all(|c| c.len() >= 2)
    });
    // Killed before a third round could come (an interval later).
    standby.signal("-KILL");
    let checks = fleet.checks();
    for (name, token) in &clients {
        let at = &checks[name];
        assert_eq!(at.len(), 2, "{name} checked {} times: {at:?}", at.len());
        // Whole seconds, and the new leader schedules from the old one's check: a few seconds'
        // tolerance, far below the interval.
        assert!(
            at[1] - at[0] >= INTERVAL_SECONDS - 5,
            "{name} checked twice within its interval, {} s apart (all: {checks:?})",
            at[1] - at[0]
        );
        assert!(
            standby.calls_about(token) > 0,
            "the new leader did not check {name}"
        );
    }
    fleet.finish([leader, standby]);
}

#[test]
fn the_standby_serves_a_sets_tokens_from_the_shared_state() {
    let Some(mut fleet) = Fleet::new() else {
        return;
    };
    let clients = fleet.clients(3);
    let config = "[[token_set]]\nname = \"clients\"\nenv_files = \"clients/*/.env\"\n";
    let (leader, standby) = fleet.start(config);
    eventually("the leader's first round is finished", || {
        round_finished(&leader)
    });
    eventually("the standby lists the set's tokens, each dead", || {
        standby.page().is_some_and(|page| {
            page["leader"] == false
                && page["total"] == clients.len()
                && page["tokens"].as_array().is_some_and(|tokens| {
                    tokens
                        .iter()
                        .all(|t| t["state"] == "dead" && t["last_check"].is_i64())
                })
        })
    });
    let page = standby.page().unwrap();
    let mut names: Vec<&str> = page["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    let expected: Vec<&str> = clients.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, expected);
    assert_eq!(standby.graph_calls(), 0, "a standby called the Graph API");
    fleet.finish([leader, standby]);
}

#[test]
fn the_standby_shows_a_set_file_added_after_it_started() {
    let Some(mut fleet) = Fleet::new() else {
        return;
    };
    fleet.clients(3);
    let config = "[[token_set]]\nname = \"clients\"\nenv_files = \"clients/*/.env\"\n";
    let (leader, standby) = fleet.start(config);
    eventually("the leader's first round is finished", || {
        round_finished(&leader)
    });
    fleet.env_file("clients/c100/.env");
    // SIGHUP: the leader reads its configuration and the sets again and checks the new token now,
    // rather than at its next wake; the standby is left alone, as it would be in production.
    leader.signal("-HUP");
    eventually("the leader checks the new client", || {
        fleet.checks().contains_key("clients/c100")
    });
    eventually("the standby lists the new client", || {
        standby.page().is_some_and(|page| {
            page["total"] == 4
                && page["tokens"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["name"] == "clients/c100"))
        })
    });
    fleet.finish([leader, standby]);
}
