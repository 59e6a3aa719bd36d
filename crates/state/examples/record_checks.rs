//! Rough timing of one round's writes: `cargo run --release -p permatoken-state --example
//! record_checks [TOKENS]` (default 10,000). Prints figures for BENCHMARKS.md; not a test.

use std::time::Instant;

use jiff::Timestamp;
use permatoken_state::{CheckRecord, Role, Status, Store, TokenKey, TokenRecord};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), permatoken_state::Error> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("permatoken-state-bench-{}", std::process::id()));
    let store = Store::open(dir.join("state.db")).await?;
    let now = Timestamp::now();
    let keys: Vec<TokenKey> = (0..n)
        .map(|i| TokenKey::parse(&format!("{i:064x}")))
        .collect::<Result<_, _>>()?;
    let tokens: Vec<TokenRecord> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| TokenRecord {
            key: key.clone(),
            name: format!("clients/c{i:05}"),
            role: Role::Primary,
            fingerprint: format!("EAAP…sZD sha256:{:08x}", i),
            source_path: format!("/srv/clients/c{i:05}/.env"),
            source_key: Some("WHATSAPP_ACCESS_TOKEN".to_owned()),
            first_seen: now,
            last_seen: now,
            identity: None,
        })
        .collect();
    let checks = |round: i64| -> Vec<CheckRecord> {
        keys.iter()
            .map(|key| CheckRecord {
                key: key.clone(),
                checked_at: Timestamp::from_second(now.as_second() + round * 3600).unwrap(),
                status: Status::Ok,
                alert_state: "ok".to_owned(),
                valid: Some(true),
                expires_at: None,
                never_expires: true,
                kind: Some("system_user".to_owned()),
                missing_scopes: vec![],
                finding_codes: vec!["never_expires".to_owned()],
                elapsed_ms: 120,
            })
            .collect()
    };

    let t = Instant::now();
    store.upsert_tokens(tokens).await?;
    println!("upsert {n} tokens, one call: {:?}", t.elapsed());
    for round in 0..3 {
        let batch = checks(round);
        let t = Instant::now();
        store.record_checks(batch).await?;
        println!(
            "record {n} checks, one call (round {round}): {:?}",
            t.elapsed()
        );
    }
    let one_by_one = checks(3).into_iter().take(1_000).collect::<Vec<_>>();
    let t = Instant::now();
    for c in one_by_one {
        store.record_checks(vec![c]).await?;
    }
    println!("record 1,000 checks, one call each: {:?}", t.elapsed());
    let t = Instant::now();
    let latest = store.latest_checks().await?;
    println!(
        "latest_checks over {} tokens: {:?}",
        latest.len(),
        t.elapsed()
    );
    let t = Instant::now();
    let h = store
        .history(
            "clients/c00042",
            now,
            Timestamp::from_second(now.as_second() + 86_400).unwrap(),
        )
        .await?;
    println!(
        "history of one token ({} checks): {:?}",
        h.len(),
        t.elapsed()
    );
    let size = std::fs::metadata(dir.join("state.db"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.join("state.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("database + wal: {} KiB", size / 1024);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
