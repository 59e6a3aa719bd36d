//! Gives every token of a state file a long check history, for `bench/watch-history.sh`:
//! `cargo run --release -p permatoken-state --example fill_history -- STATE.db COUNT` adds COUNT
//! checks to each token that has one, copies of its latest check an hour apart going back from it
//! (so the latest stays the latest and the schedule is as it was). `watch` must not hold the file.
//! Not a test.

use jiff::SignedDuration;
use permatoken_state::{CheckRecord, Store};

/// Checks written per transaction: one round's worth of a 10,000-token fleet.
const BATCH: usize = 10_000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), Some(count)) = (args.next(), args.next()) else {
        return Err("usage: fill_history STATE.db COUNT".into());
    };
    let count: i64 = count
        .to_str()
        .and_then(|c| c.parse().ok())
        .ok_or("COUNT must be a whole number")?;
    let store = Store::open(&path).await?;
    let latest: Vec<CheckRecord> = store
        .latest_checks()
        .await?
        .into_iter()
        .filter_map(|l| l.check)
        .collect();
    let started = std::time::Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for k in 1..=count {
        for check in &latest {
            let mut older = check.clone();
            older.checked_at = check.checked_at - SignedDuration::from_hours(k);
            batch.push(older);
            if batch.len() == BATCH {
                store.record_checks(std::mem::take(&mut batch)).await?;
            }
        }
    }
    if !batch.is_empty() {
        store.record_checks(batch).await?;
    }
    let counts = store.counts().await?;
    eprintln!(
        "{} tokens, {} checks in the state, {count} added to each in {:.1} s",
        counts.tokens,
        counts.checks,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
