//! Writing files that hold secrets (DESIGN §5): under an advisory lock on the sibling `<file>.lock`,
//! through a temporary file in the same folder that is fsynced and renamed over the target, then the
//! folder fsynced, so that a reader (or a crash) sees the old file or the new one, never half of one.
//! An existing file keeps its mode exactly and its owner and group (a rewrite never loosens nor
//! tightens: a `.env` a service reads through its group is still readable by it after a failover;
//! a loose mode is `check`'s warning to give, not ours to fix); a new file is 0600. When the owner
//! or group cannot be kept, nothing is written and the error says so: ownership never changes
//! silently. A symlink is written through to its target, and the previous content kept as a 0600
//! backup in the folder the caller names (outside the project: permatoken's is `permatoken-renew`'s
//! `backup_dir`). A file larger than [`MAX_FILE`] is
//! neither read nor replaced: no `.env` or token file is that large, so it is the wrong file.
//!
//! Must never: wait for a lock without saying so or without end, name a temporary or backup file in a
//! way that a long path makes too long, touch another file's backups, or hold a file's content in
//! memory that is not zeroed when dropped (it holds secrets).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use permatoken_fs::ReadError;
use zeroize::Zeroizing;

/// How many backups of one file are kept.
pub const BACKUPS_KEPT: usize = 5;

/// The most bytes of a file read to be edited or backed up, or replaced: `.env` and token files hold
/// a few lines.
pub const MAX_FILE: u64 = 1 << 20;

/// Temporary files are `.permatoken-tmp.<hash>.<pid>-<nanos>`: hidden, beside the file, short whatever
/// the file's name (the hash of the name tells one file's temporaries from another's).
const TEMP_MARK: &str = ".permatoken-tmp.";

/// The longest file name Linux and the BSDs take (`NAME_MAX`), in bytes.
const NAME_MAX: usize = 255;

/// The longest backup suffix: `.20261126T043000.123Z-9999`.
const STAMP_MAX: usize = ".20261126T043000.123Z-9999".len();

/// What went wrong, with the path it went wrong on. Never holds file content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A file operation failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done: "lock", "read", "write", "back up", …
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Another process held the lock for longer than we were told to wait.
    #[error(
        "`{}` was still locked by another process after {waited:?} (lock file `{}`), so it was left as it is",
        target.display(),
        lock.display()
    )]
    LockHeld {
        /// The file that was to be written.
        target: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The rewritten file could not be given the owner and group of the file it replaces (not root,
    /// and the group is not one of ours). Nothing was written: ownership never changes silently.
    #[error(
        "cannot keep the owner and group of `{}` (uid {uid}, gid {gid}) on its new content: {source}; so it was left as it is",
        path.display()
    )]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
        /// Why `fchown` refused.
        #[source]
        source: io::Error,
    },
    /// The file is larger than [`MAX_FILE`]: not a `.env` or token file. Nothing was written.
    #[error(
        "`{}` is larger than {}, more than any .env or token file, so it was left as it is",
        path.display(),
        permatoken_fs::human_bytes(*cap)
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The most bytes allowed.
        cap: u64,
    },
}

fn fail<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The whole of `path`, in memory zeroed when dropped; [`WriteError::TooLarge`] after reading
/// [`MAX_FILE`] bytes of it at most.
fn read_capped(path: &Path) -> Result<Zeroizing<Vec<u8>>, WriteError> {
    permatoken_fs::read_secret(path, MAX_FILE).map_err(|e| match e {
        ReadError::TooLarge { cap } => WriteError::TooLarge {
            path: path.to_owned(),
            cap,
        },
        ReadError::Io(source) => fail("read", path)(source),
        other => fail("read", path)(io::Error::other(other.to_string())),
    })
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
    /// Set when the new content is in place but its folder could not be flushed to disk: why. The
    /// file is written; only a crash before the system flushes the folder by itself could bring the
    /// old one back.
    pub unsynced: Option<String>,
}

impl Locked {
    /// Takes the lock of `path` and removes temporary files a killed writer left behind. When another
    /// process holds the lock, `on_held` is told the lock file's path at once, and the lock is waited
    /// for up to `timeout`; then [`WriteError::LockHeld`].
    ///
    /// The lock is `flock`, held by the open file: in one process, take it once per file and pass the
    /// `Locked` around; opening it a second time waits on itself.
    pub fn open(
        path: &Path,
        timeout: Duration,
        on_held: impl FnOnce(&Path),
    ) -> Result<Self, WriteError> {
        let target = resolve(path)?;
        let lock_path = lock_path(&target);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(fail("create the lock file", &lock_path))?;
        let mut on_held = Some(on_held);
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(e)) => return Err(fail("lock", &lock_path)(e)),
            }
            if let Some(tell) = on_held.take() {
                tell(&lock_path);
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(WriteError::LockHeld {
                    target,
                    lock: lock_path,
                    waited: timeout,
                });
            }
            std::thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(200));
        }
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

    /// The file's content, `None` if it does not exist; [`WriteError::TooLarge`] when it is larger
    /// than [`MAX_FILE`].
    pub fn read(&self) -> Result<Option<String>, WriteError> {
        let mut bytes = match read_capped(&self.target) {
            Ok(bytes) => bytes,
            Err(WriteError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if std::str::from_utf8(&bytes).is_err() {
            return Err(fail("read", &self.target)(io::Error::new(
                io::ErrorKind::InvalidData,
                "the file is not UTF-8 text",
            )));
        }
        // Checked above, so the buffer itself becomes the text: no copy of the secrets is left
        // behind unzeroed (the caller keeps the one there is).
        let text = String::from_utf8(std::mem::take(&mut *bytes)).expect("checked to be UTF-8");
        Ok(Some(text))
    }

    /// [`WriteError::TooLarge`] if the file is larger than [`MAX_FILE`], as [`Locked::replace`] would
    /// say: for a caller to ask before it does what cannot be undone for the write (a token minted).
    pub fn check_size(&self) -> Result<(), WriteError> {
        match fs::metadata(&self.target) {
            Ok(meta) => self.refuse_too_large(&meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(fail("inspect", &self.target)(e)),
        }
    }

    /// [`WriteError::Owner`] if the file's owner and group could not be given to its rewrite, as
    /// [`Locked::replace`] would find: tried on an empty temporary file beside it, removed at once.
    /// For a caller to ask before a token is minted that could then not be written.
    pub fn check_owner(&self) -> Result<(), WriteError> {
        let meta = match fs::metadata(&self.target) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(fail("inspect", &self.target)(e)),
        };
        let temp = temporary_path(&self.target);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(fail("create a temporary file beside", &self.target))?;
        let kept = keep_owner(&file, &temp, &self.target, (meta.uid(), meta.gid()));
        drop(file);
        let _ = fs::remove_file(&temp);
        kept
    }

    /// A file this large is the wrong one, not a `.env` or token file: it is left as it is.
    fn refuse_too_large(&self, meta: &fs::Metadata) -> Result<(), WriteError> {
        if meta.len() > MAX_FILE {
            return Err(WriteError::TooLarge {
                path: self.target.clone(),
                cap: MAX_FILE,
            });
        }
        Ok(())
    }

    /// Replaces the file's content with `content`; the previous content, if any, is first saved under
    /// `backup_dir`. A file larger than [`MAX_FILE`] is refused before anything is written.
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
        if let Some(meta) = &existing {
            self.refuse_too_large(meta)?;
        }
        let backup = match (&existing, backup_dir) {
            (Some(_), Some(dir)) => Some(self.back_up(dir)?),
            _ => None,
        };
        // The owner chose the mode: tightening a 0640 file would lock out the service that reads it
        // through its group at the moment its token changed; loosening is never ours to do.
        let mode = existing.as_ref().map_or(0o600, |meta| meta.mode() & 0o777);
        let owner = existing.as_ref().map(|m| (m.uid(), m.gid()));
        let unsynced = write_atomically(&self.target, content, mode, owner, sync_folder)?;
        Ok(Written {
            path: self.target.clone(),
            backup,
            unsynced: unsynced.map(|e| e.to_string()),
        })
    }

    fn back_up(&self, dir: &Path) -> Result<PathBuf, WriteError> {
        // Read first: a file that cannot be read (or grew past the cap) leaves no folder behind.
        let content = read_capped(&self.target)?;
        fs::create_dir_all(dir).map_err(fail("create the backup folder", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(fail("protect the backup folder", dir))?;
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
        // A backup whose folder could not be flushed is still a backup: the target's write goes on.
        let _unsynced = write_atomically(&path, &content, 0o600, None, sync_folder)?;
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
    Err(WriteError::Io {
        action: "follow the symlinks of",
        path: path.to_owned(),
        source: io::Error::other("too many levels of symbolic links"),
    })
}

/// FNV-1a: a short, stable name for a long one (the same in every permatoken version).
fn short_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn name_bytes(target: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    target.file_name().unwrap_or_default().as_bytes()
}

/// `<file>.lock`; for a name too long to take the suffix, `.permatoken-lock.<hash>` (still beside it,
/// still the same for every process).
fn lock_path(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default();
    if name.len() + ".lock".len() <= NAME_MAX {
        let mut lock = name.to_owned();
        lock.push(".lock");
        target.with_file_name(lock)
    } else {
        target.with_file_name(format!(
            ".permatoken-lock.{:016x}",
            short_hash(name_bytes(target))
        ))
    }
}

/// `.permatoken-tmp.<hash of the name>.`: what every temporary of `target` starts with.
fn temporary_prefix(target: &Path) -> String {
    format!("{TEMP_MARK}{:016x}.", short_hash(name_bytes(target)))
}

fn is_temporary_of(candidate: &str, prefix: &str) -> bool {
    candidate
        .strip_prefix(prefix)
        .and_then(|stamp| stamp.split_once('-'))
        .is_some_and(|(pid, nanos)| all_digits(pid) && all_digits(nanos))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn folder_of(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn clean_stale_temporaries(target: &Path) {
    let prefix = temporary_prefix(target);
    let Ok(entries) = fs::read_dir(folder_of(target)) else {
        return;
    };
    for entry in entries.flatten() {
        if is_temporary_of(&entry.file_name().to_string_lossy(), &prefix) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn sync_folder(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The temporary file, fsync, rename, fsync of the folder (`sync`). `owner`: uid and gid to keep;
/// when they cannot be given to the new file (not root, and the group is not one of ours), the
/// temporary is removed and the error says so before anything is replaced.
///
/// Once the rename is done the new content is in place: a folder that cannot be flushed after it is
/// not a failed write, and comes back as `Ok(Some(why))`.
fn write_atomically(
    target: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    sync: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<Option<io::Error>, WriteError> {
    let temp = temporary_path(target);
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
        if let Some(owner) = owner {
            keep_owner(&file, &temp, target, owner)?;
        }
        file.write_all(content).map_err(fail("write", &temp))?;
        file.sync_all().map_err(fail("flush to disk", &temp))?;
        fs::rename(&temp, target).map_err(fail("replace", target))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(sync(folder_of(target)).err())
}

/// A new temporary file's name beside `target`: its prefix, our pid and the time's nanoseconds.
fn temporary_path(target: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    target.with_file_name(format!(
        "{}{}-{nanos}",
        temporary_prefix(target),
        std::process::id()
    ))
}

/// Gives `file` (the temporary `temp` that will replace `target`) the owner and group
/// `(uid, gid)`; [`WriteError::Owner`] when this process may not.
fn keep_owner(
    file: &File,
    temp: &Path,
    target: &Path,
    (uid, gid): (u32, u32),
) -> Result<(), WriteError> {
    let meta = file.metadata().map_err(fail("inspect", temp))?;
    if (meta.uid(), meta.gid()) == (uid, gid) {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(uid), Some(gid)).map_err(|source| WriteError::Owner {
        path: target.to_owned(),
        uid,
        gid,
        source,
    })
}

/// `/srv/app/.env` → `srv%app%.env`: one flat folder for the backups of every file. A path too long
/// for a file name keeps its end, after a hash of the whole.
fn backup_stem(target: &Path) -> String {
    let absolute = std::path::absolute(target).unwrap_or_else(|_| target.to_owned());
    let stem = absolute
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', "%");
    if stem.len() + STAMP_MAX <= NAME_MAX {
        return stem;
    }
    let hash = format!("{:016x}", short_hash(stem.as_bytes()));
    let room = NAME_MAX - STAMP_MAX - hash.len() - 1;
    let mut start = stem.len() - room;
    while !stem.is_char_boundary(start) {
        start += 1;
    }
    format!("{hash}%{}", &stem[start..])
}

/// `20261126T043000.123Z`, maybe followed by `-<n>`: the end of a backup's name and nothing else, so
/// the backups of `.env.1` (`….env.1.<stamp>`) are never taken for those of `.env`.
fn is_stamp(rest: &str) -> bool {
    let (stamp, n) = match rest.split_once('-') {
        Some((stamp, n)) => (stamp, Some(n)),
        None => (rest, None),
    };
    let b = stamp.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    b.len() == 20
        && digits(0..8)
        && b[8] == b'T'
        && digits(9..15)
        && b[15] == b'.'
        && digits(16..19)
        && b[19] == b'Z'
        && n.is_none_or(all_digits)
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
                .is_some_and(is_stamp)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_that_cannot_be_flushed_after_the_rename_is_a_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        fs::write(&path, "A=old\n").unwrap();
        let unsynced = write_atomically(&path, b"A=new\n", 0o600, None, |_| {
            Err(io::Error::other("injected: the disk refused"))
        })
        .expect("the rename happened, so the write did");
        assert_eq!(
            unsynced.map(|e| e.to_string()).as_deref(),
            Some("injected: the disk refused")
        );
        assert_eq!(fs::read(&path).unwrap(), b"A=new\n");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary left behind");
    }

    #[test]
    fn stamps_are_recognised_exactly() {
        assert!(is_stamp("20261126T043000.123Z"));
        assert!(is_stamp("20261126T043000.123Z-12"));
        assert!(!is_stamp("1.20261126T043000.123Z"));
        assert!(!is_stamp("20261126T043000.123Z-"));
        assert!(!is_stamp("20261126T043000.123"));
        assert!(!is_stamp("bak"));
    }

    #[test]
    fn long_names_get_short_siblings() {
        let long = Path::new("/srv").join("e".repeat(NAME_MAX));
        for name in [
            lock_path(&long),
            PathBuf::from(temporary_prefix(&long) + "4294967295-999999999"),
            PathBuf::from(backup_stem(&long) + ".20261126T043000.123Z-9999"),
        ] {
            let len = name.file_name().unwrap().len();
            assert!(len <= NAME_MAX, "{len} bytes: {}", name.display());
        }
        assert_eq!(
            lock_path(Path::new("/srv/.env")),
            Path::new("/srv/.env.lock")
        );
        assert_eq!(backup_stem(Path::new("/srv/app/.env")), "srv%app%.env");
    }
}
