//! Opening, locking, migrating, file modes, what survives a restart, and no secret in the file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use permatoken_state::{
    Alert, Announcement, Error, Event, EventKind, SCHEMA_VERSION, Status, Store,
};

use crate::{at, check, key_of, token};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn announced_state_and_pending_deliveries_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let store = Store::open(&path).await.unwrap();
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
    }
    let store = Store::open(&path).await.unwrap();
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

#[tokio::test]
async fn a_second_open_of_the_same_file_is_refused_naming_it_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let first = Store::open(&path).await.unwrap();
    let clone = first.clone();
    let err = Store::open(&path)
        .await
        .err()
        .expect("second open must fail");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    let shown = err.to_string();
    assert!(shown.contains(&format!("`{}`", path.display())), "{shown}");
    assert!(
        shown.contains("in use by another `permatoken watch`"),
        "{shown}"
    );

    drop(first);
    // A clone still holds it.
    assert!(matches!(
        Store::open(&path).await,
        Err(Error::Locked { .. })
    ));
    drop(clone);
    let again = Store::open(&path).await.unwrap();
    assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
}

#[tokio::test]
async fn a_schema_newer_than_known_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).await.unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    drop(conn);
    let err = Store::open(&path)
        .await
        .err()
        .expect("a newer schema must be refused");
    let shown = err.to_string();
    assert!(
        matches!(err, Error::NewerSchema { found, known, .. } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{shown}"
    );
    assert!(shown.contains("written by a newer permatoken"), "{shown}");
    assert!(shown.contains(&path.display().to_string()), "{shown}");
}

#[tokio::test]
async fn migrations_applied_twice_are_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let key = key_of("PERMATOKENTEST-migrate");
    {
        let store = Store::open(&path).await.unwrap();
        store
            .upsert_tokens(vec![token("orders", &key, 0)])
            .await
            .unwrap();
        store
            .record_checks(vec![check(&key, 1, Status::Ok)])
            .await
            .unwrap();
    }
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(store.counts().await.unwrap().checks, 1);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, SCHEMA_VERSION);
}

#[tokio::test]
async fn the_folder_is_0700_and_the_files_0600() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("state").join("permatoken");
    let path = folder.join("state.db");
    let store = Store::open(&path).await.unwrap();
    // A write makes SQLite create the `-wal` and `-shm` files.
    store
        .set_unknown_since("orders", Some(at(1)))
        .await
        .unwrap();
    assert_eq!(mode(&folder), 0o700);
    assert_eq!(mode(&dir.path().join("state")), 0o700);
    for file in ["state.db", "state.db-wal", "state.db-shm", "state.db.lock"] {
        assert_eq!(mode(&folder.join(file)), 0o600, "{file}");
    }
}

#[tokio::test]
async fn no_secret_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // Made at run time, as a live token would look, and marked as a test fixture.
    let canary = format!("EAAPERMATOKENTEST{}ZZcanaryZD", std::process::id());
    let key = key_of(&canary);
    let fingerprint = format!(
        "{}…{} sha256:{}",
        &canary[..4],
        &canary[canary.len() - 3..],
        &key.as_str()[..8]
    );
    let store = Store::open(&path).await.unwrap();
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

    let mut searched = 0;
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        let Ok(bytes) = std::fs::read(dir.path().join(file)) else {
            continue;
        };
        searched += bytes.len();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "the canary token is in {file}"
        );
        // The records were written: the fingerprint is there, so the search looked in the right place.
        if file == "state.db-wal" {
            assert!(
                bytes
                    .windows(fingerprint.len())
                    .any(|w| w == fingerprint.as_bytes())
            );
        }
    }
    assert!(searched > 0);
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    assert!(!bytes.windows(canary.len()).any(|w| w == canary.as_bytes()));
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let bytes = b"WHATSAPP_ACCESS_TOKEN=PERMATOKENTEST-not-a-database\n".repeat(100);
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(&path).await.err().expect("must be refused");
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");
    assert!(err.to_string().contains(&format!(
        "`{}` is not a permatoken state file",
        path.display()
    )));
    assert!(!err.to_string().contains("PERMATOKENTEST"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(!dir.path().join("state.db-wal").exists());
}

#[tokio::test]
async fn the_store_says_where_it_lives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.location(), path);
}
