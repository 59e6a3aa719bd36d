//! Batch requests (`graph-api.md` §8): `POST /` with `batch`, answered sub-request by sub-request as
//! each call alone is answered, with `null`s from the `batch_nulls` fault. In-process, no socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use permatoken_sandbox::{Faults, Options, Sandbox};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

async fn send(
    sandbox: &Sandbox,
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    form: &str,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = sandbox
        .router()
        .oneshot(request.body(Body::from(form.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        json: serde_json::from_slice(&body).expect("a JSON body"),
    }
}

/// `POST {uri}` with `batch` = `requests` (and `extra` form fields), the app token as the caller.
async fn batch(
    sandbox: &Sandbox,
    uri: &str,
    bearer: Option<&str>,
    requests: &Value,
    extra: &str,
) -> Answer {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("batch", &requests.to_string())
        .finish();
    send(sandbox, "POST", uri, bearer, &format!("{form}{extra}")).await
}

fn app_token(sandbox: &Sandbox) -> String {
    format!(
        "{}|{}",
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    )
}

fn token(sandbox: &Sandbox, scenario: &str) -> String {
    sandbox.token(scenario).unwrap().expose_secret().to_owned()
}

fn debug(token: &str) -> Value {
    json!({"method": "GET", "relative_url": format!("debug_token?input_token={token}")})
}

/// A sub-answer's body, parsed from its string; `fbtrace_id` dropped (random per answer).
fn body_of(sub: &Value) -> Value {
    let mut body: Value = serde_json::from_str(sub["body"].as_str().expect("body is a string"))
        .expect("the body string holds JSON");
    if let Some(error) = body.get_mut("error").and_then(Value::as_object_mut) {
        error.remove("fbtrace_id");
    }
    body
}

#[tokio::test]
async fn a_batch_answers_each_request_as_the_call_alone_with_codes_headers_and_body_strings() {
    let sandbox = Sandbox::new(&Options::default());
    let app = app_token(&sandbox);
    let (system_user, expired) = (token(&sandbox, "system-user"), token(&sandbox, "expired"));
    let requests = json!([
        debug(&system_user),
        debug(&expired),
        debug("PERMATOKENTEST-garbage"),
        {"method": "GET", "relative_url": format!("me?fields=id,name&access_token={expired}")},
        {"method": "GET", "relative_url": "no_such_node/edge"},
    ]);
    let answer = batch(&sandbox, "/v26.0/", Some(&app), &requests, "").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
    let subs = answer.json.as_array().expect("an array");
    assert_eq!(subs.len(), 5);
    let codes: Vec<_> = subs.iter().map(|s| s["code"].as_u64().unwrap()).collect();
    assert_eq!(codes, [200, 200, 200, 400, 400]);
    for sub in subs {
        assert!(sub["body"].is_string(), "{sub}");
        let headers = sub["headers"].as_array().unwrap();
        assert!(
            headers
                .iter()
                .any(|h| h["name"] == "Content-Type"
                    && h["value"].as_str().unwrap().contains("json")),
            "{sub}"
        );
    }
    // Exactly the answers of the calls alone.
    for (i, relative) in [
        format!("/v26.0/debug_token?input_token={system_user}"),
        format!("/v26.0/debug_token?input_token={expired}"),
        "/v26.0/debug_token?input_token=PERMATOKENTEST-garbage".to_owned(),
        format!("/v26.0/me?fields=id,name&access_token={expired}"),
    ]
    .iter()
    .enumerate()
    {
        let bearer = (i < 3).then_some(app.as_str());
        let alone = send(&sandbox, "GET", relative, bearer, "").await;
        assert_eq!(u64::from(alone.status.as_u16()), codes[i], "{relative}");
        let mut alone = alone.json;
        if let Some(e) = alone.get_mut("error").and_then(Value::as_object_mut) {
            e.remove("fbtrace_id");
        }
        assert_eq!(body_of(&subs[i]), alone, "{relative}");
    }
    assert_eq!(body_of(&subs[1])["data"]["error"]["subcode"], 463);
    assert_eq!(body_of(&subs[3])["error"]["code"], 190);
    assert_eq!(body_of(&subs[4])["error"]["code"], 2500);
    // The whole answer carries the usage header.
    assert!(answer.headers.contains_key("x-app-usage"));
    // The log: the batch itself, then each sub-request as it was asked.
    let log = sandbox.requests();
    let batch_log: Vec<_> = log.iter().take(6).collect();
    assert!(
        !batch_log[0].batched && batch_log[0].method == "POST" && batch_log[0].path == "/v26.0/"
    );
    assert!(batch_log[1..].iter().all(|r| r.batched));
    assert_eq!(batch_log[1].path, "/v26.0/debug_token");
    assert_eq!(batch_log[5].path, "/v26.0/no_such_node/edge");
    assert_eq!(
        batch_log[1].authorization.as_deref(),
        Some(format!("Bearer {app}").as_str())
    );
}

#[tokio::test]
async fn more_than_50_requests_are_refused_and_50_are_answered() {
    let sandbox = Sandbox::new(&Options::default());
    let app = app_token(&sandbox);
    let one = debug(&token(&sandbox, "system-user"));
    let fifty = Value::Array(vec![one.clone(); 50]);
    let answer = batch(&sandbox, "/", Some(&app), &fifty, "").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json.as_array().unwrap().len(), 50);
    let before = sandbox.requests().len();
    let answer = batch(&sandbox, "/", Some(&app), &Value::Array(vec![one; 51]), "").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json["error"]["code"], 100);
    assert_eq!(answer.json["error"]["type"], "GraphBatchException");
    assert_eq!(
        answer.json["error"]["message"],
        "Too many requests in batch message. Maximum batch size is 50"
    );
    // Refused whole: only the batch itself is logged, no sub-request was asked.
    assert_eq!(sandbox.requests().len(), before + 1);
    // Without `batch`: a bad request, not a crash.
    let answer = send(&sandbox, "POST", "/", Some(&app), "include_headers=false").await;
    assert_eq!(answer.json["error"]["code"], 100);
}

#[tokio::test]
async fn a_token_in_the_relative_url_overrides_the_batchs_and_its_proof_is_checked() {
    let sandbox = Sandbox::new(&Options {
        require_proof: true,
        ..Options::default()
    });
    let secret = sandbox.app_secret().clone();
    let user = sandbox.token("user-60d").unwrap();
    let admin = sandbox.token("admin").unwrap();
    let proof = |t: &permatoken_secret::AccessToken| secret.appsecret_proof(t);
    let me = |t: &permatoken_secret::AccessToken, proof: &str| json!({"method": "GET", "relative_url": format!("me?fields=id,name&access_token={}&appsecret_proof={proof}", t.expose_secret())});
    let requests = json!([
        me(&user, &proof(&user)),
        me(&user, &proof(&admin)),
        {"method": "GET", "relative_url": format!("me?fields=id,name&access_token={}", user.expose_secret())},
        // No token of its own: the batch's (the admin's), whose proof is then required too.
        {"method": "GET", "relative_url": format!("me?fields=id,name&appsecret_proof={}", proof(&admin))},
    ]);
    let answer = batch(
        &sandbox,
        "/v26.0/",
        Some(admin.expose_secret()),
        &requests,
        "",
    )
    .await;
    let subs = answer.json.as_array().unwrap();
    let alone = |t: &permatoken_secret::AccessToken| {
        let sandbox = sandbox.clone();
        let (t, p) = (t.expose_secret().to_owned(), proof(t));
        async move {
            send(
                &sandbox,
                "GET",
                &format!("/v26.0/me?fields=id,name&appsecret_proof={p}"),
                Some(&t),
                "",
            )
            .await
            .json
        }
    };
    assert_eq!(subs[0]["code"], 200);
    assert_eq!(
        body_of(&subs[0]),
        alone(&user).await,
        "the relative URL's token answered"
    );
    assert_ne!(body_of(&subs[0]), alone(&admin).await);
    assert_eq!(subs[1]["code"], 400);
    assert_eq!(
        body_of(&subs[1])["error"]["message"],
        "Invalid appsecret_proof provided in the API argument"
    );
    assert_eq!(subs[2]["code"], 400);
    assert_eq!(
        body_of(&subs[2])["error"]["message"],
        "API calls from the server require an appsecret_proof argument"
    );
    assert_eq!(subs[3]["code"], 200);
    assert_eq!(body_of(&subs[3]), alone(&admin).await);
}

#[tokio::test]
async fn faults_apply_per_sub_request_and_batch_nulls_answer_null() {
    let sandbox = Sandbox::new(&Options::default());
    let app = app_token(&sandbox);
    sandbox.set_faults(Faults {
        batch_nulls: 2,
        server_errors: 1,
        rate_limits: 1,
        regain_minutes: Some(3),
        truncate: 1,
        ..Faults::default()
    });
    let one = debug(&token(&sandbox, "system-user"));
    let answer = batch(&sandbox, "/", Some(&app), &Value::Array(vec![one; 6]), "").await;
    assert_eq!(answer.status, StatusCode::OK);
    let subs = answer.json.as_array().unwrap();
    assert!(subs[0].is_null() && subs[1].is_null(), "{}", answer.json);
    assert_eq!(subs[2]["code"], 503);
    assert_eq!(subs[2]["body"], "");
    assert_eq!(subs[3]["code"], 400);
    assert_eq!(body_of(&subs[3])["error"]["code"], 4);
    assert_eq!(subs[4]["code"], 200);
    let cut = subs[4]["body"].as_str().unwrap();
    assert!(
        serde_json::from_str::<Value>(cut).is_err(),
        "cut short: {cut}"
    );
    assert_eq!(subs[5]["code"], 200);
    assert_eq!(body_of(&subs[5])["data"]["is_valid"], true);
    // A sub-request hit the rate limit: the whole answer says so, with the wait.
    let buc: Value = serde_json::from_str(
        answer.headers["x-business-use-case-usage"]
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let entry = &buc.as_object().unwrap().values().next().unwrap()[0];
    assert_eq!(entry["estimated_time_to_regain_access"], 3);
    assert!(
        answer.headers["x-app-usage"]
            .to_str()
            .unwrap()
            .contains("100")
    );
    // Every sub-request, null ones included, was asked and logged; the faults are spent.
    let log = sandbox.requests();
    assert_eq!(log.iter().filter(|r| r.batched).count(), 6);
    assert_eq!(log.iter().filter(|r| !r.batched).count(), 1);
    // The faults are spent: the next batch is answered in full.
    let again = batch(
        &sandbox,
        "/",
        Some(&app),
        &json!([debug(&token(&sandbox, "system-user"))]),
        "",
    )
    .await;
    assert_eq!(again.json[0]["code"], 200);
    // `null`s only inside a batch: a call alone is not touched.
    sandbox.set_faults(Faults {
        batch_nulls: 1,
        ..Faults::default()
    });
    let alone = send(
        &sandbox,
        "GET",
        "/me",
        Some(&token(&sandbox, "system-user")),
        "",
    )
    .await;
    assert_eq!(alone.status, StatusCode::OK);
}

#[tokio::test]
async fn include_headers_false_leaves_headers_out_and_a_versioned_relative_url_keeps_its_version() {
    let sandbox = Sandbox::new(&Options::default());
    let app = app_token(&sandbox);
    let requests = json!([
        {"method": "GET", "relative_url": format!("v21.0/debug_token?input_token={}", token(&sandbox, "system-user"))},
    ]);
    let answer = batch(
        &sandbox,
        "/v26.0/",
        Some(&app),
        &requests,
        "&include_headers=false",
    )
    .await;
    let sub = &answer.json[0];
    assert_eq!(sub["code"], 200);
    assert!(sub.get("headers").is_none(), "{sub}");
    let log = sandbox.requests();
    assert_eq!(log[1].path, "/v21.0/debug_token");
    // The top-level token may come as `access_token` in the form instead of the header.
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("batch", &requests.to_string())
        .append_pair("access_token", &app)
        .finish();
    let answer = send(&sandbox, "POST", "/", None, &form).await;
    assert_eq!(
        body_of(&answer.json[0])["data"]["is_valid"],
        true,
        "{}",
        answer.json
    );
}

fn me(token: &str) -> Value {
    json!({"method": "GET", "relative_url": format!("me?fields=id,name&access_token={token}")})
}

#[tokio::test]
async fn a_throttle_refuses_every_call_for_a_time_and_each_call_made_meanwhile_extends_it() {
    let sandbox = Sandbox::new(&Options::default());
    let app = app_token(&sandbox);
    let user = token(&sandbox, "system-user");
    sandbox.set_faults(Faults {
        throttle_secs: 1,
        throttle_grow_ms: 100,
        ..Faults::default()
    });
    let before = sandbox.throttle();
    assert!(before.active && before.refused == 0, "{before:?}");
    // Each sub-request counts, as the call alone would, whoever makes it.
    let answer = batch(
        &sandbox,
        "/",
        Some(&app),
        &json!([debug(&user), debug(&user), me(&user)]),
        "",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    for sub in answer.json.as_array().unwrap() {
        assert_eq!(sub["code"], 400, "{sub}");
        let error = &body_of(sub)["error"];
        assert_eq!(error["code"], 4);
        assert_eq!(error["is_transient"], true);
    }
    // Meta's app-token answer: `X-App-Usage` at 100 %, no time to regain access.
    let usage = answer.headers["x-app-usage"].to_str().unwrap();
    assert!(usage.contains(r#""call_count":100"#), "{usage}");
    assert!(answer.headers.get("x-business-use-case-usage").is_none());
    let sub_headers = answer.json[0]["headers"].as_array().unwrap();
    assert!(
        sub_headers.iter().all(|h| !h["name"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("x-business-use-case-usage")),
        "{sub_headers:?}"
    );
    // A call alone too.
    let alone = send(
        &sandbox,
        "GET",
        &format!("/debug_token?input_token={user}"),
        Some(&app),
        "",
    )
    .await;
    assert_eq!(alone.json["error"]["code"], 4);
    assert!(alone.headers.get("x-business-use-case-usage").is_none());
    // Four calls while throttled: each pushed the end 100 ms later, past the 1 s first set.
    let during = sandbox.throttle();
    assert_eq!(during.refused, 4);
    assert!(during.remaining_ms > 1_000, "{during:?}");
    tokio::time::sleep(std::time::Duration::from_millis(during.remaining_ms + 50)).await;
    let after = sandbox.throttle();
    assert!(!after.active, "{after:?}");
    let answer = batch(&sandbox, "/", Some(&app), &json!([debug(&user)]), "").await;
    assert_eq!(answer.json[0]["code"], 200);
    assert_eq!(
        sandbox.throttle().refused,
        4,
        "an answered call is not refused"
    );
}

#[tokio::test]
async fn a_users_limit_refuses_only_calls_made_with_a_users_token() {
    let sandbox = Sandbox::new(&Options::default());
    let app = app_token(&sandbox);
    let user = token(&sandbox, "system-user");
    sandbox.set_faults(Faults {
        user_rate_limits: 1,
        ..Faults::default()
    });
    let answer = batch(
        &sandbox,
        "/",
        Some(&app),
        &json!([debug(&user), me(&user), me(&user)]),
        "",
    )
    .await;
    let subs = answer.json.as_array().unwrap();
    assert_eq!(
        subs[0]["code"], 200,
        "the app token's call is not the user's"
    );
    assert_eq!(body_of(&subs[1])["error"]["code"], 17);
    assert_eq!(subs[2]["code"], 200, "the fault is spent");
}

#[tokio::test]
async fn batch_headers_omitted_answers_as_include_headers_false_would() {
    let sandbox = Sandbox::new(&Options::default());
    let app = app_token(&sandbox);
    sandbox.set_faults(Faults {
        batch_headers_omitted: true,
        ..Faults::default()
    });
    let user = token(&sandbox, "system-user");
    let answer = batch(
        &sandbox,
        "/",
        Some(&app),
        &json!([debug(&user)]),
        "&include_headers=true",
    )
    .await;
    let sub = &answer.json[0];
    assert_eq!(sub["code"], 200);
    assert!(sub.get("headers").is_none(), "{sub}");
    assert_eq!(body_of(sub)["data"]["is_valid"], true);
    // The whole answer still carries the usage.
    assert!(answer.headers.get("x-app-usage").is_some());
}
