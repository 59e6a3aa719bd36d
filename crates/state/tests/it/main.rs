//! The state against real SQLite files in temporary folders, and against a real PostgreSQL cluster
//! started for each test (`pg_cluster`).

mod lifecycle;
mod pg_cluster;
mod pg_lifecycle;
mod pg_records;
mod records;

use jiff::Timestamp;
use permatoken_state::{CheckRecord, Role, Status, TokenKey, TokenRecord};

/// The SHA-256 of `token`, as watch computes it before calling the store.
pub(crate) fn key_of(token: &str) -> TokenKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    TokenKey::parse(&hex).unwrap()
}

pub(crate) fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_790_000_000 + secs).unwrap()
}

pub(crate) fn token(name: &str, key: &TokenKey, seen: i64) -> TokenRecord {
    TokenRecord {
        key: key.clone(),
        name: name.to_owned(),
        role: Role::Primary,
        fingerprint: "EAAP…sZD sha256:1a2b3c4d".to_owned(),
        source_path: "/srv/orders/.env".to_owned(),
        source_key: Some("WHATSAPP_ACCESS_TOKEN".to_owned()),
        first_seen: at(seen),
        last_seen: at(seen),
        identity: None,
    }
}

pub(crate) fn check(key: &TokenKey, when: i64, status: Status) -> CheckRecord {
    CheckRecord {
        key: key.clone(),
        checked_at: at(when),
        status,
        alert_state: "ok".to_owned(),
        valid: Some(true),
        expires_at: Some(at(when + 86_400 * 30)),
        never_expires: false,
        kind: Some("system_user".to_owned()),
        missing_scopes: vec!["whatsapp_business_management".to_owned()],
        finding_codes: vec!["expires_soon".to_owned(), "missing_scope".to_owned()],
        elapsed_ms: 42,
    }
}
