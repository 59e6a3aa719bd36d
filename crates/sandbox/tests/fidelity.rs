//! What the real Graph API does that the sandbox must do too (`graph-api.md` §5, §12), and the
//! admin API and CA file kept from other local users. Called in-process through the router.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use permatoken_sandbox::{ACCOUNTS, ADMIN_HEADER, Faults, Options, PHONES, Sandbox};
use serde_json::Value;
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

async fn call(sandbox: &Sandbox, method: &str, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let form = uri.contains("oauth");
    if form {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let response = sandbox
        .router()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer { status, body }
}

async fn get(sandbox: &Sandbox, uri: &str, bearer: Option<&str>) -> Answer {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    call(sandbox, "GET", uri, &headers).await
}

fn token(sandbox: &Sandbox, scenario: &str) -> String {
    sandbox.token(scenario).unwrap().expose_secret().to_owned()
}

fn app_token(sandbox: &Sandbox) -> String {
    format!(
        "{}|{}",
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    )
}

async fn inspect(sandbox: &Sandbox, input: &str, caller: Option<&str>) -> Answer {
    get(
        sandbox,
        &format!("/v26.0/debug_token?input_token={input}"),
        caller,
    )
    .await
}

const MUST_PROVIDE: &str = "(#100) You must provide an app access token, or a user access token that is an owner or developer of the app";

#[tokio::test]
async fn a_system_user_token_cannot_inspect_itself() {
    let sandbox = Sandbox::new(&Options::default());
    for scenario in ["system-user", "system-user-60d", "other-app"] {
        let own = token(&sandbox, scenario);
        let a = inspect(&sandbox, &own, Some(&own)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{scenario}");
        let e = &a.json()["error"];
        assert_eq!(e["code"], 100, "{scenario}");
        assert_eq!(e["type"], "OAuthException");
        assert_eq!(e["message"], MUST_PROVIDE);
    }
    // Without a caller, the same answer.
    let own = token(&sandbox, "system-user");
    let a = inspect(&sandbox, &own, None).await;
    assert_eq!(
        (a.status, a.json()["error"]["message"].clone()),
        (StatusCode::BAD_REQUEST, Value::from(MUST_PROVIDE))
    );
    // The app token may, and so may a developer's user token.
    let a = inspect(&sandbox, &own, Some(&app_token(&sandbox))).await;
    assert_eq!(a.json()["data"]["type"], "SYSTEM_USER");
    let user = token(&sandbox, "user-60d");
    let a = inspect(&sandbox, &user, Some(&user)).await;
    assert_eq!(a.json()["data"]["is_valid"], true);
}

#[tokio::test]
async fn an_expiry_can_come_without_a_subcode_and_in_pacific_time() {
    let sandbox = Sandbox::new(&Options::default());
    for (scenario, subcode) in [("expired", Some(463)), ("expired-no-subcode", None)] {
        let dead = token(&sandbox, scenario);
        let a = get(&sandbox, "/v26.0/me", Some(&dead)).await;
        let e = &a.json()["error"];
        assert_eq!(e["code"], 190);
        assert_eq!(e["error_subcode"].as_i64(), subcode, "{scenario}");
        assert!(e.get("is_transient").is_none(), "captured 190s carry none");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.starts_with("Error validating access token: Session has expired on "),
            "{message}"
        );
        let zones = message.matches(" PST.").count() + message.matches(" PDT.").count();
        assert_eq!(zones, 2, "both times in Pacific time: {message}");
        assert!(!message.contains("UTC"), "{message}");

        let a = inspect(&sandbox, &dead, Some(&app_token(&sandbox))).await;
        let e = &a.json()["data"]["error"];
        assert_eq!(e["subcode"].as_i64(), subcode, "{scenario}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("Session has expired on")
        );
    }
}

#[tokio::test]
async fn a_changed_character_cannot_be_decrypted_and_a_cut_token_cannot_be_parsed() {
    let sandbox = Sandbox::new(&Options::default());
    let whole = token(&sandbox, "user-60d");
    // Change one character that is neither a `Z` escape nor escaped.
    let at = (40..whole.len())
        .find(|&i| {
            let b = whole.as_bytes();
            b[i] != b'Z' && b[i - 1] != b'Z' && b[i].is_ascii_lowercase()
        })
        .unwrap();
    let mut changed = whole.clone().into_bytes();
    changed[at] = if changed[at] == b'q' { b'r' } else { b'q' };
    let changed = String::from_utf8(changed).unwrap();
    let cut = whole[..whole.len() - 20].to_owned();
    for (bad, message) in [
        (&changed, "The access token could not be decrypted"),
        (
            &cut,
            "Invalid OAuth access token - Cannot parse access token",
        ),
    ] {
        let a = get(&sandbox, "/v26.0/me", Some(bad)).await;
        let e = &a.json()["error"];
        assert_eq!(
            (e["code"].as_i64(), e["message"].as_str()),
            (Some(190), Some(message))
        );
        assert!(e.get("error_subcode").is_none());
        let a = inspect(&sandbox, bad, Some(&app_token(&sandbox))).await;
        let data = &a.json()["data"];
        assert_eq!(data["is_valid"], false);
        assert_eq!(data["error"]["message"], message);
    }
}

#[tokio::test]
async fn expires_at_0_is_never_only_on_a_valid_token() {
    let sandbox = Sandbox::new(&Options::default());
    let app = app_token(&sandbox);
    let dead = inspect(&sandbox, &token(&sandbox, "password-changed"), Some(&app)).await;
    let data = &dead.json()["data"];
    assert_eq!(data["is_valid"], false);
    assert_eq!(data["expires_at"], 0, "an invalidated token shows 0");
    assert!(data.get("issued_at").is_none(), "and no issued_at");
    assert_eq!(data["error"]["subcode"], 460);

    let alive = inspect(&sandbox, &token(&sandbox, "user-no-expiry"), Some(&app)).await;
    let data = &alive.json()["data"];
    assert_eq!(
        (data["type"].as_str(), data["is_valid"].as_bool()),
        (Some("USER"), Some(true))
    );
    assert_eq!(data["expires_at"], 0);
    let now = jiff::Timestamp::now().as_second();
    assert!(data["data_access_expires_at"].as_i64().unwrap() > now + 80 * 86_400);
}

async fn exchange(sandbox: &Sandbox, input: Option<&str>) -> Answer {
    let mut uri = format!(
        "/v26.0/oauth/access_token?grant_type=fb_exchange_token&client_id={}&client_secret={}",
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    );
    if let Some(input) = input {
        uri.push_str(&format!("&fb_exchange_token={input}"));
    }
    call(sandbox, "POST", &uri, &[]).await
}

#[tokio::test]
async fn the_exchange_answer_may_lack_expires_in_and_debug_token_tells_the_lifetime() {
    let sandbox = Sandbox::new(&Options::default());
    let with = exchange(&sandbox, Some(&token(&sandbox, "short-lived")))
        .await
        .json();
    assert_eq!(with["expires_in"], 5_183_944);
    let without = exchange(&sandbox, Some(&token(&sandbox, "temporary-fresh")))
        .await
        .json();
    assert!(without.get("expires_in").is_none(), "{without}");
    let new = without["access_token"].as_str().unwrap();
    let info = inspect(&sandbox, new, Some(&app_token(&sandbox)))
        .await
        .json();
    let data = &info["data"];
    let lifetime = data["expires_at"].as_i64().unwrap() - data["issued_at"].as_i64().unwrap();
    assert_eq!(lifetime, 5_183_944);

    // Code 1 here is also a request error, told from a wrong secret only by its message.
    let e = exchange(&sandbox, None).await.json();
    assert_eq!(e["error"]["code"], 1);
    assert_eq!(
        e["error"]["message"],
        "fb_exchange_token parameter not specified"
    );
}

#[tokio::test]
async fn a_rate_limit_says_it_is_transient() {
    let sandbox = Sandbox::new(&Options::default());
    sandbox.set_faults(Faults {
        rate_limits: 1,
        ..Faults::default()
    });
    let user = token(&sandbox, "system-user");
    let request = Request::builder()
        .uri("/me")
        .header("authorization", format!("Bearer {user}"))
        .body(Body::empty())
        .unwrap();
    let response = sandbox.router().oneshot(request).await.unwrap();
    // `estimated_time_to_regain_access` is always there, 0 when no wait is named (§12).
    let buc: Value =
        serde_json::from_slice(response.headers()["x-business-use-case-usage"].as_bytes()).unwrap();
    let entry = &buc.as_object().unwrap().values().next().unwrap()[0];
    assert_eq!(entry["estimated_time_to_regain_access"], 0);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let e = &serde_json::from_slice::<Value>(&body).unwrap()["error"];
    assert_eq!(
        (e["code"].as_i64(), e["is_transient"].as_bool()),
        (Some(4), Some(true))
    );
}

async fn phone(sandbox: &Sandbox, version: &str, id: &str) -> Value {
    let uri = format!(
        "/{version}/{id}?fields=status,whatsapp_business_manager_messaging_limit,messaging_limit_tier,health_status"
    );
    get(sandbox, &uri, Some(&token(sandbox, "system-user")))
        .await
        .json()
}

#[tokio::test]
async fn messaging_limits_follow_the_version_and_never_contradict() {
    let sandbox = Sandbox::new(&Options::default());
    for p in PHONES {
        let new = phone(&sandbox, "v24.0", p.id).await;
        let old = phone(&sandbox, "v23.0", p.id).await;
        assert!(new.get("messaging_limit_tier").is_none(), "{}: {new}", p.id);
        assert!(
            old.get("whatsapp_business_manager_messaging_limit")
                .is_none(),
            "{}: {old}",
            p.id
        );
        assert!(old["messaging_limit_tier"].is_string(), "{}: {old}", p.id);
        if let Some(limit) = new.get("whatsapp_business_manager_messaging_limit") {
            assert_eq!(limit, &old["messaging_limit_tier"], "{}", p.id);
        }
    }
    // The number without the new field keeps its meaning under v23.0: the deprecated tier only.
    let last = PHONES.iter().find(|p| p.id == "106540352242928").unwrap();
    let new = phone(&sandbox, "v26.0", last.id).await;
    assert!(
        new.get("whatsapp_business_manager_messaging_limit")
            .is_none()
    );
    assert_eq!(
        phone(&sandbox, "v23.0", last.id).await["messaging_limit_tier"],
        "TIER_1K"
    );
}

#[tokio::test]
async fn health_entities_name_the_numbers_own_account_and_business() {
    let sandbox = Sandbox::new(&Options::default());
    let entity = |v: &Value, kind: &str| -> String {
        v["health_status"]["entities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["entity_type"] == kind)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The number of the account whose business is not verified.
    let limited = phone(&sandbox, "v26.0", PHONES[1].id).await;
    assert_eq!(entity(&limited, "WABA"), ACCOUNTS[2].id);
    assert_eq!(entity(&limited, "BUSINESS"), "100000000000002");
    assert_eq!(entity(&limited, "APP"), sandbox.app().id.to_string());
    // The banned number's account is not the healthy one.
    let banned = phone(&sandbox, "v26.0", PHONES[2].id).await;
    let account = entity(&banned, "WABA");
    assert_ne!(account, ACCOUNTS[0].id);
    let app = app_token(&sandbox);
    let node = get(
        &sandbox,
        &format!("/v26.0/{account}?fields=account_review_status"),
        Some(&token(&sandbox, "system-user")),
    )
    .await
    .json();
    assert_eq!(node["account_review_status"], "REJECTED", "{node} {app}");
}

#[tokio::test]
async fn the_admin_api_answers_only_with_the_runs_secret() {
    let sandbox = Sandbox::new(&Options::default());
    let user = token(&sandbox, "system-user");
    get(&sandbox, "/me", Some(&user)).await;
    let secret = sandbox.admin_secret().to_owned();
    assert_eq!(secret.len(), 32);
    for path in [
        "/_sandbox/requests",
        "/_sandbox/scenarios",
        "/_sandbox/faults",
    ] {
        for given in [None, Some("wrong"), Some(&secret[..31])] {
            let headers: Vec<(&str, &str)> =
                given.map(|g| vec![(ADMIN_HEADER, g)]).unwrap_or_default();
            let a = call(&sandbox, "GET", path, &headers).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path} {given:?}");
            let text = String::from_utf8_lossy(&a.body);
            assert!(!text.contains(&user), "no token in the refusal");
            assert!(text.contains(ADMIN_HEADER), "{text}");
        }
    }
    let a = call(
        &sandbox,
        "GET",
        "/_sandbox/requests",
        &[(ADMIN_HEADER, &secret)],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()[0]["authorization"], format!("Bearer {user}"));
    // Another sandbox has another secret.
    assert_ne!(Sandbox::new(&Options::default()).admin_secret(), secret);
}

#[cfg(unix)]
#[tokio::test]
async fn the_ca_is_written_exclusively_into_a_private_folder() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let running = Sandbox::start(&Options {
        tls: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let a = running.write_ca(None).unwrap();
    let b = running.write_ca(None).unwrap();
    assert_ne!(a.parent(), b.parent(), "a new folder each time");
    for path in [&a, &b] {
        let folder = path.parent().unwrap();
        assert!(folder.starts_with(std::env::temp_dir()));
        assert_eq!(mode(folder), 0o700);
        assert_eq!(mode(path), 0o600);
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            running.ca_pem().unwrap()
        );
        std::fs::remove_file(path).unwrap();
        std::fs::remove_dir(folder).unwrap();
    }
    // A named file is created, never written over or through.
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("ca.pem");
    assert_eq!(running.write_ca(Some(&named)).unwrap(), named);
    assert_eq!(mode(&named), 0o600);
    let again = running.write_ca(Some(&named)).unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "kept").unwrap();
    let link = dir.path().join("link.pem");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(running.write_ca(Some(&link)).is_err());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");
    // Plain http has no CA to write.
    let plain = Sandbox::start(&Options::default()).await.unwrap();
    assert!(plain.write_ca(None).is_err());
}
