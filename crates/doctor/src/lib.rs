//! The production checklist of the guide, each item proven against the API and the live webhook URL.
//!
//! [`doctor`] runs the items concurrently and returns one line per item: its status (ok, warning,
//! critical, skipped, or unknown when the API could not answer), the evidence, and for anything not ok
//! the exact fix (console page, button, variable). Item ids are stable; the README lists them.
//!
//! Must never: print, write files, or change anything at Meta except the one `--fix` it was allowed
//! (subscribing the app to the account's webhooks).

mod send;
mod webhook;

use jiff::Timestamp;
use permatoken_graph::{Budget, Client, Endpoint, Error as GraphError, ErrorClass, Usage};
use permatoken_inspect::{AppCredentials, FindingCode, Kind, Report, Subject, Thresholds};
use permatoken_secret::{AccessToken, VerifyToken};
use serde::Serialize;

pub use send::{explain, normalise_number};
pub use webhook::{WebhookCheck, is_public};

/// An item's status. Ordered for the overall verdict: critical > unknown > warning > ok; skipped
/// items do not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// Its input is not configured.
    Skipped,
    /// Fine.
    Ok,
    /// Works, but needs attention.
    Warning,
    /// The API could not answer.
    Unknown,
    /// Broken.
    Critical,
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Stable id.
    pub id: &'static str,
    /// What it checks.
    pub title: &'static str,
    /// The verdict.
    pub status: ItemStatus,
    /// What was found, one fact a line.
    pub evidence: Vec<String>,
    /// What to do, for anything not ok.
    pub fix: Option<String>,
    /// How long the item took (its calls run concurrently with the other items').
    pub elapsed_ms: u64,
}

impl Item {
    fn new(id: &'static str, title: &'static str) -> Self {
        Self {
            id,
            title,
            status: ItemStatus::Ok,
            evidence: Vec::new(),
            fix: None,
            elapsed_ms: 0,
        }
    }

    fn skipped(mut self, variable: &str) -> Self {
        self.status = ItemStatus::Skipped;
        self.evidence.push(format!("`{variable}` is not set"));
        self.fix = Some(format!("set `{variable}` to check this"));
        self
    }

    fn fact(&mut self, text: impl Into<String>) {
        self.evidence.push(text.into());
    }

    /// Raises the status to `status` (never lowers it), and keeps the first fix given at the worst
    /// level.
    fn flag(&mut self, status: ItemStatus, fix: impl Into<String>) {
        if status > self.status {
            self.status = status;
            self.fix = Some(fix.into());
        } else if status == self.status && self.fix.is_none() {
            self.fix = Some(fix.into());
        }
    }

    fn api_failed(mut self, what: &str, err: &GraphError) -> Self {
        let class = err.class(Endpoint::Other);
        let status = match class {
            ErrorClass::Transient | ErrorClass::RateLimited => ItemStatus::Unknown,
            _ => ItemStatus::Critical,
        };
        self.fact(format!("reading {what} failed: {err}"));
        let fix = match class {
            ErrorClass::Permission => "the token lacks a permission for this: generate it with whatsapp_business_management (and business_management), granted on this account".to_owned(),
            ErrorClass::Transient | ErrorClass::RateLimited => "run again later; this says nothing about the setup".to_owned(),
            _ => "check the id in the variable: WhatsApp Manager → Phone numbers / Account tools show the ids".to_owned(),
        };
        self.flag(status, fix);
        self
    }
}

/// The whole checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Checklist {
    /// The worst item's status.
    pub status: ItemStatus,
    /// One per item, in a fixed order.
    pub items: Vec<Item>,
}

impl Checklist {
    /// The exit code of DESIGN §4.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            ItemStatus::Ok | ItemStatus::Skipped => 0,
            ItemStatus::Warning => 1,
            ItemStatus::Critical => 2,
            ItemStatus::Unknown => 3,
        }
    }
}

/// What `doctor` looks at.
pub struct Inputs {
    /// The token and where it came from.
    pub token: AccessToken,
    /// Where it came from, for the evidence.
    pub source: String,
    /// `FACEBOOK_APP_ID`, `FACEBOOK_APP_SECRET`.
    pub app: AppCredentials,
    /// `WHATSAPP_BUSINESS_ACCOUNT_ID`.
    pub waba: Option<String>,
    /// `WHATSAPP_PHONE_NUMBER_ID`.
    pub phone: Option<String>,
    /// `WHATSAPP_WEBHOOK_URL`.
    pub webhook_url: Option<String>,
    /// `WHATSAPP_WEBHOOK_VERIFY_TOKEN`.
    pub verify_token: Option<VerifyToken>,
    /// How the webhook is checked.
    pub webhook: WebhookCheck,
    /// Subscribe the app when it is not (`--fix`, agreed to).
    pub subscribe: bool,
}

/// Runs the checklist.
pub async fn doctor(client: &Client, inputs: &Inputs, budget: &Budget) -> Checklist {
    if !inputs.token.has_meta_shape() {
        return malformed(client, inputs, budget).await;
    }
    let (token, business, phone, subscription, webhook) = tokio::join!(
        timed(token_item(client, inputs, budget)),
        timed(business_item(client, inputs, budget)),
        timed(phone_item(client, inputs, budget)),
        timed(subscription_item(client, inputs, budget)),
        timed(webhook::item(inputs)),
    );
    let ((mut phone, usage), phone_ms) = phone;
    let ((mut business, business_usage), business_ms) = business;
    phone.elapsed_ms = phone_ms;
    business.elapsed_ms = business_ms;
    let [token, subscription, webhook] = [token, subscription, webhook].map(|(mut item, ms)| {
        item.elapsed_ms = ms;
        item
    });
    let rate = rate_item([usage, business_usage].into_iter().flatten().collect());
    let items = vec![token, business, phone, subscription, webhook, rate];
    let status = items
        .iter()
        .map(|i| i.status)
        .filter(|s| *s != ItemStatus::Skipped)
        .max()
        .unwrap_or(ItemStatus::Ok);
    Checklist { status, items }
}

const PHONE_TITLE: &str = "Phone number: connected, verified, on the Cloud API, can send";
const SUBSCRIPTION_TITLE: &str = "This app receives the account's webhooks";

/// The checklist of a value that is no Meta token: the token item says so (asking nothing), and
/// no item that would send it to Meta runs.
async fn malformed(client: &Client, inputs: &Inputs, budget: &Budget) -> Checklist {
    let (token, token_ms) = timed(token_item(client, inputs, budget)).await;
    let (webhook, webhook_ms) = timed(webhook::item(inputs)).await;
    let not_asked = |id, title| {
        let mut item = Item::new(id, title);
        item.status = ItemStatus::Skipped;
        item.fact("not asked: the token has no Meta token's shape, so it is sent nowhere");
        item
    };
    let items = vec![
        Item {
            elapsed_ms: token_ms,
            ..token
        },
        not_asked("business_verification", "Business verification"),
        not_asked("phone_number", PHONE_TITLE),
        not_asked("app_subscription", SUBSCRIPTION_TITLE),
        Item {
            elapsed_ms: webhook_ms,
            ..webhook
        },
        rate_item(Vec::new()),
    ];
    let status = items
        .iter()
        .map(|i| i.status)
        .filter(|s| *s != ItemStatus::Skipped)
        .max()
        .unwrap_or(ItemStatus::Ok);
    Checklist { status, items }
}

async fn timed<T>(work: impl std::future::Future<Output = T>) -> (T, u64) {
    let started = std::time::Instant::now();
    let value = work.await;
    (value, started.elapsed().as_millis() as u64)
}

const METHOD_3: &str = "make a never-expiring system-user token: Business Settings → Users → System users → Generate new token, expiration \"Never\", with whatsapp_business_messaging, whatsapp_business_management and business_management (or `permatoken mint --system-user ID`)";

async fn token_item(client: &Client, inputs: &Inputs, budget: &Budget) -> Item {
    let mut item = Item::new(
        "token",
        "Access token: valid, permanent, with the WhatsApp permissions",
    );
    let report: Report = permatoken_inspect::check(
        client,
        Subject {
            token: &inputs.token,
            source: &inputs.source,
            variable: Some(permatoken_config::TOKEN_VAR),
        },
        &inputs.app,
        Thresholds::default(),
        Timestamp::now(),
        budget,
    )
    .await;
    let t = &report.token;
    item.fact(format!(
        "{} from {} ({})",
        t.kind.describe(),
        inputs.source,
        t.fingerprint
    ));
    if report.is_dead() || t.valid != Some(true) {
        let first = report.findings.first();
        item.fact(
            first.map_or("the token could not be judged".to_owned(), |f| {
                f.message.clone()
            }),
        );
        let status = if report.is_dead() {
            ItemStatus::Critical
        } else {
            ItemStatus::Unknown
        };
        item.flag(
            status,
            first
                .and_then(|f| f.fix.clone())
                .unwrap_or_else(|| METHOD_3.to_owned()),
        );
        return item;
    }
    // It works, but without the app's credentials Meta does not say for how long, nor with which
    // permissions: nothing below can be judged.
    if let Some(f) = report
        .findings
        .iter()
        .find(|f| f.code == FindingCode::AppTokenRequired)
    {
        item.fact(f.message.clone());
        item.flag(ItemStatus::Unknown, f.fix.clone().unwrap_or_default());
        return item;
    }
    match t.kind {
        Kind::SystemUserPermanent => item.fact("never expires"),
        kind => {
            item.fact(match (t.never_expires, &t.expires_at) {
                (Some(true), _) => format!(
                    "does not expire by time; its data access lapses {}",
                    t.data_access_expires_at.as_deref().unwrap_or("(not said)")
                ),
                (_, Some(at)) => format!("expires {at}"),
                _ => "expires (unknown)".to_owned(),
            });
            let fix = if kind == Kind::SystemUser60d {
                format!("renew it within its 60 days (`permatoken refresh`), or {METHOD_3}")
            } else {
                METHOD_3.to_owned()
            };
            item.flag(ItemStatus::Warning, fix);
        }
    }
    if t.missing_scopes.is_empty() {
        item.fact("holds whatsapp_business_messaging and whatsapp_business_management");
    } else {
        item.fact(format!("lacks {}", t.missing_scopes.join(", ")));
        item.flag(
            ItemStatus::Critical,
            format!(
                "generate a new token with {} ticked; permissions cannot be added to a token",
                t.missing_scopes.join(", ")
            ),
        );
    }
    if let Some(waba) = &inputs.waba {
        for g in t
            .granular_scopes
            .iter()
            .filter(|g| g.scope.starts_with("whatsapp_"))
        {
            match &g.target_ids {
                Some(ids) if !ids.contains(waba) => {
                    item.fact(format!(
                        "{} is granted on {}, not on `WHATSAPP_BUSINESS_ACCOUNT_ID` {waba}",
                        g.scope,
                        ids.join(", ")
                    ));
                    item.flag(ItemStatus::Critical, format!("generate the token again and, under the WhatsApp permissions, pick account {waba} (or give the system user that account: Business Settings → System users → Add assets)"));
                }
                _ => {}
            }
        }
        if item.status < ItemStatus::Critical {
            item.fact(format!("its WhatsApp permissions cover account {waba}"));
        }
    }
    if let Some(f) = report
        .findings
        .iter()
        .find(|f| f.code == FindingCode::AppMismatch)
    {
        item.fact(f.message.clone());
        item.flag(ItemStatus::Warning, f.fix.clone().unwrap_or_default());
    }
    item
}

fn verified(status: &str) -> bool {
    status.eq_ignore_ascii_case("verified")
}

const VERIFY_STEPS: &str = "verify the business: Business Settings → Security Center → Start verification (legal name, address, a document); until then messaging is capped";

async fn business_item(client: &Client, inputs: &Inputs, budget: &Budget) -> (Item, Option<Usage>) {
    let item = Item::new("business_verification", "Business verification");
    let Some(waba) = &inputs.waba else {
        return (item.skipped("WHATSAPP_BUSINESS_ACCOUNT_ID"), None);
    };
    let account = match client.business_account(&inputs.token, waba, budget).await {
        Ok(a) => a,
        Err(e) => return (item.api_failed("the WhatsApp Business Account", &e), None),
    };
    let mut item = item;
    let owner = account
        .value
        .owner_business_info
        .clone()
        .unwrap_or_default();
    let (status, read) = match &owner.id {
        Some(id) => match client.business(&inputs.token, id, budget).await {
            Ok(b) => (b.verification_status, format!("business {} ({id})", owner.name.as_deref().unwrap_or("?"))),
            Err(e) if e.class(Endpoint::Other) == ErrorClass::Permission => (
                account.value.business_verification_status.clone(),
                "the account's business_verification_status (the token cannot read the business: no business_management)".to_owned(),
            ),
            Err(e) => return (item.api_failed("the owning business", &e), Some(account.usage)),
        },
        None => (
            account.value.business_verification_status.clone(),
            "the account's business_verification_status (the account names no owner business)".to_owned(),
        ),
    };
    match status.as_deref() {
        Some(s) if verified(s) => item.fact(format!("verified, read from {read}")),
        Some(s) => {
            item.fact(format!("`{s}`, read from {read}"));
            item.flag(ItemStatus::Warning, VERIFY_STEPS);
        }
        None => {
            item.fact(format!("cannot verify: {read} says nothing"));
            item.flag(ItemStatus::Warning, "give the token business_management so the business can be read, and check Business Settings → Security Center");
        }
    }
    (item, Some(account.usage))
}

/// What a number's `status` means for sending. Meta's lists disagree (`graph-api.md` §9; its OpenAPI
/// file `business-messaging-api_v23.0.yaml` has four enums for it), so only the values they name are
/// judged: `CONNECTED` can send; the rest they name cannot, but for `RATE_LIMITED`, which passes. A
/// value none of them names is unknown, never critical: Meta adds values without notice.
fn phone_status(status: Option<&str>) -> ItemStatus {
    const CANNOT_SEND: &[&str] = &[
        "DISCONNECTED",
        "FLAGGED",
        "RESTRICTED",
        "BANNED",
        "DELETED",
        "PENDING",
        "UNVERIFIED",
        "MIGRATED",
        "UNLINKED",
    ];
    match status {
        Some(s) if s.eq_ignore_ascii_case("CONNECTED") => ItemStatus::Ok,
        Some(s) if s.eq_ignore_ascii_case("RATE_LIMITED") => ItemStatus::Warning,
        Some(s) if CANNOT_SEND.iter().any(|c| c.eq_ignore_ascii_case(s)) => ItemStatus::Critical,
        _ => ItemStatus::Unknown,
    }
}

fn limit_words(tier: &str) -> String {
    let users = match tier.to_ascii_uppercase().as_str() {
        "TIER_50" => "50",
        "TIER_250" => "250",
        "TIER_1K" => "1,000",
        "TIER_2K" => "2,000",
        "TIER_10K" => "10,000",
        "TIER_100K" => "100,000",
        "TIER_UNLIMITED" => "unlimited",
        _ => return format!("`{tier}` (not a known tier)"),
    };
    format!("{users} unique users a day ({tier})")
}

async fn phone_item(client: &Client, inputs: &Inputs, budget: &Budget) -> (Item, Option<Usage>) {
    let item = Item::new("phone_number", PHONE_TITLE);
    let Some(id) = &inputs.phone else {
        return (item.skipped("WHATSAPP_PHONE_NUMBER_ID"), None);
    };
    let answer = match client.phone_number(&inputs.token, id, budget).await {
        Ok(a) => a,
        Err(e) => return (item.api_failed("the phone number", &e), None),
    };
    let p = answer.value;
    let mut item = item;
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not sent)".to_owned());
    item.fact(format!(
        "{} \"{}\"",
        or(&p.display_phone_number),
        or(&p.verified_name)
    ));
    let status = or(&p.status);
    item.fact(format!("status {status}"));
    match phone_status(p.status.as_deref()) {
        ItemStatus::Critical => item.flag(ItemStatus::Critical, "the number must be CONNECTED to send: WhatsApp Manager → Phone numbers shows why it is not (register it with `POST /{phone-number-id}/register` if it was never registered)"),
        ItemStatus::Warning => item.flag(ItemStatus::Warning, "the number is rate-limited for now: send less, and WhatsApp Manager → Phone numbers shows when it is lifted"),
        ItemStatus::Unknown => item.flag(ItemStatus::Unknown, "the number must be CONNECTED to send, and permatoken does not know this status: WhatsApp Manager → Phone numbers shows what it means"),
        _ => {}
    }
    let code = or(&p.code_verification_status);
    item.fact(format!("code verification {code}"));
    if !code.eq_ignore_ascii_case("VERIFIED") {
        item.flag(ItemStatus::Warning, "verify the number: WhatsApp Manager → Phone numbers → the number → Verify (SMS or voice code)");
    }
    let platform = or(&p.platform_type);
    item.fact(format!("platform {platform}"));
    if !platform.eq_ignore_ascii_case("CLOUD_API") {
        item.flag(ItemStatus::Critical, "the number is not on the Cloud API: migrate it (WhatsApp Manager → Phone numbers) or register it with `POST /{phone-number-id}/register`");
    }
    item.fact(format!(
        "display name {}, quality {}",
        or(&p.name_status),
        or(&p.quality_rating)
    ));
    if p.quality_rating
        .as_deref()
        .is_some_and(|q| q.eq_ignore_ascii_case("RED"))
    {
        item.flag(ItemStatus::Warning, "quality is RED: fewer, better-targeted messages; WhatsApp Manager → Insights shows why");
    }
    if let Some(level) = p.throughput.as_ref().and_then(|t| t.level.clone()) {
        item.fact(format!("throughput {level}"));
    }
    match (
        &p.whatsapp_business_manager_messaging_limit,
        &p.messaging_limit_tier,
    ) {
        (Some(limit), _) => item.fact(format!("messaging limit {}", limit_words(limit))),
        (None, Some(tier)) => item.fact(format!(
            "messaging limit {} (from the deprecated messaging_limit_tier)",
            limit_words(tier)
        )),
        (None, None) => item.fact("messaging limit not sent"),
    }
    if let Some(health) = &p.health_status {
        let top = or(&health.can_send_message);
        item.fact(format!("Meta's health status: {top}"));
        for e in &health.entities {
            let can = or(&e.can_send_message);
            if can.eq_ignore_ascii_case("AVAILABLE") {
                continue;
            }
            let errors: Vec<String> = e
                .errors
                .iter()
                .map(|x| {
                    format!(
                        "{} {}; solution: {}",
                        x.error_code.map(|c| c.to_string()).unwrap_or_default(),
                        or(&x.error_description),
                        or(&x.possible_solution)
                    )
                })
                .collect();
            item.fact(format!(
                "{} {} is {can}: {}",
                or(&e.entity_type),
                or(&e.id),
                errors.join("; ")
            ));
        }
        let fix = health
            .entities
            .iter()
            .flat_map(|e| &e.errors)
            .find_map(|x| x.possible_solution.clone())
            .unwrap_or_else(|| {
                "WhatsApp Manager → Account quality shows what limits the number".to_owned()
            });
        if top.eq_ignore_ascii_case("BLOCKED") {
            item.flag(ItemStatus::Critical, fix);
        } else if top.eq_ignore_ascii_case("LIMITED") {
            item.flag(ItemStatus::Warning, fix);
        }
    }
    (item, Some(answer.usage))
}

async fn subscription_item(client: &Client, inputs: &Inputs, budget: &Budget) -> Item {
    let mut item = Item::new("app_subscription", SUBSCRIPTION_TITLE);
    let Some(waba) = &inputs.waba else {
        return item.skipped("WHATSAPP_BUSINESS_ACCOUNT_ID");
    };
    let Some(app_id) = &inputs.app.app_id else {
        return item.skipped("FACEBOOK_APP_ID");
    };
    let apps = match client.subscribed_apps(&inputs.token, waba, budget).await {
        Ok(a) => a,
        Err(e) => return item.api_failed("the subscribed apps", &e),
    };
    if apps.contains(app_id) {
        item.fact(format!("app {app_id} is subscribed to account {waba}"));
        return item;
    }
    item.fact(if apps.is_empty() {
        format!("no app is subscribed to account {waba}: webhooks go nowhere")
    } else {
        format!(
            "account {waba} sends its webhooks to app(s) {}, not to app {app_id}",
            apps.join(", ")
        )
    });
    if inputs.subscribe {
        match client.subscribe_app(&inputs.token, waba, budget).await {
            Ok(()) => {
                item.fact(format!("subscribed app {app_id} now (`--fix`)"));
                return item;
            }
            Err(e) => item.fact(format!("subscribing failed: {e}")),
        }
    }
    item.flag(
        ItemStatus::Critical,
        format!("subscribe the app: `permatoken doctor --fix`, or `POST /{waba}/subscribed_apps` with the token, or App Dashboard → WhatsApp → Configuration → Webhooks"),
    );
    item
}

fn rate_item(usage: Vec<Usage>) -> Item {
    let mut item = Item::new(
        "rate_limits",
        "Rate limits: the app's share of its hourly allowance",
    );
    let app = usage.iter().filter_map(|u| u.app_percent).reduce(f64::max);
    let business = usage
        .iter()
        .filter_map(|u| u.business_percent)
        .reduce(f64::max);
    if app.is_none() && business.is_none() {
        item.fact("the API sent no usage headers");
        return item;
    }
    if let Some(p) = app {
        item.fact(format!("app: {p:.0} % used (X-App-Usage)"));
    }
    if let Some(p) = business {
        item.fact(format!(
            "business use case: {p:.0} % used (X-Business-Use-Case-Usage)"
        ));
    }
    let worst = app.into_iter().chain(business).fold(0.0, f64::max);
    if worst >= 100.0 {
        item.flag(ItemStatus::Critical, "the allowance is spent: calls are refused until it regains; make fewer calls (cache, batch)");
    } else if worst >= 75.0 {
        item.flag(
            ItemStatus::Warning,
            "over 75 % of the hourly allowance is used: make fewer calls before it runs out",
        );
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phone_status_is_judged_only_when_meta_names_it() {
        assert_eq!(phone_status(Some("CONNECTED")), ItemStatus::Ok);
        assert_eq!(phone_status(Some("connected")), ItemStatus::Ok);
        for dead in ["DISCONNECTED", "FLAGGED", "BANNED", "RESTRICTED", "DELETED"] {
            assert_eq!(phone_status(Some(dead)), ItemStatus::Critical, "{dead}");
        }
        assert_eq!(phone_status(Some("RATE_LIMITED")), ItemStatus::Warning);
        for unknown in ["SOMETHING_NEW", "MESSAGING_LIMIT_TIER_2", ""] {
            assert_eq!(
                phone_status(Some(unknown)),
                ItemStatus::Unknown,
                "{unknown}"
            );
        }
        assert_eq!(phone_status(None), ItemStatus::Unknown);
    }
}
