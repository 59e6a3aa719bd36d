//! The sandbox answers as `graph-api.md` says the real API does: paths, fields, value sets, error
//! objects and HTTP statuses. Called in-process through the router, no socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use permatoken_sandbox::{Faults, Options, Sandbox};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

async fn call(
    sandbox: &Sandbox,
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    form: Option<&str>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match form {
        Some(form) => {
            request = request.header("content-type", "application/x-www-form-urlencoded");
            Body::from(form.to_owned())
        }
        None => Body::empty(),
    };
    let response = sandbox
        .router()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

/// A call to the admin API, with `secret` in its header when given.
async fn admin(sandbox: &Sandbox, method: &str, uri: &str, secret: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(secret) = secret {
        request = request.header(permatoken_sandbox::ADMIN_HEADER, secret);
    }
    let response = sandbox
        .router()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
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

fn debug_uri(input: &str) -> String {
    format!("/v26.0/debug_token?input_token={input}")
}

async fn debug(sandbox: &Sandbox, scenario: &str) -> Answer {
    let uri = debug_uri(&token(sandbox, scenario));
    call(sandbox, "GET", &uri, Some(&app_token(sandbox)), None).await
}

#[tokio::test]
async fn a_dead_input_token_is_http_200_with_is_valid_false_and_a_subcode() {
    let sandbox = Sandbox::new(&Options::default());
    let a = debug(&sandbox, "expired").await;
    assert_eq!(a.status, StatusCode::OK);
    let data = &a.json()["data"];
    assert_eq!(data["is_valid"], false);
    assert_eq!(data["error"]["code"], 190);
    assert_eq!(
        data["error"]["subcode"], 463,
        "the key is `subcode` inside debug_token"
    );
    assert!(data["error"].get("error_subcode").is_none());
    let message = data["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("Error validating access token: Session has expired on"));
    // Still parseable, so the other fields are still there.
    assert_eq!(data["type"], "USER");
    assert_eq!(data["app_id"], sandbox.app().id.to_string());
    assert!(data["expires_at"].as_i64().unwrap() < jiff::Timestamp::now().as_second());

    let a = debug(&sandbox, "password-changed").await;
    assert_eq!(a.json()["data"]["error"]["subcode"], 460);
}

#[tokio::test]
async fn a_garbage_input_token_gets_the_documented_shape() {
    let sandbox = Sandbox::new(&Options::default());
    for garbage in [token(&sandbox, "malformed"), "not-a-token".to_owned()] {
        let a = call(
            &sandbox,
            "GET",
            &debug_uri(&garbage),
            Some(&app_token(&sandbox)),
            None,
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(
            a.json(),
            json!({"data":{"error":{"code":190,"message":"Invalid OAuth access token - Cannot parse access token"},"is_valid":false,"scopes":[]}})
        );
    }
}

#[tokio::test]
async fn a_never_expiring_system_user_token_reads_like_metas_example() {
    let sandbox = Sandbox::new(&Options::default());
    let data = &debug(&sandbox, "system-user").await.json()["data"];
    assert_eq!(data["type"], "SYSTEM_USER");
    assert_eq!(data["expires_at"], 0);
    assert_eq!(data["data_access_expires_at"], 0);
    assert_eq!(data["is_valid"], true);
    assert!(data["issued_at"].is_i64());
    assert!(data["app_id"].is_string(), "ids are strings");
    assert!(data["user_id"].is_string());
    assert_eq!(data["application"], "Permatoken Sandbox");
    let temporary = debug(&sandbox, "temporary").await.json();
    assert!(
        temporary["data"].get("issued_at").is_none(),
        "issued_at only on long-lived tokens"
    );
}

#[tokio::test]
async fn errors_are_graph_error_objects() {
    let sandbox = Sandbox::new(&Options::default());
    let dead = token(&sandbox, "password-changed");
    let a = call(&sandbox, "GET", "/me?fields=id,name", Some(&dead), None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let e = &a.json()["error"];
    assert_eq!(e["type"], "OAuthException");
    assert_eq!(e["code"], 190);
    assert_eq!(e["error_subcode"], 460);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("changed their password")
    );
    assert!(e["fbtrace_id"].as_str().is_some_and(|t| t.len() >= 8));

    let uri = debug_uri(&token(&sandbox, "system-user"));
    let a = call(&sandbox, "GET", &uri, None, None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["error"]["code"], 100);
    let message = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("You must provide an app access token"),
        "{message}"
    );

    let wrong = format!("{}|{}", sandbox.app().id, "0".repeat(32));
    let a = call(&sandbox, "GET", &uri, Some(&wrong), None).await;
    assert_eq!(a.json()["error"]["code"], 190);
}

#[tokio::test]
async fn appsecret_proof_is_checked_when_sent_and_required_when_asked() {
    let sandbox = Sandbox::new(&Options::default());
    let user = token(&sandbox, "system-user");
    let right = sandbox
        .app_secret()
        .appsecret_proof(&sandbox.token("system-user").unwrap());
    let ok = call(
        &sandbox,
        "GET",
        &format!("/me?appsecret_proof={right}"),
        Some(&user),
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["name"], "Sandbox System User");
    let wrong = format!("/me?appsecret_proof={}", "ab".repeat(32));
    let bad = call(&sandbox, "GET", &wrong, Some(&user), None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let e = &bad.json()["error"];
    assert_eq!(
        e["message"],
        "Invalid appsecret_proof provided in the API argument"
    );
    assert_eq!(e["type"], "GraphMethodException");
    assert_eq!(e["code"], 100);
    let none = call(&sandbox, "GET", "/me", Some(&user), None).await;
    assert_eq!(none.status, StatusCode::OK, "not required unless asked");

    let strict = Sandbox::new(&Options {
        require_proof: true,
        ..Options::default()
    });
    let none = call(
        &strict,
        "GET",
        "/me",
        Some(&token(&strict, "system-user")),
        None,
    )
    .await;
    assert_eq!(
        none.json()["error"]["message"],
        "API calls from the server require an appsecret_proof argument"
    );
}

#[tokio::test]
async fn the_version_prefix_is_optional_and_checked() {
    let sandbox = Sandbox::new(&Options::default());
    let user = token(&sandbox, "system-user");
    for path in ["/me", "/v21.0/me", "/v26.0/me"] {
        let a = call(&sandbox, "GET", path, Some(&user), None).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    let a = call(&sandbox, "GET", "/vlatest/me", Some(&user), None).await;
    assert_eq!(a.json()["error"]["code"], 2500);
    // The guide's curl puts the token in the query; the real API takes it, so does the sandbox.
    let a = call(
        &sandbox,
        "GET",
        &format!("/v18.0/me?access_token={user}"),
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn exchange_gives_a_60_day_token_and_refuses_wrong_credentials() {
    let sandbox = Sandbox::new(&Options::default());
    let id = sandbox.app().id;
    let secret = sandbox.app_secret().expose_secret().to_owned();
    let short = token(&sandbox, "short-lived");
    let form = |secret: &str, input: &str| {
        format!(
            "grant_type=fb_exchange_token&client_id={id}&client_secret={secret}&fb_exchange_token={input}"
        )
    };
    let a = call(
        &sandbox,
        "POST",
        "/v26.0/oauth/access_token",
        None,
        Some(&form(&secret, &short)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let answer = a.json();
    assert_eq!(answer["token_type"], "bearer");
    assert_eq!(answer["expires_in"], 5_183_944);
    let long = answer["access_token"].as_str().unwrap().to_owned();
    assert!(long.starts_with("EAA") && long != short);
    let info = call(
        &sandbox,
        "GET",
        &debug_uri(&long),
        Some(&app_token(&sandbox)),
        None,
    )
    .await
    .json();
    assert_eq!(info["data"]["type"], "USER");
    assert_eq!(info["data"]["is_valid"], true);
    let data = &info["data"];
    let lifetime = data["expires_at"].as_i64().unwrap() - data["issued_at"].as_i64().unwrap();
    assert_eq!(lifetime, 5_183_944);

    let wrong_secret = form(&"0".repeat(32), &short);
    let wrong = call(
        &sandbox,
        "POST",
        "/oauth/access_token",
        None,
        Some(&wrong_secret),
    )
    .await;
    assert_eq!(wrong.json()["error"]["code"], 1);
    assert_eq!(
        wrong.json()["error"]["message"],
        "Error validating client secret."
    );
    let dead = form(&secret, &token(&sandbox, "expired"));
    let expired = call(&sandbox, "POST", "/oauth/access_token", None, Some(&dead))
        .await
        .json();
    assert_eq!(expired["error"]["code"], 190);
    assert_eq!(expired["error"]["error_subcode"], 463);
    let bad_id = "grant_type=fb_exchange_token&client_id=1&client_secret=x&fb_exchange_token=y";
    let bad_id = call(&sandbox, "POST", "/oauth/access_token", None, Some(bad_id)).await;
    assert_eq!(bad_id.json()["error"]["code"], 101);
}

#[tokio::test]
async fn faults_look_like_metas() {
    let sandbox = Sandbox::new(&Options::default());
    let user = token(&sandbox, "system-user");
    sandbox.set_faults(Faults {
        rate_limits: 1,
        regain_minutes: Some(7),
        ..Faults::default()
    });
    let a = call(&sandbox, "GET", "/me", Some(&user), None).await;
    assert_eq!(a.json()["error"]["code"], 4);
    let app_usage: Value = serde_json::from_slice(a.headers["x-app-usage"].as_bytes()).unwrap();
    assert_eq!(app_usage["call_count"], 100);
    let buc: Value =
        serde_json::from_slice(a.headers["x-business-use-case-usage"].as_bytes()).unwrap();
    let entry = &buc.as_object().unwrap().values().next().unwrap()[0];
    assert_eq!(entry["estimated_time_to_regain_access"], 7);
    let next = call(&sandbox, "GET", "/me", Some(&user), None).await;
    assert_eq!(next.status, StatusCode::OK, "counters run out");

    sandbox.set_faults(Faults {
        server_errors: 1,
        ..Faults::default()
    });
    let a = call(&sandbox, "GET", "/me", Some(&user), None).await;
    assert_eq!(
        (a.status, a.body.len()),
        (StatusCode::SERVICE_UNAVAILABLE, 0)
    );

    sandbox.set_faults(Faults {
        truncate: 1,
        ..Faults::default()
    });
    let a = call(&sandbox, "GET", "/me", Some(&user), None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        serde_json::from_slice::<Value>(&a.body).is_err(),
        "cut in the middle"
    );

    // The admin API is not recorded; Graph calls are, as they arrived.
    let before = sandbox.requests().len();
    let a = admin(
        &sandbox,
        "POST",
        "/_sandbox/clock",
        Some(sandbox.admin_secret()),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a clock move needs its JSON body"
    );
    assert_eq!(sandbox.requests().len(), before);
    let last = sandbox.requests().pop().unwrap();
    assert_eq!((last.method.as_str(), last.path.as_str()), ("GET", "/me"));
    assert_eq!(last.bearer(), Some(user.as_str()));
}

#[tokio::test]
async fn the_clock_ages_tokens_until_they_expire() {
    let sandbox = Sandbox::new(&Options::default());
    let expires = |a: Answer| a.json()["data"]["expires_at"].as_i64().unwrap();
    let before = expires(debug(&sandbox, "user-60d").await);
    sandbox.advance_clock(std::time::Duration::from_secs(86_400));
    let after = expires(debug(&sandbox, "user-60d").await);
    assert_eq!(before - after, 86_400);
    sandbox.advance_clock(std::time::Duration::from_secs(60 * 86_400));
    let a = call(
        &sandbox,
        "GET",
        "/me",
        Some(&token(&sandbox, "user-60d")),
        None,
    )
    .await;
    let e = &a.json()["error"];
    assert_eq!(
        (e["code"].clone(), e["error_subcode"].clone()),
        (json!(190), json!(463))
    );
}
