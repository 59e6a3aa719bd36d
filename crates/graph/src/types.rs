//! The answers of the Graph API, as documented (`graph-api.md` §4, §5). Every value set is an open
//! string and every field optional: Meta adds values and drops fields without notice.

use permatoken_secret::AccessToken;
use serde::{Deserialize, Deserializer};

/// `GET /me?fields=id,name`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Me {
    /// The (app-scoped) user or system-user id.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// The display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `data` of `GET /debug_token?input_token=…`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The app the token belongs to.
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub app_id: Option<String>,
    /// The app's name.
    #[serde(default)]
    pub application: Option<String>,
    /// `USER`, `PAGE`, `APP`, `SYSTEM_USER` or any other string Meta sends.
    #[serde(default, rename = "type")]
    pub token_type: Option<String>,
    /// Unix seconds; 0 means the token never expires.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Unix seconds when data access lapses; 0 for system users.
    #[serde(default)]
    pub data_access_expires_at: Option<i64>,
    /// Unix seconds; present on long-lived tokens only.
    #[serde(default)]
    pub issued_at: Option<i64>,
    /// Whether the token works.
    #[serde(default)]
    pub is_valid: Option<bool>,
    /// Permission names.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Permissions with the ids they are limited to.
    #[serde(default)]
    pub granular_scopes: Vec<GranularScope>,
    /// The app-scoped user or system-user id.
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub user_id: Option<String>,
    /// The Page id of a PAGE token.
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub profile_id: Option<String>,
    /// Why the token is not valid, when it is not.
    #[serde(default)]
    pub error: Option<TokenInfoError>,
}

/// A permission limited to some targets; `target_ids` absent means all targets.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct GranularScope {
    /// The permission.
    pub scope: String,
    /// For WhatsApp scopes, WhatsApp Business Account ids.
    #[serde(default)]
    pub target_ids: Option<Vec<String>>,
}

/// `data.error` of `/debug_token`: the key is `subcode` here, not `error_subcode`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenInfoError {
    /// The Graph error code.
    #[serde(default)]
    pub code: Option<i64>,
    /// The subcode.
    #[serde(default)]
    pub subcode: Option<i64>,
    /// The message.
    #[serde(default)]
    pub message: Option<String>,
}

/// A token the API just made (`/oauth/access_token`, `/{system-user-id}/access_tokens`).
#[non_exhaustive]
pub struct NewToken {
    /// The token.
    pub token: AccessToken,
    /// `expires_in`, seconds, when sent.
    pub expires_in: Option<i64>,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("token", &self.token)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Deliberately no `Debug`: it holds a token as plain text until it is boxed.
#[derive(Deserialize)]
pub(crate) struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

impl From<TokenAnswer> for NewToken {
    fn from(answer: TokenAnswer) -> Self {
        Self {
            token: AccessToken::new(answer.access_token),
            expires_in: answer.expires_in,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Success {
    #[serde(default)]
    pub(crate) success: Option<bool>,
}

#[derive(Deserialize)]
pub(crate) struct DebugTokenEnvelope {
    pub(crate) data: TokenInfo,
}

#[derive(Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub(crate) error: RawError,
}

#[derive(Deserialize)]
pub(crate) struct RawError {
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) code: Option<i64>,
    #[serde(default)]
    pub(crate) error_subcode: Option<i64>,
    #[serde(default)]
    pub(crate) error_user_title: Option<String>,
    #[serde(default)]
    pub(crate) error_user_msg: Option<String>,
    #[serde(default)]
    pub(crate) fbtrace_id: Option<String>,
    #[serde(default)]
    pub(crate) is_transient: Option<bool>,
    /// WhatsApp: `{"details": "…"}`; elsewhere sometimes a JSON string.
    #[serde(default)]
    pub(crate) error_data: Option<serde_json::Value>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    opt_string_or_number(d)?.ok_or_else(|| serde::de::Error::custom("expected a string or number"))
}

/// Ids are strings in Meta's answers, but SDK fixtures show numbers too.
fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metas_documented_system_user_answer() {
        let body = r#"{"data":{"app_id":"634974688087057","type":"SYSTEM_USER","application":"Lucky Shrub",
 "data_access_expires_at":0,"expires_at":0,"is_valid":true,"issued_at":1712099387,
 "scopes":["whatsapp_business_management","whatsapp_business_messaging"],
 "granular_scopes":[{"scope":"whatsapp_business_management"},{"scope":"whatsapp_business_messaging"}],
 "user_id":"104169029247128"}}"#;
        let info = serde_json::from_str::<DebugTokenEnvelope>(body)
            .unwrap()
            .data;
        assert_eq!(info.app_id.as_deref(), Some("634974688087057"));
        assert_eq!(info.token_type.as_deref(), Some("SYSTEM_USER"));
        assert_eq!(info.expires_at, Some(0));
        assert_eq!(info.granular_scopes[0].target_ids, None);
    }

    #[test]
    fn parses_a_garbage_token_answer() {
        let body = r#"{"data":{"error":{"code":190,"message":"Invalid OAuth access token - Cannot parse access token"},"is_valid":false,"scopes":[]}}"#;
        let info = serde_json::from_str::<DebugTokenEnvelope>(body)
            .unwrap()
            .data;
        assert_eq!(info.is_valid, Some(false));
        assert_eq!(info.error.unwrap().code, Some(190));
        assert_eq!(info.app_id, None);
    }
}
