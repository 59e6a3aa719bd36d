//! Writing files that hold secrets (DESIGN §5): under an advisory lock on the sibling `<file>.lock`,
//! through a temporary file in the same folder that is fsynced and renamed over the target, then the
//! folder fsynced, so that a reader (or a crash) sees the old file or the new one, never half of one.
//! Mode 0600 (a stricter existing mode is kept), owner and group kept, a symlink written through to its
//! target, and the previous content kept as a 0600 backup outside the project folder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How many backups of one file are kept.
pub const BACKUPS_KEPT: usize = 5;

/// Temporary files are `.permatoken-tmp.<pid>-<nanos>.<name>`: hidden, beside the file, and told apart
/// from another file's (`a` against `b.a`) by the digits between the mark and the name.
const TEMP_MARK: &str = ".permatoken-tmp.";

/// What went wrong, with the path it went wrong on. Never holds file content.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} `{}`: {source}", path.display())]
pub struct WriteError {
    /// What was being done: "lock", "read", "write", "back up", …
    pub action: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

fn fail<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Where backups go: `$XDG_STATE_HOME/permatoken/backups`, else `~/.local/state/permatoken/backups`.
pub fn default_backup_dir() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".local/state"))
        })?;
    Some(state.join("permatoken").join("backups"))
}

/// A file held under its advisory lock. Every permatoken process takes the same lock before it reads
/// a file it may write, so read, edit and write happen as one step. Released on drop.
pub struct Locked {
    target: PathBuf,
    _lock: File,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The file written (a symlink's target).
    pub path: PathBuf,
    /// The backup of the previous content, if there was one.
    pub backup: Option<PathBuf>,
}

impl Locked {
    /// Takes the lock of `path` (waiting for another writer to finish) and removes temporary files a
    /// killed writer left behind.
    pub fn open(path: &Path) -> Result<Self, WriteError> {
        let target = resolve(path)?;
        let lock_path = sibling(&target, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(fail("create the lock file", &lock_path))?;
        lock.lock().map_err(fail("lock", &lock_path))?;
        // Holding the lock, no other writer is alive in this file's name: what is left is stale.
        clean_stale_temporaries(&target);
        Ok(Self {
            target,
            _lock: lock,
        })
    }

    /// The file that is written: the path given, or its symlink's target.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The file's content, `None` if it does not exist.
    pub fn read(&self) -> Result<Option<String>, WriteError> {
        match fs::read(&self.target) {
            Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| WriteError {
                action: "read",
                path: self.target.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fail("read", &self.target)(e)),
        }
    }

    /// Replaces the file's content with `content`; the previous content, if any, is first saved under
    /// `backup_dir`.
    pub fn replace(
        &self,
        content: &[u8],
        backup_dir: Option<&Path>,
    ) -> Result<Written, WriteError> {
        let existing = match fs::metadata(&self.target) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(fail("inspect", &self.target)(e)),
        };
        let backup = match (&existing, backup_dir) {
            (Some(_), Some(dir)) => Some(self.back_up(dir)?),
            _ => None,
        };
        let mode = match &existing {
            // Stricter than 0600 (0400, 0000) is the owner's choice and stays; anything looser is fixed.
            Some(meta) if meta.mode() & 0o777 & !0o600 == 0 => meta.mode() & 0o777,
            _ => 0o600,
        };
        let owner = existing.as_ref().map(|m| (m.uid(), m.gid()));
        write_atomically(&self.target, content, mode, owner)?;
        Ok(Written {
            path: self.target.clone(),
            backup,
        })
    }

    fn back_up(&self, dir: &Path) -> Result<PathBuf, WriteError> {
        fs::create_dir_all(dir).map_err(fail("create the backup folder", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(fail("protect the backup folder", dir))?;
        let content = fs::read(&self.target).map_err(fail("read", &self.target))?;
        let stem = backup_stem(&self.target);
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%S%.3fZ")
            .to_string();
        let mut path = dir.join(format!("{stem}.{stamp}"));
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("{stem}.{stamp}-{n}"));
            n += 1;
        }
        write_atomically(&path, &content, 0o600, None)?;
        prune(dir, &stem);
        Ok(path)
    }
}

/// Follows symlinks to the file they name, so the link stays a link.
fn resolve(path: &Path) -> Result<PathBuf, WriteError> {
    let mut target = path.to_owned();
    for _ in 0..40 {
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = fs::read_link(&target).map_err(fail("follow the symlink", &target))?;
                target = match target.parent() {
                    Some(parent) => parent.join(link),
                    None => link,
                };
            }
            _ => return Ok(target),
        }
    }
    Err(WriteError {
        action: "follow the symlinks of",
        path: path.to_owned(),
        source: io::Error::other("too many levels of symbolic links"),
    })
}

fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    target.with_file_name(name)
}

fn file_name(target: &Path) -> String {
    target
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn is_temporary_of(candidate: &str, name: &str) -> bool {
    candidate
        .strip_prefix(TEMP_MARK)
        .and_then(|rest| rest.strip_suffix(name))
        .and_then(|rest| rest.strip_suffix('.'))
        .and_then(|stamp| stamp.split_once('-'))
        .is_some_and(|(pid, nanos)| {
            [pid, nanos]
                .iter()
                .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        })
}

fn clean_stale_temporaries(target: &Path) {
    let name = file_name(target);
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if is_temporary_of(&entry.file_name().to_string_lossy(), &name) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The temporary file, fsync, rename, fsync of the folder. `owner`: uid and gid to keep.
fn write_atomically(
    target: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), WriteError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = target.with_file_name(format!(
        "{TEMP_MARK}{}-{nanos}.{}",
        std::process::id(),
        file_name(target)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(fail("create a temporary file beside", target))?;
        // The umask may have taken bits away; the mode is set exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(fail("set the mode of", &temp))?;
        if let Some((uid, gid)) = owner {
            let meta = file.metadata().map_err(fail("inspect", &temp))?;
            if (meta.uid(), meta.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                    .map_err(fail("keep the owner and group of", target))?;
            }
        }
        file.write_all(content).map_err(fail("write", &temp))?;
        file.sync_all().map_err(fail("flush to disk", &temp))?;
        fs::rename(&temp, target).map_err(fail("replace", target))?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail("flush the folder of", target))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// `/srv/app/.env` → `srv%app%.env`: one flat folder for the backups of every file.
fn backup_stem(target: &Path) -> String {
    let absolute = std::path::absolute(target).unwrap_or_else(|_| target.to_owned());
    absolute
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', "%")
}

fn prune(dir: &Path, stem: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{stem}.");
    let mut backups: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect();
    // The names end in their UTC time, so name order is time order.
    backups.sort();
    let excess = backups.len().saturating_sub(BACKUPS_KEPT);
    for old in &backups[..excess] {
        let _ = fs::remove_file(old);
    }
}
