//! Each kind of record written and read back, on both backends.

use permatoken_state::{
    Alert, AnnouncedReason, Announcement, CheckStatus, DeliveryStatus, Error, Event, EventKind,
    IdentityCheck, LatestStatus, MAX_TEXT, Role, Status, StatusPoint, TokenIdentity, TokenKey,
    TokenRecord,
};

use crate::{Place, at, check, key_of, on_both_backends, token};

on_both_backends!(
    tokens_round_trip_and_keep_their_first_sighting,
    checks_round_trip_with_latest_and_history,
    a_check_for_an_unknown_token_is_refused_and_nothing_of_its_batch_is_kept,
    announcements_alerts_and_reminders,
    deliveries_are_due_retried_delivered_or_given_up,
    a_corrupt_delivery_time_is_reported_not_dropped,
    events_round_trip_newest_first,
    retention_keeps_each_tokens_latest_check,
    announce_keeps_the_callers_state_and_the_alert_in_one_call,
    histories_give_each_names_newest_checks_oldest_first_in_one_read,
    history_points_of_reads_only_the_names_asked_for,
    announce_all_is_announce_for_each_decision_in_order,
    a_batch_names_each_tokens_newest_check_latest_ties_going_to_the_later_one,
    a_token_given_twice_in_a_batch_keeps_the_first_sighting_and_the_last_fields,
    claims_are_taken_once_across_replicas,
    claims_race_has_one_winner,
    identities_are_kept_and_go_with_the_check_that_saw_them,
);

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

async fn tokens_round_trip_and_keep_their_first_sighting(place: Place) {
    let store = place.open().await;
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

async fn checks_round_trip_with_latest_and_history(place: Place) {
    let store = place.open().await;
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

async fn a_check_for_an_unknown_token_is_refused_and_nothing_of_its_batch_is_kept(place: Place) {
    let store = place.open().await;
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
    assert!(place.refused(&err), "{err}");
    assert_eq!(store.counts().await.unwrap().checks, 0);
}

#[tokio::test]
async fn a_token_key_must_be_a_sha256_and_is_never_repeated_in_the_error() {
    let err = permatoken_state::TokenKey::parse("EAAPERMATOKENTESTnotahash").unwrap_err();
    assert!(!err.to_string().contains("EAAP"), "{err}");
    assert!(err.to_string().contains("64 lowercase hex digits"));
}

async fn announcements_alerts_and_reminders(place: Place) {
    let store = place.open().await;
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
    // The page's reason is the announcing alert's words, not the reminder's.
    assert_eq!(
        store.announced_reasons("cannot_be_checked").await.unwrap(),
        [AnnouncedReason {
            token_name: "orders".to_owned(),
            state: "critical".to_owned(),
            message: "`orders` is critical".to_owned(),
            fix: Some("run `permatoken renew`".to_owned()),
            at: at(10),
        }]
    );
    assert_eq!(store.announced_reasons("critical").await.unwrap(), []);
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

async fn deliveries_are_due_retried_delivered_or_given_up(place: Place) {
    let store = place.open().await;
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
    // When each route last settled a delivery, and since when the failing one fails.
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

/// A delivery time the state should not hold (edited by hand, or written by a broken build) is a
/// corrupt state to the page's route health, on both backends: never dropped, as if the route had
/// settled nothing.
async fn a_corrupt_delivery_time_is_reported_not_dropped(place: Place) {
    let store = place.open().await;
    store
        .record_alert(
            alert("a1", "orders", "dead", Some("ok"), 10),
            vec!["ops".to_owned()],
        )
        .await
        .unwrap();
    store.mark_delivered("a1", "ops", at(11)).await.unwrap();
    assert_eq!(store.route_health().await.unwrap()[0].last_at, Some(at(11)));
    // Some 285,000 years on: past any time a timestamp holds.
    place.raw("UPDATE deliveries SET updated_at = 9000000000000 WHERE alert_id = 'a1';");
    let err = store.route_health().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupt {
                what: "deliveries.updated_at",
                ..
            }
        ),
        "{err}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains("holds an unexpected value in deliveries.updated_at"),
        "{shown}"
    );
    assert!(
        shown.contains(&place.location().display().to_string()),
        "{shown}"
    );
}

async fn events_round_trip_newest_first(place: Place) {
    let store = place.open().await;
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

async fn retention_keeps_each_tokens_latest_check(place: Place) {
    let store = place.open().await;
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
    assert_eq!(listed[1].token_name.as_deref(), Some("busy"));
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

async fn announce_keeps_the_callers_state_and_the_alert_in_one_call(place: Place) {
    let store = place.open().await;
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

async fn histories_give_each_names_newest_checks_oldest_first_in_one_read(place: Place) {
    let store = place.open().await;
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
    store
        .record_checks(vec![
            check(&old, 10, Status::Ok),
            check(&old, 100, Status::Warning),
            check(&new, 200, Status::Ok),
            check(&new, 300, Status::Ok),
            check(&other, 100, Status::Critical),
            check(&other, 400, Status::Critical),
        ])
        .await
        .unwrap();
    // `from` included, `to` excluded, at most two per name (the newest), across renewals.
    let got = store.histories(at(50), at(400), 2).await.unwrap();
    assert_eq!(
        got,
        vec![
            (
                "billing".to_owned(),
                vec![check(&other, 100, Status::Critical)]
            ),
            (
                "orders".to_owned(),
                vec![check(&new, 200, Status::Ok), check(&new, 300, Status::Ok)]
            ),
        ]
    );
    // The same as one `history` per name, cut to its newest.
    let orders = store.history("orders", at(50), at(400)).await.unwrap();
    assert_eq!(got[1].1, orders[orders.len() - 2..]);
    assert!(
        store
            .histories(at(500), at(600), 2)
            .await
            .unwrap()
            .is_empty()
    );
    // `history_points`: the same rows, only their times and statuses.
    let points = store.history_points(at(50), at(400), 2).await.unwrap();
    let expected: Vec<(String, Vec<StatusPoint>)> = got
        .iter()
        .map(|(name, checks)| {
            let points = checks
                .iter()
                .map(|c| StatusPoint {
                    checked_at: c.checked_at,
                    status: c.status,
                })
                .collect();
            (name.clone(), points)
        })
        .collect();
    assert_eq!(points, expected);
    assert_eq!(points[0].1[0].status, Status::Critical);
    assert!(
        store
            .history_points(at(500), at(600), 2)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn history_points_of_reads_only_the_names_asked_for(place: Place) {
    let store = place.open().await;
    let old = key_of("PERMATOKENTEST-old");
    let new = key_of("PERMATOKENTEST-new");
    let other = key_of("PERMATOKENTEST-other");
    let third = key_of("PERMATOKENTEST-third");
    store
        .upsert_tokens(vec![
            token("orders", &old, 0),
            token("orders", &new, 0),
            token("billing", &other, 0),
            token("support", &third, 0),
        ])
        .await
        .unwrap();
    store
        .record_checks(vec![
            check(&old, 10, Status::Ok),
            check(&old, 100, Status::Warning),
            check(&new, 200, Status::Ok),
            check(&new, 300, Status::Critical),
            check(&other, 100, Status::Critical),
            check(&third, 150, Status::Unknown),
        ])
        .await
        .unwrap();
    let point = |s: i64, status| StatusPoint {
        checked_at: at(s),
        status,
    };
    // Only the names asked for (a name given twice once, an unknown one nothing), by name, each
    // name's newest two in the window, across renewals: what `history_points` gives for them.
    let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let got = store
        .history_points_of(
            names(&["support", "orders", "nobody", "orders"]),
            at(50),
            at(400),
            2,
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            (
                "orders".to_owned(),
                vec![point(200, Status::Ok), point(300, Status::Critical)]
            ),
            ("support".to_owned(), vec![point(150, Status::Unknown)]),
        ]
    );
    let all = store.history_points(at(50), at(400), 2).await.unwrap();
    let wanted: Vec<_> = all.into_iter().filter(|(n, _)| n != "billing").collect();
    assert_eq!(got, wanted);
    assert!(
        store
            .history_points_of(Vec::new(), at(0), at(400), 2)
            .await
            .unwrap()
            .is_empty()
    );
    // More names than one query takes: the answer is whole and in order all the same.
    let mut many: Vec<String> = (0..1_200).map(|i| format!("x{i:04}")).collect();
    many.push("billing".to_owned());
    many.push("orders".to_owned());
    let got = store
        .history_points_of(many, at(0), at(400), 200)
        .await
        .unwrap();
    let names_got: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names_got, ["billing", "orders"]);
    assert_eq!(got[1].1.len(), 4);
}

async fn announce_all_is_announce_for_each_decision_in_order(place: Place) {
    let store = place.open().await;
    let ok = |since: i64, alert_id: Option<&str>| Announcement {
        state: "ok".to_owned(),
        since: at(since),
        alert_id: alert_id.map(str::to_owned),
        last_reminder_at: None,
        reminders: 0,
    };
    store
        .announce_all(vec![
            permatoken_state::Decision {
                token_name: "orders".to_owned(),
                announcement: Some(ok(10, None)),
                unknown_since: None,
                alert: None,
            },
            permatoken_state::Decision {
                token_name: "billing".to_owned(),
                announcement: None,
                unknown_since: Some(at(5)),
                alert: None,
            },
            // A later decision about the same name wins, and brings its alert and delivery.
            permatoken_state::Decision {
                token_name: "orders".to_owned(),
                announcement: Some(Announcement {
                    state: "critical".to_owned(),
                    ..ok(20, Some("c1"))
                }),
                unknown_since: None,
                alert: Some(Box::new((
                    alert("c1", "orders", "critical", Some("ok"), 20),
                    vec!["ops".to_owned()],
                ))),
            },
        ])
        .await
        .unwrap();
    let orders = store.announced("orders").await.unwrap().unwrap();
    let ann = orders.announcement.unwrap();
    assert_eq!(
        (ann.state.as_str(), ann.since, ann.alert_id.as_deref()),
        ("critical", at(20), Some("c1"))
    );
    assert_eq!(store.deliveries("c1").await.unwrap().len(), 1);
    let billing = store.announced("billing").await.unwrap().unwrap();
    assert_eq!(
        (billing.announcement, billing.unknown_since),
        (None, Some(at(5)))
    );
    // Nothing to decide writes nothing.
    store.announce_all(vec![]).await.unwrap();
    assert_eq!(store.all_announced().await.unwrap().len(), 2);
}

async fn a_batch_names_each_tokens_newest_check_latest_ties_going_to_the_later_one(place: Place) {
    let store = place.open().await;
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

async fn a_token_given_twice_in_a_batch_keeps_the_first_sighting_and_the_last_fields(place: Place) {
    let store = place.open().await;
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

/// One claim per key: the first caller does the action, every later one (itself included) skips it,
/// done or not; marking done is once; only done claims older than the cutoff are pruned. `other`
/// is a second replica's store on the same state.
async fn claims_are_taken_once_across_replicas(place: Place) {
    let store = place.open().await;
    let other = place.another(&store).await;
    let key = format!("{}:renew:1700000000", key_of("PERMATOKENTEST-primary"));
    let next = format!("{}:renew:1705000000", key_of("PERMATOKENTEST-primary"));
    let failover = format!("{}:failover:100", key_of("PERMATOKENTEST-primary"));
    assert!(store.claim(&key, "replica-a", at(10)).await.unwrap());
    assert!(!other.claim(&key, "replica-b", at(11)).await.unwrap());
    assert!(!store.claim(&key, "replica-a", at(12)).await.unwrap());
    // Another state change, or another action, is a claim of its own.
    assert!(other.claim(&next, "replica-b", at(13)).await.unwrap());
    assert!(store.claim(&failover, "replica-a", at(13)).await.unwrap());

    assert!(store.claim_done(&key, at(20)).await.unwrap());
    assert!(!other.claim_done(&key, at(21)).await.unwrap(), "done once");
    assert!(!store.claim_done("never-claimed", at(21)).await.unwrap());
    // Done is still claimed: a renewal is never done twice.
    assert!(!other.claim(&key, "replica-b", at(22)).await.unwrap());
    assert!(other.claim_done(&next, at(40)).await.unwrap());

    // `key` (done at 20) goes; `next` (done at 40) and `failover` (never done) stay.
    assert_eq!(store.prune_claims(at(30)).await.unwrap(), 1);
    assert_eq!(store.prune_claims(at(30)).await.unwrap(), 0);
    assert!(!store.claim(&next, "replica-a", at(50)).await.unwrap());
    assert!(!other.claim(&failover, "replica-b", at(50)).await.unwrap());
    // Once pruned, the key could be claimed again (retention is far longer than a change lasts).
    assert!(store.claim(&key, "replica-a", at(60)).await.unwrap());
}

/// Two replicas claiming the same key at once: exactly one wins.
async fn claims_race_has_one_winner(place: Place) {
    let store = place.open().await;
    let other = place.another(&store).await;
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

fn identity(id: &str, name: Option<&str>, seen: i64) -> TokenIdentity {
    TokenIdentity {
        id: id.to_owned(),
        name: name.map(str::to_owned),
        seen_at: at(seen),
    }
}

/// A token's identity is written with its record, kept by a record without one, replaced by a
/// new one, cleaned and capped, and read back by [`Store::identities`] only with the check that
/// saw it.
async fn identities_are_kept_and_go_with_the_check_that_saw_them(place: Place) {
    let store = place.open().await;
    let seen = key_of("PERMATOKENTEST-seen");
    let silent = key_of("PERMATOKENTEST-silent");
    let never = key_of("PERMATOKENTEST-never");
    let unchecked = key_of("PERMATOKENTEST-unchecked");
    let named = |name: &str, key, at_: i64, id: Option<TokenIdentity>| TokenRecord {
        identity: id,
        ..token(name, key, at_)
    };
    store
        .upsert_tokens(vec![
            named(
                "seen",
                &seen,
                10,
                Some(identity("1001", Some("Orders bot"), 10)),
            ),
            named("silent", &silent, 10, Some(identity("1002", None, 10))),
            named("never", &never, 10, None),
            named(
                "unchecked",
                &unchecked,
                10,
                Some(identity("1004", None, 10)),
            ),
        ])
        .await
        .unwrap();
    let mut dead = check(&silent, 10, Status::Critical);
    dead.finding_codes = vec!["token_expired".to_owned()];
    store
        .record_checks(vec![
            check(&seen, 10, Status::Ok),
            dead,
            check(&never, 10, Status::Ok),
        ])
        .await
        .unwrap();
    let got = store.identities().await.unwrap();
    let mut want = vec![
        IdentityCheck {
            key: seen.clone(),
            id: "1001".to_owned(),
            name: Some("Orders bot".to_owned()),
            status: Status::Ok,
            finding_codes: check(&seen, 10, Status::Ok).finding_codes,
        },
        IdentityCheck {
            key: silent.clone(),
            id: "1002".to_owned(),
            name: None,
            status: Status::Critical,
            finding_codes: vec!["token_expired".to_owned()],
        },
    ];
    want.sort_by(|a, b| a.key.cmp(&b.key));
    // `never` had no answer, `unchecked` no check: neither is known.
    assert_eq!(got, want);

    // A later check without `/me`'s answer keeps the identity stored, but not with that check:
    // its verdict is not the one the identity was seen with.
    store
        .upsert_tokens(vec![named("silent", &silent, 20, None)])
        .await
        .unwrap();
    store
        .record_checks(vec![check(&silent, 20, Status::Ok)])
        .await
        .unwrap();
    let tokens = store.tokens().await.unwrap();
    let stored = |key: &TokenKey| {
        tokens
            .iter()
            .find(|t| t.key == *key)
            .unwrap()
            .identity
            .clone()
    };
    assert_eq!(stored(&silent), Some(identity("1002", None, 10)));
    assert_eq!(stored(&never), None);
    let keys: Vec<TokenKey> = store
        .identities()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(keys, std::slice::from_ref(&seen));

    // A new answer replaces it, name and all; hostile text is cleaned and cut.
    let long = format!("Orders\u{1b}[31m bot\u{202e}{}", "x".repeat(2 * MAX_TEXT));
    store
        .upsert_tokens(vec![
            named("silent", &silent, 30, Some(identity("1002", None, 30))),
            named("seen", &seen, 30, Some(identity("2001", Some(&long), 30))),
        ])
        .await
        .unwrap();
    store
        .record_checks(vec![
            check(&silent, 30, Status::Warning),
            check(&seen, 30, Status::Ok),
        ])
        .await
        .unwrap();
    let got = store.identities().await.unwrap();
    assert_eq!(got.len(), 2);
    let seen_now = got.iter().find(|i| i.key == seen).unwrap();
    assert_eq!(seen_now.id, "2001");
    let name = seen_now.name.as_deref().unwrap();
    assert!(name.starts_with("Orders [31m botxx"), "{name:?}");
    assert_eq!(name.chars().count(), MAX_TEXT);
    let silent_now = got.iter().find(|i| i.key == silent).unwrap();
    assert_eq!(
        (silent_now.status, silent_now.name.as_deref()),
        (Status::Warning, None)
    );
}
