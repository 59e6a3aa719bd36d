//! A snapshot of a few tokens in every state, and a state file holding their check history, for the
//! endpoint's tests.

use std::sync::Arc;

use permatoken_state::{CheckRecord, Store, TokenKey, TokenRecord};
use permatoken_watch::snapshot::{
    Event, EventKind, Reason, Role, RouteHealth, Snapshot, Status, TokenState, TokenView, Words,
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
        announced: true,
        status,
        valid: !matches!(state, TokenState::Dead),
        kind: "System user".to_owned(),
        fingerprint: format!("sha256:{:08x}", name.len() * 2_654_435_761 % 4_294_967_291),
        expires_at: None,
        never_expires: false,
        missing_permissions: Vec::new(),
        scopes: Arc::from(vec![
            "whatsapp_business_messaging".to_owned(),
            "whatsapp_business_management".to_owned(),
        ]),
        last_check: Some(now - 60),
        next_check: Some(now + 3540),
        reason: None,
    }
}

/// Why a token is not ok, as its last check at `at` said.
pub(crate) fn reason(message: &str, fix: &str, at: i64, unknown: bool) -> Option<Reason> {
    Some(Reason {
        words: Arc::new(Words {
            message: message.to_owned(),
            fix: Some(fix.to_owned()),
        }),
        tried_at: at,
        unknown,
    })
}

/// The reason of a dead token whose maker changed their password.
pub(crate) const PASSWORD_CHANGED: &str = "the token no longer works: the password of the person who made it was changed (Graph API code 190, subcode 460)";
/// Its fix.
pub(crate) const NEW_TOKEN: &str = "generate a new token in Business Settings → System users → Generate new token, and put it in the env file";
/// The reason of a token whose file is gone.
pub(crate) const NO_FILE: &str = "the token could not be read: cannot read `/srv/shop/.env`: No such file or directory (os error 2)";

/// Checks in each token's history in [`store`]: hourly over the last day.
pub(crate) const HISTORY: i64 = 24;

/// A state file in a new directory (keep the directory while the store is used) holding [`HISTORY`]
/// hourly checks of each token of `snapshot`, in its status but every seventh unknown; with
/// `history` false, an empty one.
pub(crate) async fn store(snapshot: &Snapshot, history: bool) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("state.db")).await.unwrap();
    if !history {
        return (dir, store);
    }
    let at = |s: i64| jiff::Timestamp::from_second(s).unwrap();
    let mut tokens = Vec::new();
    let mut checks = Vec::new();
    for (i, t) in snapshot.tokens.iter().enumerate() {
        let key = TokenKey::parse(&format!("{i:064x}")).unwrap();
        tokens.push(TokenRecord {
            key: key.clone(),
            name: t.name.clone(),
            role: permatoken_state::Role::Primary,
            fingerprint: t.fingerprint.clone(),
            source_path: "/srv/PERMATOKENTEST/.env".to_owned(),
            source_key: Some("WHATSAPP_ACCESS_TOKEN".to_owned()),
            first_seen: at(snapshot.generated_at - 2 * DAY),
            last_seen: at(snapshot.generated_at),
            identity: None,
        });
        for h in 0..HISTORY {
            let status = if h % 7 == 3 {
                Status::Unknown
            } else {
                t.status
            };
            checks.push(CheckRecord {
                key: key.clone(),
                checked_at: at(snapshot.generated_at - (HISTORY - h) * 3600),
                status: match status {
                    Status::Ok => permatoken_state::Status::Ok,
                    Status::Warning => permatoken_state::Status::Warning,
                    Status::Critical => permatoken_state::Status::Critical,
                    _ => permatoken_state::Status::Unknown,
                },
                alert_state: t.state.as_str().to_owned(),
                valid: Some(t.valid),
                expires_at: t.expires_at.map(at),
                never_expires: t.never_expires,
                kind: None,
                missing_scopes: Vec::new(),
                finding_codes: Vec::new(),
                elapsed_ms: 100,
            });
        }
    }
    store.upsert_tokens(tokens).await.unwrap();
    store.record_checks(checks).await.unwrap();
    (dir, store)
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
    billing.scopes = Arc::from(vec!["whatsapp_business_management".to_owned()]);
    let mut legacy = token("legacy", TokenState::Dead, Status::Critical, now);
    legacy.expires_at = Some(now - 3 * DAY);
    legacy.reason = reason(PASSWORD_CHANGED, NEW_TOKEN, now - 60, false);
    let mut support = token("support", TokenState::FailedOver, Status::Ok, now);
    support.expires_at = Some(now + 50 * DAY);
    let mut hostile = token(HOSTILE, TokenState::CannotBeChecked, Status::Unknown, now);
    hostile.expires_at = Some(now + 40 * DAY);
    // Its file is gone: tried a minute ago, never answered since start.
    hostile.last_check = None;
    hostile.reason = reason(
        NO_FILE,
        "check the file named in the message and its permissions",
        now - 60,
        true,
    );
    Snapshot {
        generated_at: now,
        started_at: now - 7 * DAY,
        leader: true,
        round_finished: true,
        last_round_at: Some(now - 30),
        waiting_for_state: None,
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
        state_unwritable: None,
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
