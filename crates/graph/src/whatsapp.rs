//! The WhatsApp Business Platform nodes (`graph-api.md` §9), typed with every enum as an open string:
//! Meta's own schemas disagree on value sets, and new values appear without notice.

use serde::{Deserialize, Serialize};

use crate::client::{Answer, Bearer, Call, path_segment};
use crate::{Budget, Client, Endpoint, Error};
use permatoken_secret::AccessToken;

/// `GET /{phone-number-id}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct PhoneNumber {
    /// The id.
    #[serde(default)]
    pub id: Option<String>,
    /// `+1 555-…`.
    #[serde(default)]
    pub display_phone_number: Option<String>,
    /// The display name customers see.
    #[serde(default)]
    pub verified_name: Option<String>,
    /// `VERIFIED`, `NOT_VERIFIED`, `UNVERIFIED`, `EXPIRED`, …
    #[serde(default)]
    pub code_verification_status: Option<String>,
    /// `APPROVED`, `PENDING_REVIEW`, `DECLINED`, …
    #[serde(default)]
    pub name_status: Option<String>,
    /// `GREEN`, `YELLOW`, `RED`, `NA`, `UNKNOWN`.
    #[serde(default)]
    pub quality_rating: Option<String>,
    /// `CONNECTED` (needed to send), `PENDING`, `DISCONNECTED`, `FLAGGED`, `RESTRICTED`, …
    #[serde(default)]
    pub status: Option<String>,
    /// `CLOUD_API`, `ON_PREMISE`, `NOT_APPLICABLE`.
    #[serde(default)]
    pub platform_type: Option<String>,
    /// `{"level": "STANDARD" | "HIGH"}`.
    #[serde(default)]
    pub throughput: Option<Throughput>,
    /// `LIVE`, `SANDBOX`.
    #[serde(default)]
    pub account_mode: Option<String>,
    /// `TIER_250` … `TIER_UNLIMITED`: unique users a day.
    #[serde(default)]
    pub whatsapp_business_manager_messaging_limit: Option<String>,
    /// The deprecated tier (`TIER_50` … `TIER_UNLIMITED`).
    #[serde(default)]
    pub messaging_limit_tier: Option<String>,
    /// Meta's own "can this number send" answer.
    #[serde(default)]
    pub health_status: Option<HealthStatus>,
}

/// `throughput`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Throughput {
    /// `STANDARD` or `HIGH`.
    #[serde(default)]
    pub level: Option<String>,
}

/// `health_status`: the top value is the worst entity's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct HealthStatus {
    /// `AVAILABLE`, `LIMITED`, `BLOCKED`.
    #[serde(default)]
    pub can_send_message: Option<String>,
    /// Each entity on the sending path.
    #[serde(default)]
    pub entities: Vec<HealthEntity>,
}

/// One entity of `health_status`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct HealthEntity {
    /// `PHONE_NUMBER`, `WABA`, `BUSINESS`, `APP`, `MESSAGE_TEMPLATE`.
    #[serde(default)]
    pub entity_type: Option<String>,
    /// Its id.
    #[serde(default)]
    pub id: Option<String>,
    /// `AVAILABLE`, `LIMITED`, `BLOCKED`.
    #[serde(default)]
    pub can_send_message: Option<String>,
    /// Free text Meta adds.
    #[serde(default)]
    pub additional_info: Vec<String>,
    /// What is wrong and what to do.
    #[serde(default)]
    pub errors: Vec<HealthError>,
}

/// An error of a health entity.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct HealthError {
    /// E.g. 141010.
    #[serde(default)]
    pub error_code: Option<i64>,
    /// What is wrong.
    #[serde(default)]
    pub error_description: Option<String>,
    /// What to do.
    #[serde(default)]
    pub possible_solution: Option<String>,
}

/// `GET /{waba-id}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusinessAccount {
    /// The id.
    #[serde(default)]
    pub id: Option<String>,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
    /// `APPROVED`, `PENDING`, `REJECTED`, `RESTRICTED`.
    #[serde(default)]
    pub account_review_status: Option<String>,
    /// `verified`, `not_verified`, `pending`, … (lowercase in the SDK, uppercase in the OpenAPI file).
    #[serde(default)]
    pub business_verification_status: Option<String>,
    /// The business portfolio that owns it.
    #[serde(default)]
    pub owner_business_info: Option<OwnerBusiness>,
}

/// `owner_business_info`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct OwnerBusiness {
    /// The business id.
    #[serde(default)]
    pub id: Option<String>,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `GET /{business-id}?fields=verification_status`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Business {
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
    /// Same value set as `business_verification_status`.
    #[serde(default)]
    pub verification_status: Option<String>,
}

#[derive(Deserialize)]
struct SubscribedApps {
    #[serde(default)]
    data: Vec<SubscribedApp>,
}

#[derive(Deserialize)]
struct SubscribedApp {
    #[serde(default)]
    whatsapp_business_api_data: Option<AppData>,
}

#[derive(Deserialize)]
struct AppData {
    #[serde(default)]
    id: Option<String>,
}

/// What `POST /{phone-number-id}/messages` answered.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sent {
    /// `contacts[].wa_id`.
    #[serde(default)]
    pub contacts: Vec<SentContact>,
    /// `messages[].id` (`wamid.…`) and `message_status`.
    #[serde(default)]
    pub messages: Vec<SentMessage>,
}

/// A contact of [`Sent`].
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct SentContact {
    /// As sent.
    #[serde(default)]
    pub input: Option<String>,
    /// The WhatsApp id.
    #[serde(default)]
    pub wa_id: Option<String>,
}

/// A message of [`Sent`].
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct SentMessage {
    /// `wamid.…`.
    #[serde(default)]
    pub id: Option<String>,
    /// `accepted`, …
    #[serde(default)]
    pub message_status: Option<String>,
}

const PHONE_FIELDS: &str = "id,display_phone_number,verified_name,code_verification_status,name_status,quality_rating,status,platform_type,throughput,account_mode,whatsapp_business_manager_messaging_limit,messaging_limit_tier,health_status";
const ACCOUNT_FIELDS: &str =
    "id,name,account_review_status,business_verification_status,owner_business_info";

impl Client {
    /// `GET /{phone-number-id}` with every field `doctor` reads.
    pub async fn phone_number(
        &self,
        token: &AccessToken,
        id: &str,
        budget: &Budget,
    ) -> Result<Answer<PhoneNumber>, Error> {
        let call = Call::get(path_segment(id)?, Bearer::Token(token)).query("fields", PHONE_FIELDS);
        self.call_usage(call, budget).await
    }

    /// `GET /{waba-id}`.
    pub async fn business_account(
        &self,
        token: &AccessToken,
        id: &str,
        budget: &Budget,
    ) -> Result<Answer<BusinessAccount>, Error> {
        let call =
            Call::get(path_segment(id)?, Bearer::Token(token)).query("fields", ACCOUNT_FIELDS);
        self.call_usage(call, budget).await
    }

    /// `GET /{business-id}?fields=name,verification_status` (needs `business_management`).
    pub async fn business(
        &self,
        token: &AccessToken,
        id: &str,
        budget: &Budget,
    ) -> Result<Business, Error> {
        let call = Call::get(path_segment(id)?, Bearer::Token(token))
            .query("fields", "name,verification_status");
        self.call(call, budget).await
    }

    /// The app ids subscribed to the account's webhooks (`GET /{waba-id}/subscribed_apps`).
    pub async fn subscribed_apps(
        &self,
        token: &AccessToken,
        waba: &str,
        budget: &Budget,
    ) -> Result<Vec<String>, Error> {
        let path = format!("{}/subscribed_apps", path_segment(waba)?);
        let answer: SubscribedApps = self
            .call(Call::get(&path, Bearer::Token(token)), budget)
            .await?;
        Ok(answer
            .data
            .into_iter()
            .filter_map(|a| a.whatsapp_business_api_data?.id)
            .collect())
    }

    /// Subscribes the calling app to the account's webhooks (`POST /{waba-id}/subscribed_apps`).
    pub async fn subscribe_app(
        &self,
        token: &AccessToken,
        waba: &str,
        budget: &Budget,
    ) -> Result<(), Error> {
        let path = format!("{}/subscribed_apps", path_segment(waba)?);
        let call = Call::post(&path, Some(Bearer::Token(token)), Endpoint::Other);
        self.call_success(call, budget).await
    }

    /// Sends a template message (`POST /{phone-number-id}/messages`). 200 means accepted, not
    /// delivered.
    pub async fn send_template(
        &self,
        token: &AccessToken,
        phone_id: &str,
        to: &str,
        template: &str,
        language: &str,
        budget: &Budget,
    ) -> Result<Sent, Error> {
        let path = format!("{}/messages", path_segment(phone_id)?);
        let body = serde_json::json!({
            "messaging_product": "whatsapp",
            "to": to,
            "type": "template",
            "template": {"name": template, "language": {"code": language}},
        });
        let call =
            Call::post(&path, Some(Bearer::Token(token)), Endpoint::Other).json(body.to_string());
        self.call(call, budget).await
    }
}
