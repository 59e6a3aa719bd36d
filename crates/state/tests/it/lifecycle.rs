//! Opening, migrating, what survives a restart, and no secret in what the state keeps, on both
//! backends.

use permatoken_state::{
    Alert, Announcement, Error, Event, EventKind, SCHEMA_VERSION, Status, TokenIdentity,
    TokenRecord,
};

use crate::{Place, at, check, key_of, on_both_backends, token};

on_both_backends!(
    announced_state_and_pending_deliveries_survive_a_restart,
    a_schema_newer_than_known_is_refused,
    migrations_applied_twice_are_a_no_op,
    a_schema_3_state_is_migrated_with_no_identity,
    no_secret_in_what_the_state_keeps,
);

async fn announced_state_and_pending_deliveries_survive_a_restart(place: Place) {
    let store = place.open().await;
    // The store says where it lives: the file, or the URL without its query.
    assert_eq!(store.location(), place.location());
    store
        .record_alert(
            Alert {
                id: "alert-1".to_owned(),
                token_name: "orders".to_owned(),
                state: "dead".to_owned(),
                previous_state: Some("ok".to_owned()),
                message: "`orders` is dead".to_owned(),
                fix: None,
                time: at(10),
            },
            vec!["ops".to_owned()],
        )
        .await
        .unwrap();
    store
        .set_unknown_since("billing", Some(at(3)))
        .await
        .unwrap();
    drop(store);

    let store = place.open().await;
    assert_eq!(store.location(), place.location());
    let orders = store.announced("orders").await.unwrap().unwrap();
    assert_eq!(
        orders.announcement,
        Some(Announcement {
            state: "dead".to_owned(),
            since: at(10),
            alert_id: Some("alert-1".to_owned()),
            last_reminder_at: None,
            reminders: 0
        })
    );
    let billing = store.announced("billing").await.unwrap().unwrap();
    assert_eq!(
        (billing.announcement, billing.unknown_since),
        (None, Some(at(3)))
    );
    let due = store.due_deliveries(at(10), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].alert.id.as_str(), due[0].route.as_str()),
        ("alert-1", "ops")
    );
}

async fn a_schema_newer_than_known_is_refused(place: Place) {
    drop(place.open().await);
    place.raw(&format!(
        "INSERT INTO schema_migrations (version, applied_at) VALUES ({}, 0);",
        SCHEMA_VERSION + 1
    ));
    let err = place
        .try_open()
        .await
        .err()
        .expect("a newer schema must be refused");
    let shown = err.to_string();
    assert!(
        matches!(err, Error::NewerSchema { found, known, .. } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{shown}"
    );
    assert!(shown.contains("written by a newer permatoken"), "{shown}");
    assert!(shown.contains("stop this replica"), "{shown}");
    assert!(
        shown.contains(&place.location().display().to_string()),
        "{shown}"
    );
}

/// Opened again (and written by a second replica's store), the state is migrated once: each
/// version recorded once, the records kept.
async fn migrations_applied_twice_are_a_no_op(place: Place) {
    let key = key_of("PERMATOKENTEST-migrate");
    let store = place.open().await;
    let other = place.another(&store).await;
    store
        .upsert_tokens(vec![token("orders", &key, 0)])
        .await
        .unwrap();
    other
        .record_checks(vec![check(&key, 1, Status::Ok)])
        .await
        .unwrap();
    drop((store, other));
    let store = place.open().await;
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(store.counts().await.unwrap().checks, 1);
    drop(store);
    let versions = place.raw_value(
        "SELECT string_agg(CAST(version AS TEXT), ',' ORDER BY version) FROM schema_migrations",
    );
    let want: Vec<String> = (1..=SCHEMA_VERSION).map(|v| v.to_string()).collect();
    assert_eq!(versions, want.join(","));
}

/// A state of schema 3 (before identities), written by an older build, is migrated with its
/// tokens, which have no identity until `/me` answers again.
async fn a_schema_3_state_is_migrated_with_no_identity(place: Place) {
    let key = key_of("PERMATOKENTEST-old");
    let [init, reminders, claims] = place.migrations_to_3();
    place.raw(&format!(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);
         INSERT INTO schema_migrations VALUES (1, 0), (2, 0), (3, 0);
         {init}
         {reminders}
         {claims}
         INSERT INTO tokens (token_sha256, name, role, fingerprint, source_path, first_seen,
            last_seen) VALUES ('{key}', 'orders', 'primary', 'EAAP…sZD', '/srv/.env', 0, 0);"
    ));
    let store = place.open().await;
    assert_eq!(store.schema_version().await.unwrap(), 4);
    assert_eq!(store.tokens().await.unwrap()[0].identity, None);
    store
        .record_checks(vec![check(&key, 5, Status::Ok)])
        .await
        .unwrap();
    assert_eq!(store.identities().await.unwrap(), []);
    store
        .upsert_tokens(vec![TokenRecord {
            identity: Some(TokenIdentity {
                id: "1001".to_owned(),
                name: None,
                seen_at: at(6),
            }),
            ..token("orders", &key, 6)
        }])
        .await
        .unwrap();
    store
        .record_checks(vec![check(&key, 6, Status::Ok)])
        .await
        .unwrap();
    assert_eq!(store.identities().await.unwrap()[0].id, "1001");
}

/// Whatever is written, a token never is: only its SHA-256 and fingerprint, in every part of what
/// the state keeps (SQLite's files, a PostgreSQL dump), before and after the store closes.
async fn no_secret_in_what_the_state_keeps(place: Place) {
    // Made at run time, as a live token would look, and marked as a test fixture.
    let canary = format!("EAAPERMATOKENTEST{}ZZcanaryZD", std::process::id());
    let key = key_of(&canary);
    let fingerprint = format!(
        "{}…{} sha256:{}",
        &canary[..4],
        &canary[canary.len() - 3..],
        &key.as_str()[..8]
    );
    let store = place.open().await;
    let mut record = token("orders", &key, 0);
    record.fingerprint = fingerprint.clone();
    store.upsert_tokens(vec![record]).await.unwrap();
    let mut c = check(&key, 1, Status::Critical);
    c.finding_codes = vec!["token_expired".to_owned()];
    store.record_checks(vec![c]).await.unwrap();
    store
        .record_alert(
            Alert {
                id: "canary-alert".to_owned(),
                token_name: "orders".to_owned(),
                state: "dead".to_owned(),
                previous_state: None,
                message: format!("the token {fingerprint} in `/srv/orders/.env` is dead"),
                fix: Some("generate a new system-user token".to_owned()),
                time: at(2),
            },
            vec!["ops".to_owned()],
        )
        .await
        .unwrap();
    store
        .mark_failed(
            "canary-alert",
            "ops",
            at(3),
            "HTTP 500 from the receiver",
            Some(at(60)),
        )
        .await
        .unwrap();
    store
        .record_event(Event {
            at: at(4),
            token_name: Some("orders".to_owned()),
            kind: EventKind::Renewal,
            detail: format!("renewed {fingerprint}"),
        })
        .await
        .unwrap();

    let holds = |bytes: &[u8], text: &str| bytes.windows(text.len()).any(|w| w == text.as_bytes());
    let (parts, written) = place.stored();
    let mut searched = 0;
    for (name, bytes) in &parts {
        searched += bytes.len();
        assert!(!holds(bytes, &canary), "the canary token is in {name}");
        assert!(!holds(bytes, &canary[4..canary.len() - 3]), "{name}");
        // The records were written: they are there, so the search looked in the right place.
        if name == written {
            assert!(holds(bytes, &fingerprint), "{name}");
            assert!(holds(bytes, key.as_str()), "{name}");
        }
    }
    assert!(parts.iter().any(|(name, _)| name == written));
    assert!(searched > 0);
    drop(store);
    for (name, bytes) in place.stored().0 {
        assert!(!holds(&bytes, &canary), "the canary token is in {name}");
    }
}
