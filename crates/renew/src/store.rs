//! Where a new token goes, and putting it there: one key of a `.env` file edited in place (every other
//! byte kept), or a file of its own; always through the locked, atomic, backed-up write of
//! `permatoken-dotenv`.

use std::path::{Path, PathBuf};

use permatoken_dotenv::{Locked, WriteError, Written};
use permatoken_secret::AccessToken;
use serde::Serialize;
use zeroize::Zeroizing;

/// Where a token is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destination {
    /// `variable` of the `.env` file `path`.
    EnvFile {
        /// The file.
        path: PathBuf,
        /// The variable.
        variable: String,
    },
    /// A file holding only the token (`--output`, `--token-file`).
    TokenFile {
        /// The file.
        path: PathBuf,
    },
}

impl Destination {
    /// The file written.
    pub fn path(&self) -> &Path {
        match self {
            Self::EnvFile { path, .. } | Self::TokenFile { path } => path,
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EnvFile { path, variable } => write!(f, "`{variable}` in {}", path.display()),
            Self::TokenFile { path } => write!(f, "{}", path.display()),
        }
    }
}

/// Why a file was not changed. The file is then byte for byte as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Locking, reading or writing failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The `.env` file does not parse, so editing it could lose something.
    #[error("`{path}` is not a valid .env file ({source}), so it was left as it is")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: permatoken_dotenv::ParseError,
    },
    /// An edit was refused.
    #[error("cannot edit `{path}`: {source}")]
    Edit {
        /// The file.
        path: PathBuf,
        /// Why.
        source: permatoken_dotenv::EditError,
    },
}

/// What writing would change, with the token masked: for `--dry-run`.
pub fn describe_change(destination: &Destination, token: &AccessToken) -> String {
    match destination {
        Destination::EnvFile { path, variable } => format!(
            "would set `{variable}` in {} to {} (other lines unchanged; the old content backed up)",
            path.display(),
            token.fingerprint()
        ),
        Destination::TokenFile { path } => format!(
            "would write {} to {} (mode 0600)",
            token.fingerprint(),
            path.display()
        ),
    }
}

/// Writes `token` to `destination`; the previous content goes to `backup_dir`.
pub fn write_token(
    destination: &Destination,
    token: &AccessToken,
    backup_dir: Option<&Path>,
) -> Result<Written, StoreError> {
    let locked = Locked::open(
        destination.path(),
        std::time::Duration::from_secs(30),
        |_| {},
    )?;
    match destination {
        Destination::TokenFile { .. } => {
            let content = Zeroizing::new(format!("{}\n", token.expose_secret()));
            Ok(locked.replace(content.as_bytes(), backup_dir)?)
        }
        Destination::EnvFile { path, variable } => edit_env(&locked, path, backup_dir, |doc| {
            doc.set(variable, token.expose_secret())
        }),
    }
}

/// Failover's edit, in one write: the backup `backups[index]`'s value becomes `primary`, its variable
/// goes, and the later backups move up one name each, so no token stands twice. `backups` are the
/// backup variables in order (`…_BACKUP`, `…_BACKUP_2`, …).
pub fn promote_backup(
    path: &Path,
    primary: &str,
    backups: &[String],
    index: usize,
    backup_dir: Option<&Path>,
) -> Result<Written, StoreError> {
    let locked = Locked::open(path, std::time::Duration::from_secs(30), |_| {})?;
    edit_env(&locked, path, backup_dir, |doc| {
        let value = doc
            .get(&backups[index])
            .map(|e| e.value.to_owned())
            .ok_or_else(|| permatoken_dotenv::EditError::Missing(backups[index].clone()))?;
        doc.set(primary, &value)?;
        doc.remove(&backups[index]);
        for pair in backups[index..].windows(2) {
            if doc.get(&pair[1]).is_some() {
                doc.rename(&pair[1], &pair[0])?;
            }
        }
        Ok(())
    })
}

fn edit_env(
    locked: &Locked,
    path: &Path,
    backup_dir: Option<&Path>,
    edit: impl FnOnce(&mut permatoken_dotenv::Document) -> Result<(), permatoken_dotenv::EditError>,
) -> Result<Written, StoreError> {
    let text = locked.read()?.unwrap_or_default();
    let mut doc = permatoken_dotenv::parse(&text).map_err(|source| StoreError::Parse {
        path: path.to_owned(),
        source,
    })?;
    edit(&mut doc).map_err(|source| StoreError::Edit {
        path: path.to_owned(),
        source,
    })?;
    // The file's text holds tokens: zeroed once written.
    let rendered = Zeroizing::new(doc.render());
    let _text = Zeroizing::new(text);
    Ok(locked.replace(rendered.as_bytes(), backup_dir)?)
}
