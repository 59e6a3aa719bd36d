//! What one engine run on a configured token comes to, before anything is written: each token seen
//! (the primary, under its name, and each backup, as `<name>/<VARIABLE>`) with the report that
//! stands for it and what the engine did to it; the records the state keeps of them; and what
//! happened (a renewal, a failover, a reload), each of which logs and counts itself
//! ([`Happened::emit`]).
//!
//! After a renewal the primary is the renewed token (its report is the new token's); after a
//! failover it is the promoted backup (the promoted report). The records still name where the
//! primary was read.
//!
//! Must never: do I/O, or keep a token (a record holds its SHA-256 and fingerprint only).

use jiff::Timestamp;
use permatoken_inspect::Report;
use permatoken_renew::{Decision, FailoverOutcome, RefreshReport, TokenSpec};
use permatoken_state as store;

use crate::config::TokenConfig;
use crate::metrics::Counters;
use crate::records::{check_record, sha256, token_record};
use crate::snapshot::Role;
use crate::states::Engine;

/// One token of a configured token's check, as it stands now.
pub(crate) struct Seen {
    /// `orders`, or `orders/WHATSAPP_ACCESS_TOKEN_BACKUP`.
    pub(crate) name: String,
    /// The report that stands for it.
    pub(crate) report: Report,
    /// What the engine did to it.
    pub(crate) engine: Engine,
    /// Its key, when it is known (a promoted backup found among the backups).
    pub(crate) key: Option<store::TokenKey>,
}

/// Something the engine did, for the events list, the log and the counters.
pub(crate) struct Happened {
    /// The token it concerns.
    pub(crate) token: String,
    /// What.
    pub(crate) kind: store::EventKind,
    /// One secret-free sentence.
    pub(crate) text: String,
}

impl Happened {
    /// Logs it and counts it: one place, so that the log line and the metric never drift apart.
    pub(crate) fn emit(&self, counters: &Counters) {
        let (token, text) = (&self.token, &self.text);
        match self.kind {
            store::EventKind::Renewal => {
                tracing::info!(token = %token, "renewed: {text}");
                counters.renewal(token);
            }
            store::EventKind::Failover => {
                tracing::warn!(token = %token, "failover: {text}");
                counters.failover(token);
            }
            _ => tracing::info!(token = %token, "reload: {text}"),
        }
    }

    /// As the state keeps it.
    pub(crate) fn event(&self, at: Timestamp) -> store::Event {
        store::Event {
            at,
            token_name: Some(self.token.clone()),
            kind: self.kind,
            detail: self.text.clone(),
        }
    }
}

/// What one engine run comes to. See the module docs.
pub(crate) struct Outcome {
    /// The primary first, then each backup, in the engine's order.
    pub(crate) seen: Vec<Seen>,
    /// The records of the tokens whose key is known, with their checks, in the same order.
    pub(crate) records: Vec<(store::TokenRecord, store::CheckRecord)>,
    /// Renewals (in the tokens' order), then a failover, then a reload.
    pub(crate) happened: Vec<Happened>,
}

impl Outcome {
    /// What `report`, the engine's run at `now` on `token` as read in `spec`, comes to.
    pub(crate) fn of(
        token: &TokenConfig,
        spec: &TokenSpec,
        report: &RefreshReport,
        now: Timestamp,
    ) -> Self {
        let mut outcome = Self {
            seen: Vec::with_capacity(report.tokens.len()),
            records: Vec::with_capacity(report.tokens.len()),
            happened: Vec::new(),
        };
        let promoted = match &report.failover {
            Some(FailoverOutcome::Promoted {
                variable, report, ..
            }) => Some((variable.as_str(), report)),
            _ => None,
        };
        for (i, one) in report.tokens.iter().enumerate() {
            let (sourced, name, role) = match i.checked_sub(1) {
                None => (&spec.primary, token.name.clone(), Role::Primary),
                Some(b) => (
                    &spec.backups[b],
                    format!("{}/{}", token.name, one.variable.as_deref().unwrap_or("")),
                    Role::Backup(token.name.clone()),
                ),
            };
            let (key, stands, engine) = match (i, promoted, &one.renewed) {
                (0, Some((variable, promoted)), _) => (
                    spec.backups
                        .iter()
                        .find(|b| b.var.as_deref() == Some(variable))
                        .map(|b| sha256(&b.value)),
                    promoted.clone(),
                    Engine::FailedOver,
                ),
                (0, None, Some(renewed)) => (
                    Some(sha256(&renewed.token)),
                    renewed.report.clone(),
                    Engine::Renewed,
                ),
                _ => (
                    Some(sha256(&sourced.value)),
                    one.before.clone(),
                    Engine::Nothing,
                ),
            };
            if one.decision == Decision::Renewed {
                outcome.happened.push(Happened {
                    token: name.clone(),
                    kind: store::EventKind::Renewal,
                    text: one.message.clone(),
                });
            }
            if let Some(key) = &key {
                outcome.records.push((
                    token_record(key, &name, &role, sourced, &stands, now),
                    check_record(key, &stands, engine, now),
                ));
            }
            outcome.seen.push(Seen {
                name,
                report: stands,
                engine,
                key,
            });
        }
        if let Some(failover) = &report.failover
            && promoted.is_some()
        {
            outcome.happened.push(Happened {
                token: token.name.clone(),
                kind: store::EventKind::Failover,
                text: failover.message(),
            });
        }
        if let Some(reload) = &report.reload {
            let text = if reload.ok {
                "the reload command ran and succeeded".to_owned()
            } else {
                format!(
                    "the reload command failed (exit code {})",
                    reload
                        .exit_code
                        .map_or_else(|| "none".to_owned(), |c| c.to_string())
                )
            };
            outcome.happened.push(Happened {
                token: token.name.clone(),
                kind: store::EventKind::Reload,
                text,
            });
        }
        outcome
    }

    /// The names of the backups seen.
    pub(crate) fn backups(&self) -> Vec<String> {
        self.seen.iter().skip(1).map(|s| s.name.clone()).collect()
    }
}
