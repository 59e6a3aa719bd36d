//! Each kind of record written and read back, against a real PostgreSQL: the same scenarios as
//! `records.rs` runs against SQLite.

use permatoken_state::{
    Alert, Announcement, CheckStatus, DeliveryStatus, Error, Event, EventKind, LatestStatus,
    PgOptions, Role, Status, StatusPoint, Store, TokenRecord,
};

use crate::pg_cluster::{PgCluster, TRUSTED};
use crate::{at, check, key_of, token};

/// A fresh cluster and a store on a new database in it; `None` where PostgreSQL is not available.
async fn store() -> Option<(PgCluster, Store)> {
    let pg = PgCluster::start()?;
    pg.create_database("state", TRUSTED);
    let url = pg.url(TRUSTED, "state", "?sslmode=disable");
    let store = Store::open_postgres(&url, PgOptions::default())
        .await
        .unwrap();
    Some((pg, store))
}

fn alert(id: &str, name: &str, state: &str, previous: Option<&str>, when: i64) -> Alert {
    Alert {
        id: id.to_owned(),
        token_name: name.to_owned(),
        state: state.to_owned(),
        previous_state: previous.map(str::to_owned),
        message: format!("`{name}` is {state}"),
        fix: Some("run `permatoken renew`".to_owned()),
        time: at(when),
    }
}

#[tokio::test]
async fn tokens_round_trip_and_keep_their_first_sighting() {
    let Some((_pg, store)) = store().await else {
        return;
    };
    let primary = key_of("PERMATOKENTEST-primary");
    let backup = key_of("PERMATOKENTEST-backup");
    let mut b = token("orders/WHATSAPP_ACCESS_TOKEN_BACKUP", &backup, 10);
    b.role = Role::Backup("orders".to_owned());
    b.source_key = Some("WHATSAPP_ACCESS_TOKEN_BACKUP".to_owned());
    store
        .upsert_tokens(vec![token("orders", &primary, 10), b.clone()])
        .await
        .unwrap();
    let mut later = token("orders", &primary, 500);
    later.source_path = "/srv/orders2/.env".to_owned();
    store.upsert_tokens(vec![later]).await.unwrap();

    let got = store.tokens().await.unwrap();
    let want_primary = TokenRecord {
        first_seen: at(10),
        last_seen: at(500),
        source_path: "/srv/orders2/.env".to_owned(),
        ..token("orders", &primary, 10)
    };
    assert_eq!(got, vec![want_primary, b]);
}

#[tokio::test]
async fn checks_round_trip_with_latest_and_history() {
    let Some((_pg, store)) = store().await else {
        return;
    };
    let old = key_of("PERMATOKENTEST-old");
    let new = key_of("PERMATOKENTEST-new");
    let other = key_of("PERMATOKENTEST-other");
    store
        .upsert_tokens(vec![
            token("orders", &old, 0),
            token("orders", &new, 0),
            token("billing", &other, 0),
        ])
        .await
        .unwrap();
    let mut unknown = check(&old, 200, Status::Unknown);
    unknown.valid = None;
    unknown.expires_at = None;
    unknown.kind = None;
    unknown.missing_scopes = vec![];
    unknown.alert_state = "cannot_be_checked".to_owned();
    let mut never = check(&new, 300, Status::Ok);
    never.never_expires = true;
    never.expires_at = None;
    store
        .record_checks(vec![
            check(&old, 100, Status::Ok),
            unknown.clone(),
            never.clone(),
            check(&other, 100, Status::Critical),
        ])
        .await
        .unwrap();
    // An older check recorded late does not become the latest.
    store
        .record_checks(vec![check(&old, 50, Status::Warning)])
        .await
        .unwrap();

    let latest = store.latest_checks().await.unwrap();
    let by_key: Vec<_> = latest
        .iter()
        .map(|l| (l.token.name.as_str(), l.check.clone()))
        .collect();
    assert_eq!(by_key.len(), 3);
    assert!(by_key.contains(&("billing", Some(check(&other, 100, Status::Critical)))));
    assert!(by_key.contains(&("orders", Some(unknown.clone()))));
    assert!(by_key.contains(&("orders", Some(never.clone()))));
    // What the status page reads: the same rows in the same order, with the fields it shows.
    let statuses = store.latest_statuses().await.unwrap();
    let expected: Vec<LatestStatus> = latest
        .iter()
        .map(|l| LatestStatus {
            name: l.token.name.clone(),
            key: l.token.key.clone(),
            fingerprint: l.token.fingerprint.clone(),
            check: l.check.as_ref().map(|c| CheckStatus {
                checked_at: c.checked_at,
                status: c.status,
                valid: c.valid,
                expires_at: c.expires_at,
                never_expires: c.never_expires,
                kind: c.kind.clone(),
                missing_scopes: c.missing_scopes.clone(),
            }),
        })
        .collect();
    assert_eq!(statuses, expected);
    assert!(
        statuses
            .iter()
            .any(|s| s.check.as_ref().is_some_and(|c| c.never_expires))
    );
    assert!(
        statuses
            .iter()
            .any(|s| s.check.as_ref().is_some_and(|c| c.valid.is_none()))
    );

    // History follows the name across renewals, oldest first, `to` excluded.
    let history = store.history("orders", at(50), at(300)).await.unwrap();
    assert_eq!(
        history,
        vec![
            check(&old, 50, Status::Warning),
            check(&old, 100, Status::Ok),
            unknown
        ]
    );
    // The chart's points: the newest two of each name, times and statuses only.
    let points = store.history_points(at(50), at(300), 2).await.unwrap();
    let point = |s: i64, status| StatusPoint {
        checked_at: at(s),
        status,
    };
    assert_eq!(
        points,
        vec![
            ("billing".to_owned(), vec![point(100, Status::Critical)]),
            (
                "orders".to_owned(),
                vec![point(100, Status::Ok), point(200, Status::Unknown)]
            ),
        ]
    );
    // Only the names asked for, each once, an unknown one giving nothing.
    let names = ["orders", "nobody", "orders"].map(str::to_owned).to_vec();
    let only = store
        .history_points_of(names, at(50), at(300), 2)
        .await
        .unwrap();
    assert_eq!(
        only,
        vec![(
            "orders".to_owned(),
            vec![point(100, Status::Ok), point(200, Status::Unknown)]
        )]
    );
    assert!(
        store
            .history_points_of(Vec::new(), at(50), at(300), 2)
            .await
            .unwrap()
            .is_empty()
    );
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.tokens, counts.checks), (3, 5));
}

#[tokio::test]
async fn a_check_for_an_unknown_token_is_refused_and_nothing_of_its_batch_is_kept() {
    let Some((_pg, store)) = store().await else {
        return;
    };
    let known = key_of("PERMATOKENTEST-known");
    store
        .upsert_tokens(vec![token("orders", &known, 0)])
        .await
        .unwrap();
    let stranger = key_of("PERMATOKENTEST-stranger");
    let err = store
        .record_checks(vec![
            check(&known, 1, Status::Ok),
            check(&stranger, 1, Status::Ok),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Postgres { .. }), "{err}");
    assert_eq!(store.counts().await.unwrap().checks, 0);
}

#[tokio::test]
async fn announcements_alerts_and_reminders() {
    let Some((_pg, store)) = store().await else {
        return;
    };
    assert_eq!(store.announced("orders").await.unwrap(), None);
    store
        .set_unknown_since("orders", Some(at(5)))
        .await
        .unwrap();
    store
        .set_announcement(
            "orders",
            Announcement {
                state: "ok".to_owned(),
                since: at(1),
                alert_id: None,
                last_reminder_at: None,
                reminders: 0,
            },
        )
        .await
        .unwrap();
    let a = store.announced("orders").await.unwrap().unwrap();
    assert_eq!(
        a.unknown_since,
        Some(at(5)),
        "an announcement keeps unknown_since"
    );
    assert_eq!(a.announcement.unwrap().state, "ok");

    store
        .record_alert(
            alert("a1", "orders", "critical", Some("ok"), 10),
            vec!["ops".to_owned(), "pager".to_owned()],
        )
        .await
        .unwrap();
    let a = store.announced("orders").await.unwrap().unwrap();
    assert_eq!(
        a.announcement,
        Some(Announcement {
            state: "critical".to_owned(),
            since: at(10),
            alert_id: Some("a1".to_owned()),
            last_reminder_at: None,
            reminders: 0
        })
    );
    // Same state again: a reminder, the announcement's start and alert stay.
    store
        .record_alert(
            alert("a2", "orders", "critical", Some("critical"), 20),
            vec!["ops".to_owned()],
        )
        .await
        .unwrap();
    let a = store.announced("orders").await.unwrap().unwrap();
    let ann = a.announcement.unwrap();
    assert_eq!((ann.since, ann.alert_id.as_deref()), (at(10), Some("a1")));
    assert_eq!(ann.last_reminder_at, Some(at(20)));
    assert_eq!(ann.reminders, 1, "a reminder is counted");
    store.set_unknown_since("orders", None).await.unwrap();
    let all = store.all_announced().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].unknown_since, None);
    assert_eq!(all[0].announcement.as_ref().unwrap().state, "critical");

    // Recording the same id again changes nothing.
    store
        .record_alert(
            alert("a1", "orders", "dead", None, 30),
            vec!["other".to_owned()],
        )
        .await
        .unwrap();
    assert_eq!(store.deliveries("a1").await.unwrap().len(), 2);
    assert_eq!(
        store
            .announced("orders")
            .await
            .unwrap()
            .unwrap()
            .announcement
            .unwrap()
            .state,
        "critical"
    );
}

#[tokio::test]
async fn deliveries_are_due_retried_delivered_or_given_up() {
    let Some((_pg, store)) = store().await else {
        return;
    };
    let a1 = alert("a1", "orders", "dead", Some("ok"), 10);
    store
        .record_alert(a1.clone(), vec!["ops".to_owned(), "pager".to_owned()])
        .await
        .unwrap();
    assert!(store.due_deliveries(at(9), 10).await.unwrap().is_empty());
    let due = store.due_deliveries(at(10), 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(
        due.iter()
            .all(|d| d.alert == a1 && d.status == DeliveryStatus::Pending)
    );

    store.mark_delivered("a1", "ops", at(11)).await.unwrap();
    store
        .mark_failed(
            "a1",
            "pager",
            at(11),
            "HTTP 503\u{1b}[31m from receiver",
            Some(at(70)),
        )
        .await
        .unwrap();
    assert!(store.due_deliveries(at(69), 10).await.unwrap().is_empty());
    let due = store.due_deliveries(at(70), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].route, "pager");
    assert_eq!(due[0].status, DeliveryStatus::Failed);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(
        due[0].last_error.as_deref(),
        Some("HTTP 503 [31m from receiver")
    );

    store
        .mark_failed("a1", "pager", at(70), "HTTP 503", None)
        .await
        .unwrap();
    assert!(
        store
            .due_deliveries(at(10_000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let all = store.deliveries("a1").await.unwrap();
    let summary: Vec<_> = all
        .iter()
        .map(|d| (d.route.as_str(), d.status, d.attempts, d.next_attempt_at))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("ops", DeliveryStatus::Delivered, 1, None),
            ("pager", DeliveryStatus::Failed, 2, None)
        ]
    );
    let health = store.route_health().await.unwrap();
    assert_eq!(health.len(), 2);
    assert_eq!(
        (
            health[0].route.as_str(),
            health[0].delivered,
            health[0].last_error.as_deref()
        ),
        ("ops", 1, None)
    );
    assert_eq!(
        (
            health[1].route.as_str(),
            health[1].failed,
            health[1].last_error.as_deref()
        ),
        ("pager", 1, Some("HTTP 503"))
    );
    assert_eq!(
        (health[0].last_at, health[0].failing_since),
        (Some(at(11)), None)
    );
    assert_eq!(
        (health[1].last_at, health[1].failing_since),
        (Some(at(70)), Some(at(70)))
    );

    let err = store
        .mark_delivered("a1", "nowhere", at(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownDelivery { .. }), "{err}");
}

#[tokio::test]
async fn events_round_trip_newest_first() {
    let Some((_pg, store)) = store().await else {
        return;
    };
    for (i, kind) in [EventKind::Start, EventKind::Renewal, EventKind::Failover]
        .into_iter()
        .enumerate()
    {
        store
            .record_event(Event {
                at: at(i as i64),
                token_name: (kind != EventKind::Start).then(|| "orders".to_owned()),
                kind,
                detail: format!("detail {i}\nsecond line"),
            })
            .await
            .unwrap();
    }
    let recent = store.recent_events(2).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].kind, EventKind::Failover);
    assert_eq!(recent[0].detail, "detail 2 second line");
    assert_eq!(recent[1].kind, EventKind::Renewal);
    assert_eq!(recent[1].token_name.as_deref(), Some("orders"));
    assert_eq!(recent[1].at, at(1));
}

#[tokio::test]
async fn retention_keeps_each_tokens_latest_check() {
    let Some((_pg, store)) = store().await else {
        return;
    };
    let busy = key_of("PERMATOKENTEST-busy");
    let quiet = key_of("PERMATOKENTEST-quiet");
    store
        .upsert_tokens(vec![token("busy", &busy, 0), token("quiet", &quiet, 0)])
        .await
        .unwrap();
    store
        .record_checks(vec![
            check(&busy, 10, Status::Ok),
            check(&busy, 20, Status::Ok),
            check(&busy, 2_000, Status::Ok),
            check(&quiet, 10, Status::Ok),
            check(&quiet, 20, Status::Warning),
        ])
        .await
        .unwrap();
    for when in [10, 2_000] {
        store
            .record_event(Event {
                at: at(when),
                token_name: None,
                kind: EventKind::Reload,
                detail: String::new(),
            })
            .await
            .unwrap();
    }
    // An old, settled alert that no announcement points to goes; the announced one stays.
    store
        .record_alert(
            alert("old", "busy", "expiring", None, 10),
            vec!["ops".to_owned()],
        )
        .await
        .unwrap();
    store.mark_delivered("old", "ops", at(11)).await.unwrap();
    store
        .record_alert(
            alert("new", "busy", "ok", Some("expiring"), 15),
            vec!["ops".to_owned()],
        )
        .await
        .unwrap();

    // Each alert is listed among the events too: both of them (at 10 and 15) are old.
    let listed = store.recent_events(10).await.unwrap();
    assert_eq!(listed[1].kind, EventKind::Alert, "{listed:?}");
    assert!(
        listed[1].detail.starts_with("expiring → ok: "),
        "{listed:?}"
    );
    let pruned = store.prune(at(1_000)).await.unwrap();
    assert_eq!((pruned.checks, pruned.events, pruned.alerts), (3, 3, 1));
    assert_eq!(
        store.history("quiet", at(0), at(10_000)).await.unwrap(),
        vec![check(&quiet, 20, Status::Warning)]
    );
    assert_eq!(
        store.history("busy", at(0), at(10_000)).await.unwrap(),
        vec![check(&busy, 2_000, Status::Ok)]
    );
    assert_eq!(
        store.deliveries("new").await.unwrap().len(),
        1,
        "still pending and announced"
    );
    assert!(store.deliveries("old").await.unwrap().is_empty());

    assert_eq!(store.forget_tokens_unseen_since(at(1)).await.unwrap(), 2);
    assert_eq!(store.counts().await.unwrap().checks, 0);
}

#[tokio::test]
async fn announce_keeps_the_callers_state_and_the_alert_in_one_call() {
    let Some((_pg, store)) = store().await else {
        return;
    };
    // A `recovered` alert announces `ok`: the announcement is the caller's, not the alert's state.
    store
        .announce(
            "orders",
            Some(Announcement {
                state: "ok".to_owned(),
                since: at(10),
                alert_id: Some("r1".to_owned()),
                last_reminder_at: Some(at(10)),
                reminders: 2,
            }),
            None,
            Some((
                alert("r1", "orders", "recovered", Some("critical"), 10),
                vec!["ops".to_owned()],
            )),
        )
        .await
        .unwrap();
    let a = store.announced("orders").await.unwrap().unwrap();
    let ann = a.announcement.unwrap();
    assert_eq!((ann.state.as_str(), ann.reminders), ("ok", 2));
    assert_eq!(store.deliveries("r1").await.unwrap().len(), 1);
    // Nothing known yet: no announcement, and since when it has been unknown.
    store
        .announce("billing", None, Some(at(5)), None)
        .await
        .unwrap();
    let b = store.announced("billing").await.unwrap().unwrap();
    assert_eq!((b.announcement, b.unknown_since), (None, Some(at(5))));
}

#[tokio::test]
async fn a_batch_names_each_tokens_newest_check_latest_ties_going_to_the_later_one() {
    let Some((_pg, store)) = store().await else {
        return;
    };
    let key = key_of("PERMATOKENTEST-batch");
    let many: Vec<_> = (0..2_000)
        .map(|i| key_of(&format!("PERMATOKENTEST-many-{i}")))
        .collect();
    let mut tokens = vec![token("orders", &key, 0)];
    tokens.extend(many.iter().map(|k| token("fleet", k, 0)));
    store.upsert_tokens(tokens).await.unwrap();
    let mut tie = check(&key, 300, Status::Critical);
    tie.alert_state = "dead".to_owned();
    let mut batch = vec![
        check(&key, 100, Status::Ok),
        check(&key, 300, Status::Warning),
        check(&key, 200, Status::Ok),
        tie.clone(),
    ];
    batch.extend(many.iter().map(|k| check(k, 5, Status::Ok)));
    store.record_checks(batch).await.unwrap();
    let latest = store.latest_checks().await.unwrap();
    let orders = latest.iter().find(|l| l.token.name == "orders").unwrap();
    assert_eq!(orders.check, Some(tie));
    assert_eq!(
        latest
            .iter()
            .filter(|l| l.check.as_ref().is_some_and(|c| c.checked_at == at(5)))
            .count(),
        2_000
    );
    assert_eq!(store.counts().await.unwrap().checks, 2_004);
    // An empty batch is nothing.
    store.record_checks(vec![]).await.unwrap();
}

#[tokio::test]
async fn a_token_given_twice_in_a_batch_keeps_the_first_sighting_and_the_last_fields() {
    let Some((_pg, store)) = store().await else {
        return;
    };
    let key = key_of("PERMATOKENTEST-twice");
    let mut later = token("orders", &key, 50);
    later.source_path = "/srv/moved/.env".to_owned();
    store
        .upsert_tokens(vec![token("orders", &key, 10), later])
        .await
        .unwrap();
    let got = store.tokens().await.unwrap();
    assert_eq!(
        got,
        vec![TokenRecord {
            first_seen: at(10),
            last_seen: at(50),
            source_path: "/srv/moved/.env".to_owned(),
            ..token("orders", &key, 10)
        }]
    );
    store.upsert_tokens(vec![]).await.unwrap();
}

#[tokio::test]
async fn claims_are_taken_once_across_replicas() {
    let Some((pg, store)) = store().await else {
        return;
    };
    let url = pg.url(TRUSTED, "state", "?sslmode=disable");
    let other = Store::open_postgres(&url, PgOptions::default())
        .await
        .unwrap();
    crate::records::claims_are_taken_once_and_pruned_when_done(&store, &other).await;
    assert_eq!(store.schema_version().await.unwrap(), 4);
    assert!(pg.dump("state").contains("leader_heartbeat"));
}

#[tokio::test]
async fn claims_race_has_one_winner() {
    let Some((pg, store)) = store().await else {
        return;
    };
    let url = pg.url(TRUSTED, "state", "?sslmode=disable");
    let other = Store::open_postgres(&url, PgOptions::default())
        .await
        .unwrap();
    for n in 0..20 {
        let key = format!("{}:renew:{n}", key_of("PERMATOKENTEST-primary"));
        let (a, b) = tokio::join!(
            store.claim(&key, "replica-a", at(n)),
            other.claim(&key, "replica-b", at(n))
        );
        assert!(
            a.unwrap() ^ b.unwrap(),
            "exactly one of two replicas wins {key}"
        );
    }
}

/// Claims through the election land only while this replica leads: a standby's are refused, and a
/// leader whose session was ended (fenced) cannot claim, while the new leader can.
#[tokio::test]
async fn a_fenced_leader_cannot_claim() {
    let Some((pg, store)) = store().await else {
        return;
    };
    let url = pg.url(TRUSTED, "state", "?sslmode=disable");
    let other = Store::open_postgres(&url, PgOptions::default())
        .await
        .unwrap();
    let lease = std::time::Duration::from_secs(15);
    let a = store.election("replica-a", lease);
    let b = other.election("replica-b", lease);
    assert!(a.poll().await.unwrap());
    assert!(!b.poll().await.unwrap());
    let first = format!("{}:renew:1", key_of("PERMATOKENTEST-primary"));
    let second = format!("{}:renew:2", key_of("PERMATOKENTEST-primary"));
    assert!(
        !b.claim(&first, at(1)).await.unwrap(),
        "a standby claims nothing"
    );
    assert!(a.claim(&first, at(1)).await.unwrap());
    assert!(!a.claim(&first, at(2)).await.unwrap());

    // Fencing: the leader's session ends (as a standby's pg_terminate_backend does).
    pg.psql(
        "state",
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted",
    );
    assert!(
        !matches!(a.claim(&second, at(3)).await, Ok(true)),
        "a fenced leader's claim must not land"
    );
    // The lock goes when the ended backend has exited: poll until b takes it.
    let mut leads = false;
    for _ in 0..200 {
        if b.poll().await.unwrap() {
            leads = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(leads, "the standby takes the lock once it is free");
    assert!(b.claim(&second, at(4)).await.unwrap());
    let owner = pg.psql(
        "state",
        &format!("SELECT replica FROM claims WHERE key = '{second}'"),
    );
    assert!(owner.contains("replica-b"), "{owner}");
    assert!(!owner.contains("replica-a"), "{owner}");
}

#[tokio::test]
async fn identities_are_kept_and_go_with_their_check() {
    let Some((_pg, store)) = store().await else {
        return;
    };
    crate::records::identities_are_kept_and_go_with_the_check_that_saw_them(&store).await;
}

/// A state of schema 3 (before identities), written by an older replica, is migrated with its
/// tokens, which have no identity until `/me` answers again.
#[tokio::test]
async fn a_schema_3_state_is_migrated_with_no_identity() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("state", TRUSTED);
    let key = key_of("PERMATOKENTEST-old");
    pg.psql(
        "state",
        &format!(
            "SET ROLE {TRUSTED};
             CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);
             INSERT INTO schema_migrations VALUES (1, 0), (2, 0), (3, 0);
             {}
             {}
             {}
             INSERT INTO tokens (token_sha256, name, role, fingerprint, source_path, first_seen,
                last_seen) VALUES ('{key}', 'orders', 'primary', 'EAAP…sZD', '/srv/.env', 0, 0);",
            include_str!("../../migrations/postgres/0001_init.sql"),
            include_str!("../../migrations/postgres/0002_reminders.sql"),
            include_str!("../../migrations/postgres/0003_claims.sql"),
        ),
    );
    let url = pg.url(TRUSTED, "state", "?sslmode=disable");
    let store = Store::open_postgres(&url, PgOptions::default())
        .await
        .unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 4);
    assert_eq!(store.tokens().await.unwrap()[0].identity, None);
    store
        .record_checks(vec![check(&key, 5, Status::Ok)])
        .await
        .unwrap();
    assert_eq!(store.identities().await.unwrap(), []);
    store
        .upsert_tokens(vec![TokenRecord {
            identity: Some(permatoken_state::TokenIdentity {
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
