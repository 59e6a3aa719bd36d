//! The WhatsApp Business Management nodes (`graph-api.md` §9): WhatsApp Business Accounts, their phone
//! numbers and subscribed apps, the owning businesses, and the messages endpoint. Every value is one of
//! the documented value sets; each account or number below stands for one state `doctor` must judge.
//! Ids are fixed (they are not secrets), so tests and people can name them.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::{Params, check_proof, error, trace_id, valid};
use crate::scenarios::Record;
use crate::{Owner, State};

/// A WhatsApp Business Account of the sandbox, and what it stands for.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    /// Its id.
    pub id: &'static str,
    /// What `doctor` should find.
    pub about: &'static str,
    owner: Business,
    phones: &'static [&'static str],
    subscribed: bool,
    /// Whether the scenario tokens' WhatsApp scopes are granted on it.
    granted: bool,
    review: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Business {
    id: &'static str,
    name: &'static str,
    verification: &'static str,
}

const VERIFIED: Business = Business {
    id: "100000000000001",
    name: "Sandbox Business",
    verification: "verified",
};
const UNVERIFIED: Business = Business {
    id: "100000000000002",
    name: "Sandbox Unverified Business",
    verification: "not_verified",
};

/// The accounts, the first the healthy one. A phone number's `health_status` names the first account
/// that lists it, and that account's business.
pub const ACCOUNTS: &[Account] = &[
    Account {
        id: "102290129340398",
        about: "healthy: verified business, this app subscribed",
        owner: VERIFIED,
        phones: &[
            "106540352242922",
            "106540352242925",
            "106540352242926",
            "106540352242927",
            "106540352242928",
            "106540352242929",
        ],
        subscribed: true,
        granted: true,
        review: "APPROVED",
    },
    Account {
        id: "102290129340399",
        about: "this app not subscribed: webhooks never arrive",
        owner: VERIFIED,
        phones: &["106540352242922"],
        subscribed: false,
        granted: true,
        review: "APPROVED",
    },
    Account {
        id: "102290129340400",
        about: "owned by a business that is not verified",
        owner: UNVERIFIED,
        phones: &["106540352242923"],
        subscribed: true,
        granted: true,
        review: "APPROVED",
    },
    Account {
        id: "102290129340401",
        about: "not among the tokens' granular scopes",
        owner: VERIFIED,
        phones: &[],
        subscribed: true,
        granted: false,
        review: "APPROVED",
    },
    Account {
        id: "102290129340402",
        about: "banned: its number's health is BLOCKED (141014)",
        owner: VERIFIED,
        phones: &["106540352242924"],
        subscribed: true,
        granted: true,
        review: "REJECTED",
    },
];

/// A phone number of the sandbox, and what it stands for.
#[derive(Debug, Clone, Copy)]
pub struct Phone {
    /// Its id.
    pub id: &'static str,
    /// What `doctor` should find.
    pub about: &'static str,
    status: &'static str,
    code_verification: &'static str,
    platform: &'static str,
    health: &'static str,
    /// (entity type, error code, description, solution) of the entity that is not AVAILABLE.
    problem: Option<(&'static str, i64, &'static str, &'static str)>,
    /// `whatsapp_business_manager_messaging_limit`, sent from v24.0 on; `None`: not sent.
    limit: Option<&'static str>,
    /// The deprecated `messaging_limit_tier`, sent up to v23.0: the same tier as `limit` when there is
    /// one, so the two never contradict each other.
    tier: &'static str,
}

/// The numbers, the first the healthy one.
pub const PHONES: &[Phone] = &[
    Phone {
        id: "106540352242922",
        about: "healthy: connected, verified, Cloud API, can send",
        status: "CONNECTED",
        code_verification: "VERIFIED",
        platform: "CLOUD_API",
        health: "AVAILABLE",
        problem: None,
        limit: Some("TIER_10K"),
        tier: "TIER_10K",
    },
    Phone {
        id: "106540352242923",
        about: "health LIMITED: the business is not verified",
        status: "CONNECTED",
        code_verification: "VERIFIED",
        platform: "CLOUD_API",
        health: "LIMITED",
        problem: Some((
            "BUSINESS",
            141010,
            "Business is not verified",
            "Complete business verification in Business Settings → Security Center",
        )),
        limit: Some("TIER_250"),
        tier: "TIER_250",
    },
    Phone {
        id: "106540352242924",
        about: "health BLOCKED: the account is banned",
        status: "CONNECTED",
        code_verification: "VERIFIED",
        platform: "CLOUD_API",
        health: "BLOCKED",
        problem: Some((
            "WABA",
            141014,
            "WhatsApp Business Account is banned",
            "Request a review in WhatsApp Manager → Account quality",
        )),
        limit: Some("TIER_10K"),
        tier: "TIER_10K",
    },
    Phone {
        id: "106540352242925",
        about: "status DISCONNECTED",
        status: "DISCONNECTED",
        code_verification: "VERIFIED",
        platform: "CLOUD_API",
        health: "AVAILABLE",
        problem: None,
        limit: Some("TIER_10K"),
        tier: "TIER_10K",
    },
    Phone {
        id: "106540352242926",
        about: "code verification NOT_VERIFIED",
        status: "CONNECTED",
        code_verification: "NOT_VERIFIED",
        platform: "CLOUD_API",
        health: "AVAILABLE",
        problem: None,
        limit: Some("TIER_10K"),
        tier: "TIER_10K",
    },
    Phone {
        id: "106540352242927",
        about: "platform ON_PREMISE, not the Cloud API",
        status: "CONNECTED",
        code_verification: "VERIFIED",
        platform: "ON_PREMISE",
        health: "AVAILABLE",
        problem: None,
        limit: Some("TIER_10K"),
        tier: "TIER_10K",
    },
    Phone {
        id: "106540352242928",
        about: "no messaging limit from v24.0 on; only the deprecated messaging_limit_tier (TIER_1K) up to v23.0",
        status: "CONNECTED",
        code_verification: "VERIFIED",
        platform: "CLOUD_API",
        health: "AVAILABLE",
        problem: None,
        limit: None,
        tier: "TIER_1K",
    },
    Phone {
        id: "106540352242929",
        about: "a status no list of Meta's names: judged unknown, never critical",
        status: "SOMETHING_NEW",
        code_verification: "VERIFIED",
        platform: "CLOUD_API",
        health: "AVAILABLE",
        problem: None,
        limit: Some("TIER_10K"),
        tier: "TIER_10K",
    },
];

/// The numbers the test number may message (App Dashboard → API Setup → "To").
pub const ALLOWED_RECIPIENTS: &[&str] = &["16505550100", "447700900123"];

/// The accounts this app is subscribed to at start.
pub(crate) fn initially_subscribed() -> Vec<String> {
    ACCOUNTS
        .iter()
        .filter(|a| a.subscribed)
        .map(|a| a.id.to_owned())
        .collect()
}

/// The accounts the scenario tokens' WhatsApp scopes are granted on (`target_ids`).
pub fn granted_accounts() -> Vec<&'static str> {
    ACCOUNTS
        .iter()
        .filter(|a| a.granted)
        .map(|a| a.id)
        .collect()
}

fn object_missing(id: &str, method: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        100,
        Some(33),
        "GraphMethodException",
        &format!(
            "Unsupported {method} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
        ),
    )
}

fn caller(state: &State, bearer: Option<&str>, params: &Params) -> Result<Record, Response> {
    let Some(token) = bearer else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            104,
            None,
            "OAuthException",
            "An access token is required to request this resource.",
        ));
    };
    let record = valid(state, token)?;
    if let Some(response) = check_proof(state, params, &record) {
        return Err(response);
    }
    Ok(record)
}

/// Whether the token may act on `account`: its WhatsApp scope, granted on that account.
fn may_manage(record: &Record, account: &str, scope: &str) -> bool {
    record.owner == Owner::Ours
        && record.scopes.contains(&scope)
        && (!record.granular_to_waba || granted_accounts().contains(&account))
}

fn permission_error(scope: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        200,
        None,
        "OAuthException",
        &format!(
            "(#200) Permissions error: the token needs {scope} on this WhatsApp Business Account"
        ),
    )
}

/// Keeps only the asked fields; Graph answers the default few when none are asked.
fn fields(all: Value, params: &Params, default: &[&str]) -> Value {
    let asked: Vec<String> = match params.get("fields") {
        Some(f) => f.split(',').map(|s| s.trim().to_owned()).collect(),
        None => default.iter().map(|s| s.to_string()).collect(),
    };
    let mut out = serde_json::Map::new();
    out.insert("id".into(), all["id"].clone());
    for name in asked {
        if let Some(v) = all.get(&name) {
            out.insert(name, v.clone());
        }
    }
    Value::Object(out)
}

/// The account a number belongs to: the first that lists it.
fn account_of(p: &Phone) -> &'static Account {
    ACCOUNTS
        .iter()
        .find(|a| a.phones.contains(&p.id))
        .expect("every sandbox number belongs to an account")
}

/// A phone number as version `major` (the newest when `None`) answers it.
fn phone_json(state: &State, p: &Phone, major: Option<u32>) -> Value {
    let entity = |kind: &str, id: &str, can: &str| json!({"entity_type": kind, "id": id, "can_send_message": can});
    let account = account_of(p);
    let mut entities = vec![
        entity("PHONE_NUMBER", p.id, "AVAILABLE"),
        entity("WABA", account.id, "AVAILABLE"),
        entity("BUSINESS", account.owner.id, "AVAILABLE"),
        entity("APP", &state.ours.id.to_string(), "AVAILABLE"),
    ];
    if let Some((kind, code, description, solution)) = p.problem {
        for e in entities.iter_mut().filter(|e| e["entity_type"] == kind) {
            e["can_send_message"] = json!(p.health);
            e["errors"] = json!([{"error_code": code, "error_description": description, "possible_solution": solution}]);
        }
    }
    let mut v = json!({
        "id": p.id,
        "display_phone_number": format!("+1 555-0{}", &p.id[p.id.len() - 3..]),
        "verified_name": "Sandbox Shop",
        "code_verification_status": p.code_verification,
        "name_status": "APPROVED",
        "quality_rating": "GREEN",
        "status": p.status,
        "platform_type": p.platform,
        "throughput": {"level": "STANDARD"},
        "account_mode": "LIVE",
        "health_status": {"can_send_message": p.health, "entities": entities},
    });
    // `whatsapp_business_manager_messaging_limit` exists from v24.0, `messaging_limit_tier` up to
    // v23.0 (§9, §12).
    if major.is_some_and(|m| m <= 23) {
        v["messaging_limit_tier"] = json!(p.tier);
    } else if let Some(limit) = p.limit {
        v["whatsapp_business_manager_messaging_limit"] = json!(limit);
    }
    v
}

fn account_json(a: &Account) -> Value {
    json!({
        "id": a.id,
        "name": "Sandbox WhatsApp Account",
        "account_review_status": a.review,
        "business_verification_status": a.owner.verification,
        "ownership_type": "SELF_OWNED",
        "owner_business_info": {"id": a.owner.id, "name": a.owner.name},
        "message_template_namespace": "sandbox_namespace",
        "timezone_id": "1",
        "currency": "USD",
    })
}

/// `GET /{id}`: an account, a phone number or a business.
pub(crate) fn node(
    state: &State,
    bearer: Option<&str>,
    params: &Params,
    id: &str,
    major: Option<u32>,
) -> Option<Response> {
    let account = ACCOUNTS.iter().find(|a| a.id == id);
    let phone = PHONES.iter().find(|p| p.id == id);
    let business = [VERIFIED, UNVERIFIED].into_iter().find(|b| b.id == id);
    if account.is_none() && phone.is_none() && business.is_none() {
        return None;
    }
    let record = match caller(state, bearer, params) {
        Ok(r) => r,
        Err(response) => return Some(response),
    };
    Some(if let Some(a) = account {
        if !may_manage(&record, a.id, "whatsapp_business_management") {
            return Some(object_missing(id, "get"));
        }
        Json(fields(
            account_json(a),
            params,
            &["name", "timezone_id", "message_template_namespace"],
        ))
        .into_response()
    } else if let Some(p) = phone {
        if !record.scopes.contains(&"whatsapp_business_management") {
            return Some(permission_error("whatsapp_business_management"));
        }
        Json(fields(
            phone_json(state, p, major),
            params,
            &["display_phone_number", "verified_name", "quality_rating"],
        ))
        .into_response()
    } else {
        let b = business.expect("one of the three");
        if !record.scopes.contains(&"business_management") {
            return Some(error(
                StatusCode::FORBIDDEN,
                200,
                None,
                "OAuthException",
                "(#200) Requires business_management permission to manage the object",
            ));
        }
        Json(fields(
            json!({"id": b.id, "name": b.name, "verification_status": b.verification}),
            params,
            &["name"],
        ))
        .into_response()
    })
}

/// `GET|POST /{waba-id}/subscribed_apps`, `GET /{waba-id}/phone_numbers`, `POST /{phone-id}/messages`.
pub(crate) fn edge(
    state: &State,
    bearer: Option<&str>,
    params: &Params,
    id: &str,
    edge: &str,
    // The body of a POST; `None` for a GET.
    posted: Option<&[u8]>,
    major: Option<u32>,
) -> Option<Response> {
    let post = posted.is_some();
    let body = posted.unwrap_or_default();
    let account = ACCOUNTS.iter().find(|a| a.id == id);
    let phone = PHONES.iter().find(|p| p.id == id);
    match (edge, post, account, phone) {
        ("subscribed_apps" | "phone_numbers", _, Some(_), _) | ("messages", true, _, Some(_)) => {}
        ("subscribed_apps" | "phone_numbers" | "messages", _, _, _) => {
            return Some(object_missing(id, if post { "post" } else { "get" }));
        }
        _ => return None,
    }
    let record = match caller(state, bearer, params) {
        Ok(r) => r,
        Err(response) => return Some(response),
    };
    if let Some(p) = phone {
        return Some(send(&record, p, body));
    }
    let a = account.expect("matched above");
    if !may_manage(&record, a.id, "whatsapp_business_management") {
        return Some(permission_error("whatsapp_business_management"));
    }
    Some(match (edge, post) {
        ("phone_numbers", false) => {
            let data: Vec<Value> = a
                .phones
                .iter()
                .filter_map(|id| PHONES.iter().find(|p| p.id == *id))
                .map(|p| {
                    fields(
                        phone_json(state, p, major),
                        params,
                        &["display_phone_number", "verified_name", "quality_rating"],
                    )
                })
                .collect();
            Json(json!({"data": data, "paging": {"cursors": {"before": "QVFIUj", "after": "QVFIUk"}}})).into_response()
        }
        ("subscribed_apps", false) => {
            let subscribed = state.lock().subscribed.iter().any(|s| s == a.id);
            let data: Vec<Value> = if subscribed {
                vec![
                    json!({"whatsapp_business_api_data": {"id": state.ours.id.to_string(), "name": state.ours.name, "link": format!("https://www.facebook.com/games/?app_id={}", state.ours.id)}}),
                ]
            } else {
                Vec::new()
            };
            Json(json!({"data": data})).into_response()
        }
        ("subscribed_apps", true) => {
            let mut inner = state.lock();
            if !inner.subscribed.iter().any(|s| s == a.id) {
                inner.subscribed.push(a.id.to_owned());
            }
            Json(json!({"success": true})).into_response()
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "GraphMethodException",
            "(#100) Unsupported method on this edge",
        ),
    })
}

/// `POST /{phone-number-id}/messages` with a template (§9 "Send").
fn send(record: &Record, phone: &Phone, body: &[u8]) -> Response {
    if !record.scopes.contains(&"whatsapp_business_messaging") {
        return error(
            StatusCode::FORBIDDEN,
            10,
            None,
            "OAuthException",
            "(#10) Application does not have permission for this action",
        );
    }
    let Ok(msg) = serde_json::from_slice::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            100,
            None,
            "OAuthException",
            "(#100) Invalid parameter",
        );
    };
    let to = msg["to"].as_str().unwrap_or("");
    // WhatsApp's own errors carry `error_data.details` and no subcode (dropped from v16 on).
    let whatsapp_error = |status: StatusCode, code: i64, title: &str, details: &str| {
        let body = json!({"error": {"message": format!("(#{code}) {title}"), "type": "OAuthException", "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details}, "fbtrace_id": trace_id()}});
        (status, Json(body)).into_response()
    };
    if msg["messaging_product"] != "whatsapp" {
        return whatsapp_error(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid parameter",
            "messaging_product must be whatsapp",
        );
    }
    if phone.health == "BLOCKED" {
        return whatsapp_error(
            StatusCode::BAD_REQUEST,
            131031,
            "Business Account locked",
            "Your WhatsApp Business Account is restricted or disabled for violating a platform policy.",
        );
    }
    if msg["template"]["name"] != "hello_world" || msg["template"]["language"]["code"] != "en_US" {
        return whatsapp_error(
            StatusCode::NOT_FOUND,
            132001,
            "Template name does not exist in the translation",
            "template name (or language) does not exist in this WhatsApp Business Account",
        );
    }
    if !ALLOWED_RECIPIENTS.contains(&to) {
        return whatsapp_error(
            StatusCode::BAD_REQUEST,
            131030,
            "Recipient phone number not in allowed list",
            "Recipient phone number not in allowed list: Add recipient phone number to recipient list and try again.",
        );
    }
    let wamid = format!("wamid.HBgL{to}FQIAERgSQUFBQUFBQUFBQUFBQUFBQUFBAA==");
    Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": wamid, "message_status": "accepted"}],
    }))
    .into_response()
}
