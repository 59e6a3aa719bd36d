//! What only the PostgreSQL backend has: replicas migrating together, passwords (never in the URL,
//! from PGPASSWORD, a passfile or a password file, never shown), TLS, a dropped session, a server
//! that cannot be reached or refuses, and the leader election's fencing.

use std::os::unix::fs::PermissionsExt;

use permatoken_state::{Error, PgOptions, SCHEMA_VERSION, Store};
use zeroize::Zeroizing;

use crate::pg_cluster::{PgCluster, TRUSTED, WATCH};
use crate::{at, key_of};

fn trusted_url(pg: &PgCluster, db: &str) -> String {
    pg.url(TRUSTED, db, "?sslmode=disable")
}

async fn open(url: &str) -> Result<Store, Error> {
    Store::open_postgres(url, PgOptions::default()).await
}

/// Two replicas starting at once on an empty database: one migrates, the other waits for the
/// lock, then finds nothing to do. The election's heartbeat table comes with the migrations.
#[tokio::test]
async fn two_replicas_starting_together_migrate_once() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("state", TRUSTED);
    let url = trusted_url(&pg, "state");
    let (a, b) = tokio::join!(open(&url), open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(b.schema_version().await.unwrap(), SCHEMA_VERSION);
    let versions = pg.psql(
        "state",
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations;",
    );
    let want: Vec<String> = (1..=SCHEMA_VERSION).map(|v| v.to_string()).collect();
    assert_eq!(versions.trim(), want.join(","));
    assert!(pg.dump("state").contains("leader_heartbeat"));
}

#[tokio::test]
async fn a_url_with_a_password_is_refused_without_showing_it_even_when_right() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("state", WATCH);
    for url in [
        format!(
            "postgres://{WATCH}:{}@127.0.0.1:{}/state?sslmode=disable",
            pg.password(),
            pg.port
        ),
        pg.url(
            WATCH,
            "state",
            &format!("?sslmode=disable&password={}", pg.password()),
        ),
    ] {
        let err = open(&url).await.err().expect("refused");
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, Error::PostgresUrl { .. }), "{shown}");
        assert!(!shown.contains(pg.password()), "{shown}");
        assert!(shown.contains("holds a password"), "{shown}");
        assert!(shown.contains("PGPASSWORD"), "{shown}");
    }
}

#[tokio::test]
async fn the_password_comes_from_pgpassword_a_passfile_or_a_password_file() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("state", WATCH);
    let url = pg.url(WATCH, "state", "?sslmode=disable");
    let scratch = pg.scratch();

    // None given: the server asks, and the error says where to put it.
    let err = Store::open_postgres(&url, PgOptions::default())
        .await
        .err()
        .expect("no password");
    let shown = err.to_string();
    assert!(
        shown.contains("asks a password for role `watch`"),
        "{shown}"
    );
    assert!(shown.contains("PGPASSWORD"), "{shown}");

    // A wrong one: refused, pointing at the password and pg_hba, neither password shown.
    let wrong = "PERMATOKENTEST-wrong";
    let err = Store::open_postgres(
        &url,
        PgOptions {
            env_password: Some(Zeroizing::new(wrong.to_owned())),
            ..PgOptions::default()
        },
    )
    .await
    .err()
    .expect("wrong password");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("refused role `watch`"), "{shown}");
    assert!(shown.contains("pg_hba.conf"), "{shown}");
    assert!(
        !shown.contains(wrong) && !shown.contains(pg.password()),
        "{shown}"
    );

    // PGPASSWORD.
    let store = Store::open_postgres(
        &url,
        PgOptions {
            env_password: Some(Zeroizing::new(pg.password().to_owned())),
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    drop(store);

    // A passfile (given as PGPASSFILE, or ~/.pgpass under the home folder), mode 0600.
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let passfile = home.join(".pgpass");
    std::fs::write(
        &passfile,
        format!(
            "# permatoken test\nelsewhere:5432:*:watch:nope\n127.0.0.1:{}:state:watch:{}\n",
            pg.port,
            pg.password()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, PermissionsExt::from_mode(0o600)).unwrap();
    for options in [
        PgOptions {
            passfile: Some(passfile.clone()),
            ..PgOptions::default()
        },
        PgOptions {
            home: Some(home.clone()),
            ..PgOptions::default()
        },
    ] {
        let store = Store::open_postgres(&url, options).await.unwrap();
        assert_eq!(store.counts().await.unwrap().tokens, 0);
    }

    // A passfile others can read is ignored (as libpq does) and the error says why; named in
    // PGPASSFILE, it is refused outright.
    std::fs::set_permissions(&passfile, PermissionsExt::from_mode(0o644)).unwrap();
    let err = Store::open_postgres(
        &url,
        PgOptions {
            home: Some(home.clone()),
            ..PgOptions::default()
        },
    )
    .await
    .err()
    .expect("ignored passfile");
    let shown = err.to_string();
    assert!(shown.contains("chmod 600"), "{shown}");
    assert!(!shown.contains(pg.password()), "{shown}");
    let err = Store::open_postgres(
        &url,
        PgOptions {
            passfile: Some(passfile.clone()),
            ..PgOptions::default()
        },
    )
    .await
    .err()
    .expect("refused passfile");
    assert!(err.to_string().contains("chmod 600"), "{err}");

    // state_password_file wins over a wrong PGPASSWORD; one trailing newline is dropped.
    let file = scratch.join("state-password");
    std::fs::write(&file, format!("{}\n", pg.password())).unwrap();
    let store = Store::open_postgres(
        &url,
        PgOptions {
            password_file: Some(file),
            env_password: Some(Zeroizing::new(wrong.to_owned())),
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_fails_clearly() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("state", TRUSTED);
    for mode in ["require", "verify-full"] {
        let err = open(&pg.url(TRUSTED, "state", &format!("?sslmode={mode}")))
            .await
            .err()
            .expect("no TLS on the server");
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("`sslmode={mode}` asks for TLS")),
            "{shown}"
        );
        assert!(shown.contains("ssl = on"), "{shown}");
    }
    // `prefer` (the default) goes on in plain text.
    let store = open(&pg.url(TRUSTED, "state", "")).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
}

/// A CA and a server certificate for 127.0.0.1 it signed, made now.
fn test_ca() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "permatoken PERMATOKENTEST CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn tls_require_encrypts_and_verify_full_checks_the_chain_and_the_host() {
    let (ca, cert, key) = test_ca();
    let Some(pg) = PgCluster::start_with_tls(Some((&cert, &key))) else {
        return;
    };
    pg.create_database("state", TRUSTED);
    pg.create_database("bound", WATCH);
    let ca_file = pg.scratch().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let ssl_in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid <> pg_backend_pid() ORDER BY pid;";

    // require: encrypted, the certificate not checked (libpq's meaning).
    let store = open(&pg.url(TRUSTED, "state", "?sslmode=require"))
        .await
        .unwrap();
    store.counts().await.unwrap();
    assert_eq!(pg.psql("state", ssl_in_use).trim(), "t");
    drop(store);

    // verify-full with the CA: the chain and the name (127.0.0.1) match.
    let url = pg.url(
        TRUSTED,
        "state",
        &format!("?sslmode=verify-full&sslrootcert={}", ca_file.display()),
    );
    let store = open(&url).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    drop(store);

    // A password role over TLS with channel binding required: SCRAM-SHA-256-PLUS, bound to the
    // server's certificate, works (an encrypted session a relay could not replay elsewhere).
    let url = pg.url(
        WATCH,
        "bound",
        &format!(
            "?sslmode=verify-full&sslrootcert={}&channel_binding=require",
            ca_file.display()
        ),
    );
    let options = PgOptions {
        env_password: Some(Zeroizing::new(pg.password().to_owned())),
        ..PgOptions::default()
    };
    let store = Store::open_postgres(&url, options.clone()).await.unwrap();
    assert_eq!(store.counts().await.unwrap().tokens, 0);
    drop(store);
    // Without TLS there is nothing to bind to: refused.
    let url = pg.url(WATCH, "bound", "?sslmode=disable&channel_binding=require");
    assert!(Store::open_postgres(&url, options).await.is_err());

    // verify-full without the CA: the system roots do not know it.
    let err = open(&pg.url(TRUSTED, "state", "?sslmode=verify-full"))
        .await
        .err()
        .expect("an unknown CA");
    let shown = err.to_string();
    assert!(shown.contains("TLS handshake"), "{shown}");
    assert!(shown.contains("sslrootcert"), "{shown}");

    // verify-full by another name for the same server: the host does not match.
    let url = format!(
        "postgres://{TRUSTED}@localhost:{}/state?sslmode=verify-full&sslrootcert={}",
        pg.port,
        ca_file.display()
    );
    let err = open(&url).await.err().expect("a name mismatch");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
}

#[tokio::test]
async fn a_session_ended_by_the_server_is_opened_again() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("state", TRUSTED);
    let store = open(&trusted_url(&pg, "state")).await.unwrap();
    store
        .set_unknown_since("orders", Some(at(1)))
        .await
        .unwrap();
    pg.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'state' AND pid <> pg_backend_pid();",
    );
    // The first call may see the session die under it; the next one reconnects.
    let _ = store.counts().await;
    let again = store.announced("orders").await.unwrap().unwrap();
    assert_eq!(again.unknown_since, Some(at(1)));
}

#[tokio::test]
async fn an_unreachable_server_says_what_to_check() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = open(&format!(
        "postgres://watch@127.0.0.1:{port}/state?sslmode=disable"
    ))
    .await
    .err()
    .expect("nothing listens");
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("cannot reach 127.0.0.1:{port}")),
        "{shown}"
    );
    assert!(shown.contains("listen_addresses"), "{shown}");
}

#[tokio::test]
async fn a_role_pg_hba_rejects_or_a_missing_database_says_what_to_do() {
    let Some(pg) = PgCluster::start() else { return };
    let err = open(&pg.url("rejected", "state", "?sslmode=disable"))
        .await
        .err()
        .expect("pg_hba rejects it");
    let shown = err.to_string();
    assert!(shown.contains("refused role `rejected`"), "{shown}");
    assert!(shown.contains("pg_hba.conf"), "{shown}");
    let err = open(&trusted_url(&pg, "nowhere"))
        .await
        .err()
        .expect("no such database");
    let shown = err.to_string();
    assert!(shown.contains("no database `nowhere`"), "{shown}");
    assert!(shown.contains("createdb"), "{shown}");
}

/// Claims through the election land only while this replica leads: a standby's are refused, and a
/// leader whose session was ended (fenced) cannot claim, while the new leader can.
#[tokio::test]
async fn a_fenced_leader_cannot_claim() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("state", TRUSTED);
    let url = trusted_url(&pg, "state");
    let store = open(&url).await.unwrap();
    let other = open(&url).await.unwrap();
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
