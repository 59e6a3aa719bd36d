//! Where each check's inputs come from, read afresh for every check: the token, its backups and
//! its app's id and secret ([`permatoken_renew::load`], which reads a `.env` holding both once),
//! and the doctor checklist's variables; and where the state file is kept by default.
//!
//! Reading is blocking (a fleet's files may sit on a network file system): the daemon calls
//! [`read`] on tokio's blocking pool, never on the thread that runs the election's heartbeat. Every
//! file is read with a cap ([`permatoken_fs`]).
//!
//! Must never: put a file's content in an error (it may be a secret), or stop a round because one
//! token's files cannot be read: that token's check is unknown, with the reason.

use std::ffi::OsString;
use std::path::PathBuf;

use permatoken_config::Sourced;
use permatoken_inspect::AppCredentials;
use permatoken_renew::TokenSpec;

use crate::config::{Backups, TokenConfig, TokenSource};

/// Why a check's inputs could not be read. No variant holds a file's content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The token's file (or variable) could not be read.
    #[error(transparent)]
    Token(#[from] permatoken_renew::LoadError),
    /// The doctor's variables could not be read from the token's env file.
    #[error(transparent)]
    Credentials(#[from] permatoken_config::Error),
    /// The blocking task reading the files stopped before it finished.
    #[error("the token files could not be read ({0})")]
    Stopped(String),
}

/// What a check reads from files: the token and its backups, and its app's credentials.
pub struct Read {
    /// The token and its backups.
    pub spec: TokenSpec,
    /// Where they were read, for reading the token again (the doctor, after a write).
    pub source: TokenSource,
    /// The app's credentials; none known when they could not be read (the check then says what
    /// they would have told).
    pub app: AppCredentials,
}

/// Reads `token`'s files (blocking: run it on the blocking pool), each once
/// ([`permatoken_renew::load`]). App credentials that cannot be read are logged and left out.
pub fn read(token: &TokenConfig) -> Result<Read, SourceError> {
    let backups = match &token.backups {
        Backups::Series => None,
        Backups::Keys(keys) => Some(keys.as_slice()),
    };
    let (spec, app) = permatoken_renew::load(&token.source, backups, &token.app)?;
    let app = app.unwrap_or_else(|e| {
        tracing::warn!(token = %token.name, "cannot read the app credentials: {e}");
        AppCredentials::default()
    });
    Ok(Read {
        spec,
        source: token.source.clone(),
        app,
    })
}

/// The doctor's variables (`WHATSAPP_BUSINESS_ACCOUNT_ID`, `WHATSAPP_PHONE_NUMBER_ID`,
/// `WHATSAPP_WEBHOOK_URL`, `WHATSAPP_WEBHOOK_VERIFY_TOKEN`): from the token's env file first, then the
/// process environment; only the process environment for a token file or a variable.
pub fn doctor_vars(source: &TokenSource) -> Result<permatoken_config::Credentials, SourceError> {
    let TokenSource::EnvFile { path, .. } = source else {
        return Ok(doctor_vars_of_environment());
    };
    let request = permatoken_config::Request {
        env_file: Some(path.clone()),
        ..Default::default()
    };
    Ok(permatoken_config::resolve(&request, std::env::vars_os())?)
}

fn doctor_vars_of_environment() -> permatoken_config::Credentials {
    let get = |name: &str| {
        std::env::vars_os()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.into_string().ok())
            .filter(|v| !v.trim().is_empty())
            .map(|value| Sourced {
                value,
                source: permatoken_config::Source::Environment,
                var: Some(name.to_owned()),
            })
    };
    permatoken_config::Credentials {
        waba_id: get(permatoken_config::WABA_VAR),
        phone_number_id: get(permatoken_config::PHONE_VAR),
        webhook_url: get(permatoken_config::WEBHOOK_URL_VAR),
        verify_token: get(permatoken_config::VERIFY_TOKEN_VAR).map(|s| Sourced {
            value: permatoken_secret::VerifyToken::new(s.value.as_str()),
            source: s.source,
            var: s.var,
        }),
        ..Default::default()
    }
}

/// The state file unless told otherwise: `$XDG_STATE_HOME/permatoken/state.db`, else
/// `$HOME/.local/state/permatoken/state.db`; `Ok(None)` when neither is set (or relative).
/// `environment` is the process environment (`std::env::vars_os()`).
pub fn default_state_path(
    environment: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Option<PathBuf>, permatoken_fs::NotUtf8> {
    Ok(
        permatoken_fs::permatoken_dir(permatoken_fs::Xdg::State, environment)?
            .map(|dir| dir.join("state.db")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn the_state_file_follows_xdg_then_home_and_needs_one() {
        assert_eq!(
            default_state_path(env(&[("HOME", "/home/a"), ("XDG_STATE_HOME", "/x")])),
            Ok(Some(PathBuf::from("/x/permatoken/state.db")))
        );
        assert_eq!(
            default_state_path(env(&[("HOME", "/home/a"), ("XDG_STATE_HOME", "rel")])),
            Ok(Some(PathBuf::from(
                "/home/a/.local/state/permatoken/state.db"
            )))
        );
        assert_eq!(default_state_path(env(&[("PATH", "/bin")])), Ok(None));
    }
}
