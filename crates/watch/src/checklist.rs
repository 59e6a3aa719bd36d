//! The doctor checklist of a token with `doctor = true`, run on its own schedule
//! ([`crate::schedule::Schedule::doctor_is_due`]): [`permatoken_doctor::doctor`] on the token's
//! current primary (read again, after any write), each item that is not skipped observed like a
//! token named `<name>/doctor/<item>`, so that a change of its state is alerted (`warning` shows as
//! `expiring`, e.g. the webhook certificate's expiry).
//!
//! Must never: subscribe the app or post to the webhook beyond what `doctor` proves by itself, or
//! reach a private address for the webhook (`allow_private` is off).

use std::time::Duration;

use permatoken_graph::{Budget, Client};
use permatoken_inspect::AppCredentials;
use permatoken_renew::{TokenSource, TokenSpec};

use crate::config::TokenConfig;
use crate::states::{Observation, Observed, State};

/// The time the checklist's calls may take.
const CHECKLIST_BUDGET: Duration = Duration::from_secs(120);

/// Runs the checklist for `token` read from `source`: each item as (`<name>/doctor/<item>`, what
/// was observed). Nothing when the token or the doctor's variables cannot be read (the token's own
/// check already says why).
pub(crate) async fn run(
    token: &TokenConfig,
    source: &TokenSource,
    app: &AppCredentials,
    client: &Client,
    ca_pem: Option<Vec<u8>>,
) -> Vec<(String, Observation)> {
    let Ok(spec) = TokenSpec::load(source, Some(&[])) else {
        return Vec::new();
    };
    let vars = match crate::sources::doctor_vars(&token.source) {
        Ok(vars) => vars,
        Err(reason) => {
            tracing::warn!(token = %token.name, "doctor: {reason}");
            return Vec::new();
        }
    };
    let inputs = permatoken_doctor::Inputs {
        token: spec.primary.value.clone(),
        source: spec.primary.source.to_string(),
        app: app.clone(),
        waba: vars.waba_id.map(|s| s.value),
        phone: vars.phone_number_id.map(|s| s.value),
        webhook_url: vars.webhook_url.map(|s| s.value),
        verify_token: vars.verify_token.map(|s| s.value),
        webhook: permatoken_doctor::WebhookCheck {
            allow_private: false,
            ca_pem,
            no_post: false,
        },
        subscribe: false,
    };
    let budget = Budget::new(CHECKLIST_BUDGET);
    let checklist = permatoken_doctor::doctor(client, &inputs, &budget).await;
    checklist
        .items
        .into_iter()
        .filter_map(|item| {
            use permatoken_doctor::ItemStatus;
            let observed = match item.status {
                ItemStatus::Skipped => return None,
                ItemStatus::Ok => Observed::Known(State::Ok),
                ItemStatus::Warning => Observed::Known(State::Expiring),
                ItemStatus::Critical => Observed::Known(State::Critical),
                ItemStatus::Unknown => Observed::Unknown,
            };
            let message = match item.evidence.first() {
                Some(first) => format!("{}: {first}", item.title),
                None => item.title.to_owned(),
            };
            let name = format!("{}/doctor/{}", token.name, item.id);
            Some((
                name,
                Observation {
                    observed,
                    message,
                    fix: item.fix,
                },
            ))
        })
        .collect()
}
