//! Keeping tokens alive: the guide's Method 2 (exchange), its "Token Refresh" snippet (refresh), its
//! Method 3 by API (mint), and its "keep backup tokens" advice (failover), done so that nothing can go
//! wrong quietly.
//!
//! Every operation comes in two steps: a plan ([`plan_exchange`], [`assess`], [`plan_mint`]) checks the
//! current token and asks Meta for nothing new; running it asks for the new token. Between the two
//! the caller takes the lock of the file the token goes to ([`Claims`]), so that no token is minted
//! that cannot be written, and a dry run stops at the plan. Every new token is verified with `/me` and
//! `/debug_token` before anything is written, and written through the locked, atomic, backed-up path
//! of `permatoken-dotenv`. A failure leaves every file byte for byte as it was.
//!
//! [`refresh_all`] is the whole of `permatoken refresh` (and of one round of `watch` for one token):
//! assess, lock, renew, write, fail over, reload, and a typed [`RefreshReport`] with its [`Status`].
//! [`acquire`] is the whole of `exchange` and `mint` the same way ([`AcquireReport`]).
//!
//! Must never: print, write a file other than the one it was told, decide on a network failure that a
//! token is dead, touch a never-expiring system-user token, or ask for a new token in a plan.

mod acquire;
mod engine;
mod reload;
mod source;
mod store;

use jiff::{SignedDuration, Timestamp};
use permatoken_graph::{Budget, Client, Endpoint, Error as GraphError, ErrorClass};
use permatoken_inspect::{
    AppCredentials, Identity, Kind, Prefetched, Report, Status, Subject, Thresholds,
};
use permatoken_secret::{AccessToken, AppToken};
use serde::Serialize;

pub use acquire::{Acquire, AcquireReport, Acquired, acquire};
pub use engine::{
    Action, FailoverOutcome, Gate, LockNotice, Promotion, RefreshOptions, RefreshReport, Target,
    TokenOutcome, TokenSpec, WriteOptions, WriteReport, expiry_status, refresh_all,
};
pub use reload::{Reload, reload, reload_with_args, secret_free_command};
pub use source::{AppSource, LoadError, SecretFrom, TokenSource, app_credentials, load, load_app};
pub use store::{Claims, Destination, StoreError, describe_change};

/// Where the previous content of a written file is kept: `$XDG_STATE_HOME/permatoken/backups` (or
/// `~/.local/state/…`). With neither variable set there is nowhere to keep it, and writing without a
/// backup must be asked for (`no_backup`), never happen silently.
pub fn backup_dir(no_backup: bool) -> Result<Option<std::path::PathBuf>, Failure> {
    backup_dir_in(no_backup, std::env::vars_os())
}

/// [`backup_dir`] with the environment given, for tests.
fn backup_dir_in(
    no_backup: bool,
    environment: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<Option<std::path::PathBuf>, Failure> {
    if no_backup {
        return Ok(None);
    }
    match permatoken_fs::permatoken_dir(permatoken_fs::Xdg::State, environment) {
        Ok(Some(dir)) => Ok(Some(dir.join("backups"))),
        Ok(None) => Err(Failure::NoBackupFolder),
        Err(e) => Err(Failure::BackupFolderNotUtf8(e.var)),
    }
}

/// The permissions a minted token asks for: the required ones and the recommended one.
pub const MINT_SCOPES: &[&str] = &[
    "whatsapp_business_messaging",
    "whatsapp_business_management",
    "business_management",
];

/// What the operations share: the client, the app credentials, the windows and the time budget.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The Graph client (with the app secret, so calls carry `appsecret_proof`).
    pub client: &'a Client,
    /// `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET`.
    pub app: &'a AppCredentials,
    /// `--warn-days`, `--crit-days`.
    pub thresholds: Thresholds,
    /// The time all calls share.
    pub budget: &'a Budget,
    /// The time every decision is made at (the renewal window, the warning and critical windows):
    /// `Timestamp::now()` for the commands, a test's or the daemon's clock for `watch`.
    pub now: Timestamp,
    /// What this round already knows of some tokens (the daemon's batches); `None` asks each token
    /// alone, as the commands do.
    pub known: Option<&'a Known>,
}

/// What a round already knows of its tokens, by token: the `/debug_token` answer of a batch, maybe a
/// `/me` answer of a batch, and what the token's previous check saw. Keyed by the caller's digest of
/// the token (its SHA-256), so that no token is kept here; a token not in it (a renewed one, a
/// token whose batch answer failed) is asked alone.
pub struct Known {
    key: fn(&AccessToken) -> String,
    tokens: std::collections::HashMap<String, KnownToken>,
}

/// What is known of one token this round.
#[derive(Debug, Clone)]
pub struct KnownToken {
    /// `/debug_token`, asked with the app token in a batch.
    pub info: permatoken_graph::TokenInfo,
    /// `/me`, asked in a batch this round (its first check).
    pub me: Option<Result<Identity, GraphError>>,
    /// The previous check's identity and verdict, when it had one.
    pub last: Option<LastCheck>,
}

/// What a token's previous check saw: `/me` is not asked again while the verdict stays the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCheck {
    /// Its `/me` answer.
    pub identity: Identity,
    /// Its verdict.
    pub status: Status,
    /// Whether it was dead by the API's word.
    pub dead: bool,
}

impl LastCheck {
    /// What `report` saw, if `/me` answered it.
    pub fn of(report: &Report) -> Option<Self> {
        Some(Self {
            identity: report.identity.clone()?,
            status: report.status,
            dead: report.is_dead(),
        })
    }
}

impl Known {
    /// Nothing known yet; `key` is the digest tokens are known by.
    pub fn new(key: fn(&AccessToken) -> String) -> Self {
        Self {
            key,
            tokens: std::collections::HashMap::new(),
        }
    }

    /// Records what is known of the token whose digest is `key`.
    pub fn insert(&mut self, key: String, known: KnownToken) {
        self.tokens.insert(key, known);
    }

    /// What is known of `token`.
    pub fn get(&self, token: &AccessToken) -> Option<&KnownToken> {
        self.tokens.get(&(self.key)(token))
    }
}

impl Ctx<'_> {
    /// `check` of one token. A token this round already knows is judged from what is known: with
    /// the previous check's identity, without any call, unless the verdict so judged differs from
    /// the previous one (a change of state, which `/me` is asked to confirm); without one, `/me`
    /// is the one call.
    pub async fn inspect(
        &self,
        token: &AccessToken,
        source: &str,
        variable: Option<&str>,
    ) -> Report {
        let subject = Subject {
            token,
            source,
            variable,
        };
        let Some(known) = self.known.and_then(|k| k.get(token)) else {
            return permatoken_inspect::check(
                self.client,
                subject,
                self.app,
                self.thresholds,
                self.now,
                self.budget,
            )
            .await;
        };
        let judge = |me| {
            let prefetched = Prefetched {
                info: known.info.clone(),
                me,
            };
            permatoken_inspect::check_prefetched(
                self.client,
                subject,
                self.app,
                self.thresholds,
                self.now,
                self.budget,
                prefetched,
            )
        };
        match (&known.me, &known.last) {
            (Some(me), _) => judge(Some(me.clone())).await,
            (None, Some(last)) => {
                let report = judge(Some(Ok(last.identity.clone()))).await;
                if report.status == last.status && report.is_dead() == last.dead {
                    report
                } else {
                    judge(None).await
                }
            }
            (None, None) => judge(None).await,
        }
    }

    fn app_token(&self) -> Result<AppToken, Failure> {
        match (&self.app.app_id, &self.app.app_secret) {
            (Some(id), Some(secret)) => Ok(AppToken::new(id.clone(), secret.clone())),
            (None, _) => Err(Failure::MissingAppCredential("FACEBOOK_APP_ID")),
            (_, None) => Err(Failure::MissingAppCredential("FACEBOOK_APP_SECRET")),
        }
    }
}

/// Why an operation stopped. Every file is then as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The operation needs an app credential that is not set.
    #[error("`{0}` is not set, and this needs it")]
    MissingAppCredential(&'static str),
    /// The token belongs to another app than `FACEBOOK_APP_ID`.
    #[error("the token belongs to app {token_app}, not to app {configured} of `FACEBOOK_APP_ID`")]
    OtherApp {
        /// The app in the token.
        token_app: String,
        /// `FACEBOOK_APP_ID`.
        configured: String,
    },
    /// A never-expiring system-user token: nothing to exchange.
    #[error(
        "the token is a never-expiring system-user token: it needs no exchange and was left as it is"
    )]
    NeedsNoExchange,
    /// The token to work from is dead.
    #[error("the token to exchange no longer works: {0}")]
    InputDead(String),
    /// Code 1 from `/oauth/access_token`.
    #[error("the Graph API refused the app secret: \"Error validating client secret.\" (code 1)")]
    WrongAppSecret,
    /// Code 101 from `/oauth/access_token`.
    #[error("the Graph API does not know the app id of `FACEBOOK_APP_ID` (code 101)")]
    WrongAppId,
    /// The API refused the call.
    #[error("{0}")]
    Refused(GraphError),
    /// The API could not be reached or did not answer in time: nothing is known.
    #[error("{0}")]
    Unreachable(GraphError),
    /// The new token came back but does not pass the checks.
    #[error("the new token was not written, because {0}")]
    Unverified(String),
    /// The token has no Meta token's shape (`what` names where it was read): it was sent nowhere.
    #[error(
        "{0} does not hold a Meta access token (EAA followed by letters and digits), so it was not sent to Meta"
    )]
    Malformed(String),
    /// The business admin's token given to `mint` is dead.
    #[error("the business admin's token no longer works: {0}")]
    AdminDead(String),
    /// Neither `XDG_STATE_HOME` nor `HOME` is set: no place for the backup of the file to write.
    #[error(
        "neither `XDG_STATE_HOME` nor `HOME` is set, so there is no place to keep a backup of the file, and nothing was written"
    )]
    NoBackupFolder,
    /// The variable that names the backups' folder is not UTF-8: the folder cannot be told.
    #[error(
        "`{0}` is not valid UTF-8, so there is no telling where to keep a backup of the file, and nothing was written"
    )]
    BackupFolderNotUtf8(&'static str),
    /// Writing failed; the file is as it was.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Failure {
    /// The exit code (DESIGN §4): 3 when nothing could be told (network, missing configuration), 2 when
    /// the operation failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::MissingAppCredential(_)
            | Self::Malformed(_)
            | Self::Unreachable(_)
            | Self::NoBackupFolder
            | Self::BackupFolderNotUtf8(_)
            | Self::Store(StoreError::Changed { .. })
            | Self::Store(StoreError::Write(permatoken_dotenv::WriteError::LockHeld { .. }))
            | Self::Store(StoreError::Write(permatoken_dotenv::WriteError::TooLarge { .. }))
            | Self::Store(StoreError::Write(permatoken_dotenv::WriteError::Owner { .. })) => 3,
            Self::NeedsNoExchange => 0,
            _ => 2,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            Self::MissingAppCredential(var) => format!(
                "set `{var}` in the .env file or the environment: App Dashboard → Settings → Basic shows the App ID and, under App secret → Show, the secret"
            ),
            Self::OtherApp { token_app, configured } => format!(
                "use a token generated for app {configured}, or set `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET` to those of app {token_app}"
            ),
            Self::NeedsNoExchange => "nothing to do: `permatoken check` shows it never expires".into(),
            Self::Malformed(_) => "this file does not hold a Meta access token: check that it is the token's file (a key, a certificate or a JSON file is not) and put the token alone there, copied whole (EAA followed by 150–260 letters and digits)".into(),
            Self::InputDead(_) => "get a fresh token (WhatsApp → API Setup, or Graph API Explorer) and exchange it within its hour; better, mint a permanent one: `permatoken mint --help`".into(),
            Self::WrongAppSecret => "copy the secret again from App Dashboard → Settings → Basic → App secret → Show into `FACEBOOK_APP_SECRET`; after a reset only the new one works".into(),
            Self::WrongAppId => "`FACEBOOK_APP_ID` must be the App ID at the top of App Dashboard → Settings → Basic".into(),
            Self::Refused(_) => "the message above is Meta's; `permatoken check` tells more about the token".into(),
            Self::Unreachable(_) => "nothing was changed; check the network and Meta's status page (metastatus.com), then run again".into(),
            Self::Unverified(_) => "nothing was changed; run `permatoken check` on the token you have, and try again later".into(),
            Self::AdminDead(_) => "mint needs a working token of a business admin: generate one in Graph API Explorer (or Business Settings) with business_management, and put it in `WHATSAPP_ACCESS_TOKEN` for this run".into(),
            Self::NoBackupFolder => "set `XDG_STATE_HOME` (or `HOME`) to a folder where permatoken may keep the previous file (it goes in `permatoken/backups` there), or pass --no-backup to write without a backup".into(),
            Self::BackupFolderNotUtf8(var) => format!(
                "set `{var}` to a folder path written in UTF-8{}, or pass --no-backup to write without a backup",
                if *var == "HOME" {
                    ", or set `XDG_STATE_HOME` to one (backups go in `permatoken/backups` there)"
                } else {
                    ", or unset it (backups then go in `~/.local/state/permatoken/backups`)"
                }
            ),
            Self::Store(StoreError::Write(permatoken_dotenv::WriteError::LockHeld { lock, .. })) => format!(
                "nothing was asked of Meta for it; another permatoken is writing that file: wait for it and run again, or wait longer with --lock-timeout (`fuser {}` shows who holds the lock)",
                lock.display()
            ),
            Self::Store(StoreError::Changed { .. }) => "another process edited the file meanwhile; run the command again to check what it holds now".into(),
            Self::Store(StoreError::Write(permatoken_dotenv::WriteError::TooLarge { .. })) => "nothing was asked of Meta for it; check the path: name the service's `.env` (--env-file) or token file (--output)".into(),
            Self::Store(StoreError::Write(permatoken_dotenv::WriteError::Owner { .. })) => "nothing was asked of Meta for it; run as the file's owner (or root), or give the file a group this user belongs to (`chgrp`), so that its rewrite keeps who may read it".into(),
            Self::Store(_) => "nothing was changed; check that this user may write the file and its folder".into(),
        }
    }
}

/// A new token that passed its checks, with the report that says so. Its `Debug` and `Serialize`
/// show only the report's facts (the fingerprint); the token itself only through
/// `token.expose_secret()`.
#[derive(Debug)]
pub struct Verified {
    /// The token.
    pub token: AccessToken,
    /// `check` of it.
    pub report: Report,
}

impl Serialize for Verified {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.report.token.serialize(serializer)
    }
}

fn graph_failure(err: GraphError, endpoint: Endpoint) -> Failure {
    match err.class(endpoint) {
        ErrorClass::BadCredentials => Failure::WrongAppSecret,
        ErrorClass::Transient | ErrorClass::RateLimited => Failure::Unreachable(err),
        _ if err.graph_error().and_then(|e| e.code) == Some(101) => Failure::WrongAppId,
        class if class.token_is_dead() => {
            let message = err
                .graph_error()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            Failure::InputDead(message)
        }
        _ => Failure::Refused(err),
    }
}

/// Checks that `new` works, belongs to the app, and holds at least `scopes`.
async fn verify(
    ctx: &Ctx<'_>,
    new: AccessToken,
    scopes: &[String],
    source: &str,
) -> Result<Verified, Failure> {
    let report = ctx.inspect(&new, source, None).await;
    if report.token.valid != Some(true) {
        if report.status == Status::Unknown {
            return Err(Failure::Unverified(
                "the Graph API could not be asked whether it works".into(),
            ));
        }
        return Err(Failure::Unverified(
            "the Graph API says it does not work".into(),
        ));
    }
    if let (Some(want), Some(got)) = (&ctx.app.app_id, &report.token.app_id)
        && want != got
    {
        return Err(Failure::Unverified(format!(
            "it belongs to app {got}, not {want}"
        )));
    }
    let have = report.token.scopes.clone().unwrap_or_default();
    let lost: Vec<&str> = scopes
        .iter()
        .filter(|s| !have.contains(s))
        .map(String::as_str)
        .collect();
    if !lost.is_empty() {
        return Err(Failure::Unverified(format!(
            "it lacks permissions the old one had: {}",
            lost.join(", ")
        )));
    }
    Ok(Verified { token: new, report })
}

/// An exchange whose input passed its checks, before Meta is asked for anything.
pub struct ExchangePlan {
    app: AppToken,
    input: AccessToken,
    before: Report,
}

impl ExchangePlan {
    /// `check` of the token to exchange.
    pub fn before(&self) -> &Report {
        &self.before
    }

    /// What the exchange would give.
    pub fn would_give(&self) -> &'static str {
        match self.before.token.kind {
            Kind::SystemUser60d => "a new 60-day system-user token",
            _ => "a new long-lived (60-day) user token",
        }
    }

    /// Asks Meta for the new token and verifies it.
    pub async fn run(self, ctx: &Ctx<'_>) -> Result<Verified, Failure> {
        let sixty_day_system_user = self.before.token.kind == Kind::SystemUser60d;
        let new = ctx
            .client
            .exchange(&self.app, &self.input, sixty_day_system_user, ctx.budget)
            .await
            .map_err(|e| graph_failure(e, Endpoint::OAuthAccessToken))?;
        let scopes = self.before.token.scopes.clone().unwrap_or_default();
        verify(ctx, new.token, &scopes, "the exchanged token").await
    }
}

/// The checks of `permatoken exchange`, asking Meta for nothing new: the app credentials, the app of
/// the token, and whether it works and needs an exchange.
pub async fn plan_exchange(ctx: &Ctx<'_>, input: &AccessToken) -> Result<ExchangePlan, Failure> {
    if !input.has_meta_shape() {
        return Err(Failure::Malformed("the token to exchange".into()));
    }
    let app = ctx.app_token()?;
    if let Some(embedded) = input.embedded_app_id().map(|id| id.to_string())
        && embedded != app.app_id()
    {
        return Err(Failure::OtherApp {
            token_app: embedded,
            configured: app.app_id().to_owned(),
        });
    }
    let before = ctx.inspect(input, "the token to exchange", None).await;
    if before.is_dead() {
        return Err(Failure::InputDead(before.headline()));
    }
    if before.token.kind == Kind::SystemUserPermanent {
        return Err(Failure::NeedsNoExchange);
    }
    Ok(ExchangePlan {
        app,
        input: input.clone(),
        before,
    })
}

/// `permatoken exchange`: a short-lived user token for a long-lived one, verified.
pub async fn exchange(ctx: &Ctx<'_>, input: &AccessToken) -> Result<Verified, Failure> {
    plan_exchange(ctx, input).await?.run(ctx).await
}

/// What `refresh` decided for one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Never expires, or outside the renewal window.
    NothingNeeded,
    /// Renewed by API.
    Renewed,
    /// Inside its window and renewable: a dry run, or a run in which it could not be written, stopped
    /// before asking Meta.
    WouldRenew,
    /// Expiring, but not renewable by API; `steps` says what to do by hand.
    CannotRenew,
    /// The API said it is dead.
    Dead,
    /// Could not tell.
    Unknown,
}

/// `refresh` of one token.
#[derive(Debug)]
pub struct Refreshed {
    /// The decision.
    pub decision: Decision,
    /// In words.
    pub message: String,
    /// For [`Decision::CannotRenew`] and [`Decision::Dead`]: which of the guide's methods applies.
    pub steps: Option<String>,
    /// The report of the token as it was.
    pub before: Report,
    /// The renewed token, verified.
    pub renewed: Option<Verified>,
}

const METHOD_3: &str = "Method 3 (system user, never expires): in Business Settings → Users → System users, add a system user (Admin), give it the app and the WhatsApp account, Generate new token with expiration \"Never\" and whatsapp_business_messaging, whatsapp_business_management, business_management; or by API: `permatoken mint --system-user ID`";

/// When `refresh` renews a token.
#[derive(Debug, Clone, Copy)]
pub struct RenewPolicy {
    /// Renew once a token has this little left.
    pub renew_window: SignedDuration,
    /// Try the undocumented exchange of a long-lived user token.
    pub try_user_token: bool,
}

/// What [`assess`] found: a settled outcome, or a token to renew.
// One per token per run, moved once: boxing either variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Assessment {
    /// Nothing to ask Meta for.
    Settled(Refreshed),
    /// Inside its renewal window and renewable by API.
    Renewable(RenewPlan),
}

/// A renewal decided on, before Meta is asked for anything.
pub struct RenewPlan {
    token: AccessToken,
    before: Report,
    expires: Timestamp,
}

impl RenewPlan {
    /// `check` of the token as it is.
    pub fn before(&self) -> &Report {
        &self.before
    }

    /// What the renewal would give.
    pub fn would_give(&self) -> &'static str {
        match self.before.token.kind {
            Kind::SystemUser60d => "a renewed 60-day system-user token",
            _ => "a renewed token, kept only if it lives longer",
        }
    }

    /// The outcome when Meta is not asked: `message` says why (a dry run, nowhere to write).
    pub fn stop(self, decision: Decision, message: String) -> Refreshed {
        Refreshed {
            decision,
            message: format!(
                "expires on {}, inside the renewal window: {message}",
                permatoken_inspect::human_time(self.expires)
            ),
            steps: None,
            before: self.before,
            renewed: None,
        }
    }

    /// Asks Meta for the renewed token, verifies it, and keeps it only if it lives longer.
    pub async fn renew(self, ctx: &Ctx<'_>) -> Refreshed {
        let Self {
            token,
            before,
            expires,
        } = self;
        let outcome = |decision, message: String, before| Refreshed {
            decision,
            message,
            steps: Some(METHOD_3.to_owned()),
            before,
            renewed: None,
        };
        let renewed = match exchange(ctx, &token).await {
            Ok(v) => v,
            Err(failure) => {
                let decision = if matches!(failure, Failure::Unreachable(_)) {
                    Decision::Unknown
                } else {
                    Decision::CannotRenew
                };
                return outcome(decision, format!("renewal failed: {failure}"), before);
            }
        };
        // For a user token the renewal is undocumented: believe only a later expiry.
        if renewed
            .report
            .expires_at()
            .is_some_and(|new| new <= expires)
        {
            return outcome(
                Decision::CannotRenew,
                "the exchange answered, but `/debug_token` shows the new token expires no later than the old one; kept the old one".into(),
                before,
            );
        }
        Refreshed {
            decision: Decision::Renewed,
            message: match renewed.report.expires_at() {
                Some(at) => format!(
                    "renewed: the new token expires on {}",
                    permatoken_inspect::human_time(at)
                ),
                None => "renewed: the new token never expires".into(),
            },
            steps: None,
            before,
            renewed: Some(renewed),
        }
    }
}

/// Looks at one token and decides whether it is to be renewed, asking Meta for nothing new.
pub async fn assess(
    ctx: &Ctx<'_>,
    token: &AccessToken,
    source: &str,
    variable: Option<&str>,
    options: RenewPolicy,
) -> Assessment {
    let before = ctx.inspect(token, source, variable).await;
    let settled = |decision, message: String, steps: Option<&str>, before| {
        Assessment::Settled(Refreshed {
            decision,
            message,
            steps: steps.map(str::to_owned),
            before,
            renewed: None,
        })
    };
    if before.is_dead() {
        return settled(Decision::Dead, before.headline(), Some(METHOD_3), before);
    }
    if before.token.valid != Some(true) {
        return settled(
            Decision::Unknown,
            "could not tell whether the token works; nothing was changed".into(),
            None,
            before,
        );
    }
    let Some(expires) = before.expires_at() else {
        let message = match before.token.kind {
            Kind::SystemUserPermanent => {
                "a never-expiring system-user token: nothing to renew, and never touched"
            }
            _ => "the token does not expire: nothing to renew",
        };
        return settled(Decision::NothingNeeded, message.into(), None, before);
    };
    let left = expires.duration_since(ctx.now);
    if left > options.renew_window {
        let message = format!(
            "expires on {}, outside the renewal window; nothing to do yet",
            permatoken_inspect::human_time(expires)
        );
        return settled(Decision::NothingNeeded, message, None, before);
    }
    let renewable = match before.token.kind {
        Kind::SystemUser60d => true,
        Kind::LongLivedUser | Kind::Temporary | Kind::ShortLivedUser => options.try_user_token,
        _ => false,
    };
    if !renewable {
        let message = match before.token.kind {
            Kind::LongLivedUser => {
                "a long-lived user token cannot be renewed by a documented API call; `--try-user-token` tries the exchange anyway and keeps the result only if `/debug_token` shows it lives longer"
            }
            Kind::Temporary | Kind::ShortLivedUser => {
                "a temporary token cannot be renewed: `permatoken exchange` turns a fresh one into a 60-day token (Method 2), but only a system-user token stops the expiring"
            }
            _ => "this kind of token cannot be renewed by API",
        };
        return settled(
            Decision::CannotRenew,
            message.into(),
            Some(METHOD_3),
            before,
        );
    }
    Assessment::Renewable(RenewPlan {
        token: token.clone(),
        before,
        expires,
    })
}

/// The outcome of [`failover`].
pub struct FailoverChoice {
    /// Index into the backups given.
    pub index: usize,
    /// Its report.
    pub report: Report,
}

/// Picks the first backup that checks healthy, when the primary is dead by the API's own word. `None`
/// when the primary is not dead (an outage is never a reason) or no backup is healthy.
pub async fn failover(
    ctx: &Ctx<'_>,
    primary: &Report,
    backups: &[(String, AccessToken)],
) -> Option<FailoverChoice> {
    if !primary.is_dead() {
        return None;
    }
    for (index, (variable, token)) in backups.iter().enumerate() {
        let report = ctx.inspect(token, "backup", Some(variable)).await;
        if report.is_healthy() {
            return Some(FailoverChoice { index, report });
        }
    }
    None
}

/// A mint whose admin token passed its checks, before Meta is asked for anything.
pub struct MintPlan {
    app: AppToken,
    admin: AccessToken,
    admin_report: Report,
    system_user_id: String,
    sixty_days: bool,
}

impl MintPlan {
    /// `check` of the admin's token.
    pub fn before(&self) -> &Report {
        &self.admin_report
    }

    /// What minting would do and give.
    pub fn would_give(&self) -> String {
        let kind = if self.sixty_days {
            Kind::SystemUser60d
        } else {
            Kind::SystemUserPermanent
        };
        format!(
            "a new {} of system user {} (after installing app {} for it), with {}",
            kind.describe(),
            self.system_user_id,
            self.app.app_id(),
            MINT_SCOPES.join(", ")
        )
    }

    /// Installs the app for the system user, asks Meta for the token, and verifies it.
    pub async fn run(self, ctx: &Ctx<'_>) -> Result<Verified, Failure> {
        let Self {
            app,
            admin,
            system_user_id,
            sixty_days,
            ..
        } = self;
        ctx.client
            .install_app(&admin, &system_user_id, app.app_id(), ctx.budget)
            .await
            .map_err(|e| graph_failure(e, Endpoint::Other))?;
        let new = ctx
            .client
            .system_user_token(
                &admin,
                &system_user_id,
                app.app_id(),
                MINT_SCOPES,
                sixty_days,
                ctx.budget,
            )
            .await
            .map_err(|e| graph_failure(e, Endpoint::Other))?;
        let required: Vec<String> = permatoken_inspect::REQUIRED_SCOPES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let verified = verify(ctx, new.token, &required, "the minted token").await?;
        let kind = verified.report.token.kind;
        let expected = if sixty_days {
            Kind::SystemUser60d
        } else {
            Kind::SystemUserPermanent
        };
        if kind != expected {
            return Err(Failure::Unverified(format!(
                "`/debug_token` calls it a {}, not the {} asked for",
                kind.describe(),
                expected.describe()
            )));
        }
        Ok(verified)
    }
}

/// The checks of `permatoken mint`, asking Meta for nothing new: the app credentials, and whether the
/// admin's token works.
pub async fn plan_mint(
    ctx: &Ctx<'_>,
    admin: &AccessToken,
    system_user_id: &str,
    sixty_days: bool,
) -> Result<MintPlan, Failure> {
    if !admin.has_meta_shape() {
        return Err(Failure::Malformed("the business admin's token".into()));
    }
    let app = ctx.app_token()?;
    let admin_report = ctx.inspect(admin, "the business admin's token", None).await;
    if admin_report.is_dead() {
        return Err(Failure::AdminDead(admin_report.headline()));
    }
    Ok(MintPlan {
        app,
        admin: admin.clone(),
        admin_report,
        system_user_id: system_user_id.to_owned(),
        sixty_days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_go_under_the_state_folder_and_a_variable_that_is_not_utf8_is_named() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let var = |k: &str, v: &[u8]| (OsString::from(k), OsString::from_vec(v.to_vec()));
        assert_eq!(
            backup_dir_in(
                false,
                [var("HOME", b"/home/a"), var("XDG_STATE_HOME", b"/s")]
            )
            .unwrap(),
            Some("/s/permatoken/backups".into())
        );
        assert_eq!(
            backup_dir_in(false, [var("HOME", b"/home/a")]).unwrap(),
            Some("/home/a/.local/state/permatoken/backups".into())
        );
        assert!(matches!(
            backup_dir_in(false, [var("PATH", b"/bin")]),
            Err(Failure::NoBackupFolder)
        ));
        assert_eq!(backup_dir_in(true, []).unwrap(), None);
        let err = backup_dir_in(
            false,
            [var("HOME", b"/home/a"), var("XDG_STATE_HOME", b"/s\xff")],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`XDG_STATE_HOME` is not valid UTF-8, so there is no telling where to keep a backup of the file, and nothing was written"
        );
        assert!(err.hint().contains("--no-backup"), "{}", err.hint());
        assert_eq!(err.exit_code(), 3);
    }
    use permatoken_graph::Caller;

    fn key(token: &AccessToken) -> String {
        token.expose_secret().len().to_string() + &token.fingerprint()
    }

    /// A known token is judged with its previous identity and no call; a verdict that differs from
    /// the previous one asks `/me` (once); a renewed token (not known) is asked alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn known_tokens_ask_me_only_on_a_change_or_a_first_check() {
        let sandbox = permatoken_sandbox::Sandbox::start_background(&Default::default()).unwrap();
        let app_token = AppToken::new(sandbox.app().id.to_string(), sandbox.app_secret().clone());
        let app = crate::app_credentials(&app_token);
        let mut config = permatoken_graph::Config::new(sandbox.url());
        config.app_secret = app.app_secret.clone();
        let client = Client::new(config).unwrap();
        let budget = Budget::new(std::time::Duration::from_secs(60));
        let mut ctx = Ctx {
            client: &client,
            app: &app,
            thresholds: Thresholds::default(),
            budget: &budget,
            now: Timestamp::now(),
            known: None,
        };
        let alive = sandbox.token("system-user").unwrap();
        let dead = sandbox.token("expired").unwrap();
        let first = sandbox.token("user-60d").unwrap();
        let alone = ctx.inspect(&alive, "t", None).await;
        let dead_alone = ctx.inspect(&dead, "t", None).await;
        let mut known = Known::new(key);
        for token in [&alive, &dead, &first] {
            let info = client
                .debug_token(token, Caller::App(&app_token), &budget)
                .await
                .unwrap();
            // The dead token's previous check found it alive: a change of state.
            let last = LastCheck::of(&alone).filter(|_| token != &first);
            known.insert(
                key(token),
                KnownToken {
                    info,
                    me: None,
                    last,
                },
            );
        }
        ctx.known = Some(&known);
        let calls = || sandbox.requests().len();
        let before = calls();
        let report = ctx.inspect(&alive, "t", None).await;
        assert_eq!(calls(), before, "steady: no call");
        assert_eq!(report.status, alone.status);
        let report = ctx.inspect(&dead, "t", None).await;
        assert_eq!(calls(), before + 1, "a change: one /me");
        assert_eq!(report.status, dead_alone.status);
        assert!(report.is_dead() && report.identity.is_none());
        ctx.inspect(&first, "t", None).await;
        assert_eq!(calls(), before + 2, "a first check: one /me");
        let other = sandbox.token("user-expiring").unwrap();
        ctx.inspect(&other, "t", None).await;
        assert_eq!(calls(), before + 4, "not known: asked alone");
    }
}
