//! doctor and send-test against the sandbox and real local HTTPS webhook receivers: every item in
//! each of its states, asserted on exit code, JSON and the fix text.

use permatoken_sandbox::{
    ACCOUNTS, Behaviour, Certificate, Faults, PHONES, Running, Webhook, WebhookOptions,
};
use serde_json::Value;

use crate::harness::{Outcome, Test, app_lines, sandbox, token_of};

const VERIFY: &str = "PERMATOKENTEST-verify-token";

struct Setup<'a> {
    sandbox: &'a Running,
    scenario: &'a str,
    waba: Option<&'a str>,
    phone: Option<&'a str>,
    webhook: Option<String>,
    verify: bool,
    /// `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET` in the `.env`.
    app: bool,
}

impl<'a> Setup<'a> {
    fn healthy(sandbox: &'a Running, webhook: &Webhook) -> Self {
        Self {
            sandbox,
            scenario: "system-user",
            waba: Some(ACCOUNTS[0].id),
            phone: Some(PHONES[0].id),
            webhook: Some(webhook.url()),
            verify: true,
            app: true,
        }
    }

    fn env(&self) -> String {
        let mut text = format!(
            "WHATSAPP_ACCESS_TOKEN={}\n",
            token_of(self.sandbox, self.scenario)
        );
        if self.app {
            text.push_str(&app_lines(self.sandbox));
        }
        if let Some(waba) = self.waba {
            text.push_str(&format!("WHATSAPP_BUSINESS_ACCOUNT_ID={waba}\n"));
        }
        if let Some(phone) = self.phone {
            text.push_str(&format!("WHATSAPP_PHONE_NUMBER_ID={phone}\n"));
        }
        if let Some(url) = &self.webhook {
            text.push_str(&format!("WHATSAPP_WEBHOOK_URL={url}\n"));
        }
        if self.verify {
            text.push_str(&format!("WHATSAPP_WEBHOOK_VERIFY_TOKEN={VERIFY}\n"));
        }
        text
    }

    fn run(&self, ca: Option<&Webhook>, args: &[&str]) -> Outcome {
        let mut test = Test::against(self.sandbox).write(".env", &self.env());
        let mut all = vec!["doctor", "--json"];
        if let Some(webhook) = ca {
            test = test.write("ca.pem", webhook.ca_pem());
            all.extend(["--ca-file", "ca.pem"]);
        }
        all.extend(args);
        test.args(all).run()
    }
}

fn receiver(sandbox: &Running, certificate: Certificate, behaviour: Behaviour) -> Webhook {
    Webhook::start_background(WebhookOptions {
        certificate,
        behaviour,
        verify_token: VERIFY.to_owned(),
        app_secret: sandbox.app_secret().expose_secret().to_owned(),
    })
    .expect("a local HTTPS receiver")
}

fn item<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no item {id}"))
}

/// The item's status, evidence and fix, as one text to look for words in.
fn said(report: &Value, id: &str) -> (String, String) {
    let i = item(report, id);
    let evidence: Vec<&str> = i["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    (
        i["status"].as_str().unwrap().to_owned(),
        format!(
            "{} | fix: {}",
            evidence.join(" | "),
            i["fix"].as_str().unwrap_or("")
        ),
    )
}

#[track_caller]
fn expect(report: &Value, id: &str, status: &str, words: &[&str]) {
    let (got, text) = said(report, id);
    assert_eq!(got, status, "{id}: {text}");
    for w in words {
        assert!(text.contains(w), "{id}: `{w}` not in: {text}");
    }
}

#[test]
fn a_healthy_setup_is_all_ok_and_items_ids_are_stable() {
    let sandbox = sandbox();
    let webhook = receiver(&sandbox, Certificate::Good, Behaviour::Correct);
    let out = Setup::healthy(&sandbox, &webhook).run(Some(&webhook), &["--allow-private-webhook"]);
    out.assert_code(0);
    let report = out.json();
    assert_eq!(report["status"], "ok");
    let ids: Vec<&str> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "token",
            "business_verification",
            "phone_number",
            "app_subscription",
            "webhook",
            "rate_limits"
        ]
    );
    for i in report["items"].as_array().unwrap() {
        assert_eq!(i["status"], "ok", "{i:#}");
        assert!(i["title"].is_string() && i["evidence"].is_array());
    }
    expect(
        &report,
        "webhook",
        "ok",
        &[
            "allowed by --allow-private-webhook",
            "exactly the challenge",
            "signed notification accepted",
            "wrong signature was refused",
        ],
    );
    expect(
        &report,
        "phone_number",
        "ok",
        &["10,000 unique users a day", "AVAILABLE"],
    );
    // Without the flag, the loopback address fails: Meta could not reach it.
    let out = Setup::healthy(&sandbox, &webhook).run(Some(&webhook), &[]);
    out.assert_code(2);
    expect(
        &out.json(),
        "webhook",
        "critical",
        &["cannot reach", "public address"],
    );
}

#[test]
fn missing_inputs_are_skipped_with_the_variable_to_set() {
    let sandbox = sandbox();
    let setup = Setup {
        sandbox: &sandbox,
        scenario: "system-user",
        waba: None,
        phone: None,
        webhook: None,
        verify: false,
        app: true,
    };
    let out = setup.run(None, &[]);
    out.assert_code(0);
    let report = out.json();
    expect(
        &report,
        "business_verification",
        "skipped",
        &["WHATSAPP_BUSINESS_ACCOUNT_ID"],
    );
    expect(
        &report,
        "phone_number",
        "skipped",
        &["WHATSAPP_PHONE_NUMBER_ID"],
    );
    expect(
        &report,
        "app_subscription",
        "skipped",
        &["WHATSAPP_BUSINESS_ACCOUNT_ID"],
    );
    expect(&report, "webhook", "skipped", &["WHATSAPP_WEBHOOK_URL"]);
    expect(&report, "token", "ok", &["never expires"]);
}

#[test]
fn token_states() {
    let sandbox = sandbox();
    let webhook = receiver(&sandbox, Certificate::Good, Behaviour::Correct);
    let cases = [
        (
            "system-user-60d",
            ACCOUNTS[0].id,
            1,
            "warning",
            &["60-day", "60 days"][..],
        ),
        (
            "missing-permission",
            ACCOUNTS[0].id,
            2,
            "critical",
            &["lacks whatsapp_business_messaging"][..],
        ),
        ("expired", ACCOUNTS[0].id, 2, "critical", &["expired"][..]),
        (
            "system-user",
            ACCOUNTS[3].id,
            2,
            "critical",
            &["not on `WHATSAPP_BUSINESS_ACCOUNT_ID`", "Add assets"][..],
        ),
        (
            "user-no-expiry",
            ACCOUNTS[0].id,
            1,
            "warning",
            &["does not expire by time", "data access lapses 20"][..],
        ),
    ];
    for (scenario, waba, code, status, words) in cases {
        let setup = Setup {
            scenario,
            waba: Some(waba),
            ..Setup::healthy(&sandbox, &webhook)
        };
        let out = setup.run(Some(&webhook), &["--allow-private-webhook"]);
        out.assert_code(code);
        expect(&out.json(), "token", status, words);
    }
}

#[test]
fn without_app_credentials_the_token_item_is_unknown_and_names_them() {
    let sandbox = sandbox();
    let webhook = receiver(&sandbox, Certificate::Good, Behaviour::Correct);
    let setup = Setup {
        app: false,
        ..Setup::healthy(&sandbox, &webhook)
    };
    let out = setup.run(Some(&webhook), &["--allow-private-webhook"]);
    out.assert_code(3);
    let report = out.json();
    expect(
        &report,
        "token",
        "unknown",
        &[
            "the token works",
            "only to its app",
            "`FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET`",
            "Settings → Basic",
        ],
    );
    let (_, text) = said(&report, "token");
    assert!(!text.contains("--graph-url"), "{text}");
    assert!(!out.stdout.contains(&token_of(&sandbox, "system-user")));
}

#[test]
fn business_states() {
    let sandbox = sandbox();
    let webhook = receiver(&sandbox, Certificate::Good, Behaviour::Correct);
    let setup = Setup {
        waba: Some(ACCOUNTS[2].id),
        phone: None,
        ..Setup::healthy(&sandbox, &webhook)
    };
    let out = setup.run(Some(&webhook), &["--allow-private-webhook"]);
    out.assert_code(1);
    expect(
        &out.json(),
        "business_verification",
        "warning",
        &["`not_verified`", "Security Center"],
    );
    // Without business_management the business cannot be read: the account's field is, and said so.
    let setup = Setup {
        scenario: "no-business-management",
        ..Setup::healthy(&sandbox, &webhook)
    };
    let out = setup.run(Some(&webhook), &["--allow-private-webhook"]);
    expect(
        &out.json(),
        "business_verification",
        "ok",
        &["business_verification_status", "no business_management"],
    );
}

#[test]
fn phone_number_states() {
    let sandbox = sandbox();
    let webhook = receiver(&sandbox, Certificate::Good, Behaviour::Correct);
    let cases = [
        (
            PHONES[1].id,
            1,
            "warning",
            &["LIMITED", "141010", "business verification"][..],
        ),
        (
            PHONES[2].id,
            2,
            "critical",
            &["BLOCKED", "141014", "Request a review"][..],
        ),
        (
            PHONES[3].id,
            2,
            "critical",
            &["status DISCONNECTED", "must be CONNECTED"][..],
        ),
        (PHONES[4].id, 1, "warning", &["NOT_VERIFIED", "Verify"][..]),
        (
            PHONES[5].id,
            2,
            "critical",
            &["platform ON_PREMISE", "Cloud API"][..],
        ),
        (PHONES[6].id, 0, "ok", &["messaging limit not sent"][..]),
        // A status no list of Meta's names is shown as it is and judged unknown, never critical.
        (
            PHONES[7].id,
            3,
            "unknown",
            &["status SOMETHING_NEW", "does not know this status"][..],
        ),
    ];
    for (phone, code, status, words) in cases {
        let setup = Setup {
            phone: Some(phone),
            ..Setup::healthy(&sandbox, &webhook)
        };
        let out = setup.run(Some(&webhook), &["--allow-private-webhook"]);
        out.assert_code(code);
        expect(&out.json(), "phone_number", status, words);
        assert!(!out.stdout.contains(&token_of(&sandbox, "system-user")));
    }
    // `messaging_limit_tier` exists up to v23.0: there, the number that sends no limit from v24.0
    // shows the deprecated tier, and every other number the same tier as it shows from v24.0.
    for (phone, words) in [
        (
            PHONES[6].id,
            &["deprecated messaging_limit_tier", "1,000 unique users"][..],
        ),
        (
            PHONES[0].id,
            &["deprecated messaging_limit_tier", "10,000 unique users"][..],
        ),
    ] {
        let setup = Setup {
            phone: Some(phone),
            ..Setup::healthy(&sandbox, &webhook)
        };
        let out = setup.run(
            Some(&webhook),
            &["--allow-private-webhook", "--graph-version", "v23.0"],
        );
        out.assert_code(0);
        expect(&out.json(), "phone_number", "ok", words);
    }
}

#[test]
fn an_unsubscribed_app_is_critical_and_fix_subscribes_it() {
    let sandbox = sandbox();
    let webhook = receiver(&sandbox, Certificate::Good, Behaviour::Correct);
    let setup = Setup {
        waba: Some(ACCOUNTS[1].id),
        ..Setup::healthy(&sandbox, &webhook)
    };
    let out = setup.run(Some(&webhook), &["--allow-private-webhook"]);
    out.assert_code(2);
    expect(
        &out.json(),
        "app_subscription",
        "critical",
        &["no app is subscribed", "--fix"],
    );
    // Without a terminal to ask, --fix needs --yes and changes nothing.
    let out = setup.run(Some(&webhook), &["--allow-private-webhook", "--fix"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert!(sandbox.requests().iter().all(|r| r.method == "GET"));
    let out = setup.run(
        Some(&webhook),
        &["--allow-private-webhook", "--fix", "--yes"],
    );
    out.assert_code(0);
    expect(&out.json(), "app_subscription", "ok", &["subscribed app"]);
    let posts: Vec<_> = sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
    assert!(
        posts[0]
            .path
            .ends_with(&format!("/{}/subscribed_apps", ACCOUNTS[1].id))
    );
}

#[test]
fn webhook_states_against_real_https_receivers() {
    let sandbox = sandbox();
    let cases = [
        (
            Certificate::Expired,
            Behaviour::Correct,
            2,
            "critical",
            &["has expired", "renew"][..],
        ),
        (
            Certificate::WrongHost,
            Behaviour::Correct,
            2,
            "critical",
            &["not for 127.0.0.1", "SAN"][..],
        ),
        (
            Certificate::SelfSigned,
            Behaviour::Correct,
            2,
            "critical",
            &["self-signed", "Let's Encrypt"][..],
        ),
        (
            Certificate::ExpiringSoon,
            Behaviour::Correct,
            1,
            "warning",
            &["expires in 4 days", "renew"][..],
        ),
        (
            Certificate::Good,
            Behaviour::WrongChallenge,
            2,
            "critical",
            &["\"OK\", not the challenge", "hub.challenge"][..],
        ),
        (
            Certificate::Good,
            Behaviour::AcceptsBadSignatures,
            1,
            "warning",
            &["wrong signature was accepted", "forge"][..],
        ),
    ];
    for (certificate, behaviour, code, status, words) in cases {
        let webhook = receiver(&sandbox, certificate, behaviour);
        let out =
            Setup::healthy(&sandbox, &webhook).run(Some(&webhook), &["--allow-private-webhook"]);
        out.assert_code(code);
        expect(&out.json(), "webhook", status, words);
    }
    // The run's CA is not trusted without --ca-file: the certificate is then refused.
    let webhook = receiver(&sandbox, Certificate::Good, Behaviour::Correct);
    let out = Setup::healthy(&sandbox, &webhook).run(None, &["--allow-private-webhook"]);
    expect(
        &out.json(),
        "webhook",
        "critical",
        &["self-signed or from a CA no one trusts"],
    );
    // Plain http is refused before anything is sent.
    let setup = Setup {
        webhook: Some("http://127.0.0.1:9/webhook".into()),
        ..Setup::healthy(&sandbox, &webhook)
    };
    expect(
        &setup.run(None, &["--allow-private-webhook"]).json(),
        "webhook",
        "critical",
        &["not https://", "only https://"],
    );
    // No verify token: the handshake is not tried, and the fix names the variable.
    let setup = Setup {
        verify: false,
        ..Setup::healthy(&sandbox, &webhook)
    };
    expect(
        &setup
            .run(Some(&webhook), &["--allow-private-webhook"])
            .json(),
        "webhook",
        "warning",
        &["WHATSAPP_WEBHOOK_VERIFY_TOKEN"],
    );
    // --no-webhook-post sends nothing.
    let out = Setup::healthy(&sandbox, &webhook).run(
        Some(&webhook),
        &["--allow-private-webhook", "--no-webhook-post"],
    );
    expect(&out.json(), "webhook", "ok", &["notifications not sent"]);
}

#[test]
fn rate_limit_usage_states() {
    let sandbox = sandbox();
    let webhook = receiver(&sandbox, Certificate::Good, Behaviour::Correct);
    for (percent, code, status, words) in [
        (80, 1, "warning", &["80 % used", "fewer calls"][..]),
        (100, 2, "critical", &["100 % used", "spent"][..]),
    ] {
        sandbox.set_faults(Faults {
            app_usage_percent: Some(percent),
            ..Faults::default()
        });
        let out =
            Setup::healthy(&sandbox, &webhook).run(Some(&webhook), &["--allow-private-webhook"]);
        out.assert_code(code);
        expect(&out.json(), "rate_limits", status, words);
    }
}

#[test]
fn an_outage_is_unknown() {
    let sandbox = sandbox();
    let webhook = receiver(&sandbox, Certificate::Good, Behaviour::Correct);
    sandbox.set_faults(Faults {
        server_errors: 10_000,
        ..Faults::default()
    });
    let out = Setup::healthy(&sandbox, &webhook).run(Some(&webhook), &["--allow-private-webhook"]);
    out.assert_code(3);
    let report = out.json();
    assert_eq!(report["status"], "unknown");
    expect(&report, "phone_number", "unknown", &["run again later"]);
    expect(&report, "webhook", "ok", &[]);
}

#[test]
fn the_human_checklist_marks_every_item() {
    let sandbox = sandbox();
    let webhook = receiver(&sandbox, Certificate::ExpiringSoon, Behaviour::Correct);
    let setup = Setup {
        phone: None,
        ..Setup::healthy(&sandbox, &webhook)
    };
    let out = Test::against(&sandbox)
        .write(".env", &setup.env())
        .write("ca.pem", webhook.ca_pem())
        .env("NO_COLOR", "1")
        .args(["doctor", "--ca-file", "ca.pem", "--allow-private-webhook"])
        .run();
    out.assert_code(1);
    for words in [
        "✓ Access token",
        "– Phone number",
        "⚠ Webhook URL",
        "fix: renew the certificate",
        "WARNING (exit 1)",
    ] {
        assert!(
            out.stdout.contains(words),
            "`{words}` not in:\n{}",
            out.stdout
        );
    }
}

#[test]
fn send_test_sends_the_template_and_explains_refusals() {
    let sandbox = sandbox();
    let env = |phone: &str| {
        format!(
            "WHATSAPP_ACCESS_TOKEN={}\n{}WHATSAPP_PHONE_NUMBER_ID={phone}\n",
            token_of(&sandbox, "system-user"),
            app_lines(&sandbox)
        )
    };
    let send = |phone: &str, args: &[&str]| {
        Test::against(&sandbox)
            .write(".env", &env(phone))
            .args(["send-test", "--json"])
            .args(args)
            .run()
    };

    let out = send(PHONES[0].id, &["--to", "+1 650-555-0100"]);
    out.assert_code(0);
    assert_eq!(out.json()["wa_id"], "16505550100");
    assert!(
        out.json()["message_id"]
            .as_str()
            .unwrap()
            .starts_with("wamid.")
    );
    let sent = sandbox
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    let body: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(body["to"], "16505550100");
    assert_eq!(body["template"]["name"], "hello_world");
    assert_eq!(body["template"]["language"]["code"], "en_US");
    assert!(sent.query_param("appsecret_proof").is_some());

    let out = send(PHONES[0].id, &["--to", "+1 650-555-0199"]);
    out.assert_code(2);
    assert_eq!(out.json()["error"]["code"], 131030);
    assert!(out.stderr.contains("API Setup → \"To\""), "{}", out.stderr);
    let out = send(
        PHONES[0].id,
        &["--to", "+16505550100", "--template", "order_update"],
    );
    out.assert_code(2);
    assert_eq!(out.json()["error"]["code"], 132001);
    let out = send(PHONES[2].id, &["--to", "+16505550100"]);
    out.assert_code(2);
    assert!(out.stderr.contains("locked"), "{}", out.stderr);

    let before = sandbox.requests().len();
    let out = send(PHONES[0].id, &["--to", "07700 900123"]);
    out.assert_code(3);
    assert!(out.stderr.contains("country code"), "{}", out.stderr);
    assert_eq!(
        sandbox.requests().len(),
        before,
        "nothing sent for a bad number"
    );
    let out = Test::against(&sandbox)
        .write(
            ".env",
            &format!(
                "WHATSAPP_ACCESS_TOKEN={}\n",
                token_of(&sandbox, "system-user")
            ),
        )
        .args(["send-test", "--to", "+16505550100"])
        .run();
    out.assert_code(3);
    assert!(
        out.stderr.contains("WHATSAPP_PHONE_NUMBER_ID"),
        "{}",
        out.stderr
    );
}
