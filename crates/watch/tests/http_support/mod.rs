//! A snapshot of a few tokens in every state, for the endpoint's tests.

use permatoken_watch::snapshot::{
    Event, EventKind, HistoryPoint, Role, RouteHealth, Snapshot, Status, TokenState, TokenView,
};

pub(crate) const DAY: i64 = 86_400;

/// A name that must show as text on the page and stay one label value in `/metrics`.
pub(crate) const HOSTILE: &str = "<script>alert(1)</script>";

pub(crate) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub(crate) fn token(name: &str, state: TokenState, status: Status, now: i64) -> TokenView {
    TokenView {
        name: name.to_owned(),
        role: Role::Primary,
        state,
        status,
        valid: !matches!(state, TokenState::Dead),
        kind: "System user".to_owned(),
        fingerprint: format!("sha256:{:08x}", name.len() * 2_654_435_761 % 4_294_967_291),
        expires_at: None,
        never_expires: false,
        missing_permissions: Vec::new(),
        scopes: vec![
            "whatsapp_business_messaging".to_owned(),
            "whatsapp_business_management".to_owned(),
        ],
        last_check: Some(now - 60),
        next_check: Some(now + 3540),
        history: (0..24)
            .map(|i| HistoryPoint {
                at: now - (24 - i) * 3600,
                status: if i % 7 == 3 { Status::Unknown } else { status },
            })
            .collect(),
    }
}

/// Six tokens, one in each state; `orders` never expires.
pub(crate) fn snapshot(now: i64) -> Snapshot {
    let mut orders = token("orders", TokenState::Ok, Status::Ok, now);
    orders.never_expires = true;
    let mut backup = token("orders-backup", TokenState::Expiring, Status::Warning, now);
    backup.role = Role::Backup("orders".to_owned());
    backup.expires_at = Some(now + 10 * DAY + 3 * 3600);
    backup.kind = "User".to_owned();
    let mut billing = token("billing", TokenState::Critical, Status::Critical, now);
    billing.expires_at = Some(now + 2 * DAY);
    billing.missing_permissions = vec!["whatsapp_business_messaging".to_owned()];
    billing.scopes = vec!["whatsapp_business_management".to_owned()];
    let mut legacy = token("legacy", TokenState::Dead, Status::Critical, now);
    legacy.expires_at = Some(now - 3 * DAY);
    let mut support = token("support", TokenState::FailedOver, Status::Ok, now);
    support.expires_at = Some(now + 50 * DAY);
    let mut hostile = token(HOSTILE, TokenState::CannotBeChecked, Status::Unknown, now);
    hostile.expires_at = Some(now + 40 * DAY);
    Snapshot {
        generated_at: now,
        started_at: now - 7 * DAY,
        leader: true,
        round_finished: true,
        last_round_at: Some(now - 30),
        tokens: vec![orders, backup, billing, legacy, support, hostile],
        events: vec![
            Event {
                at: now - 600,
                kind: EventKind::Failover,
                token: Some("support".to_owned()),
                text: "the backup `SUPPORT_TOKEN_BACKUP` replaced the dead primary".to_owned(),
            },
            Event {
                at: now - 3600,
                kind: EventKind::Alert,
                token: Some(HOSTILE.to_owned()),
                text: format!("alert sent to `ops`: {HOSTILE} cannot be checked"),
            },
        ],
        routes: vec![
            RouteHealth {
                name: "ops".to_owned(),
                last_result: Some("delivered".to_owned()),
                last_at: Some(now - 3600),
                failing_since: None,
            },
            RouteHealth {
                name: "pager".to_owned(),
                last_result: Some("HTTP 503".to_owned()),
                last_at: Some(now - 60),
                failing_since: Some(now - 7200),
            },
        ],
    }
}

/// `n` tokens named `shop-00000`…, their state by `i % 6` (ok, expiring, critical, dead,
/// failed_over, cannot_be_checked), in the configuration's order; events and routes as in
/// [`snapshot`].
pub(crate) fn fleet(n: usize, now: i64) -> Snapshot {
    let states = [
        TokenState::Ok,
        TokenState::Expiring,
        TokenState::Critical,
        TokenState::Dead,
        TokenState::FailedOver,
        TokenState::CannotBeChecked,
    ];
    let mut s = snapshot(now);
    s.tokens = (0..n)
        .map(|i| token(&format!("shop-{i:05}"), states[i % 6], Status::Ok, now))
        .collect();
    s
}
