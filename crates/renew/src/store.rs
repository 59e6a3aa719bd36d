//! Where a new token goes, and putting it there: one key of a `.env` file edited in place (every other
//! byte kept), or a file of its own; always through the locked, atomic, backed-up write of
//! `permatoken-dotenv`.
//!
//! [`Claims`] holds the lock of each file a command writes, taken once, before Meta is asked for the
//! token that goes there, and checks under it that what was read before is still what the file holds.
//!
//! Must never: write a value that differs from the one that was verified, or write without the lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Under the lock, the file no longer holds the value that was read (and checked) before it.
    #[error(
        "`{variable}` in {path} changed while permatoken was checking it, so it was left as it is: only a token that was verified is written"
    )]
    Changed {
        /// The file.
        path: PathBuf,
        /// The variable (or the file's name, for a token file).
        variable: String,
    },
}

/// What writing would change, with secrets masked, for `--dry-run`: `current` is the token the
/// destination holds now (if it is the one that was read there), `new` says what would replace it.
pub fn describe_change(
    destination: &Destination,
    current: Option<&AccessToken>,
    new: &str,
    backup_dir: Option<&Path>,
) -> String {
    let backup = match backup_dir {
        Some(dir) => format!("the old file backed up in {}", dir.display()),
        None => "no backup kept (--no-backup)".into(),
    };
    let was = current.map_or_else(String::new, |t| format!("{} → ", t.fingerprint()));
    match destination {
        Destination::EnvFile { path, variable } => format!(
            "would set `{variable}` in {}: {was}{new} (other lines unchanged; {backup})",
            path.display(),
        ),
        Destination::TokenFile { path } => format!(
            "would write {}: {was}{new} (its mode and owner kept, 0600 if new; {backup})",
            path.display()
        ),
    }
}

/// The files a command writes, each locked once (`flock` is per open file: a second open in the same
/// process would wait on the first), from before Meta is asked for a token until the command ends.
pub struct Claims<'a> {
    timeout: Duration,
    backup_dir: Option<PathBuf>,
    on_held: Box<dyn Fn(&Path) + Send + Sync + 'a>,
    held: Vec<(PathBuf, Locked)>,
}

impl<'a> Claims<'a> {
    /// Locks are waited for up to `timeout`, and `on_held` is told of a held one at once; the
    /// previous content of every file written goes to `backup_dir` (`None`: no backup, by choice).
    pub fn new(
        timeout: Duration,
        backup_dir: Option<PathBuf>,
        on_held: impl Fn(&Path) + Send + Sync + 'a,
    ) -> Self {
        Self {
            timeout,
            backup_dir,
            on_held: Box::new(on_held),
            held: Vec::new(),
        }
    }

    /// The index of the lock of `path`, taken now unless this command holds it already.
    fn lock(&mut self, path: &Path) -> Result<usize, StoreError> {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        let wanted = absolute(path);
        if let Some(i) = self
            .held
            .iter()
            .position(|(given, locked)| *given == wanted || absolute(locked.target()) == wanted)
        {
            return Ok(i);
        }
        let locked = Locked::open(path, self.timeout, |lock| (self.on_held)(lock))?;
        self.held.push((wanted, locked));
        Ok(self.held.len() - 1)
    }

    /// Takes the lock of `destination`'s file. With `read`, the token read from there before the lock:
    /// [`StoreError::Changed`] if the file holds another value now (another process renewed it). A
    /// file too large to be replaced, or whose owner and group this process could not give its
    /// rewrite, is refused now, before Meta is asked for its token.
    pub fn claim(
        &mut self,
        destination: &Destination,
        read: Option<&AccessToken>,
    ) -> Result<(), StoreError> {
        let i = self.lock(destination.path())?;
        let locked = &self.held[i].1;
        locked.check_size()?;
        locked.check_owner()?;
        let Some(read) = read else {
            return Ok(());
        };
        let path = destination.path();
        let text = Zeroizing::new(locked.read()?.unwrap_or_default());
        let (now, variable) = match destination {
            Destination::TokenFile { .. } => (
                Some(Zeroizing::new(
                    AccessToken::new(text.as_str()).expose_secret().to_owned(),
                )),
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            ),
            Destination::EnvFile { variable, .. } => {
                let doc = permatoken_dotenv::parse(&text).map_err(|source| StoreError::Parse {
                    path: path.to_owned(),
                    source,
                })?;
                let value = doc
                    .get(variable)
                    .map(|e| Zeroizing::new(e.value.to_owned()));
                (value, variable.clone())
            }
        };
        if now.as_deref().map(String::as_str) != Some(read.expose_secret()) {
            return Err(StoreError::Changed {
                path: path.to_owned(),
                variable,
            });
        }
        Ok(())
    }

    /// Writes `token` to `destination`, under its lock (taken now if [`Claims::claim`] did not).
    pub fn write_token(
        &mut self,
        destination: &Destination,
        token: &AccessToken,
    ) -> Result<Written, StoreError> {
        let i = self.lock(destination.path())?;
        let (locked, backup_dir) = (&self.held[i].1, self.backup_dir.as_deref());
        match destination {
            Destination::TokenFile { .. } => {
                let content = Zeroizing::new(format!("{}\n", token.expose_secret()));
                Ok(locked.replace(content.as_bytes(), backup_dir)?)
            }
            Destination::EnvFile { path, variable } => edit_env(locked, path, backup_dir, |doc| {
                doc.set(variable, token.expose_secret())
                    .map_err(|source| StoreError::Edit {
                        path: path.clone(),
                        source,
                    })
            }),
        }
    }

    /// Failover's edit, in one write: `verified`, the value of the backup `backups[index]` that was
    /// checked, becomes `primary`; that variable goes, and the later backups move up one name each, so
    /// no token stands twice. `backups` are the backup variables in order (`…_BACKUP`, `…_BACKUP_2`,
    /// …). If under the lock the backup holds another value than `verified`, nothing is written.
    pub fn promote_backup(
        &mut self,
        path: &Path,
        primary: &str,
        backups: &[String],
        index: usize,
        verified: &AccessToken,
    ) -> Result<Written, StoreError> {
        let i = self.lock(path)?;
        let (locked, backup_dir) = (&self.held[i].1, self.backup_dir.as_deref());
        edit_env(locked, path, backup_dir, |doc| {
            let value = doc
                .get(&backups[index])
                .map(|e| Zeroizing::new(e.value.to_owned()));
            if value.as_deref().map(String::as_str) != Some(verified.expose_secret()) {
                return Err(StoreError::Changed {
                    path: path.to_owned(),
                    variable: backups[index].clone(),
                });
            }
            let edit = |source| StoreError::Edit {
                path: path.to_owned(),
                source,
            };
            doc.set(primary, verified.expose_secret()).map_err(edit)?;
            doc.remove(&backups[index]);
            for pair in backups[index..].windows(2) {
                if doc.get(&pair[1]).is_some() {
                    doc.rename(&pair[1], &pair[0]).map_err(edit)?;
                }
            }
            Ok(())
        })
    }
}

/// Reads, edits and writes back the `.env` file under `locked`; an edit that fails writes nothing.
fn edit_env(
    locked: &Locked,
    path: &Path,
    backup_dir: Option<&Path>,
    edit: impl FnOnce(&mut permatoken_dotenv::Document) -> Result<(), StoreError>,
) -> Result<Written, StoreError> {
    let text = Zeroizing::new(locked.read()?.unwrap_or_default());
    let mut doc = permatoken_dotenv::parse(&text).map_err(|source| StoreError::Parse {
        path: path.to_owned(),
        source,
    })?;
    edit(&mut doc)?;
    // The file's text holds tokens: zeroed once written.
    let rendered = Zeroizing::new(doc.render());
    Ok(locked.replace(rendered.as_bytes(), backup_dir)?)
}
