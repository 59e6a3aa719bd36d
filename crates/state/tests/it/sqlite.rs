//! What only the SQLite backend has: the file held by one store at a time, its folder's and files'
//! modes, a file that is not a database, and an election that always leads.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use permatoken_state::{Error, SCHEMA_VERSION, Store};

use crate::{at, key_of};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
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
async fn with_sqlite_the_election_claims_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("state.db")).await.unwrap();
    let election = store.election("solo", std::time::Duration::from_secs(15));
    let key = format!("{}:failover:7", key_of("PERMATOKENTEST-primary"));
    assert!(election.claim(&key, at(1)).await.unwrap());
    assert!(!election.claim(&key, at(2)).await.unwrap());
    assert!(!store.claim(&key, "other", at(3)).await.unwrap());
}

#[tokio::test]
async fn the_same_file_by_a_symlink_or_dotdot_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::create_dir(dir.path().join("a")).unwrap();
    // A dangling symlink first: the file it names is the one created and locked.
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let first = Store::open(&link).await.unwrap();
    assert!(path.exists());
    for other in [path.clone(), dir.path().join("a/../state.db")] {
        let err = Store::open(&other).await.err().expect("the same file");
        let Error::Locked { pid, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*pid, Some(std::process::id()), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }
    drop(first);
    // Let go on drop; a child another test forks meanwhile shares the lock's open file until its
    // exec closes it, so the reopen may wait a moment under a loaded suite.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir.path().join("a/../state.db")).await {
            Ok(_) => break,
            Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn an_empty_file_is_refused_unless_opened_as_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, "").unwrap();
    let err = Store::open(&path).await.err().expect("refused");
    assert!(matches!(err, Error::EmptyState { .. }), "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    let store = Store::open_as_new(&path).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    drop(store);
    Store::open(&path).await.unwrap();
}
