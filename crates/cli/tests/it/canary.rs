//! The canary: run every path of `check` (every scenario, human and JSON output, `RUST_LOG=trace`,
//! error paths) and find no secret anywhere in what is printed.

use permatoken_sandbox::{Faults, SCENARIOS};

use crate::harness::{Outcome, Test, app_lines, sandbox};

fn assert_clean(out: &Outcome, secrets: &[String], context: &str) {
    for secret in secrets {
        for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked on {name} ({context})"
            );
            // Half a token is a leak too; the fingerprint shows 4 + 3 characters.
            let half = &secret[..secret.len() / 2];
            assert!(
                !text.contains(half),
                "half a secret leaked on {name} ({context})"
            );
        }
    }
}

#[test]
fn no_secret_is_ever_printed() {
    let sandbox = sandbox();
    let mut secrets: Vec<String> = SCENARIOS
        .iter()
        .map(|s| sandbox.token(s.name).unwrap().expose_secret().to_owned())
        .collect();
    secrets.push(sandbox.app_secret().expose_secret().to_owned());
    let mut runs = 0;
    for scenario in SCENARIOS {
        for with_app in [true, false] {
            for output in [
                &["check"][..],
                &["check", "--json"][..],
                &["check", "-vv"][..],
                &["check", "--all", "--json"][..],
            ] {
                let out = Test::against(&sandbox)
                    .dotenv(&sandbox, scenario.name, with_app)
                    .env("RUST_LOG", "trace")
                    .args(output)
                    .run();
                assert!(
                    !out.stderr.is_empty(),
                    "trace logging is on, so the canary sees it"
                );
                assert_clean(
                    &out,
                    &secrets,
                    &format!("{} {output:?} app={with_app}", scenario.name),
                );
                runs += 1;
            }
        }
    }
    // Error paths: outages, rate limits, cut-short answers, a wrong secret, nothing listening.
    let fault_sets = [
        Faults {
            server_errors: 1000,
            ..Faults::default()
        },
        Faults {
            rate_limits: 1000,
            regain_minutes: Some(9),
            ..Faults::default()
        },
        Faults {
            truncate: 1000,
            ..Faults::default()
        },
    ];
    for faults in fault_sets {
        sandbox.set_faults(faults);
        for args in [&["check"][..], &["check", "--json"][..]] {
            let out = Test::against(&sandbox)
                .dotenv(&sandbox, "system-user", true)
                .env("RUST_LOG", "trace")
                .args(args)
                .run();
            assert_eq!(out.code, 3);
            assert_clean(&out, &secrets, "faults");
            runs += 1;
        }
    }
    sandbox.set_faults(Faults::default());
    let token = &secrets[0];
    let wrong_secret = format!("{:0>32}", "badc0ffee");
    let env = format!(
        "WHATSAPP_ACCESS_TOKEN={token}\nFACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={wrong_secret}\n",
        sandbox.app().id
    );
    let mut with_wrong = secrets.clone();
    with_wrong.push(wrong_secret.clone());
    let out = Test::against(&sandbox)
        .write(".env", &env)
        .env("RUST_LOG", "trace")
        .args(["check"])
        .run();
    assert_clean(&out, &with_wrong, "wrong secret");
    let out = Test::new()
        .write(
            ".env",
            &format!("WHATSAPP_ACCESS_TOKEN={token}\n{}", app_lines(&sandbox)),
        )
        .env("PERMATOKEN_GRAPH_URL", "http://127.0.0.1:9")
        .env("RUST_LOG", "trace")
        .args(["check", "--json"])
        .run();
    assert_eq!(out.code, 3);
    assert_clean(&out, &secrets, "nothing listening");
    let out = Test::new()
        .write(
            ".env",
            &format!(
                "WHATSAPP_ACCESS_TOKEN=\"{token}\nFACEBOOK_APP_SECRET={}\n",
                sandbox.app_secret().expose_secret()
            ),
        )
        .env("RUST_LOG", "trace")
        .args(["check"])
        .run();
    assert_eq!(out.code, 3, "an unclosed quote");
    assert_clean(&out, &secrets, "parse error");
    assert!(runs > 100);
}

#[test]
fn exchange_mint_and_refresh_print_no_secret_either() {
    let sandbox = sandbox();
    let id = sandbox.system_user_id().to_owned();
    let runs: [(&str, Vec<&str>); 5] = [
        ("short-lived", vec!["exchange"]),
        ("short-lived", vec!["exchange", "--json", "--dry-run"]),
        ("admin", vec!["mint", "--system-user", &id]),
        ("expired", vec!["refresh", "--failover", "--json"]),
        ("user-expiring", vec!["refresh", "--try-user-token"]),
    ];
    for (scenario, args) in runs {
        let old = sandbox.token(scenario).unwrap().expose_secret().to_owned();
        let env = format!(
            "WHATSAPP_ACCESS_TOKEN={old}\nWHATSAPP_ACCESS_TOKEN_BACKUP={}\n{}",
            sandbox.token("system-user").unwrap().expose_secret(),
            app_lines(&sandbox)
        );
        let (out, dir) = Test::against(&sandbox)
            .write(".env", &env)
            .env("RUST_LOG", "trace")
            .args(&args)
            .run_keep();
        let now = std::fs::read_to_string(dir.path().join(".env")).unwrap();
        let new = permatoken_dotenv::parse(&now)
            .unwrap()
            .get("WHATSAPP_ACCESS_TOKEN")
            .unwrap()
            .value
            .to_owned();
        let secrets = [old, new, sandbox.app_secret().expose_secret().to_owned()];
        assert_clean(&out, &secrets, &format!("{args:?}"));
    }
}

#[test]
fn doctor_and_send_test_print_no_secret_either() {
    use permatoken_sandbox::{ACCOUNTS, Behaviour, Certificate, PHONES, Webhook, WebhookOptions};
    let sandbox = sandbox();
    let verify = "PERMATOKENTEST-canary-verify-token-value".to_owned();
    let webhook = Webhook::start_background(WebhookOptions {
        certificate: Certificate::Good,
        behaviour: Behaviour::WrongChallenge,
        verify_token: verify.clone(),
        app_secret: sandbox.app_secret().expose_secret().to_owned(),
    })
    .unwrap();
    let token = sandbox
        .token("system-user")
        .unwrap()
        .expose_secret()
        .to_owned();
    let env = format!(
        "WHATSAPP_ACCESS_TOKEN={token}\n{}WHATSAPP_BUSINESS_ACCOUNT_ID={}\nWHATSAPP_PHONE_NUMBER_ID={}\nWHATSAPP_WEBHOOK_URL={}\nWHATSAPP_WEBHOOK_VERIFY_TOKEN={verify}\n",
        app_lines(&sandbox),
        ACCOUNTS[1].id,
        PHONES[2].id,
        webhook.url()
    );
    let secrets = [
        token,
        sandbox.app_secret().expose_secret().to_owned(),
        verify,
    ];
    for args in [
        &[
            "doctor",
            "--ca-file",
            "ca.pem",
            "--allow-private-webhook",
            "-vv",
        ][..],
        &[
            "doctor",
            "--json",
            "--ca-file",
            "ca.pem",
            "--allow-private-webhook",
        ][..],
        &["send-test", "--to", "+16505550100"][..],
        &["send-test", "--json", "--to", "+16505550100"][..],
    ] {
        let out = Test::against(&sandbox)
            .write(".env", &env)
            .write("ca.pem", webhook.ca_pem())
            .env("RUST_LOG", "trace")
            .args(args)
            .run();
        assert_clean(&out, &secrets, &format!("{args:?}"));
    }
}
