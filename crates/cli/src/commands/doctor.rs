//! `permatoken doctor` and `permatoken send-test`: read, call `permatoken-doctor`, render.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use permatoken_doctor::{Checklist, Inputs, ItemStatus, WebhookCheck};
use permatoken_graph::{Budget, ErrorClass};
use permatoken_sandbox::{Behaviour, Certificate, Running, Webhook, WebhookOptions};
use permatoken_secret::VerifyToken;
use serde_json::json;

use super::{Failure, common};
use crate::cli::{DoctorArgs, GraphArgs, SendTestArgs, SourceArgs};
use crate::render;

/// The checklist makes a dozen calls, concurrently; the webhook may take 10 s a step.
const BUDGET: Duration = Duration::from_secs(45);

/// Sandbox parts kept alive for the command's run.
struct Lab {
    _graph: Running,
    _webhook: Option<Webhook>,
}

/// Reads the inputs, from the user's configuration or from a sandbox made for the run.
async fn read(
    source: &SourceArgs,
    graph: &GraphArgs,
    sandbox: bool,
    with_webhook: bool,
) -> Result<(permatoken_graph::Client, Inputs, Option<Lab>), Failure> {
    let mut config = common::graph_config(graph)?;
    let webhook_check = WebhookCheck {
        ca_pem: config.extra_roots_pem.clone(),
        ..WebhookCheck::default()
    };
    if sandbox {
        let running = common::start_sandbox().await?;
        config.base_url = running.url();
        config.app_secret = Some(running.app_secret().clone());
        let verify = "PERMATOKENTEST-sandbox-verify".to_owned();
        let webhook = if with_webhook {
            Some(
                Webhook::start_background(WebhookOptions {
                    certificate: Certificate::Good,
                    behaviour: Behaviour::Correct,
                    verify_token: verify.clone(),
                    app_secret: running.app_secret().expose_secret().to_owned(),
                })
                .map_err(|e| {
                    Failure::new(
                        format!("cannot start the sandbox's webhook receiver: {e}"),
                        "check that loopback networking works",
                    )
                })?,
            )
        } else {
            None
        };
        let inputs = Inputs {
            token: running.token("system-user").expect("a built-in scenario"),
            source: "the built-in sandbox (scenario `system-user`)".into(),
            app: permatoken_inspect::AppCredentials {
                app_id: Some(running.app().id.to_string()),
                app_secret: Some(running.app_secret().clone()),
            },
            waba: Some(permatoken_sandbox::ACCOUNTS[0].id.to_owned()),
            phone: Some(permatoken_sandbox::PHONES[0].id.to_owned()),
            webhook_url: webhook.as_ref().map(Webhook::url),
            verify_token: Some(VerifyToken::new(verify)),
            webhook: WebhookCheck {
                allow_private: true,
                ca_pem: webhook.as_ref().map(|w| w.ca_pem().as_bytes().to_vec()),
                no_post: false,
            },
            subscribe: false,
        };
        let client = common::client(config)?;
        return Ok((
            client,
            inputs,
            Some(Lab {
                _graph: running,
                _webhook: webhook,
            }),
        ));
    }
    let credentials = common::read_credentials(source)?;
    let Some(token) = credentials.token.clone() else {
        return Err(Failure::new(
            "no access token found: `WHATSAPP_ACCESS_TOKEN` is set neither in the environment nor in `./.env`",
            "put it in `./.env`, or use --env-file, --token-file or --token-stdin; to try without a Meta account: --sandbox",
        ));
    };
    let app = common::app_of(&credentials);
    config.app_secret = app.app_secret.clone();
    let inputs = Inputs {
        token: token.value,
        source: token.source.to_string(),
        app,
        waba: credentials.waba_id.map(|s| s.value),
        phone: credentials.phone_number_id.map(|s| s.value),
        webhook_url: credentials.webhook_url.map(|s| s.value),
        verify_token: credentials.verify_token.map(|s| s.value),
        webhook: webhook_check,
        subscribe: false,
    };
    Ok((common::client(config)?, inputs, None))
}

pub(crate) async fn doctor(args: DoctorArgs) -> Result<u8, Failure> {
    let (client, mut inputs, _lab) = read(&args.source, &args.graph, args.sandbox, true).await?;
    inputs.webhook.allow_private |= args.allow_private_webhook;
    inputs.webhook.no_post |= args.no_webhook_post;
    let mut checklist = permatoken_doctor::doctor(&client, &inputs, &Budget::new(BUDGET)).await;
    let unsubscribed = checklist
        .items
        .iter()
        .any(|i| i.id == "app_subscription" && i.status == ItemStatus::Critical);
    if args.fix && unsubscribed && confirm(&inputs, args.yes) {
        inputs.subscribe = true;
        checklist = permatoken_doctor::doctor(&client, &inputs, &Budget::new(BUDGET)).await;
    }
    print(&checklist, args.json);
    Ok(checklist.exit_code())
}

/// Whether the person agrees to subscribe the app (`--yes` agrees for scripts).
fn confirm(inputs: &Inputs, yes: bool) -> bool {
    if yes {
        return true;
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        render::warning(
            "--fix changes the account's subscriptions: confirm with --yes when no one can answer",
        );
        return false;
    }
    eprint!(
        "Subscribe app {} to the webhooks of WhatsApp Business Account {}? [y/N] ",
        inputs.app.app_id.as_deref().unwrap_or("?"),
        inputs.waba.as_deref().unwrap_or("?")
    );
    let mut answer = String::new();
    let _ = stdin.lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}

fn print(checklist: &Checklist, json: bool) {
    let mut out = anstream::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(checklist).unwrap_or_default()
        );
    } else {
        let _ = render::checklist(&mut out, checklist);
    }
}

pub(crate) async fn send_test(args: SendTestArgs) -> Result<u8, Failure> {
    let json = args.json;
    let to = permatoken_doctor::normalise_number(&args.to).map_err(|why| {
        Failure::new(
            format!(
                "`{}` is not a phone number permatoken can send to: {why}",
                render::sanitise(&args.to)
            ),
            "write it with its country code: --to '+1 650-555-0100'",
        )
    })?;
    let (client, inputs, _lab) = read(&args.source, &args.graph, args.sandbox, false).await?;
    let Some(phone) = &inputs.phone else {
        return Err(Failure::new(
            "`WHATSAPP_PHONE_NUMBER_ID` is not set: there is no number to send from",
            "set it to the id App Dashboard → WhatsApp → API Setup shows under \"From\" (not the phone number itself)",
        ));
    };
    let budget = Budget::new(Duration::from_secs(30));
    let result = client
        .send_template(
            &inputs.token,
            phone,
            &to,
            &args.template,
            &args.language,
            &budget,
        )
        .await;
    let mut out = anstream::stdout().lock();
    match result {
        Ok(sent) => {
            let id = sent
                .messages
                .first()
                .and_then(|m| m.id.clone())
                .unwrap_or_default();
            let wa_id = sent
                .contacts
                .first()
                .and_then(|c| c.wa_id.clone())
                .unwrap_or_default();
            if json {
                let _ = writeln!(
                    out,
                    "{:#}",
                    json!({"status": "ok", "accepted": true, "to": to, "wa_id": wa_id, "message_id": id})
                );
            } else {
                let _ = render::sent(&mut out, &args.template, &to, &wa_id, &id);
            }
            Ok(0)
        }
        Err(e) => {
            let class = e.class(permatoken_graph::Endpoint::Other);
            let code = if matches!(class, ErrorClass::Transient | ErrorClass::RateLimited)
                && !matches!(
                    e.graph_error().and_then(|g| g.code),
                    Some(130429 | 131056 | 131048 | 80007)
                ) {
                3
            } else {
                2
            };
            let graph = e.graph_error();
            let (meaning, fix) = graph
                .and_then(|g| g.code)
                .and_then(permatoken_doctor::explain)
                .unwrap_or((
                    "the Graph API refused the message",
                    "the message above is Meta's; `permatoken doctor` checks the whole setup",
                ));
            let details = graph.and_then(|g| g.details.clone().or_else(|| g.user_message.clone()));
            if json {
                let _ = writeln!(
                    out,
                    "{:#}",
                    json!({
                        "status": if code == 2 { "critical" } else { "unknown" },
                        "accepted": false,
                        "to": to,
                        "error": {"code": graph.and_then(|g| g.code), "message": e.to_string(), "meaning": meaning, "fix": fix, "trace_id": graph.and_then(|g| g.trace_id.clone())},
                    })
                );
            }
            drop(out);
            let message = match details {
                Some(d) => format!("{meaning}: {e} ({d})"),
                None => format!("{meaning}: {e}"),
            };
            render::error(&message, Some(fix));
            Ok(code)
        }
    }
}
