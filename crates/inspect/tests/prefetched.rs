//! `check_prefetched` judges answers fetched elsewhere (a batch) exactly as `check` judges the same
//! answers: for each scenario, the answers are asked of the sandbox, then both reports compared
//! (status, kind, validity, finding codes, identity), with `/me` given and with `/me` left to ask.

use std::time::Duration;

use permatoken_graph::{Budget, Caller, Client, Config};
use permatoken_inspect::{
    AppCredentials, Identity, Prefetched, Report, Subject, Thresholds, check, check_prefetched,
};
use permatoken_sandbox::{Options, Sandbox};
use permatoken_secret::AppToken;

fn summary(report: &Report) -> (String, String, Option<bool>, Vec<String>, Option<Identity>) {
    (
        format!("{:?}", report.status),
        format!("{:?}", report.token.kind),
        report.token.valid,
        report
            .findings
            .iter()
            .map(|f| format!("{:?}", f.code))
            .collect(),
        report.identity.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_answers_are_judged_as_check_judges_them() {
    let sandbox = Sandbox::start_background(&Options::default()).unwrap();
    let app_token = AppToken::new(sandbox.app().id.to_string(), sandbox.app_secret().clone());
    let app = AppCredentials {
        app_id: Some(app_token.app_id().to_owned()),
        app_secret: Some(app_token.secret().clone()),
    };
    let mut config = Config::new(sandbox.url());
    config.app_secret = app.app_secret.clone();
    let client = Client::new(config).unwrap();
    let budget = Budget::new(Duration::from_secs(60));
    let now = jiff::Timestamp::now();
    let thresholds = Thresholds::default();
    for scenario in ["user-60d", "expired", "password-changed", "system-user"] {
        let token = sandbox.token(scenario).unwrap();
        let subject = Subject {
            token: &token,
            source: "test",
            variable: None,
        };
        let alone = check(&client, subject, &app, thresholds, now, &budget).await;
        let info = client
            .debug_token(&token, Caller::App(&app_token), &budget)
            .await
            .expect("a dead token is an answer too");
        let me = client
            .me(&token, &budget)
            .await
            .map(|me| Identity::from(&me));
        let before = sandbox.requests().len();
        let given = Prefetched {
            info: info.clone(),
            me: Some(me),
        };
        let judged =
            check_prefetched(&client, subject, &app, thresholds, now, &budget, given).await;
        assert_eq!(sandbox.requests().len(), before, "{scenario}: no call");
        assert_eq!(summary(&judged), summary(&alone), "{scenario}");
        let asked = Prefetched { info, me: None };
        let judged =
            check_prefetched(&client, subject, &app, thresholds, now, &budget, asked).await;
        let calls: Vec<String> = sandbox.requests()[before..]
            .iter()
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(calls.len(), 1, "{scenario}: only /me: {calls:?}");
        assert!(calls[0].ends_with("/me"), "{scenario}: {calls:?}");
        assert_eq!(summary(&judged), summary(&alone), "{scenario}");
    }
    // Sanity: the scenarios do differ, so the comparison above can fail.
    let ok = sandbox.token("user-60d").unwrap();
    let dead = sandbox.token("expired").unwrap();
    let judge = |t| Subject {
        token: t,
        source: "test",
        variable: None,
    };
    let a = check(&client, judge(&ok), &app, thresholds, now, &budget).await;
    let b = check(&client, judge(&dead), &app, thresholds, now, &budget).await;
    assert_ne!(summary(&a), summary(&b));
}

/// A token of another app is never judged from the app's answers: it is asked again, alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_app_is_checked_alone() {
    let sandbox = Sandbox::start_background(&Options::default()).unwrap();
    let app_token = AppToken::new(sandbox.app().id.to_string(), sandbox.app_secret().clone());
    let app = AppCredentials {
        app_id: Some(app_token.app_id().to_owned()),
        app_secret: Some(app_token.secret().clone()),
    };
    let client = Client::new(Config::new(sandbox.url())).unwrap();
    let budget = Budget::new(Duration::from_secs(60));
    let now = jiff::Timestamp::now();
    let ours = sandbox.token("system-user").unwrap();
    let info = client
        .debug_token(&ours, Caller::App(&app_token), &budget)
        .await
        .unwrap();
    let other = sandbox.token("other-app").unwrap();
    let subject = Subject {
        token: &other,
        source: "test",
        variable: None,
    };
    let alone = check(&client, subject, &app, Thresholds::default(), now, &budget).await;
    let before = sandbox.requests().len();
    let given = Prefetched { info, me: None };
    let judged = check_prefetched(
        &client,
        subject,
        &app,
        Thresholds::default(),
        now,
        &budget,
        given,
    )
    .await;
    assert_eq!(sandbox.requests().len(), before + 2, "/me and /debug_token");
    assert_eq!(summary(&judged), summary(&alone));
}
