//! `exchange` and `mint` as one call: plan, lock the destination, ask Meta, verify, write, reload,
//! and a typed [`AcquireReport`] with its [`Status`]. The command keeps reading its arguments and
//! rendering.
//!
//! Must never: ask Meta for a token before the lock of the file it goes to is held, write an
//! unverified token, or put a token in the report other than as a fingerprint.

use permatoken_inspect::{Report, Status};
use permatoken_secret::AccessToken;
use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::engine::{Target, WriteOptions, WriteReport, expiry_status, run_reload};
use crate::{Ctx, Destination, ExchangePlan, Failure, MintPlan, Reload, Verified};

/// Which new token to get.
#[derive(Debug, Clone)]
pub enum Acquire {
    /// `permatoken exchange`: a long-lived token for `input`.
    Exchange {
        /// The token to exchange.
        input: AccessToken,
    },
    /// `permatoken mint`: a system user's token, made with a business admin's token.
    Mint {
        /// The business admin's token.
        admin: AccessToken,
        /// The system user.
        system_user_id: String,
        /// A 60-day token rather than a permanent one.
        sixty_days: bool,
    },
}

impl Acquire {
    /// `"exchange"` or `"mint"`.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Exchange { .. } => "exchange",
            Self::Mint { .. } => "mint",
        }
    }

    fn input(&self) -> &AccessToken {
        match self {
            Self::Exchange { input } => input,
            Self::Mint { admin, .. } => admin,
        }
    }
}

/// What [`acquire`] came to.
// One per command, moved once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Acquired {
    /// A new token, verified, and where it was written (`None`: shown only, [`Target::Demo`]).
    New {
        /// The token and its check (Serialize and Debug show only its facts).
        token: Verified,
        /// What was written.
        written: Option<WriteReport>,
    },
    /// A dry run: the current token's check, and what would change.
    WouldAcquire {
        /// `check` of the token worked from.
        before: Report,
        /// In words, secrets masked.
        would: String,
    },
    /// Nothing to do (a never-expiring system-user token given to `exchange`).
    NothingNeeded {
        /// In words.
        message: String,
    },
}

/// The outcome of `exchange` or `mint`: what `--json` prints.
#[derive(Debug)]
pub struct AcquireReport {
    /// `"exchange"` or `"mint"`.
    pub action: &'static str,
    /// Ok, warning when the new token expires within the warning window, critical when the reload
    /// failed.
    pub status: Status,
    /// A dry run.
    pub dry_run: bool,
    /// Where the token goes, if anywhere.
    pub destination: Option<Destination>,
    /// What came of it.
    pub outcome: Acquired,
    /// The reload, when a token was written and a command given.
    pub reload: Option<Reload>,
}

impl Serialize for AcquireReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("AcquireReport", 8)?;
        s.serialize_field("status", &self.status)?;
        s.serialize_field("action", self.action)?;
        match &self.outcome {
            Acquired::NothingNeeded { message } => {
                s.serialize_field("message", message)?;
                s.serialize_field("written", &None::<()>)?;
            }
            Acquired::New { token, written } => {
                s.serialize_field("dry_run", &self.dry_run)?;
                s.serialize_field("destination", &self.destination)?;
                s.serialize_field("written", written)?;
                s.serialize_field("token", &token.report.token)?;
                s.serialize_field("reload", &self.reload)?;
            }
            Acquired::WouldAcquire { before, would } => {
                s.serialize_field("dry_run", &self.dry_run)?;
                s.serialize_field("destination", &self.destination)?;
                s.serialize_field("written", &None::<()>)?;
                s.serialize_field("would", would)?;
                s.serialize_field("token", &before.token)?;
                s.serialize_field("reload", &self.reload)?;
            }
        }
        s.end()
    }
}

// Both plans are moved once per command.
#[allow(clippy::large_enum_variant)]
enum Plan {
    Exchange(ExchangePlan),
    Mint(MintPlan),
}

impl Plan {
    fn before(&self) -> &Report {
        match self {
            Self::Exchange(p) => p.before(),
            Self::Mint(p) => p.before(),
        }
    }

    fn would_give(&self) -> String {
        match self {
            Self::Exchange(p) => p.would_give().to_owned(),
            Self::Mint(p) => p.would_give(),
        }
    }

    async fn run(self, ctx: &Ctx<'_>) -> Result<Verified, Failure> {
        match self {
            Self::Exchange(p) => p.run(ctx).await,
            Self::Mint(p) => p.run(ctx).await,
        }
    }
}

/// Gets a new token and puts it at `target`: the checks first (asking Meta for nothing new), then,
/// unless a dry run, the lock of the target's file, the new token, its verification, the write, and
/// the reload. Safe on a tokio runtime of either flavour (locks and reload run on the blocking pool).
/// `Err`: nothing was written.
pub async fn acquire(
    ctx: &Ctx<'_>,
    what: &Acquire,
    target: &Target,
    options: &WriteOptions,
) -> Result<AcquireReport, Failure> {
    let action = what.action();
    let report = |status, outcome, reload| AcquireReport {
        action,
        status,
        dry_run: options.dry_run,
        destination: target.destination().cloned(),
        outcome,
        reload,
    };
    let plan = match what {
        Acquire::Exchange { input } => match crate::plan_exchange(ctx, input).await {
            Ok(plan) => Plan::Exchange(plan),
            Err(failure @ Failure::NeedsNoExchange) => {
                let message = failure.to_string();
                return Ok(report(
                    Status::Ok,
                    Acquired::NothingNeeded { message },
                    None,
                ));
            }
            Err(failure) => return Err(failure),
        },
        Acquire::Mint {
            admin,
            system_user_id,
            sixty_days,
        } => Plan::Mint(crate::plan_mint(ctx, admin, system_user_id, *sixty_days).await?),
    };
    if options.dry_run {
        let change = match target {
            Target::File {
                destination,
                holds_input,
            } => crate::describe_change(
                destination,
                holds_input.then_some(what.input()),
                &plan.would_give(),
                options.backup_dir.as_deref(),
            ),
            Target::Demo | Target::Nowhere => format!(
                "would get {}; the sandbox writes only with --output FILE",
                plan.would_give()
            ),
        };
        let would = format!("{change}; nothing was asked of Meta and nothing written (--dry-run)");
        let before = plan.before().clone();
        return Ok(report(
            Status::Ok,
            Acquired::WouldAcquire { before, would },
            None,
        ));
    }
    let mut locks = options.locks();
    locks.claim(target, what.input()).await?;
    let verified = plan.run(ctx).await?;
    let written = match target.destination() {
        Some(destination) => Some(locks.write(destination, &verified.token).await?),
        None => None,
    };
    // The reload may start something that writes the same file: the locks go first.
    drop(locks);
    let mut status = expiry_status(&verified.report, ctx.thresholds, ctx.now);
    let reload = match options.reload.as_deref().filter(|_| written.is_some()) {
        Some(command) => Some(run_reload(command, options).await),
        None => None,
    };
    if reload.as_ref().is_some_and(|r| !r.ok) {
        status = Status::Critical;
    }
    Ok(report(
        status,
        Acquired::New {
            token: verified,
            written,
        },
        reload,
    ))
}
