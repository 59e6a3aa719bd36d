//! The batch calls against the sandbox over loopback: what the client sent (counted in the sandbox's
//! request log), what each token's result is, and that only what was left unanswered is asked again.

use std::time::Duration;

use permatoken_graph::{Budget, Client, Config, Endpoint, Error, ErrorClass, MAX_BATCH};
use permatoken_sandbox::{Faults, Options, Running, Sandbox};
use permatoken_secret::{AccessToken, AppToken};

fn start(options: Options) -> Running {
    Sandbox::start_background(&options).expect("the sandbox starts on loopback")
}

fn client(sandbox: &Running) -> (Client, AppToken) {
    let app = AppToken::new(sandbox.app().id.to_string(), sandbox.app_secret().clone());
    let mut config = Config::new(sandbox.url());
    config.app_secret = Some(sandbox.app_secret().clone());
    (Client::new(config).expect("a client"), app)
}

fn budget() -> Budget {
    Budget::new(Duration::from_secs(60))
}

/// No token or secret in any URL the sandbox received over HTTP (sub-requests travelled in bodies).
fn assert_no_secret_in_urls(sandbox: &Running, secrets: &[&str]) {
    for request in sandbox.requests().iter().filter(|r| !r.batched) {
        let target = request.target();
        for secret in secrets {
            assert!(!target.contains(secret), "a secret in the URL {target}");
        }
    }
}

/// The input tokens of the sub-requests the sandbox received, in order.
fn asked(sandbox: &Running) -> Vec<String> {
    sandbox
        .requests()
        .iter()
        .filter(|r| r.batched)
        .map(|r| r.query_param("input_token").unwrap_or_default())
        .collect()
}

fn posts(sandbox: &Running) -> usize {
    sandbox
        .requests()
        .iter()
        .filter(|r| !r.batched && r.method == "POST")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_of_122_tokens_takes_three_posts_and_each_result_is_the_single_calls() {
    let sandbox = start(Options {
        extra_tokens: 120,
        faults: Faults {
            app_usage_percent: Some(80),
            ..Faults::default()
        },
        ..Options::default()
    });
    let (client, app) = client(&sandbox);
    let mut tokens = sandbox.extra_tokens();
    tokens.push(sandbox.token("expired").unwrap());
    tokens.push(sandbox.token("password-changed").unwrap());
    tokens.push(AccessToken::new("PERMATOKENTEST-garbage"));
    let outcome = client
        .debug_token_batch(&app, &tokens, &budget())
        .await
        .expect("the batch runs");

    assert_eq!((outcome.posts, outcome.sub_requests), (3, 123));
    assert_eq!(posts(&sandbox), 3);
    assert_eq!(asked(&sandbox).len(), 123);
    assert_eq!(outcome.results.len(), 123);
    for result in &outcome.results[..120] {
        let info = result.as_ref().expect("an answer");
        assert_eq!(info.is_valid, Some(true));
        assert_eq!(info.token_type.as_deref(), Some("SYSTEM_USER"));
        assert_eq!(info.app_id.as_deref(), Some(app.app_id()));
    }
    let dead = |i: usize| {
        let info = outcome.results[i]
            .as_ref()
            .expect("a dead token is an answer");
        assert_eq!(info.is_valid, Some(false));
        let error = info.error.clone().expect("and its error");
        let class = permatoken_graph::classify(
            error.code,
            error.subcode,
            None,
            error.message.as_deref().unwrap_or(""),
            Endpoint::Other,
        );
        (error, class)
    };
    let (error, class) = dead(120);
    assert_eq!(
        (error.code, error.subcode, class),
        (Some(190), Some(463), ErrorClass::Expired)
    );
    assert_eq!(dead(121).1, ErrorClass::Invalidated);
    let (error, class) = dead(122);
    assert_eq!((error.code, class), (Some(190), ErrorClass::Invalid));
    // Tokens only in bodies; the app token only in the header.
    let secrets: Vec<&str> = tokens.iter().map(AccessToken::expose_secret).collect();
    let mut all = secrets.clone();
    all.push(sandbox.app_secret().expose_secret());
    assert_no_secret_in_urls(&sandbox, &all);
    let log = sandbox.requests();
    let batches: Vec<_> = log.iter().filter(|r| !r.batched).take(3).collect();
    for post in &batches {
        assert_eq!(post.path, "/v26.0/");
        assert_eq!(post.bearer(), Some(app.expose_secret().as_str()));
        assert!(post.body.contains("batch="), "{}", post.body);
    }
    assert_eq!(asked(&sandbox)[..123], secrets[..]);

    // Every batch answer's usage, and each sub-request counted.
    assert_eq!(outcome.usage.len(), 3);
    assert_eq!(outcome.peak_usage().app_percent, Some(80.0));
    assert_eq!(client.request_counts().ok, 123);
    // The same typed result as the call alone (which puts `input_token` in its URL: after the
    // check above).
    for i in [0, 77, 120, 121, 122] {
        let alone = client
            .debug_token(&tokens[i], permatoken_graph::Caller::App(&app), &budget())
            .await
            .unwrap();
        // An expiry's message names the current time, which may have moved on a second since.
        let mut batched = outcome.results[i].as_ref().unwrap().clone();
        let mut alone = alone;
        for info in [&mut batched, &mut alone] {
            if let Some(message) = info.error.as_mut().and_then(|e| e.message.as_mut()) {
                message.truncate(
                    message
                        .find(" The current time is")
                        .unwrap_or(message.len()),
                );
            }
        }
        assert_eq!(batched, alone, "token {i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nulls_and_a_5xx_in_a_batch_are_asked_again_alone() {
    let sandbox = start(Options {
        extra_tokens: 60,
        ..Options::default()
    });
    let (client, app) = client(&sandbox);
    let tokens = sandbox.extra_tokens();
    sandbox.set_faults(Faults {
        batch_nulls: 3,
        server_errors: 1,
        ..Faults::default()
    });
    let outcome = client
        .debug_token_batch(&app, &tokens, &budget())
        .await
        .unwrap();
    for (i, result) in outcome.results.iter().enumerate() {
        assert_eq!(result.as_ref().unwrap().is_valid, Some(true), "token {i}");
    }
    // 50 + 10, then only the four left: the first three (null), the fourth (503).
    assert_eq!((outcome.posts, outcome.sub_requests), (3, 64));
    assert_eq!(posts(&sandbox), 3);
    let asked = asked(&sandbox);
    assert_eq!(asked.len(), 64);
    let again: Vec<&str> = tokens[..4].iter().map(AccessToken::expose_secret).collect();
    assert_eq!(asked[60..], again[..]);
    let counts = client.request_counts();
    assert_eq!(
        (counts.ok, counts.unreachable, counts.rate_limited),
        (60, 4, 0)
    );
    assert_no_secret_in_urls(&sandbox, &again);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_is_never_asked_again_and_nothing_more_is_sent() {
    let sandbox = start(Options {
        extra_tokens: 120,
        ..Options::default()
    });
    let (client, app) = client(&sandbox);
    let tokens = sandbox.extra_tokens();
    // The fifth sub-request is refused (code 4); the first two did not finish (null).
    sandbox.set_faults(Faults {
        batch_nulls: 2,
        rate_limits: 1,
        ..Faults::default()
    });
    let outcome = client
        .debug_token_batch(&app, &tokens, &budget())
        .await
        .unwrap();
    // One `POST` of 50, then nothing: neither the nulls again nor the 70 tokens not yet asked.
    assert_eq!((outcome.posts, outcome.sub_requests), (1, 50));
    assert_eq!(posts(&sandbox), 1);
    assert_eq!(asked(&sandbox).len(), 50);
    let limited = |i: usize| {
        let err = outcome.results[i].as_ref().unwrap_err();
        assert_eq!(
            err.class(Endpoint::Other),
            ErrorClass::RateLimited,
            "token {i}"
        );
        assert_eq!(err.limit(), Some(permatoken_graph::Limit::App), "token {i}");
    };
    for i in [0, 1, 2] {
        limited(i);
    }
    for i in 3..50 {
        assert_eq!(
            outcome.results[i].as_ref().unwrap().is_valid,
            Some(true),
            "token {i}"
        );
    }
    for i in 50..120 {
        limited(i);
    }
    let counts = client.request_counts();
    assert_eq!((counts.ok, counts.rate_limited), (47, 1));
    assert!(
        outcome.usage[0].exhausted(),
        "the answer says the limit was reached"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sub_error_keeps_its_fields_and_a_rate_limits_wait_is_left_to_the_caller() {
    let sandbox = start(Options::default());
    let (client, app) = client(&sandbox);
    let expired = sandbox.token("expired").unwrap();
    let system_user = sandbox.token("system-user").unwrap();
    let tokens = [expired.clone(), system_user.clone()];
    let outcome = client.me_batch(&app, &tokens, &budget()).await.unwrap();
    assert_eq!((outcome.posts, outcome.sub_requests), (1, 2));
    let err = outcome.results[0].as_ref().unwrap_err();
    let g = err.graph_error().expect("the Graph error object");
    let alone = client.me(&expired, &budget()).await.unwrap_err();
    let a = alone.graph_error().unwrap();
    assert_eq!(
        (g.code, g.subcode, &g.kind, &g.message, g.http_status),
        (a.code, a.subcode, &a.kind, &a.message, a.http_status)
    );
    assert!(g.trace_id.as_deref().is_some_and(|t| !t.is_empty()));
    assert_eq!(err.class(Endpoint::Other), ErrorClass::Expired);
    let me = outcome.results[1].as_ref().unwrap();
    assert_eq!(me.id, sandbox.system_user_id());
    // Each `/me` carried its own token and proof, inside the body only.
    let subs: Vec<_> = sandbox
        .requests()
        .into_iter()
        .filter(|r| r.batched)
        .collect();
    assert_eq!(
        subs[0].query_param("access_token").unwrap(),
        expired.expose_secret()
    );
    assert_eq!(
        subs[1].query_param("appsecret_proof").unwrap(),
        sandbox.app_secret().appsecret_proof(&system_user)
    );
    assert_no_secret_in_urls(
        &sandbox,
        &[expired.expose_secret(), system_user.expose_secret()],
    );

    // A rate limit with a regain time: not waited for, not asked again; the wait is the caller's.
    sandbox.set_faults(Faults {
        rate_limits: 1,
        regain_minutes: Some(5),
        ..Faults::default()
    });
    let outcome = client
        .debug_token_batch(&app, &tokens, &budget())
        .await
        .unwrap();
    assert_eq!(outcome.posts, 1, "no second batch");
    match &outcome.results[0] {
        Err(err @ Error::Graph { usage, .. }) => {
            assert_eq!(usage.regain_after, Some(Duration::from_secs(300)));
            assert_eq!(err.class(Endpoint::Other), ErrorClass::RateLimited);
        }
        other => panic!("expected the rate limit, got {other:?}"),
    }
    assert_eq!(outcome.results[1].as_ref().unwrap().is_valid, Some(true));
    let peak = outcome.peak_usage();
    assert_eq!(peak.regain_after, Some(Duration::from_secs(300)));
    assert!(peak.exhausted());
    assert_eq!(client.request_counts().rate_limited, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_without_headers_are_read_and_take_the_whole_answers_usage() {
    let sandbox = start(Options {
        extra_tokens: 3,
        ..Options::default()
    });
    let (client, app) = client(&sandbox);
    let tokens = sandbox.extra_tokens();
    // As Meta answers with `include_headers=false`: no `headers` in any entry.
    sandbox.set_faults(Faults {
        batch_headers_omitted: true,
        app_usage_percent: Some(80),
        ..Faults::default()
    });
    let outcome = client
        .debug_token_batch(&app, &tokens, &budget())
        .await
        .unwrap();
    for (i, result) in outcome.results.iter().enumerate() {
        assert_eq!(result.as_ref().unwrap().is_valid, Some(true), "token {i}");
    }
    assert_eq!(outcome.peak_usage().app_percent, Some(80.0));
    // The client asked for the headers all the same.
    let post = sandbox.requests().into_iter().find(|r| !r.batched).unwrap();
    assert!(post.body.contains("include_headers=true"), "{}", post.body);
    // A refused entry without headers: its usage is the whole answer's, at the limit.
    sandbox.set_faults(Faults {
        batch_headers_omitted: true,
        throttle_secs: 60,
        ..Faults::default()
    });
    let outcome = client
        .debug_token_batch(&app, &tokens, &budget())
        .await
        .unwrap();
    match &outcome.results[0] {
        Err(err @ Error::Graph { usage, .. }) => {
            assert_eq!(err.limit(), Some(permatoken_graph::Limit::App));
            assert!(usage.exhausted(), "{usage:?}");
            assert_eq!(
                usage.regain_after, None,
                "Meta names no wait for the app's limit"
            );
        }
        other => panic!("expected the throttle, got {other:?}"),
    }
    assert_eq!(sandbox.throttle().refused, 3, "each sub-request counts");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_one_refused_entry_is_that_entrys_refusal_not_the_whole_posts() {
    let sandbox = start(Options::default());
    let (client, app) = client(&sandbox);
    let token = sandbox.token("system-user").unwrap();
    let outcome = client
        .debug_token_batch(&app, std::slice::from_ref(&token), &budget())
        .await
        .unwrap();
    assert_eq!(outcome.results[0].as_ref().unwrap().is_valid, Some(true));
    // An answer of one entry, `[{"code":400,…}]`, once passed for an error object of code 400.
    sandbox.set_faults(Faults {
        throttle_secs: 60,
        ..Faults::default()
    });
    let outcome = client
        .debug_token_batch(&app, std::slice::from_ref(&token), &budget())
        .await
        .unwrap();
    let err = outcome.results[0].as_ref().unwrap_err();
    assert_eq!(err.graph_error().and_then(|e| e.code), Some(4), "{err}");
    assert_eq!(err.limit(), Some(permatoken_graph::Limit::App));
}

#[test]
fn the_batch_size_is_metas() {
    assert_eq!(MAX_BATCH, 50);
}
