//! One token's check: everything it needs, owned ([`Job`]), so that it runs on a task of its own
//! while others run; the renewal engine run on it ([`permatoken_renew::refresh_all`]: the renewal
//! window, failover, the write and the reload); and what came of it ([`Checked`]), or why it could
//! not run ([`CheckError`]), as the [`Observation`] of a check that could not tell.
//!
//! Must never: decide what a check means for alerts (that is [`crate::states`]'s), write to the
//! state store, or cut a write the engine began (a check runs to its end even when the round stops).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use permatoken_graph::{Budget, Client};
use permatoken_inspect::AppCredentials;
use permatoken_renew::{
    Ctx, Known, RefreshOptions, RefreshReport, RenewPolicy, TokenSource, TokenSpec,
};
use tokio::sync::Semaphore;

use crate::claims::ClaimGate;
use crate::config::TokenConfig;
use crate::sources::{Read, SourceError};
use crate::states::{Observation, Observed};

/// The time one check's Graph calls may take, retries included.
const CHECK_BUDGET: Duration = Duration::from_secs(120);
/// How long a write waits for the env file's lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a token's check told nothing: its files could not be read, the check's task stopped, or
/// the engine failed. Each says what happened and what to do, never a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CheckError {
    /// The token, its backups or its app's credentials could not be read.
    #[error(transparent)]
    Unreadable(#[from] SourceError),
    /// The check's task stopped before it finished (a panic).
    #[error("the check stopped before it finished ({0})")]
    Stopped(String),
    /// The engine could not check the token (the network, the API).
    #[error(transparent)]
    Engine(permatoken_renew::Failure),
}

impl CheckError {
    /// The observation of a check that could not tell, for the alert logic.
    pub(crate) fn observation(&self) -> Observation {
        let (message, fix) = match self {
            Self::Engine(failure) => (
                format!("the token could not be checked: {failure}"),
                failure.hint(),
            ),
            Self::Unreadable(_) | Self::Stopped(_) => (
                format!("the token could not be read: {self}"),
                "check the file named in the message and its permissions".to_owned(),
            ),
        };
        Observation {
            observed: Observed::Unknown,
            message,
            fix: Some(fix),
        }
    }

    /// The log line, at the token's name.
    pub(crate) fn log(&self, token: &str) {
        match self {
            Self::Engine(_) => tracing::warn!(token = %token, "the check could not run: {self}"),
            Self::Unreadable(_) | Self::Stopped(_) => {
                tracing::warn!(token = %token, "cannot read the token: {self}");
            }
        }
    }
}

/// Everything one token's check needs, owned, so that it can run on its own task.
pub(crate) struct Job {
    /// The token and its backups, as read for this check.
    pub(crate) spec: TokenSpec,
    /// Where they were read.
    pub(crate) source: TokenSource,
    /// The app's credentials.
    pub(crate) app: AppCredentials,
    /// The Graph client of the app.
    pub(crate) client: Client,
    thresholds: permatoken_inspect::Thresholds,
    options: RefreshOptions,
    /// The claims gate of this check (replicas only), for marking its claims done.
    claims: Option<Arc<ClaimGate>>,
    /// The round's batch answers, shared by its checks.
    known: Option<Arc<Known>>,
}

/// Where a write of a renewed or promoted token goes besides the file.
pub(crate) struct WriteSetup {
    /// Where previous env-file contents go before a write; `None` keeps none.
    pub(crate) backup_dir: Option<PathBuf>,
    /// The permits of the reload commands of the token's set.
    pub(crate) reload_slots: Option<Arc<Semaphore>>,
}

impl Job {
    /// The check of `token` from what [`crate::sources::read`] read, with its app's `client`.
    pub(crate) fn new(token: &TokenConfig, read: Read, client: Client, write: WriteSetup) -> Self {
        let policy = *token.policy;
        let Read { spec, source, app } = read;
        let options = RefreshOptions {
            policy: RenewPolicy {
                renew_window: SignedDuration::from_hours(i64::from(policy.renew_days) * 24),
                try_user_token: policy.try_user_token,
            },
            failover: policy.failover,
            write: permatoken_renew::WriteOptions {
                reload: token.reload.clone(),
                lock_timeout: LOCK_TIMEOUT,
                dry_run: false,
                backup_dir: write.backup_dir,
                on_lock_held: None,
                reload_args: token.reload_args().into_iter().map(Into::into).collect(),
                reload_slots: write.reload_slots,
            },
            gate: None,
        };
        Self {
            spec,
            source,
            app,
            client,
            thresholds: policy.thresholds(),
            options,
            claims: None,
            known: None,
        }
    }

    /// Claims each renewal and failover through `gate` first (replicas sharing the state).
    pub(crate) fn claim_through(&mut self, gate: Arc<ClaimGate>) {
        self.options.gate = Some(gate.clone());
        self.claims = Some(gate);
    }

    /// Judges the tokens from the round's batch answers where they have one.
    pub(crate) fn use_known(&mut self, known: Option<Arc<Known>>) {
        self.known = known;
    }

    /// The keys this check claimed, taken out, to be marked done.
    pub(crate) fn take_claimed(&self) -> Vec<String> {
        self.claims
            .iter()
            .flat_map(|gate| gate.take_claimed())
            .collect()
    }

    /// Runs the renewal engine for this token (its Graph calls, any write, failover and reload).
    pub(crate) async fn run(self, now: Timestamp) -> Checked {
        let budget = Budget::new(CHECK_BUDGET);
        let ctx = Ctx {
            client: &self.client,
            app: &self.app,
            thresholds: self.thresholds,
            budget: &budget,
            now,
            known: self.known.as_deref(),
        };
        let result = permatoken_renew::refresh_all(&ctx, &self.spec, &self.options)
            .await
            .map_err(CheckError::Engine);
        Checked::Ran(Box::new(Ran { job: self, result }))
    }
}

/// A check the engine ran: the job, and the engine's report or why it failed.
pub(crate) struct Ran {
    /// The job it ran.
    pub(crate) job: Job,
    /// Its report.
    pub(crate) result: Result<RefreshReport, CheckError>,
}

/// A token's check, done.
pub(crate) enum Checked {
    /// It could not run: why.
    NotRun(CheckError),
    /// The engine ran.
    Ran(Box<Ran>),
}

/// A token's check, running or done.
pub(crate) enum Pending {
    /// On its own task.
    Running(tokio::task::JoinHandle<Checked>),
    /// Done without running (its files could not be read).
    Done(Checked),
}

impl Pending {
    /// Starts `job` on a task of its own.
    pub(crate) fn start(job: Job, now: Timestamp) -> Self {
        Self::Running(tokio::spawn(job.run(now)))
    }

    /// Waits for the check to end.
    pub(crate) async fn finish(self) -> Checked {
        match self {
            Self::Done(checked) => checked,
            Self::Running(task) => task
                .await
                .unwrap_or_else(|e| Checked::NotRun(CheckError::Stopped(e.to_string()))),
        }
    }
}
