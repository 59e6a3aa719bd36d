//! Waiting for the state's database at start: a replica started while its PostgreSQL is down (a
//! fleet restarted during a database incident, a host booted before the database) waits and tries
//! again, rather than exiting at once into a service manager's crash loop.
//!
//! [`wait_for_state`] tries to open the state, backing off from 1 s to [`MAX_BACKOFF`], and
//! publishes a snapshot saying why it waits (`/healthz` answers 503, the page says "waiting for the
//! state database"); each new reason is logged once. A refusal (a bad URL, a wrong password, a
//! newer schema) is not waited on: waiting would not mend it, so it is returned at once, and the
//! binary exits 3 as for any bad configuration. A stop asked for meanwhile ends the wait at once.
//!
//! Must never: hold the process past a stop, or log a password (the state's errors hold none).

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use permatoken_state as store;

use crate::snapshot::{Publisher, Snapshot};

/// The longest wait between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The first wait between two tries.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Opens the state with `open`, trying again while its server cannot be reached
/// ([`store::Error::is_unreachable`]), after `first` (the error of a try already made, if any).
/// `Ok(None)` when `shutdown` came first; `Err` for an error waiting would not mend.
pub async fn wait_for_state<F, Fut>(
    mut open: F,
    first: Option<store::Error>,
    publisher: &Publisher,
    shutdown: impl Future<Output = ()>,
) -> Result<Option<store::Store>, store::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<store::Store, store::Error>>,
{
    let started_at = Timestamp::now();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut delay = FIRST_BACKOFF;
    let mut told: Option<String> = None;
    let mut failed = first;
    loop {
        if let Some(e) = failed.take() {
            if !e.is_unreachable() {
                return Err(e);
            }
            let why = e.to_string();
            if told.as_deref() != Some(why.as_str()) {
                tracing::warn!(
                    "waiting for the state database: {why}; trying again, at most every {} s",
                    MAX_BACKOFF.as_secs()
                );
                publisher.publish(waiting(started_at, &why));
                told = Some(why);
            }
            tokio::select! {
                () = &mut shutdown => return Ok(None),
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_BACKOFF);
        }
        tokio::select! {
            () = &mut shutdown => return Ok(None),
            opened = open() => match opened {
                Ok(store) => {
                    if told.is_some() {
                        tracing::info!("the state database answers: starting");
                    }
                    return Ok(Some(store));
                }
                Err(e) => failed = Some(e),
            },
        }
    }
}

/// The snapshot served while waiting: no token, and why.
fn waiting(started_at: Timestamp, why: &str) -> Snapshot {
    let now = Timestamp::now();
    Snapshot {
        generated_at: now.as_second(),
        started_at: started_at.as_second(),
        waiting_for_state: Some(why.to_owned()),
        ..Snapshot::default()
    }
}
