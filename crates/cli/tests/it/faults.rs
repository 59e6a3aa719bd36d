//! Outages, rate limits and broken answers: retried when they may pass (a rate limit only after the
//! wait Meta named), `unknown` when they do not, never `critical`.

use permatoken_sandbox::Faults;

use crate::harness::{Test, sandbox};

fn faults(f: impl FnOnce(&mut Faults)) -> Faults {
    let mut faults = Faults::default();
    f(&mut faults);
    faults
}

#[test]
fn a_passing_outage_is_retried() {
    let sandbox = sandbox();
    sandbox.set_faults(faults(|f| f.server_errors = 2));
    Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .args(["check"])
        .run()
        .assert_code(0);
    assert_eq!(sandbox.requests().len(), 4, "two 503s, then two answers");
}

#[test]
fn a_lasting_outage_is_unknown_not_critical() {
    let sandbox = sandbox();
    sandbox.set_faults(faults(|f| f.server_errors = 1000));
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .args(["check", "--json"])
        .run();
    out.assert_code(3);
    assert_eq!(out.json()["status"], "unknown");
    assert!(
        out.codes().iter().all(|c| c == "graph_unreachable"),
        "{:?}",
        out.codes()
    );
    assert!(out.stdout.contains("HTTP 503"), "{}", out.stdout);
    // Each of the two calls: one try and three retries, no more.
    assert_eq!(sandbox.requests().len(), 8);
}

#[test]
fn a_rate_limit_without_a_named_wait_is_never_sent_again() {
    let sandbox = sandbox();
    sandbox.set_faults(faults(|f| f.rate_limits = 1));
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .args(["check", "--json"])
        .run();
    out.assert_code(3);
    assert_eq!(out.json()["status"], "unknown");
    assert!(
        out.codes().contains(&"rate_limited".to_owned()),
        "{:?}",
        out.codes()
    );
    // Meta: "continuing to make calls will continue to increase your call count". The refused
    // call is not sent again; the other call of the check is answered.
    assert_eq!(sandbox.requests().len(), 2);
}

#[test]
fn a_throttled_app_is_called_once_per_call_of_the_check_and_the_check_is_unknown() {
    let sandbox = sandbox();
    // As Meta throttles an app: code 4, `X-App-Usage` at 100 %, no time to regain access.
    sandbox.set_faults(faults(|f| {
        f.throttle_secs = 60;
        f.throttle_grow_ms = 100;
    }));
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .args(["check", "--json"])
        .run();
    out.assert_code(3);
    assert_eq!(out.json()["status"], "unknown");
    assert!(
        out.codes().contains(&"rate_limited".to_owned()),
        "{:?}",
        out.codes()
    );
    // Two calls (`/me`, `/debug_token`), each refused once and never sent again.
    assert_eq!(sandbox.requests().len(), 2);
    assert_eq!(sandbox.throttle().refused, 2);
}

#[test]
fn a_rate_limit_longer_than_the_budget_is_unknown_with_the_wait_shown() {
    let sandbox = sandbox();
    sandbox.set_faults(faults(|f| {
        f.rate_limits = 2;
        f.regain_minutes = Some(5);
    }));
    let started = std::time::Instant::now();
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .args(["check", "--json"])
        .run();
    out.assert_code(3);
    assert!(
        out.codes().contains(&"rate_limited".to_owned()),
        "{:?}",
        out.codes()
    );
    assert!(out.stdout.contains("wait 5 min"), "{}", out.stdout);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "it did not wait the 5 minutes"
    );
    assert_eq!(
        sandbox.requests().len(),
        2,
        "no retry into a wait it cannot afford"
    );
}

#[test]
fn cut_short_json_is_retried_then_unknown() {
    let sandbox = sandbox();
    sandbox.set_faults(faults(|f| f.truncate = 1));
    Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .args(["check"])
        .run()
        .assert_code(0);
    sandbox.set_faults(faults(|f| f.truncate = 1000));
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .args(["check", "--json"])
        .run();
    out.assert_code(3);
    assert!(out.stdout.contains("cut short"), "{}", out.stdout);
}

#[test]
fn nobody_listening_is_unknown() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let out = Test::new()
        .env(
            "WHATSAPP_ACCESS_TOKEN",
            "EAAPERMATOKENTESTxxxxxxxxxxxxxxxxxxxxxxx",
        )
        .env("PERMATOKEN_GRAPH_URL", &format!("http://127.0.0.1:{port}"))
        .args(["check", "--json"])
        .run();
    out.assert_code(3);
    assert!(
        out.codes().iter().all(|c| c == "graph_unreachable"),
        "{:?}",
        out.codes()
    );
    assert!(
        out.stdout.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stdout
    );
}
