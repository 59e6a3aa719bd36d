//! The refresh engine: one round for one configured token and its backups, from the check to the
//! reload, returning a typed [`RefreshReport`]. `permatoken refresh` builds a [`TokenSpec`] from its
//! arguments and `watch` from its configuration; both render the same report, and both take their
//! exit code or alert state from [`RefreshReport::status`].
//!
//! Must never: print (the caller renders; a held lock is told through [`RefreshOptions::on_lock_held`]),
//! put a token in the report other than as a fingerprint, block the async runtime (locks and the
//! reload run on tokio's blocking pool), or write a file the spec did not name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use permatoken_config::{Source, Sourced};
use permatoken_inspect::{Report, Status, Thresholds};
use permatoken_secret::AccessToken;
use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::{
    Assessment, Claims, Ctx, Decision, Destination, Failure, Reload, RenewPolicy, StoreError,
    Verified,
};

/// Where a renewed token would go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A file. `holds_input`: the token worked from was read there, so under the lock the file must
    /// still hold it.
    File {
        /// Where.
        destination: Destination,
        /// Whether the file holds the token worked from.
        holds_input: bool,
    },
    /// Shown, never written (the sandbox without `--output`).
    Demo,
    /// Somewhere permatoken cannot write (the process environment, standard input): never renewed.
    Nowhere,
}

impl Target {
    /// Back where `token` came from: its `.env` key or its token file; [`Target::Nowhere`] otherwise.
    pub fn of(token: &Sourced<AccessToken>) -> Self {
        match &token.source {
            Source::EnvFile(path) => Self::File {
                destination: Destination::EnvFile {
                    path: path.clone(),
                    variable: token
                        .var
                        .clone()
                        .unwrap_or_else(|| permatoken_config::TOKEN_VAR.to_owned()),
                },
                holds_input: true,
            },
            Source::TokenFile(path) => Self::File {
                destination: Destination::TokenFile { path: path.clone() },
                holds_input: true,
            },
            _ => Self::Nowhere,
        }
    }

    /// The file, if any.
    pub fn destination(&self) -> Option<&Destination> {
        match self {
            Self::File { destination, .. } => Some(destination),
            Self::Demo | Self::Nowhere => None,
        }
    }
}

/// One configured token: the primary, where its renewal goes, and its backups.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The token in use, and where it was read.
    pub primary: Sourced<AccessToken>,
    /// Where the primary's renewed token is written ([`Target::of`] the primary by default).
    pub target: Target,
    /// Backups in order (`…_BACKUP`, `…_BACKUP_2`, …). Only those of the primary's `.env` file can be
    /// promoted by failover; one from elsewhere is checked, never written.
    pub backups: Vec<Sourced<AccessToken>>,
}

/// Told the lock file's path when another process holds a lock to wait for.
pub type LockNotice = Arc<dyn Fn(&Path) + Send + Sync>;

/// How a new token is written: shared by [`refresh_all`] and [`crate::acquire`].
#[derive(Clone, Default)]
pub struct WriteOptions {
    /// `sh -c` this after a token was written.
    pub reload: Option<String>,
    /// How long to wait for another process's lock.
    pub lock_timeout: Duration,
    /// Decide and describe, ask Meta for nothing new, write nothing.
    pub dry_run: bool,
    /// Where previous file contents go; `None` keeps none (by choice: see [`crate::backup_dir`]).
    pub backup_dir: Option<PathBuf>,
    /// Told at once when a lock is held by another process.
    pub on_lock_held: Option<LockNotice>,
    /// The reload command's positional parameters (`$1`, `$2`, …), never spliced into its text.
    pub reload_args: Vec<std::ffi::OsString>,
    /// Shared by the reloads that may not run all at once: each holds a permit while it runs.
    pub reload_slots: Option<Arc<tokio::sync::Semaphore>>,
}

impl std::fmt::Debug for WriteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOptions")
            .field("reload", &self.reload)
            .field("lock_timeout", &self.lock_timeout)
            .field("dry_run", &self.dry_run)
            .field("backup_dir", &self.backup_dir)
            .field("reload_args", &self.reload_args)
            .finish_non_exhaustive()
    }
}

impl WriteOptions {
    /// The locks of one operation, each taken once.
    pub(crate) fn locks(&self) -> Locks {
        let notice = self.on_lock_held.clone();
        Locks(Some(Claims::new(
            self.lock_timeout,
            self.backup_dir.clone(),
            move |lock: &Path| {
                if let Some(notice) = &notice {
                    notice(lock);
                }
            },
        )))
    }
}

/// An action that must be done once, whichever of several replicas sharing a state does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Asking Meta for a renewed token (and writing it).
    Renew,
    /// Promoting a backup in place of a dead primary.
    FailOver,
}

/// Asked right before each [`Action`], about the token it answers (the one to renew, the dead
/// primary): `true` lets this caller do it, `false` skips it and nothing is asked of Meta or
/// written. `watch` answers from a claim row in its shared state (see `permatoken_state`), so that
/// of several replicas, and of a leader fenced in the middle of a round, exactly one acts; the
/// commands have no gate and always act.
pub trait Gate: Send + Sync + std::fmt::Debug {
    /// Whether this caller may do `action` for `token` now. Answer `false` when that cannot be told.
    fn claim<'a>(
        &'a self,
        action: Action,
        token: &'a AccessToken,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;
}

/// How one round runs. The windows, the app and the time budget are in [`Ctx`].
#[derive(Debug, Clone)]
pub struct RefreshOptions {
    /// When to renew.
    pub policy: RenewPolicy,
    /// Promote a healthy backup when the primary is dead by the API's word.
    pub failover: bool,
    /// Dry run, locks, backups, reload.
    pub write: WriteOptions,
    /// Asked before each renewal and failover; `None`: always act.
    pub gate: Option<Arc<dyn Gate>>,
}

impl RefreshOptions {
    /// Whether the gate (if any) lets this round do `action` for `token`.
    async fn may(&self, action: Action, token: &AccessToken) -> bool {
        match &self.gate {
            None => true,
            Some(gate) => gate.claim(action, token).await,
        }
    }
}

impl Default for RefreshOptions {
    /// The CLI's defaults: renew within 14 days, no failover, no reload, 10 s lock wait, no backup
    /// folder (set [`WriteOptions::backup_dir`] from [`crate::backup_dir`]).
    fn default() -> Self {
        Self {
            policy: RenewPolicy {
                renew_window: SignedDuration::from_hours(14 * 24),
                try_user_token: false,
            },
            failover: false,
            write: WriteOptions {
                lock_timeout: Duration::from_secs(10),
                ..WriteOptions::default()
            },
            gate: None,
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, Serialize)]
pub struct WriteReport {
    /// Where.
    pub destination: Destination,
    /// The file written (a symlink's target).
    pub path: PathBuf,
    /// The previous content's copy.
    pub backup: Option<PathBuf>,
    /// The file is written, but its folder could not be flushed to disk: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsynced: Option<String>,
}

/// One token of the round.
#[derive(Debug, Serialize)]
pub struct TokenOutcome {
    /// Its variable.
    pub variable: Option<String>,
    /// Where it was read, in words.
    pub source: String,
    /// The decision.
    pub decision: Decision,
    /// In words.
    pub message: String,
    /// For a token that cannot be renewed or is dead: the guide's method that applies.
    pub steps: Option<String>,
    /// `check` of the token as it was (serialised as its facts, `"token"`).
    #[serde(rename = "token", serialize_with = "facts")]
    pub before: Report,
    /// The renewed token, verified (serialised as its facts).
    pub renewed: Option<Verified>,
    /// Where the renewed token was written.
    pub written: Option<WriteReport>,
    /// This token's verdict: the expiry of the token in place (the renewed one if any) against the
    /// warning window, critical when dead, unknown when it could not be told, warning when it
    /// cannot be renewed.
    #[serde(skip)]
    pub status: Status,
}

fn facts<S: serde::Serializer>(report: &Report, serializer: S) -> Result<S::Ok, S::Error> {
    report.token.serialize(serializer)
}

/// What failover wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Promotion {
    /// The `.env` file.
    pub path: PathBuf,
    /// The previous content's copy (it holds the dead token).
    pub backup: Option<PathBuf>,
    /// The file is written, but its folder could not be flushed to disk: why.
    pub unsynced: Option<String>,
}

/// What failover did, when the primary was dead and failover was asked for.
// One per round, moved once: boxing the report would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum FailoverOutcome {
    /// `variable` (a backup) checked healthy and now stands in `into`; later backups moved up.
    Promoted {
        /// The backup promoted.
        variable: String,
        /// The primary's variable.
        into: String,
        /// `check` of the promoted token.
        report: Report,
        /// What was written; `None` on a dry run.
        written: Option<Promotion>,
        /// A dry run: said, not done.
        dry_run: bool,
    },
    /// The primary's file has no backup.
    NoBackup,
    /// No backup checks healthy.
    NoHealthyBackup,
    /// The primary was not read from a `.env` file, so no backup can move into its place.
    NotInEnvFile {
        /// Where it was read, in words.
        source: String,
    },
    /// The [`Gate`] said no: another replica has claimed this failover (or this one no longer
    /// leads). Nothing was changed here.
    Claimed,
}

impl FailoverOutcome {
    /// In words.
    pub fn message(&self) -> String {
        match self {
            Self::Promoted {
                variable,
                into,
                dry_run,
                ..
            } => format!(
                "{}promoted `{variable}` into `{into}`; later backups moved up",
                if *dry_run { "would have " } else { "" }
            ),
            Self::NoBackup => "the primary token is dead and there is no backup (`WHATSAPP_ACCESS_TOKEN_BACKUP`) to promote; nothing was changed".into(),
            Self::NoHealthyBackup => "the primary token is dead and no backup checks healthy; nothing was changed".into(),
            Self::NotInEnvFile { source } => format!("the primary token is dead, but it came from {source}, where a backup cannot be promoted"),
            Self::Claimed => "the primary token is dead; another replica has claimed its failover (or this one no longer leads), so nothing was changed here".into(),
        }
    }

    /// What to do, when failover could not help.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::NotInEnvFile { .. } => Some(
                "failover edits the .env file that holds `WHATSAPP_ACCESS_TOKEN` and its backups: use --env-file",
            ),
            _ => None,
        }
    }

    /// The verdict after failover: the promoted token's expiry, else critical.
    pub fn status(&self, thresholds: Thresholds, now: Timestamp) -> Status {
        match self {
            Self::Promoted { report, .. } => expiry_status(report, thresholds, now),
            _ => Status::Critical,
        }
    }
}

impl Serialize for FailoverOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let promoted = match self {
            Self::Promoted {
                variable, report, ..
            } => Some((variable, report)),
            _ => None,
        };
        let mut s = serializer.serialize_struct("Failover", 4)?;
        s.serialize_field("promoted", &promoted.map(|(v, _)| v))?;
        s.serialize_field("message", &self.message())?;
        let written = match self {
            Self::Promoted { written, .. } => written.as_ref(),
            _ => None,
        };
        s.serialize_field("written", &written)?;
        if let Some((_, report)) = promoted {
            s.serialize_field("token", &report.token)?;
        }
        s.end()
    }
}

/// One round of one token: what `permatoken refresh --json` prints.
#[derive(Debug)]
pub struct RefreshReport {
    /// The verdict of the round: the worst token's, replaced by failover's when it ran; critical when
    /// the reload failed.
    pub status: Status,
    /// A dry run.
    pub dry_run: bool,
    /// The primary first, then each backup (only the primary when failover ran).
    pub tokens: Vec<TokenOutcome>,
    /// When the primary was dead and failover was asked for.
    pub failover: Option<FailoverOutcome>,
    /// The reload, when a token was written and a command given.
    pub reload: Option<Reload>,
}

impl RefreshReport {
    /// Whether any file was written.
    pub fn wrote(&self) -> bool {
        self.tokens.iter().any(|t| t.written.is_some())
            || matches!(
                self.failover,
                Some(FailoverOutcome::Promoted {
                    written: Some(_),
                    ..
                })
            )
    }

    /// The writes whose folder could not be flushed, with what was written, for a warning.
    pub fn unsynced(&self) -> Vec<(String, &str)> {
        let mut out: Vec<(String, &str)> = self
            .tokens
            .iter()
            .filter_map(|t| t.written.as_ref())
            .filter_map(|w| Some((w.destination.to_string(), w.unsynced.as_deref()?)))
            .collect();
        if let Some(FailoverOutcome::Promoted {
            written: Some(p), ..
        }) = &self.failover
            && let Some(why) = &p.unsynced
        {
            out.push((p.path.display().to_string(), why));
        }
        out
    }
}

impl Serialize for RefreshReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("RefreshReport", 6)?;
        s.serialize_field("status", &self.status)?;
        s.serialize_field("action", "refresh")?;
        s.serialize_field("dry_run", &self.dry_run)?;
        s.serialize_field("tokens", &self.tokens)?;
        s.serialize_field("failover", &self.failover)?;
        s.serialize_field("reload", &self.reload)?;
        s.end()
    }
}

/// Ok, or warning when the token expires within the warning window. Only expiry counts here: the
/// rest of the check is `check`'s to judge.
pub fn expiry_status(report: &Report, thresholds: Thresholds, now: Timestamp) -> Status {
    match report.expires_at() {
        Some(at) if at.duration_since(now) <= thresholds.warn => Status::Warning,
        _ => Status::Ok,
    }
}

/// The locks of the round, used only on tokio's blocking pool: `flock` waits.
pub(crate) struct Locks(Option<Claims<'static>>);

impl Locks {
    async fn with<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Claims<'static>) -> T + Send + 'static,
    ) -> T {
        let mut claims = self.0.take().expect("the claims are back after each use");
        let (claims, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut claims);
            (claims, out)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        self.0 = Some(claims);
        out
    }

    pub(crate) async fn claim(
        &mut self,
        target: &Target,
        read: &AccessToken,
    ) -> Result<(), Failure> {
        let Target::File {
            destination,
            holds_input,
        } = target
        else {
            return Ok(());
        };
        let (destination, read) = (destination.clone(), holds_input.then(|| read.clone()));
        self.with(move |c| c.claim(&destination, read.as_ref()))
            .await
            .map_err(Failure::Store)
    }

    pub(crate) async fn write(
        &mut self,
        destination: &Destination,
        token: &AccessToken,
    ) -> Result<WriteReport, Failure> {
        let (d, token) = (destination.clone(), token.clone());
        let written = self
            .with(move |c| c.write_token(&d, &token))
            .await
            .map_err(Failure::Store)?;
        Ok(WriteReport {
            destination: destination.clone(),
            path: written.path,
            backup: written.backup,
            unsynced: written.unsynced,
        })
    }
}

/// Runs `command` after a write, on the blocking pool, with the options' arguments, once a reload
/// slot is free.
pub(crate) async fn run_reload(command: &str, options: &WriteOptions) -> Reload {
    let command = command.to_owned();
    let args = options.reload_args.clone();
    // A closed semaphore is never made: a failed acquire only means no limit.
    let permit = match &options.reload_slots {
        Some(slots) => slots.clone().acquire_owned().await.ok(),
        None => None,
    };
    tokio::task::spawn_blocking(move || {
        let reload = crate::reload::reload_with_args(&command, &args);
        drop(permit);
        reload
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// One round for one token and its backups: check each, renew inside the window (taking the lock of
/// the file before Meta is asked), write, fail over to the first healthy backup when the primary is
/// dead by the API's word, then reload if anything was written.
///
/// Safe to call from a tokio runtime of either flavour: the waits for locks and the reload run on the
/// blocking pool. `Err` is a write that could not be done (another process holds or changed the file,
/// the file cannot be written): every file is then as it was, and nothing after it was tried.
pub async fn refresh_all(
    ctx: &Ctx<'_>,
    spec: &TokenSpec,
    options: &RefreshOptions,
) -> Result<RefreshReport, Failure> {
    let mut locks = options.write.locks();
    let mut tokens = Vec::new();
    let mut status = Status::Ok;
    let all = std::iter::once(&spec.primary).chain(&spec.backups);
    for (i, sourced) in all.enumerate() {
        let source = sourced.source.to_string();
        let target = if i == 0 {
            spec.target.clone()
        } else {
            match &sourced.source {
                Source::EnvFile(_) => Target::of(sourced),
                _ => Target::Nowhere,
            }
        };
        let assessment = crate::assess(
            ctx,
            &sourced.value,
            &source,
            sourced.var.as_deref(),
            options.policy,
        )
        .await;
        let refreshed = match assessment {
            Assessment::Settled(refreshed) => refreshed,
            Assessment::Renewable(plan) if options.write.dry_run => {
                let would = match &target {
                    Target::File {
                        destination,
                        holds_input,
                    } => crate::describe_change(
                        destination,
                        holds_input.then_some(&sourced.value),
                        plan.would_give(),
                        options.write.backup_dir.as_deref(),
                    ),
                    _ => format!("would get {}", plan.would_give()),
                };
                plan.stop(
                    Decision::WouldRenew,
                    format!("{would}; nothing was asked of Meta (--dry-run)"),
                )
            }
            Assessment::Renewable(plan) if target == Target::Nowhere => {
                // Only a file can take a renewed token back: one that cannot be written is not minted.
                let message = format!(
                    "not renewed: it came from {}, which permatoken cannot write (put it in the .env file, or use --env-file)",
                    sourced.source
                );
                plan.stop(Decision::CannotRenew, message)
            }
            Assessment::Renewable(plan) if !options.may(Action::Renew, &sourced.value).await => {
                // The token is as the check found it; whoever claimed the renewal does it.
                plan.stop(
                    Decision::NothingNeeded,
                    "not renewed by this replica: another one has claimed this renewal, or this one no longer leads".into(),
                )
            }
            Assessment::Renewable(plan) => {
                locks.claim(&target, &sourced.value).await?;
                plan.renew(ctx).await
            }
        };
        let mut written = None;
        if let (Some(renewed), Some(destination)) = (&refreshed.renewed, target.destination()) {
            written = Some(locks.write(destination, &renewed.token).await?);
        }
        let token_status = match refreshed.decision {
            Decision::NothingNeeded => expiry_status(&refreshed.before, ctx.thresholds, ctx.now),
            Decision::Renewed => refreshed.renewed.as_ref().map_or(Status::Ok, |r| {
                expiry_status(&r.report, ctx.thresholds, ctx.now)
            }),
            Decision::WouldRenew => Status::Ok,
            Decision::CannotRenew => Status::Warning,
            Decision::Dead => Status::Critical,
            Decision::Unknown => Status::Unknown,
        };
        status = status.worst(token_status);
        let dead = refreshed.decision == Decision::Dead;
        tokens.push(TokenOutcome {
            variable: sourced.var.clone(),
            source,
            decision: refreshed.decision,
            message: refreshed.message,
            steps: refreshed.steps,
            before: refreshed.before,
            renewed: refreshed.renewed,
            written,
            status: token_status,
        });
        if i == 0 && options.failover && dead {
            // Failover decides the primary's fate; the backups are looked at there.
            break;
        }
    }

    let mut failover = None;
    if options.failover && tokens[0].decision == Decision::Dead {
        let outcome = fail_over(ctx, spec, options, &tokens[0].before, &mut locks).await?;
        status = outcome.status(ctx.thresholds, ctx.now);
        failover = Some(outcome);
    }
    // The reload may start something that writes the same files: the locks go first.
    drop(locks);
    let mut report = RefreshReport {
        status,
        dry_run: options.write.dry_run,
        tokens,
        failover,
        reload: None,
    };
    if let Some(command) = options.write.reload.as_deref().filter(|_| report.wrote()) {
        let reload = run_reload(command, &options.write).await;
        if !reload.ok {
            report.status = Status::Critical;
        }
        report.reload = Some(reload);
    }
    Ok(report)
}

async fn fail_over(
    ctx: &Ctx<'_>,
    spec: &TokenSpec,
    options: &RefreshOptions,
    primary_report: &Report,
    locks: &mut Locks,
) -> Result<FailoverOutcome, Failure> {
    let primary = &spec.primary;
    let Source::EnvFile(path) = &primary.source else {
        return Ok(FailoverOutcome::NotInEnvFile {
            source: primary.source.to_string(),
        });
    };
    // Only backups of the same file can move up within it.
    let backups: Vec<(String, AccessToken)> = spec
        .backups
        .iter()
        .filter(|b| b.source == primary.source)
        .filter_map(|b| Some((b.var.clone()?, b.value.clone())))
        .collect();
    let Some(choice) = crate::failover(ctx, primary_report, &backups).await else {
        return Ok(if backups.is_empty() {
            FailoverOutcome::NoBackup
        } else {
            FailoverOutcome::NoHealthyBackup
        });
    };
    let variable = backups[choice.index].0.clone();
    let into = primary
        .var
        .clone()
        .unwrap_or_else(|| permatoken_config::TOKEN_VAR.to_owned());
    if !options.write.dry_run && !options.may(Action::FailOver, &primary.value).await {
        return Ok(FailoverOutcome::Claimed);
    }
    let written = if options.write.dry_run {
        None
    } else {
        let names: Vec<String> = backups.iter().map(|(v, _)| v.clone()).collect();
        let (path, into, index) = (path.clone(), into.clone(), choice.index);
        let verified = backups[index].1.clone();
        // What goes in is the value checked above: under the lock the file must still hold it.
        let written = locks
            .with(move |c| c.promote_backup(&path, &into, &names, index, &verified))
            .await
            .map_err(|e: StoreError| Failure::Store(e))?;
        Some(Promotion {
            path: written.path,
            backup: written.backup,
            unsynced: written.unsynced,
        })
    };
    Ok(FailoverOutcome::Promoted {
        variable,
        into,
        report: choice.report,
        written,
        dry_run: options.write.dry_run,
    })
}
