//! The PostgreSQL state against a real cluster: migrations (newer schema refused, twice a no-op, two
//! replicas at once), what survives a restart, no secret in a `pg_dump`, passwords (never in the URL,
//! from PGPASSWORD, a passfile or a password file, never shown), TLS, and a dropped session.

use std::os::unix::fs::PermissionsExt;

use permatoken_state::{
    Alert, Announcement, Error, Event, EventKind, PgOptions, SCHEMA_VERSION, Status, Store,
};
use zeroize::Zeroizing;

use crate::pg_cluster::{PgCluster, TRUSTED, WATCH};
use crate::{at, check, key_of, token};

fn trusted_url(pg: &PgCluster, db: &str) -> String {
    pg.url(TRUSTED, db, "?sslmode=disable")
}

async fn open(url: &str) -> Result<Store, Error> {
    Store::open_postgres(url, PgOptions::default()).await
}

#[tokio::test]
async fn pg_announced_state_and_pending_deliveries_survive_a_restart() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("state", TRUSTED);
    let url = trusted_url(&pg, "state");
    {
        let store = open(&url).await.unwrap();
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
    let store = open(&url).await.unwrap();
    assert_eq!(
        store.location().display().to_string(),
        format!("postgres://{TRUSTED}@127.0.0.1:{}/state", pg.port)
    );
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
async fn pg_a_schema_newer_than_known_is_refused() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("state", TRUSTED);
    let url = trusted_url(&pg, "state");
    drop(open(&url).await.unwrap());
    pg.psql(
        "state",
        &format!(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ({}, 0);",
            SCHEMA_VERSION + 1
        ),
    );
    let err = open(&url)
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
    assert!(shown.contains("/state"), "{shown}");
}

#[tokio::test]
async fn pg_migrations_applied_twice_are_a_no_op_and_two_replicas_migrate_together() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("state", TRUSTED);
    let url = trusted_url(&pg, "state");
    // Two replicas starting at once on an empty database: one migrates, the other waits for the
    // lock, then finds nothing to do.
    let (a, b) = tokio::join!(open(&url), open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(b.schema_version().await.unwrap(), SCHEMA_VERSION);
    let key = key_of("PERMATOKENTEST-migrate");
    a.upsert_tokens(vec![token("orders", &key, 0)])
        .await
        .unwrap();
    b.record_checks(vec![check(&key, 1, Status::Ok)])
        .await
        .unwrap();
    drop((a, b));
    let store = open(&url).await.unwrap();
    assert_eq!(store.counts().await.unwrap().checks, 1);
    let versions = pg.psql(
        "state",
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations;",
    );
    let want: Vec<String> = (1..=SCHEMA_VERSION).map(|v| v.to_string()).collect();
    assert_eq!(versions.trim(), want.join(","));
}

#[tokio::test]
async fn pg_no_secret_in_a_dump() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("state", TRUSTED);
    let store = open(&trusted_url(&pg, "state")).await.unwrap();
    let canary = format!("EAAPERMATOKENTEST{}ZZcanaryZD", std::process::id());
    let key = key_of(&canary);
    let fingerprint = format!(
        "{}…{} sha256:{}",
        &canary[..4],
        &canary[canary.len() - 3..],
        &key.as_str()[..8]
    );
    let mut record = token("orders", &key, 0);
    record.fingerprint = fingerprint.clone();
    store.upsert_tokens(vec![record]).await.unwrap();
    store
        .record_checks(vec![check(&key, 1, Status::Critical)])
        .await
        .unwrap();
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
        .mark_failed("canary-alert", "ops", at(3), "HTTP 500", Some(at(60)))
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
    let dump = pg.dump("state");
    assert!(!dump.contains(&canary), "the canary token is in the dump");
    assert!(!dump.contains(&canary[4..canary.len() - 3]));
    // The records are there: the search looked in the right place.
    assert!(dump.contains(&fingerprint), "{dump}");
    assert!(dump.contains(key.as_str()));
}

#[tokio::test]
async fn pg_a_url_with_a_password_is_refused_without_showing_it_even_when_right() {
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
async fn pg_the_password_comes_from_pgpassword_a_passfile_or_a_password_file() {
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
async fn pg_sslmode_require_against_a_server_without_tls_fails_clearly() {
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
async fn pg_tls_require_encrypts_and_verify_full_checks_the_chain_and_the_host() {
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
async fn pg_a_session_ended_by_the_server_is_opened_again() {
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
async fn pg_an_unreachable_server_says_what_to_check() {
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
async fn pg_a_role_pg_hba_rejects_or_a_missing_database_says_what_to_do() {
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
