//! The HTTP endpoint, called in-process with `oneshot` and once over a real loopback socket.

mod http_support;

use std::net::SocketAddr;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use http_support::{DAY, HOSTILE, fleet, now, snapshot, token};
use permatoken_state::{CheckRecord, TokenKey};
use permatoken_watch::http::{self, AppState, BearerToken, HttpError};
use permatoken_watch::metrics::Counters;
use permatoken_watch::snapshot::{self, Snapshot, Status, TokenState};
use tower::ServiceExt;

const BEARER: &str = "PERMATOKENTEST-http-bearer-0123456789";

/// The endpoint serving `snapshot`, its state file holding the history of each token (only for a
/// snapshot of a few: a fleet's tests look at paging, not charts). Keep the directory.
async fn state(
    snapshot: Snapshot,
    listen: &str,
    bearer: Option<&str>,
) -> (AppState, Counters, tempfile::TempDir) {
    let (dir, store) = http_support::store(&snapshot, snapshot.tokens.len() <= 100).await;
    let (_publisher, subscriber) = snapshot::channel(snapshot);
    let counters = Counters::default();
    let bearer = bearer.map(|b| BearerToken::new(b).unwrap());
    let state = AppState::new(
        listen.parse().unwrap(),
        bearer,
        subscriber,
        counters.clone(),
        store,
    )
    .unwrap();
    (state, counters, dir)
}

async fn get(
    state: &AppState,
    path: &str,
    auth: Option<&str>,
) -> (StatusCode, header::HeaderMap, String) {
    let mut request = Request::get(path);
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let response = http::app(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

/// The samples of `metric`: (labels as written, value).
fn samples<'a>(text: &'a str, metric: &str) -> Vec<(&'a str, &'a str)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(metric)?;
            let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
                let end = rest.rfind("} ")?;
                (&rest[..end], &rest[end + 2..])
            } else {
                ("", rest.strip_prefix(' ')?)
            };
            Some((labels, value))
        })
        .collect()
}

fn value(text: &str, metric: &str, labels: &str) -> Option<String> {
    samples(text, metric)
        .into_iter()
        .find(|(l, _)| *l == labels)
        .map(|(_, v)| v.to_owned())
}

#[tokio::test]
async fn metrics_has_every_name_with_a_token_label() {
    let now = now();
    let (state, counters, _dir) = state(snapshot(now), "127.0.0.1:9464", None).await;
    counters.check("orders", "ok");
    counters.check("orders", "ok");
    counters.check("legacy", "critical");
    counters.renewal("orders-backup");
    counters.failover("support");
    counters.alert("ops", "delivered");
    counters.alert("pager", "failed");
    counters.graph_requests("ok", 1);
    counters.graph_requests("unreachable", 1);
    let (status, headers, text) = get(&state, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        value(&text, "permatoken_token_valid", "token=\"orders\"").as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&text, "permatoken_token_valid", "token=\"legacy\"").as_deref(),
        Some("0")
    );
    let expires = snapshot(now).tokens[1].expires_at.unwrap().to_string();
    assert_eq!(
        value(
            &text,
            "permatoken_token_expiration_timestamp_seconds",
            "token=\"orders-backup\""
        ),
        Some(expires)
    );
    assert_eq!(
        value(
            &text,
            "permatoken_token_status",
            "token=\"billing\",status=\"critical\""
        )
        .as_deref(),
        Some("1")
    );
    for other in [
        "ok",
        "expiring",
        "dead",
        "failed_over",
        "cannot_be_checked",
        "unknown",
    ] {
        assert_eq!(
            value(
                &text,
                "permatoken_token_status",
                &format!("token=\"billing\",status=\"{other}\"")
            )
            .as_deref(),
            Some("0"),
            "{other}"
        );
    }
    assert_eq!(
        value(
            &text,
            "permatoken_token_missing_required_permissions",
            "token=\"billing\""
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        value(
            &text,
            "permatoken_token_last_check_timestamp_seconds",
            "token=\"orders\""
        ),
        Some((now - 60).to_string())
    );
    assert_eq!(
        value(
            &text,
            "permatoken_checks_total",
            "token=\"orders\",result=\"ok\""
        )
        .as_deref(),
        Some("2")
    );
    assert_eq!(
        value(
            &text,
            "permatoken_renewals_total",
            "token=\"orders-backup\""
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&text, "permatoken_failovers_total", "token=\"support\"").as_deref(),
        Some("1")
    );
    assert_eq!(
        value(
            &text,
            "permatoken_alerts_total",
            "route=\"pager\",result=\"failed\""
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        value(
            &text,
            "permatoken_graph_requests_total",
            "outcome=\"unreachable\""
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(value(&text, "permatoken_leader", "").as_deref(), Some("1"));
    for name in [
        "permatoken_token_valid",
        "permatoken_token_expiration_timestamp_seconds",
        "permatoken_token_status",
        "permatoken_token_missing_required_permissions",
        "permatoken_token_last_check_timestamp_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{name}");
    }
    for name in [
        "permatoken_checks_total",
        "permatoken_renewals_total",
        "permatoken_failovers_total",
        "permatoken_alerts_total",
        "permatoken_graph_requests_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} counter\n")), "{name}");
    }
    assert!(!text.contains("# EOF"));
}

#[tokio::test]
async fn metrics_answers_openmetrics_only_when_the_accept_header_asks_for_it() {
    let (state, _, _dir) = state(snapshot(now()), "127.0.0.1:9464", None).await;
    for (accept, content_type) in [
        (None, "text/plain; version=0.0.4; charset=utf-8"),
        (
            Some("text/plain"),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (
            Some("text/plain;version=0.0.4;q=0.9,*/*;q=0.1"),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    ] {
        let mut request = Request::get("/metrics");
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let response = http::app(state.clone())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            content_type,
            "{accept:?}"
        );
        assert_eq!(response.headers()[header::VARY], "Accept");
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let open = content_type.starts_with("application/openmetrics-text");
        assert_eq!(text.ends_with("# EOF\n"), open, "{accept:?}");
        assert_eq!(
            text.contains("# TYPE permatoken_checks counter\n"),
            open,
            "{accept:?}"
        );
    }
}

#[tokio::test]
async fn a_token_that_never_expires_has_no_expiration_sample() {
    let (state, _, _dir) = state(snapshot(now()), "127.0.0.1:9464", None).await;
    let (_, _, text) = get(&state, "/metrics", None).await;
    let expiring: Vec<_> = samples(&text, "permatoken_token_expiration_timestamp_seconds");
    assert!(!expiring.is_empty());
    assert!(
        expiring.iter().all(|(l, _)| *l != "token=\"orders\""),
        "{expiring:?}"
    );
    // It still has every other gauge.
    assert!(value(&text, "permatoken_token_valid", "token=\"orders\"").is_some());
}

#[tokio::test]
async fn odd_token_names_are_escaped_in_label_values() {
    let now = now();
    let mut snap = snapshot(now);
    snap.tokens = vec![token(
        "we\"ird\\name\nnext",
        TokenState::Ok,
        Status::Ok,
        now,
    )];
    let (state, counters, _dir) = state(snap, "127.0.0.1:9464", None).await;
    counters.check("we\"ird\\name\nnext", "ok");
    let (_, _, text) = get(&state, "/metrics", None).await;
    let label = r#"token="we\"ird\\name\nnext""#;
    assert_eq!(
        value(&text, "permatoken_token_valid", label).as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "permatoken_checks_total",
            &format!("{label},result=\"ok\"")
        )
        .as_deref(),
        Some("1")
    );
    // No sample line was split by the raw newline.
    assert!(!text.lines().any(|l| l.starts_with("next")), "{text}");
}

#[tokio::test]
async fn healthz_says_ok_and_whether_a_round_finished() {
    let now = now();
    let (state, _, _dir) = state(snapshot(now), "127.0.0.1:9464", None).await;
    let (status, headers, body) = get(&state, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "ok", "{body}");
    assert_eq!(json["round_finished"], true, "{body}");
    assert_eq!(json["last_round_at"], now - 30, "{body}");
    let (state, _, _dir) = state_with(Snapshot::default()).await;
    let (status, _, body) = get(&state, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["round_finished"], false, "{body}");
    assert!(json["last_round_at"].is_null(), "{body}");
}

#[tokio::test]
async fn healthz_fails_and_the_page_says_why_while_the_state_cannot_be_written() {
    let now = now();
    let mut unwritable = snapshot(now);
    unwritable.state_unwritable = Some(permatoken_watch::snapshot::StateProblem {
        since: now - 120,
        reason: "database or disk is full".to_owned(),
    });
    let (state, _, _dir) = state_with(unwritable).await;
    let (status, _, body) = get(&state, "/healthz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"status": "unhealthy", "problems": [{
            "reason": "state_unwritable",
            "message": format!("state not writable since {}: database or disk is full", now - 120),
        }]})
    );
    let (status, _, page) = get(&state, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("The state cannot be written since") && page.contains("disk is full"),
        "{page}"
    );
    let (_, _, api) = get(&state, "/api/tokens", None).await;
    let json: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(json["state_unwritable"]["since"], now - 120);
    // While it can, the paragraph is hidden.
    let (state, _, _dir) = state_with(snapshot(now)).await;
    let (_, _, page) = get(&state, "/", None).await;
    assert!(
        page.contains("<p id=\"unwritable\" class=\"stale\" hidden></p>"),
        "{page}"
    );
}

async fn state_with(snapshot: Snapshot) -> (AppState, Counters, tempfile::TempDir) {
    state(snapshot, "127.0.0.1:9464", None).await
}

#[tokio::test]
async fn api_tokens_without_parameters_is_the_first_page_worst_first_with_counters() {
    let now = now();
    let (state, counters, _dir) = state_with(snapshot(now)).await;
    counters.alert("ops", "delivered");
    let (status, headers, body) = get(&state, "/api/tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let tokens = json["tokens"].as_array().unwrap();
    assert_eq!(
        names_and_states(&json),
        [
            ("legacy".to_owned(), "dead".to_owned()),
            ("support".to_owned(), "failed_over".to_owned()),
            ("billing".to_owned(), "critical".to_owned()),
            (HOSTILE.to_owned(), "cannot_be_checked".to_owned()),
            // The backup under its primary, which its state brings up with it.
            ("orders".to_owned(), "ok".to_owned()),
            ("orders-backup".to_owned(), "expiring".to_owned()),
        ]
    );
    assert_eq!(tokens[4]["never_expires"], true);
    assert_eq!(tokens[4]["expires_at"], serde_json::Value::Null);
    assert_eq!(
        tokens[5]["role"],
        serde_json::json!({"kind": "backup", "of": "orders"})
    );
    // Each chart read from the state file, oldest first, as the checks were written; after the
    // token's other fields, as when the snapshot held it.
    let history = tokens[0]["history"].as_array().unwrap();
    assert_eq!(history.len(), 24);
    assert_eq!(history[0]["at"], now - 24 * 3600);
    assert_eq!(history[23]["at"], now - 3600);
    assert_eq!(history[3]["status"], "unknown");
    assert_eq!(history[4]["status"], "critical");
    assert!(body.contains(&format!("\"next_check\":{},\"history\":[", now + 3540)));
    assert_eq!(
        (
            &json["total"],
            &json["page"],
            &json["per_page"],
            &json["pages"]
        ),
        (
            &serde_json::json!(6),
            &serde_json::json!(1),
            &serde_json::json!(50),
            &serde_json::json!(1)
        )
    );
    assert_eq!(json["q"], "");
    assert_eq!(json["states"], serde_json::json!([]));
    assert_eq!(
        json["counts"],
        serde_json::json!({"dead": 1, "failed_over": 1, "critical": 1, "cannot_be_checked": 1, "expiring": 1, "ok": 1})
    );
    assert_eq!(json["routes"][1]["failing_since"], now - 7200);
    assert_eq!(json["events"].as_array().unwrap().len(), 2);
    assert_eq!(
        json["counters"]["alerts"],
        serde_json::json!([["ops", "delivered", 1]])
    );
    assert_eq!(json["leader"], true);
    assert_eq!(json["started_at"], now - 7 * DAY);
    // The JSON still reads back into a snapshot: the same one, its tokens worst first.
    let back: Snapshot = serde_json::from_str(&body).unwrap();
    let mut expected = snapshot(now);
    let order = [
        "legacy",
        "support",
        "billing",
        HOSTILE,
        "orders",
        "orders-backup",
    ];
    expected
        .tokens
        .sort_by_key(|t| order.iter().position(|n| *n == t.name));
    assert_eq!(back, expected);
}

fn names_and_states(json: &serde_json::Value) -> Vec<(String, String)> {
    json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn api(state: &AppState, query: &str) -> serde_json::Value {
    let (status, headers, body) = get(state, &format!("/api/tokens?{query}"), None).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn api_tokens_searches_filters_and_pages_ten_thousand_tokens() {
    let now = now();
    let (state, _, _dir) = state_with(fleet(10_000, now)).await;

    // The default page: 50 of 10,000, all dead (worst first), by name; a small fraction of the
    // whole snapshot.
    let (_, _, body) = get(&state, "/api/tokens", None).await;
    let whole = serde_json::to_vec(&fleet(10_000, now)).unwrap().len();
    assert!(body.len() * 100 < whole, "{} of {whole} bytes", body.len());
    eprintln!(
        "/api/tokens at 10,000 tokens: {} bytes (the whole snapshot: {whole})",
        body.len()
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["total"], 10_000);
    assert_eq!(json["pages"], 200);
    let first = names_and_states(&json);
    assert_eq!(first.len(), 50);
    assert!(first.iter().all(|(_, s)| s == "dead"));
    assert_eq!(first[0].0, "shop-00003");
    assert_eq!(first[1].0, "shop-00009");
    assert_eq!(
        json["counts"],
        serde_json::json!({"dead": 1667, "failed_over": 1666, "critical": 1667, "cannot_be_checked": 1666, "expiring": 1667, "ok": 1667})
    );
    // Every page, in order, walks every token once: worst state first, then by name.
    let mut seen = Vec::new();
    for page in 1..=20 {
        let json = api(&state, &format!("per_page=500&page={page}")).await;
        assert_eq!(json["page"], page);
        seen.extend(names_and_states(&json));
    }
    assert_eq!(seen.len(), 10_000);
    let rank = |s: &str| {
        [
            "dead",
            "failed_over",
            "critical",
            "cannot_be_checked",
            "expiring",
            "ok",
        ]
        .iter()
        .position(|x| *x == s)
        .unwrap()
    };
    assert!(
        seen.windows(2)
            .all(|w| (rank(&w[0].1), &w[0].0) < (rank(&w[1].1), &w[1].0)),
        "not sorted worst first, then by name"
    );
    // Past the last page: no token, the total still said.
    let json = api(&state, "per_page=500&page=21").await;
    assert_eq!(json["tokens"], serde_json::json!([]));
    assert_eq!(
        (json["total"].as_u64(), json["pages"].as_u64()),
        (Some(10_000), Some(20))
    );
    // The last, partial page.
    let json = api(&state, "per_page=300&page=34").await;
    assert_eq!(json["tokens"].as_array().unwrap().len(), 10_000 - 33 * 300);

    // A search, any case, with a state filter given both ways.
    let json = api(&state, "q=SHOP-012&state=dead&state=ok").await;
    let expected: Vec<(String, String)> = {
        let mut v: Vec<_> = (1200..1300)
            .filter(|i| i % 6 == 3)
            .map(|i| (format!("shop-{i:05}"), "dead".to_owned()))
            .collect();
        v.extend(
            (1200..1300)
                .filter(|i| i % 6 == 0)
                .map(|i| (format!("shop-{i:05}"), "ok".to_owned())),
        );
        v
    };
    assert_eq!(names_and_states(&json), expected);
    assert_eq!(json["total"], expected.len());
    assert_eq!(json["q"], "SHOP-012");
    assert_eq!(json["states"], serde_json::json!(["dead", "ok"]));
    // The counts stay over every token, for the chips.
    assert_eq!(json["counts"]["dead"], 1667);
    let same = api(&state, "q=shop-012&state=ok,dead").await;
    assert_eq!(names_and_states(&same), expected);

    // Nothing matches.
    let json = api(&state, "q=orders").await;
    assert_eq!(
        (json["total"].as_u64(), json["pages"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(json["tokens"], serde_json::json!([]));
}

#[tokio::test]
async fn api_tokens_refuses_bad_parameters_with_a_clear_400() {
    let (state, _, _dir) = state_with(snapshot(now())).await;
    let long_q = format!("q={}", "x".repeat(101));
    let long_query = format!("q=a&{}", "state=ok&".repeat(400));
    for (query, says) in [
        ("page=0", "`page` must be a whole number from 1"),
        ("page=-1", "`page` must be a whole number from 1"),
        ("page=abc", "`page` must be a whole number from 1"),
        (
            "per_page=0",
            "`per_page` must be a whole number from 1 to 500",
        ),
        (
            "per_page=501",
            "`per_page` must be a whole number from 1 to 500",
        ),
        (
            "state=zombie",
            "unknown state `zombie`: use dead, failed_over",
        ),
        ("state=recovered", "unknown state `recovered`"),
        ("q=a&q=b", "`q` is given more than once"),
        (
            "sort=name",
            "`sort` must be `state` (worst first) or `expiry`",
        ),
        ("view=list", "`view` must be `cards` or `table`"),
        ("colour=red", "unknown parameter `colour`"),
        ("q=%E0%A4", "not valid percent-encoded UTF-8"),
        (long_q.as_str(), "`q` is longer than 100 characters"),
        (long_query.as_str(), "longer than 2048 bytes"),
    ] {
        let (status, _, body) = get(&state, &format!("/api/tokens?{query}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(body.contains(says), "{query}: {body}");
    }
    // The page itself opens on a bad link, on the default view.
    let (status, _, body) = get(&state, "/?page=0&state=zombie", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("1–6 of 6"), "{body}");
}

#[tokio::test]
async fn the_page_renders_the_page_its_url_asks_for() {
    let now = now();
    let (state, _, _dir) = state_with(fleet(10_000, now)).await;
    let (status, _, body) = get(&state, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.matches("<article class=\"token").count(), 50);
    assert!(body.contains("1–50 of 10,000"), "range");
    assert!(body.contains(
        "data-state=\"dead\" aria-pressed=\"false\">dead <span class=\"n\">1,667</span>"
    ));
    // The whole snapshot is not embedded: only this page.
    assert!(body.len() < 200_000, "{} bytes", body.len());

    let (_, _, body) = get(&state, "/?state=dead&q=shop-012&page=1", None).await;
    let cards = body.matches("<article class=\"token st-dead\">").count();
    assert_eq!(cards, (1200..1300).filter(|i| i % 6 == 3).count());
    assert_eq!(body.matches("<article class=\"token").count(), cards);
    assert!(body.contains("value=\"shop-012\""));
    assert!(body.contains("data-state=\"dead\" aria-pressed=\"true\""));

    // `q` is escaped where the page shows it.
    let (_, _, body) = get(&state, "/?q=%22%3E%3Cscript%3E", None).await;
    assert!(
        body.contains("value=\"&quot;&gt;&lt;script&gt;\""),
        "{body}"
    );
    assert!(!body.contains("\"><script>"));
    assert!(body.contains("No token matches."));
}

#[tokio::test]
async fn the_page_escapes_names_and_sends_security_headers() {
    let (state, _, _dir) = state_with(snapshot(now())).await;
    let (status, headers, body) = get(&state, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("http"), "no external source: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // Server-rendered: each name and state before any script runs.
    for (name, label) in [
        ("orders", "ok"),
        ("orders-backup", "expiring"),
        ("billing", "critical"),
        ("legacy", "dead"),
        ("support", "failed over"),
    ] {
        assert!(
            body.contains(&format!(
                "<h2 class=\"name\">{name}</h2><span class=\"badge\">{label}</span>"
            )),
            "{name}"
        );
    }
    // Escaped, with a line-break opportunity after its `/`.
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/<wbr>script&gt;"));
    assert!(
        !body.contains(HOSTILE),
        "the hostile name went in unescaped"
    );
    // Nothing from elsewhere.
    assert!(!body.contains("src=\"http"));
    assert!(!body.contains("href=\"http"));
}

#[tokio::test]
async fn off_loopback_a_server_without_a_bearer_token_is_refused() {
    let (_, subscriber) = snapshot::channel(Snapshot::default());
    let (_dir, store) = http_support::store(&Snapshot::default(), false).await;
    let listen: SocketAddr = "0.0.0.0:9464".parse().unwrap();
    let new = |listen, subscriber| {
        AppState::new(listen, None, subscriber, Counters::default(), store.clone())
    };
    let err = new(listen, subscriber.clone()).unwrap_err();
    assert!(matches!(err, HttpError::NeedsToken { addr } if addr == listen));
    assert!(err.to_string().contains("--http-token-file"), "{err}");
    let v6: SocketAddr = "[2001:db8::1]:9464".parse().unwrap();
    assert!(new(v6, subscriber.clone()).is_err());
    let loopback6: SocketAddr = "[::1]:9464".parse().unwrap();
    assert!(new(loopback6, subscriber).is_ok());
    assert_eq!(http::DEFAULT_LISTEN.to_string(), "127.0.0.1:9464");
}

#[tokio::test]
async fn the_bearer_token_guards_the_page_and_api_but_not_metrics_or_healthz() {
    let (state, _, _dir) = state(snapshot(now()), "0.0.0.0:9464", Some(BEARER)).await;
    let good = format!("Bearer {BEARER}");
    let wrong = format!("Bearer {BEARER}x");
    for path in ["/", "/api/tokens"] {
        let (status, headers, body) = get(&state, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert!(!body.contains("orders"), "{path}: {body}");
        assert_eq!(
            get(&state, path, Some(&wrong)).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            get(&state, path, Some(BEARER)).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        let (status, _, body) = get(&state, path, Some(&good)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body.contains("orders"), "{path}");
        assert!(!body.contains(BEARER), "{path} echoed the token");
    }
    for path in ["/metrics", "/healthz"] {
        assert_eq!(get(&state, path, None).await.0, StatusCode::OK, "{path}");
    }
}

#[test]
fn a_weak_bearer_token_is_refused_and_none_is_shown() {
    assert!(matches!(
        BearerToken::new("short\n"),
        Err(HttpError::BadToken)
    ));
    assert!(matches!(
        BearerToken::new("has a space in the middle of it"),
        Err(HttpError::BadToken)
    ));
    let token = BearerToken::new(&format!("  {BEARER}\n")).unwrap();
    assert!(!format!("{token:?}").contains(BEARER));
}

#[tokio::test]
async fn bodies_and_other_methods_are_refused() {
    let (state, _, _dir) = state_with(snapshot(now())).await;
    let big = Request::get("/metrics")
        .header(header::CONTENT_LENGTH, "100000")
        .body(Body::from(vec![b'x'; 100_000]))
        .unwrap();
    let response = http::app(state.clone()).oneshot(big).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let post = Request::post("/api/tokens").body(Body::empty()).unwrap();
    let response = http::app(state.clone()).oneshot(post).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get(&state, "/nothing", None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn serves_on_loopback_sees_new_snapshots_and_shuts_down_gracefully() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let now = now();
    let (publisher, subscriber) = snapshot::channel(Snapshot::default());
    let (_dir, store) = http_support::store(&snapshot(now), true).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(addr, None, subscriber, Counters::default(), store).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let fetch = |path: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let answer = fetch("/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"round_finished\":false"), "{answer}");
    publisher.publish(snapshot(now));
    let answer = fetch("/api/tokens").await;
    assert!(answer.contains("\"orders-backup\""), "{answer}");
    drop(stop);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn no_route_shows_the_token_behind_a_fingerprint() {
    let canary = format!("EAAPERMATOKENTEST{}", "x".repeat(160));
    let secret = permatoken_secret::AccessToken::new(canary.clone());
    let mut snap = snapshot(now());
    snap.tokens[0].fingerprint = secret.fingerprint();
    let (state, counters, _dir) = state(snap, "0.0.0.0:9464", Some(BEARER)).await;
    counters.check("orders", "ok");
    let auth = format!("Bearer {BEARER}");
    for path in ["/", "/api/tokens", "/metrics", "/healthz"] {
        let (status, headers, body) = get(&state, path, Some(&auth)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!body.contains("PERMATOKENTEST"), "{path} leaked the token");
        assert!(!body.contains(BEARER), "{path} leaked the bearer token");
        for value in headers.values() {
            assert!(!value.as_bytes().windows(14).any(|w| w == b"PERMATOKENTEST"));
        }
    }
    let (_, _, page) = get(&state, "/", Some(&auth)).await;
    assert!(
        page.contains(&secret.fingerprint()),
        "the fingerprint is shown instead"
    );
}

#[tokio::test]
async fn api_tokens_reads_the_charts_of_its_page_only_up_to_the_snapshot() {
    let now = now();
    let mut fleet = fleet(700, now);
    let (_dir, store) = http_support::store(&fleet, true).await;
    // A check after the snapshot was made is not shown yet; a token never checked has no chart.
    let first = TokenKey::parse(&format!("{:064x}", 0)).unwrap();
    store
        .record_checks(vec![CheckRecord {
            key: first,
            checked_at: jiff::Timestamp::from_second(now + 60).unwrap(),
            status: permatoken_state::Status::Critical,
            alert_state: "ok".to_owned(),
            valid: Some(true),
            expires_at: None,
            never_expires: true,
            kind: None,
            missing_scopes: Vec::new(),
            finding_codes: Vec::new(),
            elapsed_ms: 1,
        }])
        .await
        .unwrap();
    fleet.tokens.push(token(
        "zz-never-checked",
        TokenState::Ok,
        Status::Unknown,
        now,
    ));
    let (_publisher, subscriber) = snapshot::channel(fleet);
    let listen = "127.0.0.1:9464".parse().unwrap();
    let state = AppState::new(listen, None, subscriber, Counters::default(), store).unwrap();
    // The ok tokens (`i % 6 == 0`, 117 of them and the one never checked), 100 a page: the second
    // page holds the last 18.
    let (status, _, body) = get(&state, "/api/tokens?state=ok&per_page=100&page=2", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let tokens = json["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 18);
    for t in &tokens[..17] {
        let history = t["history"].as_array().unwrap();
        assert_eq!(history.len(), 24, "{t}");
        assert_eq!(history[23]["at"], now - 3600, "{t}");
    }
    assert_eq!(tokens[17]["name"], "zz-never-checked");
    assert_eq!(tokens[17]["history"], serde_json::json!([]));
    // The largest page: 500 charts in one answer; shop-00000's check after the snapshot left out.
    let (status, _, body) = get(&state, "/api/tokens?per_page=500", None).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let tokens = json["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 500);
    assert!(
        tokens
            .iter()
            .all(|t| t["history"].as_array().unwrap().len() == 24)
    );
    let (_, _, body) = get(&state, "/api/tokens?q=shop-00000", None).await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let history = json["tokens"][0]["history"].as_array().unwrap();
    assert_eq!(history.len(), 24);
    assert_eq!(history[23]["at"], now - 3600);
}

#[tokio::test]
async fn a_state_that_cannot_be_read_is_a_503_with_a_json_error_and_the_rest_still_serves() {
    let (state, _, dir) = state_with(snapshot(now())).await;
    assert_eq!(get(&state, "/api/tokens", None).await.0, StatusCode::OK);
    // Another process breaks the state file under the running endpoint.
    let path = dir.path().join("state.db");
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch("ALTER TABLE checks RENAME TO checks_gone")
        .unwrap();
    let (status, headers, body) = get(&state, "/api/tokens", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = json["error"].as_str().unwrap();
    assert!(
        error.contains("check history") && error.contains("log"),
        "{error}"
    );
    // Neither the file nor the database's own words.
    assert!(!body.contains(&*path.to_string_lossy()), "{body}");
    assert!(
        !body.contains("checks_gone") && !body.contains("no such"),
        "{body}"
    );
    for path in ["/", "/metrics", "/healthz"] {
        assert_eq!(get(&state, path, None).await.0, StatusCode::OK, "{path}");
    }
    // Mended, the charts come back.
    raw.execute_batch("ALTER TABLE checks_gone RENAME TO checks")
        .unwrap();
    let (status, _, body) = get(&state, "/api/tokens", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
