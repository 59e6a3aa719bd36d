//! Every scenario's verdict, with and without app credentials, and what the sandbox received.
//!
//! Without app credentials a system-user token cannot inspect itself (`graph-api.md` §5): the real
//! API refuses `/debug_token` with code 100, and so does the sandbox.

use permatoken_secret::{AccessToken, AppSecret};

use crate::harness::{Test, app_lines, sandbox};

struct Expect {
    scenario: &'static str,
    code: i32,
    status: &'static str,
    kind: &'static str,
    valid: bool,
    findings: &'static [&'static str],
    words: &'static [&'static str],
}

const EXPECT: &[Expect] = &[
    Expect {
        scenario: "system-user",
        code: 0,
        status: "ok",
        kind: "system_user_permanent",
        valid: true,
        findings: &[],
        words: &[
            "✓ valid",
            "never-expiring system-user token",
            "expires      never",
        ],
    },
    Expect {
        scenario: "system-user-60d",
        code: 0,
        status: "ok",
        kind: "system_user_60d",
        valid: true,
        findings: &["token_not_permanent"],
        words: &["60-day system-user token", "within its 60 days"],
    },
    Expect {
        scenario: "user-60d",
        code: 0,
        status: "ok",
        kind: "long_lived_user",
        valid: true,
        findings: &["token_not_permanent"],
        words: &["long-lived (60-day) user token", "System users"],
    },
    Expect {
        scenario: "user-expiring",
        code: 1,
        status: "warning",
        kind: "long_lived_user",
        valid: true,
        findings: &["token_expiring"],
        words: &[
            "WARNING (exit 1)",
            "⚠ this long-lived (60-day) user token expires on",
        ],
    },
    Expect {
        scenario: "user-expires-soon",
        code: 2,
        status: "critical",
        kind: "long_lived_user",
        valid: true,
        findings: &["token_expires_soon"],
        words: &[
            "CRITICAL (exit 2)",
            "✗ this long-lived (60-day) user token expires on",
        ],
    },
    // DESIGN §4 judges a USER token without `issued_at` by its time left: an API Setup token with an
    // hour left cannot be told from a login token, and the report says both.
    Expect {
        scenario: "temporary",
        code: 2,
        status: "critical",
        kind: "short_lived_user",
        valid: true,
        findings: &["token_expires_soon"],
        words: &["temporary API Setup token"],
    },
    Expect {
        scenario: "temporary-fresh",
        code: 2,
        status: "critical",
        kind: "temporary",
        valid: true,
        findings: &["token_expires_soon"],
        words: &["API Setup, about 24 hours"],
    },
    Expect {
        scenario: "short-lived",
        code: 2,
        status: "critical",
        kind: "short_lived_user",
        valid: true,
        findings: &["token_expires_soon"],
        words: &["Graph API Explorer"],
    },
    Expect {
        scenario: "expired",
        code: 2,
        status: "critical",
        kind: "*",
        valid: false,
        findings: &["token_expired"],
        words: &[
            "✗ not valid",
            "the token expired",
            "subcode 463",
            "Token expiration \"Never\"",
        ],
    },
    // Captured expiries come without a subcode; the message says it.
    Expect {
        scenario: "expired-no-subcode",
        code: 2,
        status: "critical",
        kind: "*",
        valid: false,
        findings: &["token_expired"],
        words: &["the token expired", "(Graph API code 190)"],
    },
    // Valid, `USER`, `expires_at` 0: long-lived, never expiring by time, data access still lapses.
    Expect {
        scenario: "user-no-expiry",
        code: 0,
        status: "ok",
        kind: "long_lived_user",
        valid: true,
        findings: &[],
        words: &["expires      never", "data access  until"],
    },
    Expect {
        scenario: "password-changed",
        code: 2,
        status: "critical",
        kind: "*",
        valid: false,
        findings: &["token_invalidated"],
        words: &["changed their Facebook password", "subcode 460"],
    },
    Expect {
        scenario: "malformed",
        code: 2,
        status: "critical",
        kind: "unknown",
        valid: false,
        findings: &["token_invalid"],
        words: &["Cannot parse access token", "copy the token again"],
    },
    Expect {
        scenario: "missing-permission",
        code: 2,
        status: "critical",
        kind: "system_user_permanent",
        valid: true,
        findings: &["missing_permission"],
        words: &[
            "✗ whatsapp_business_messaging",
            "lacks the permission whatsapp_business_messaging",
        ],
    },
    Expect {
        scenario: "no-business-management",
        code: 0,
        status: "ok",
        kind: "system_user_permanent",
        valid: true,
        findings: &["missing_recommended_permission"],
        words: &["business_management (missing)"],
    },
];

/// What every system-user token shows without app credentials: it works, and Meta will not say more.
fn alone(scenario: &'static str) -> Expect {
    Expect {
        scenario,
        code: 3,
        status: "unknown",
        kind: "unknown",
        valid: true,
        findings: &["app_token_required"],
        words: &[
            "✓ valid — acts as Sandbox System User",
            "expires      unknown",
            "[app_token_required]",
            "fix: set `FACEBOOK_APP_ID`",
            "UNKNOWN (exit 3)",
        ],
    }
}

fn check_all_scenarios(with_app: bool) {
    let sandbox = sandbox();
    let system_users = [
        "system-user",
        "system-user-60d",
        "missing-permission",
        "no-business-management",
    ];
    for e in EXPECT {
        let substitute;
        let e = if !with_app && system_users.contains(&e.scenario) {
            substitute = alone(e.scenario);
            &substitute
        } else {
            e
        };
        let json = Test::against(&sandbox)
            .dotenv(&sandbox, e.scenario, with_app)
            .args(["check", "--json"])
            .run();
        json.assert_code(e.code);
        let report = json.json();
        let context = format!("{} (app credentials: {with_app})\n{report:#}", e.scenario);
        assert_eq!(report["status"], e.status, "{context}");
        assert_eq!(report["token"]["valid"], e.valid, "{context}");
        assert_eq!(report["token"]["source"], "./.env", "{context}");
        assert_eq!(
            report["token"]["variable"], "WHATSAPP_ACCESS_TOKEN",
            "{context}"
        );
        if e.kind != "*" {
            assert_eq!(report["token"]["kind"], e.kind, "{context}");
        }
        assert_eq!(json.codes(), e.findings, "{context}");
        for f in report["findings"].as_array().unwrap() {
            assert!(
                f["fix"].as_str().is_some_and(|s| !s.is_empty()),
                "every finding has a fix: {context}"
            );
        }
        assert!(
            !json
                .stdout
                .contains(&crate::harness::token_of(&sandbox, e.scenario)),
            "no token in the report: {context}"
        );

        let human = Test::against(&sandbox)
            .dotenv(&sandbox, e.scenario, with_app)
            .env("NO_COLOR", "1")
            .args(["check"])
            .run();
        human.assert_code(e.code);
        assert!(
            human.stdout.contains("`WHATSAPP_ACCESS_TOKEN` from ./.env"),
            "{}",
            human.stdout
        );
        for word in e.words {
            assert!(
                human.stdout.contains(word),
                "{}: `{word}` not in\n{}",
                e.scenario,
                human.stdout
            );
        }
        assert!(
            !human.stdout.contains("\x1b["),
            "no colour without a terminal"
        );
    }
}

#[test]
fn every_scenario_with_app_credentials() {
    check_all_scenarios(true);
}

#[test]
fn every_scenario_with_the_token_alone() {
    check_all_scenarios(false);
}

#[test]
fn a_dead_token_keeps_its_facts_when_the_app_token_can_ask() {
    let sandbox = sandbox();
    let with = Test::against(&sandbox)
        .dotenv(&sandbox, "expired", true)
        .args(["check", "--json"])
        .run();
    let report = with.json();
    // `/debug_token` answers HTTP 200 with `is_valid: false` and every field it still knows.
    assert_eq!(report["token"]["type"], "USER");
    assert_eq!(report["token"]["kind"], "long_lived_user");
    assert!(
        report["token"]["expires_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(report["identity"], serde_json::Value::Null);
    // Alone, a dead token cannot inspect itself: `/me` says why.
    let alone = Test::against(&sandbox)
        .dotenv(&sandbox, "expired", false)
        .args(["check", "--json"])
        .run();
    assert_eq!(alone.json()["token"]["type"], serde_json::Value::Null);
    assert_eq!(alone.codes(), ["token_expired"]);
}

#[test]
fn the_report_holds_the_design_fields() {
    let sandbox = sandbox();
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .args(["check", "--json"])
        .run();
    let report = out.json();
    let token = &report["token"];
    assert!(token["fingerprint"].as_str().unwrap().contains("sha256:"));
    assert_eq!(token["type"], "SYSTEM_USER");
    assert_eq!(token["app_id"], sandbox.app().id.to_string());
    assert_eq!(token["embedded_app_id"], sandbox.app().id.to_string());
    assert_eq!(token["application"], "Permatoken Sandbox");
    assert_eq!(token["never_expires"], true);
    assert_eq!(token["expires_at"], serde_json::Value::Null);
    assert_eq!(token["data_access_expires_at"], serde_json::Value::Null);
    assert!(token["issued_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(token["scopes"].as_array().unwrap().len(), 3);
    assert_eq!(token["missing_scopes"], serde_json::json!([]));
    // WhatsApp scopes are granted on the sandbox's accounts, all but one.
    let granted = permatoken_sandbox::granted_accounts();
    assert_eq!(granted.len(), permatoken_sandbox::ACCOUNTS.len() - 1);
    assert_eq!(
        token["granular_scopes"][0]["target_ids"],
        serde_json::json!(granted)
    );
    assert_eq!(
        token["granular_scopes"][2]["target_ids"],
        serde_json::Value::Null
    );
    assert_eq!(report["identity"]["name"], "Sandbox System User");
    assert!(report["identity"]["id"].as_str().unwrap().len() >= 10);
}

#[test]
fn another_apps_token_is_named_as_such() {
    let sandbox = sandbox();
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "other-app", true)
        .args(["check", "--json"])
        .run();
    // Its own app could inspect it; ours may not, and the token itself may not either.
    out.assert_code(3);
    let report = out.json();
    assert_eq!(out.codes(), ["app_mismatch", "app_token_required"]);
    assert_eq!(
        report["token"]["app_id"],
        sandbox.other_app().id.to_string()
    );
    assert_eq!(report["token"]["valid"], true);
    let message = report["findings"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&sandbox.other_app().id.to_string())
            && message.contains(&sandbox.app().id.to_string()),
        "{message}"
    );
    // No puzzling proof error: the other app's token was asked about without our proof and app token.
    for r in sandbox.requests() {
        assert_eq!(r.query_param("appsecret_proof"), None, "{}", r.target());
        assert!(!r.bearer().unwrap().contains('|'), "{}", r.target());
    }
    let fix = report["findings"][1]["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("of app {}", sandbox.other_app().id)),
        "{fix}"
    );
    // Without app credentials there is nothing to mismatch, and still nobody to inspect it.
    let alone = Test::against(&sandbox)
        .dotenv(&sandbox, "other-app", false)
        .args(["check", "--json"])
        .run();
    alone.assert_code(3);
    assert_eq!(alone.codes(), ["app_token_required"]);
}

#[test]
fn every_call_carries_a_right_proof_and_no_secret_in_its_url() {
    let sandbox = sandbox();
    let secret = sandbox.app_secret().clone();
    for scenario in ["system-user", "expired", "missing-permission"] {
        Test::against(&sandbox)
            .dotenv(&sandbox, scenario, true)
            .args(["check"])
            .run();
    }
    let requests = sandbox.requests();
    assert_eq!(requests.len(), 6, "two calls per check, none repeated");
    for r in &requests {
        let url = r.target();
        assert!(
            !url.contains(secret.expose_secret()),
            "app secret in a URL: {url}"
        );
        assert_eq!(
            r.query_param("access_token"),
            None,
            "tokens travel in the header: {url}"
        );
        let bearer = r.bearer().expect("every call has an Authorization header");
        if r.path.ends_with("/debug_token") {
            assert_eq!(
                bearer,
                format!("{}|{}", sandbox.app().id, secret.expose_secret()),
                "debug_token asks with the app token"
            );
            assert_eq!(
                r.query_param("appsecret_proof"),
                None,
                "no proof with the app token"
            );
            let input = r.query_param("input_token").unwrap();
            // The one token in a URL is `input_token`, and only there.
            assert_eq!(url.matches(input.as_str()).count(), 1);
        } else {
            assert!(r.path.starts_with("/v26.0/"), "the default version: {url}");
            let proof = r
                .query_param("appsecret_proof")
                .expect("a proof on every user-token call");
            assert_eq!(proof, expected_proof(&secret, bearer), "{url}");
            assert!(!url.contains(bearer), "the token is not in the URL: {url}");
        }
    }
}

fn expected_proof(secret: &AppSecret, token: &str) -> String {
    secret.appsecret_proof(&AccessToken::new(token))
}

#[test]
fn without_app_credentials_a_system_user_token_is_unknown_and_says_which_variables() {
    let sandbox = sandbox();
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", false)
        .args(["check", "--json"])
        .run();
    out.assert_code(3);
    let report = out.json();
    assert_eq!(report["status"], "unknown");
    let token = &report["token"];
    // What `/me` and the token itself tell: it works, who it is, which app it belongs to.
    assert_eq!(token["valid"], true);
    assert_eq!(report["identity"]["name"], "Sandbox System User");
    assert_eq!(token["app_id"], sandbox.app().id.to_string());
    // What only the app may see is null, not guessed.
    for field in [
        "type",
        "expires_at",
        "issued_at",
        "never_expires",
        "scopes",
        "data_access_expires_at",
    ] {
        assert_eq!(token[field], serde_json::Value::Null, "{field}");
    }
    assert_eq!(token["kind"], "unknown");
    assert_eq!(out.codes(), ["app_token_required"]);
    let finding = &report["findings"][0];
    assert_eq!(finding["severity"], "warning");
    let message = finding["message"].as_str().unwrap();
    assert!(message.contains("the token works"), "{message}");
    assert!(message.contains("developer of that app"), "{message}");
    assert!(
        !message.contains("system user"),
        "also said to users: {message}"
    );
    let fix = finding["fix"].as_str().unwrap();
    for word in [
        "`FACEBOOK_APP_ID`",
        "`FACEBOOK_APP_SECRET`",
        "App Dashboard → Settings → Basic",
        ".env",
    ] {
        assert!(fix.contains(word), "`{word}` not in {fix}");
    }
    assert!(!fix.contains("--graph-url"), "{fix}");
    let secret = sandbox.token("system-user").unwrap();
    assert!(
        !out.stdout.contains(secret.expose_secret())
            && !out.stderr.contains(secret.expose_secret())
    );
    // It asked as itself, without a proof (no secret), and was refused as the real API refuses.
    for r in sandbox.requests() {
        assert_eq!(r.bearer(), Some(secret.expose_secret()));
        assert_eq!(
            r.query_param("appsecret_proof"),
            None,
            "no secret, no proof"
        );
    }

    // A user token whose person develops the app may inspect itself: a full report.
    let user = Test::against(&sandbox)
        .dotenv(&sandbox, "user-60d", false)
        .args(["check", "--json"])
        .run();
    user.assert_code(0);
    assert_eq!(user.json()["token"]["type"], "USER");
}

#[test]
fn warn_and_crit_days_move_the_verdict() {
    let sandbox = sandbox();
    let run = |args: &[&str]| {
        Test::against(&sandbox)
            .dotenv(&sandbox, "user-60d", true)
            .args(["check"])
            .args(args)
            .run()
            .code
    };
    assert_eq!(run(&[]), 0);
    assert_eq!(run(&["--warn-days", "60"]), 1);
    assert_eq!(run(&["--warn-days", "60", "--crit-days", "58"]), 2);
}

#[test]
fn all_checks_the_primary_and_every_backup() {
    let sandbox = sandbox();
    let token = |s: &str| sandbox.token(s).unwrap().expose_secret().to_owned();
    let env = format!(
        "WHATSAPP_ACCESS_TOKEN={}\nWHATSAPP_ACCESS_TOKEN_BACKUP={}\nWHATSAPP_ACCESS_TOKEN_BACKUP_2={}\n{}",
        token("system-user"),
        token("user-expiring"),
        token("expired"),
        crate::harness::app_lines(&sandbox)
    );
    let out = Test::against(&sandbox)
        .write(".env", &env)
        .args(["check", "--all", "--json"])
        .run();
    out.assert_code(2);
    let report = out.json();
    assert_eq!(report["status"], "critical");
    let vars: Vec<&str> = report["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"]["variable"].as_str().unwrap())
        .collect();
    assert_eq!(
        vars,
        [
            "WHATSAPP_ACCESS_TOKEN",
            "WHATSAPP_ACCESS_TOKEN_BACKUP",
            "WHATSAPP_ACCESS_TOKEN_BACKUP_2"
        ]
    );
    let statuses: Vec<&str> = report["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["ok", "warning", "critical"]);
    // Without --all only the primary is checked.
    Test::against(&sandbox)
        .write(".env", &env)
        .args(["check"])
        .run()
        .assert_code(0);
}

#[test]
fn the_sandbox_flag_needs_nothing_else() {
    let out = Test::new()
        .args(["check", "--sandbox"])
        .env("NO_COLOR", "1")
        .run();
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("from the built-in sandbox (scenario `system-user`)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("OK (exit 0)"));
    // The README's first command: a full report, the sandbox's app credentials passed along.
    assert!(out.stdout.contains("expires      never"), "{}", out.stdout);
    let out = Test::new().args(["check", "--sandbox", "--json"]).run();
    out.assert_code(0);
    assert_eq!(out.json()["token"]["kind"], "system_user_permanent");
    assert_eq!(out.codes(), Vec::<String>::new());
    let out = Test::new()
        .args([
            "check",
            "--sandbox",
            "--scenario",
            "password-changed",
            "--json",
        ])
        .run();
    out.assert_code(2);
    assert_eq!(out.codes(), ["token_invalidated"]);
    let out = Test::new()
        .args(["check", "--sandbox", "--all", "--json"])
        .run();
    out.assert_code(2);
    assert_eq!(
        out.json()["tokens"].as_array().unwrap().len(),
        permatoken_sandbox::SCENARIOS.len()
    );
}

#[test]
fn a_moved_clock_ages_the_tokens() {
    let sandbox = sandbox();
    let run = || {
        Test::against(&sandbox)
            .dotenv(&sandbox, "user-60d", true)
            .args(["check", "--json"])
            .run()
    };
    assert_eq!(run().code, 0);
    sandbox.advance_clock(std::time::Duration::from_secs(50 * 86_400));
    assert_eq!(run().codes(), ["token_expiring"]);
    sandbox.advance_clock(std::time::Duration::from_secs(8 * 86_400));
    assert_eq!(run().codes(), ["token_expired"]);
}

/// A private key's lines, made at run time: what a `--token-file` pointed at the wrong file holds.
fn private_key() -> String {
    let body = "PERMATOKENTESTMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ".repeat(3);
    format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
}

#[test]
fn a_file_that_holds_no_token_is_sent_nowhere_and_said_so() {
    let sandbox = sandbox();
    let token = crate::harness::token_of(&sandbox, "system-user");
    let json = format!("{{\"access_token\":\"{token}\"}}");
    // A private key, a path, and (from an env file) a JSON text holding a token.
    let cases = [
        (
            "server.key",
            private_key(),
            vec!["--token-file", "server.key"],
            "server.key",
        ),
        (
            "token",
            "/etc/PERMATOKENTEST/token\n".to_owned(),
            vec!["--token-file", "token"],
            "token does not hold a Meta access token",
        ),
        (
            "service.env",
            format!("WHATSAPP_ACCESS_TOKEN='{json}'\n{}", app_lines(&sandbox)),
            vec!["--env-file", "service.env"],
            "`WHATSAPP_ACCESS_TOKEN` in service.env does not hold a Meta access token",
        ),
    ];
    for (file, content, args, named) in cases {
        let out = Test::against(&sandbox)
            .write(".env", &app_lines(&sandbox))
            .write(file, &content)
            .args(["check", "--json"])
            .args(args)
            .run();
        // Not dead by Meta's word: unknown, as a bad configuration is (DESIGN §4).
        out.assert_code(3);
        let object = out.json();
        assert_eq!(object["status"], "unknown", "{file}");
        assert_eq!(object["error"]["code"], "token_malformed", "{file}");
        let message = object["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{message}");
        for shown in [&out.stdout, &out.stderr] {
            assert!(!shown.contains("PERMATOKENTEST"), "{shown}");
            assert!(!shown.contains("PRIVATE KEY"), "{shown}");
            assert!(!shown.contains(&token[..40]), "{shown}");
        }
    }
    // The commands that renew read the token the same way: nothing is asked of Meta for it.
    for command in ["exchange", "refresh"] {
        let out = Test::against(&sandbox)
            .write(".env", &app_lines(&sandbox))
            .write("token", "/etc/PERMATOKENTEST/token\n")
            .args([
                command,
                "--json",
                "--token-file",
                "token",
                "--output",
                "out",
            ])
            .run();
        out.assert_code(3);
        assert_eq!(out.json()["error"]["code"], "token_malformed", "{command}");
        assert!(!out.stdout.contains("PERMATOKENTEST"), "{}", out.stdout);
    }
    let out = Test::against(&sandbox)
        .write(".env", &app_lines(&sandbox))
        .write("token", "/etc/PERMATOKENTEST/token\n")
        .args(["check", "--token-file", "token"])
        .run();
    out.assert_code(3);
    assert!(
        out.stderr
            .contains("hint: this file does not hold a Meta access token"),
        "{}",
        out.stderr
    );
    assert!(
        sandbox.requests().is_empty(),
        "sent to the sandbox: {:?}",
        sandbox
            .requests()
            .iter()
            .map(|r| r.target())
            .collect::<Vec<_>>()
    );
}
