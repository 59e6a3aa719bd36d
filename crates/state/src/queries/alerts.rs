//! What watch announced, the alerts it raised and their deliveries, events, claims and retention.
//! An alert, its deliveries, its event and the announcement it makes are written in one
//! transaction, so that a crash leaves either nothing (the alert is raised again) or all of it
//! (it is delivered, never raised twice).
//!
//! Must never: drop a value it cannot read (a corrupt time is [`Error::Corrupt`], not a missing
//! one), or let a claim be taken twice (the key's primary key decides, not a read before the write).

use jiff::Timestamp;

use crate::conn::{Conn, Session, Sql, args};
use crate::rows::{self, announced_cols, delivery_cols};
use crate::{
    Alert, Announced, AnnouncedReason, Announcement, Attempt, Decision, Delivery, Error, Event,
    EventKind, Pruned, RouteHealth,
};

static ANNOUNCED: Sql = Sql::new(concat!(
    "SELECT ",
    announced_cols!(),
    " FROM announced WHERE token_name = $1"
));
static ALL_ANNOUNCED: Sql = Sql::new(concat!(
    "SELECT ",
    announced_cols!(),
    " FROM announced ORDER BY token_name"
));
static ANNOUNCED_REASONS: Sql = Sql::new(
    "SELECT a.token_name, a.state, al.message, al.fix, al.created_at
     FROM announced a JOIN alerts al ON al.id = a.alert_id
     WHERE a.state <> 'ok' AND a.state <> $1 ORDER BY a.token_name",
);
static ANNOUNCED_STATE: Sql = Sql::new("SELECT state FROM announced WHERE token_name = $1");
static UPSERT_ANNOUNCEMENT: Sql = Sql::new(
    "INSERT INTO announced (token_name, state, since, alert_id, last_reminder_at, reminders)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (token_name) DO UPDATE SET state = excluded.state, since = excluded.since,
        alert_id = excluded.alert_id, last_reminder_at = excluded.last_reminder_at,
        reminders = excluded.reminders",
);
static UPSERT_UNKNOWN_SINCE: Sql = Sql::new(
    "INSERT INTO announced (token_name, unknown_since) VALUES ($1, $2)
     ON CONFLICT (token_name) DO UPDATE SET unknown_since = excluded.unknown_since",
);
static ANNOUNCE_NOTHING_YET: Sql =
    Sql::new("INSERT INTO announced (token_name) VALUES ($1) ON CONFLICT (token_name) DO NOTHING");
static SET_UNKNOWN_SINCE: Sql =
    Sql::new("UPDATE announced SET unknown_since = $2 WHERE token_name = $1");
static REMINDED: Sql = Sql::new(
    "UPDATE announced SET last_reminder_at = $2, reminders = reminders + 1
     WHERE token_name = $1",
);
static INSERT_ALERT: Sql = Sql::new(
    "INSERT INTO alerts (id, token_name, state, previous_state, message, fix, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
);
static INSERT_EVENT: Sql =
    Sql::new("INSERT INTO events (at, token_name, kind, detail) VALUES ($1, $2, $3, $4)");
static INSERT_DELIVERY: Sql = Sql::new(
    "INSERT INTO deliveries (alert_id, route, status, attempts, next_attempt_at, updated_at)
     VALUES ($1, $2, 'pending', 0, $3, $3) ON CONFLICT (alert_id, route) DO NOTHING",
);
static DUE_DELIVERIES: Sql = Sql::new(concat!(
    "SELECT ",
    delivery_cols!(),
    " FROM deliveries d JOIN alerts a ON a.id = d.alert_id
     WHERE d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= $1
     ORDER BY d.next_attempt_at, a.created_at, d.alert_id, d.route
     LIMIT $2"
));
static DELIVERIES: Sql = Sql::new(concat!(
    "SELECT ",
    delivery_cols!(),
    " FROM deliveries d JOIN alerts a ON a.id = d.alert_id
     WHERE d.alert_id = $1 ORDER BY d.route"
));
static SETTLE: Sql = Sql::new(
    "UPDATE deliveries SET status = $3, attempts = attempts + 1, next_attempt_at = $4,
        last_error = $5, updated_at = $6
     WHERE alert_id = $1 AND route = $2",
);
static ROUTE_HEALTH: Sql = Sql::new(
    "SELECT d.route,
        SUM(CASE WHEN d.status = 'pending' THEN 1 ELSE 0 END),
        SUM(CASE WHEN d.status = 'delivered' THEN 1 ELSE 0 END),
        SUM(CASE WHEN d.status = 'failed' THEN 1 ELSE 0 END),
        (SELECT CASE WHEN l.status = 'failed' THEN l.last_error END FROM deliveries l
          WHERE l.route = d.route AND l.status <> 'pending'
          ORDER BY l.updated_at DESC, l.alert_id DESC LIMIT 1),
        MAX(CASE WHEN d.status <> 'pending' THEN d.updated_at END),
        MIN(CASE WHEN d.status = 'failed' AND d.updated_at > COALESCE(
            (SELECT MAX(o.updated_at) FROM deliveries o
              WHERE o.route = d.route AND o.status = 'delivered'), -1)
            THEN d.updated_at END)
     FROM deliveries d GROUP BY d.route ORDER BY d.route",
);
static RECENT_EVENTS: Sql =
    Sql::new("SELECT at, token_name, kind, detail FROM events ORDER BY at DESC, id DESC LIMIT $1");
static CLAIM: Sql = Sql::new(
    "INSERT INTO claims (key, replica, claimed_at) VALUES ($1, $2, $3)
     ON CONFLICT (key) DO NOTHING",
);
static CLAIM_DONE: Sql =
    Sql::new("UPDATE claims SET done_at = $2 WHERE key = $1 AND done_at IS NULL");
static PRUNE_CLAIMS: Sql =
    Sql::new("DELETE FROM claims WHERE done_at IS NOT NULL AND done_at < $1");
static PRUNE_CHECKS: Sql = Sql::new(
    "DELETE FROM checks WHERE checked_at < $1
       AND id NOT IN (SELECT last_check_id FROM tokens WHERE last_check_id IS NOT NULL)",
);
static PRUNE_EVENTS: Sql = Sql::new("DELETE FROM events WHERE at < $1");
static PRUNE_ALERTS: Sql = Sql::new(
    "DELETE FROM alerts WHERE created_at < $1
       AND id NOT IN (SELECT alert_id FROM announced WHERE alert_id IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM deliveries d
                       WHERE d.alert_id = alerts.id AND d.next_attempt_at IS NOT NULL)",
);

pub(crate) async fn announced(
    c: &mut impl Session,
    name: &str,
) -> Result<Option<Announced>, Error> {
    c.query_opt(&ANNOUNCED, args![name], rows::announced).await
}

pub(crate) async fn all_announced(c: &mut impl Session) -> Result<Vec<Announced>, Error> {
    c.collect(&ALL_ANNOUNCED, &[], None, rows::announced).await
}

pub(crate) async fn announced_reasons(
    c: &mut impl Session,
    except: &str,
) -> Result<Vec<AnnouncedReason>, Error> {
    c.collect(
        &ANNOUNCED_REASONS,
        args![except],
        None,
        rows::announced_reason,
    )
    .await
}

pub(crate) async fn set_announcement(
    c: &mut impl Session,
    name: &str,
    a: &Announcement,
) -> Result<(), Error> {
    let reminders = i64::from(a.reminders);
    let values = args![
        name,
        &a.state,
        a.since,
        &a.alert_id,
        a.last_reminder_at,
        reminders
    ];
    c.execute(&UPSERT_ANNOUNCEMENT, values).await?;
    Ok(())
}

pub(crate) async fn set_unknown_since(
    c: &mut impl Session,
    name: &str,
    since: Option<Timestamp>,
) -> Result<(), Error> {
    c.execute(&UPSERT_UNKNOWN_SINCE, args![name, since]).await?;
    Ok(())
}

/// Inserts an alert and its pending deliveries; `false` if the id was already recorded.
async fn insert_alert(
    s: &mut impl Session,
    alert: &Alert,
    routes: &[String],
) -> Result<bool, Error> {
    let time = alert.time;
    let values = args![
        &alert.id,
        &alert.token_name,
        &alert.state,
        &alert.previous_state,
        &alert.message,
        &alert.fix,
        time,
    ];
    if s.execute(&INSERT_ALERT, values).await? == 0 {
        return Ok(false);
    }
    // Listed among the recent events too, in the same transaction: the page shows what was said.
    let detail = crate::clean_text(&crate::alert_event_text(alert));
    let event = args![time, &alert.token_name, EventKind::Alert.as_str(), &detail];
    s.execute(&INSERT_EVENT, event).await?;
    for route in routes {
        s.execute(&INSERT_DELIVERY, args![&alert.id, route, time])
            .await?;
    }
    Ok(true)
}

/// [`crate::Store::announce`] for each decision, in order, in one transaction.
pub(crate) async fn announce_all(c: &mut impl Conn, decisions: &[Decision]) -> Result<(), Error> {
    c.begin().await?;
    let done = async {
        for d in decisions {
            if let Some(record) = &d.alert {
                let (alert, routes) = &**record;
                insert_alert(c, alert, routes).await?;
            }
            match &d.announcement {
                Some(a) => set_announcement(c, &d.token_name, a).await?,
                None => {
                    c.execute(&ANNOUNCE_NOTHING_YET, args![&d.token_name])
                        .await?;
                }
            }
            c.execute(&SET_UNKNOWN_SINCE, args![&d.token_name, d.unknown_since])
                .await?;
        }
        Ok(())
    }
    .await;
    c.finish(done).await
}

pub(crate) async fn record_alert(
    c: &mut impl Conn,
    alert: &Alert,
    routes: &[String],
) -> Result<(), Error> {
    c.begin().await?;
    let done = async {
        if !insert_alert(c, alert, routes).await? {
            return Ok(());
        }
        let current = c
            .query_opt(&ANNOUNCED_STATE, args![&alert.token_name], |r| {
                r.opt_string(0)
            })
            .await?;
        if current.flatten().as_deref() == Some(alert.state.as_str()) {
            c.execute(&REMINDED, args![&alert.token_name, alert.time])
                .await?;
            return Ok(());
        }
        let announcement = Announcement {
            state: alert.state.clone(),
            since: alert.time,
            alert_id: Some(alert.id.clone()),
            last_reminder_at: None,
            reminders: 0,
        };
        set_announcement(c, &alert.token_name, &announcement).await
    }
    .await;
    c.finish(done).await
}

pub(crate) async fn due_deliveries(
    c: &mut impl Session,
    now: Timestamp,
    limit: u32,
) -> Result<Vec<Delivery>, Error> {
    c.collect(&DUE_DELIVERIES, args![now, limit], None, rows::delivery)
        .await
}

pub(crate) async fn deliveries(
    c: &mut impl Session,
    alert_id: &str,
) -> Result<Vec<Delivery>, Error> {
    c.collect(&DELIVERIES, args![alert_id], None, rows::delivery)
        .await
}

/// How one attempt at a delivery ended; [`Error::UnknownDelivery`] if none is recorded.
pub(crate) async fn settle(
    s: &mut impl Session,
    alert_id: &str,
    route: &str,
    attempt: Attempt<'_>,
) -> Result<(), Error> {
    let status = attempt.status.as_str();
    let values = args![
        alert_id,
        route,
        status,
        attempt.next,
        attempt.error,
        attempt.at
    ];
    if s.execute(&SETTLE, values).await? == 0 {
        return Err(Error::UnknownDelivery {
            alert_id: alert_id.to_owned(),
            route: route.to_owned(),
        });
    }
    Ok(())
}

/// [`settle`] of each alert's delivery on `route` alike, in one transaction.
pub(crate) async fn settle_all(
    c: &mut impl Conn,
    route: &str,
    alert_ids: &[String],
    attempt: Attempt<'_>,
) -> Result<(), Error> {
    c.begin().await?;
    let done = async {
        for id in alert_ids {
            settle(c, id, route, attempt).await?;
        }
        Ok(())
    }
    .await;
    c.finish(done).await
}

pub(crate) async fn route_health(c: &mut impl Session) -> Result<Vec<RouteHealth>, Error> {
    c.collect(&ROUTE_HEALTH, &[], None, rows::route_health)
        .await
}

pub(crate) async fn record_event(c: &mut impl Session, e: &Event) -> Result<(), Error> {
    let values = args![e.at, &e.token_name, e.kind.as_str(), &e.detail];
    c.execute(&INSERT_EVENT, values).await?;
    Ok(())
}

pub(crate) async fn recent_events(c: &mut impl Session, limit: u32) -> Result<Vec<Event>, Error> {
    c.collect(&RECENT_EVENTS, args![limit], None, rows::event)
        .await
}

pub(crate) async fn claim(
    c: &mut impl Session,
    key: &str,
    replica: &str,
    at: Timestamp,
) -> Result<bool, Error> {
    Ok(c.execute(&CLAIM, args![key, replica, at]).await? == 1)
}

pub(crate) async fn claim_done(
    c: &mut impl Session,
    key: &str,
    at: Timestamp,
) -> Result<bool, Error> {
    Ok(c.execute(&CLAIM_DONE, args![key, at]).await? == 1)
}

pub(crate) async fn prune_claims(c: &mut impl Session, cutoff: Timestamp) -> Result<u64, Error> {
    c.execute(&PRUNE_CLAIMS, args![cutoff]).await
}

pub(crate) async fn prune(c: &mut impl Conn, cutoff: Timestamp) -> Result<Pruned, Error> {
    c.begin().await?;
    let done = async {
        Ok(Pruned {
            checks: c.execute(&PRUNE_CHECKS, args![cutoff]).await?,
            events: c.execute(&PRUNE_EVENTS, args![cutoff]).await?,
            alerts: c.execute(&PRUNE_ALERTS, args![cutoff]).await?,
        })
    }
    .await;
    c.finish(done).await
}
