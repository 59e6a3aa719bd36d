//! How permatoken reads the small files a user points it at, and where it keeps its own.
//!
//! Every such file (an env file, a token file, an app secret, a password file, a route's URL file,
//! the configuration) is read with [`read_capped`] or [`read_secret`]: never more than its cap plus
//! one byte is held, so a 1 GB file, `/dev/zero` or a log pointed at by mistake costs the cap, not the
//! machine's memory, and is refused as [`ReadError::TooLarge`]. A secret is read into a buffer sized
//! once from the file's length and zeroed when dropped, so no copy of it is left behind by a growing
//! `Vec`.
//!
//! [`permatoken_dir`] is the one reading of the XDG base-directory variables: where the
//! configuration is looked for, and where the state and the backups of rewritten files are kept.
//!
//! Must never: put a file's content in an error (it may be a secret), or read the process
//! environment itself (callers pass it, so tests do not depend on the machine's).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a small file could not be read. Neither variant holds any of the file's content; the caller
/// names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The system refused (missing, a folder, no permission…).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The file holds more than the cap: it is not the file it should be.
    #[error("it is larger than {}", human_bytes(*cap))]
    TooLarge {
        /// The most bytes allowed.
        cap: u64,
    },
}

/// The whole of `path` if it holds at most `cap` bytes; a larger file is [`ReadError::TooLarge`]
/// after reading `cap + 1` bytes of it at most.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    read_into(path, cap, &mut bytes)?;
    Ok(bytes)
}

/// [`read_capped`] for a file holding a secret: the buffer is allocated once (from the file's
/// length, at most `cap + 1`) and zeroed on drop, so the secret is in memory once.
pub fn read_secret(path: &Path, cap: u64) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let mut bytes = Zeroizing::new(Vec::new());
    read_into(path, cap, &mut bytes)?;
    Ok(bytes)
}

fn read_into(path: &Path, cap: u64, bytes: &mut Vec<u8>) -> Result<(), ReadError> {
    let file = std::fs::File::open(path)?;
    // A regular file says its length: one allocation, no growth (a grown buffer leaves its old
    // copy behind in freed memory). A pipe or a device says 0 and grows as read, still capped.
    let hint = file.metadata().map(|m| m.len()).unwrap_or(0);
    let room = usize::try_from(hint.min(cap).saturating_add(1)).unwrap_or(usize::MAX);
    bytes.reserve_exact(room);
    file.take(cap.saturating_add(1)).read_to_end(bytes)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge { cap });
    }
    Ok(())
}

/// `1 MiB`, `8 KiB`, `512 bytes`: a cap as a person reads it.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// An XDG base folder permatoken uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xdg {
    /// `$XDG_CONFIG_HOME`, else `$HOME/.config`: where `permatoken.toml` is looked for.
    Config,
    /// `$XDG_STATE_HOME`, else `$HOME/.local/state`: the state file and the backups of rewritten
    /// files.
    State,
}

impl Xdg {
    /// The variable that names the folder.
    pub fn var(self) -> &'static str {
        match self {
            Self::Config => "XDG_CONFIG_HOME",
            Self::State => "XDG_STATE_HOME",
        }
    }

    /// The folder's place under `$HOME` when the variable is not set.
    fn under_home(self) -> &'static str {
        match self {
            Self::Config => ".config",
            Self::State => ".local/state",
        }
    }
}

/// A variable read to find a folder is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{var}` is not valid UTF-8; set it to a folder path, or unset it")]
pub struct NotUtf8 {
    /// The variable.
    pub var: &'static str,
}

/// `<base>/permatoken`, where `base` is `kind`'s XDG folder: its variable when set to an absolute
/// path (an empty or relative one is ignored, as the XDG specification says), else its place under
/// `$HOME` (when set and not empty). `Ok(None)` when neither is usable. `environment` is the process
/// environment (`std::env::vars_os()`). A set XDG variable that is not UTF-8 is an error naming it;
/// so is `HOME`, but only when the folder is taken from it.
pub fn permatoken_dir(
    kind: Xdg,
    environment: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Option<PathBuf>, NotUtf8> {
    let mut xdg = None;
    let mut home = None;
    for (name, value) in environment {
        match name.to_str() {
            Some(n) if n == kind.var() => xdg = Some(value),
            Some("HOME") => home = Some(value),
            _ => {}
        }
    }
    let text = |value: Option<OsString>, var| match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.into_string().map(Some).map_err(|_| NotUtf8 { var }),
    };
    let xdg = text(xdg, kind.var())?.map(PathBuf::from);
    let base = match xdg.filter(|p| p.is_absolute()) {
        Some(xdg) => xdg,
        // A `HOME` that is not UTF-8 matters only when the folder is under it.
        None => match text(home, "HOME")? {
            Some(home) => PathBuf::from(home).join(kind.under_home()),
            None => return Ok(None),
        },
    };
    Ok(Some(base.join("permatoken")))
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
    fn a_file_within_the_cap_is_read_whole_and_a_larger_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_capped(&path, 10).unwrap(), b"0123456789");
        assert_eq!(read_secret(&path, 10).unwrap().as_slice(), b"0123456789");
        let err = read_capped(&path, 9).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { cap: 9 }), "{err:?}");
        assert_eq!(err.to_string(), "it is larger than 9 bytes");
        assert!(matches!(
            read_capped(&dir.path().join("missing"), 10),
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound
        ));
        assert!(matches!(read_capped(dir.path(), 10), Err(ReadError::Io(_))));
    }

    #[test]
    fn an_endless_device_costs_the_cap() {
        let err = read_capped(Path::new("/dev/zero"), 4096).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { cap: 4096 }));
        assert_eq!(err.to_string(), "it is larger than 4 KiB");
    }

    #[test]
    fn a_secret_buffer_is_allocated_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, vec![b'x'; 3000]).unwrap();
        let bytes = read_secret(&path, 1 << 20).unwrap();
        assert_eq!(bytes.len(), 3000);
        // Sized from the length (plus the byte that proves the end), never grown.
        assert_eq!(bytes.capacity(), 3001);
    }

    #[test]
    fn caps_read_as_a_person_writes_them() {
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(8 * 1024), "8 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }

    #[test]
    fn folders_follow_xdg_then_home() {
        let dir = |kind, pairs| permatoken_dir(kind, env(pairs));
        assert_eq!(
            dir(Xdg::State, &[("HOME", "/home/a"), ("XDG_STATE_HOME", "/x")]),
            Ok(Some(PathBuf::from("/x/permatoken")))
        );
        assert_eq!(
            dir(
                Xdg::State,
                &[("HOME", "/home/a"), ("XDG_STATE_HOME", "rel")]
            ),
            Ok(Some(PathBuf::from("/home/a/.local/state/permatoken")))
        );
        assert_eq!(
            dir(
                Xdg::Config,
                &[("XDG_STATE_HOME", "/x"), ("HOME", "/home/a")]
            ),
            Ok(Some(PathBuf::from("/home/a/.config/permatoken")))
        );
        assert_eq!(
            dir(Xdg::Config, &[("XDG_CONFIG_HOME", ""), ("HOME", "/h")]),
            Ok(Some(PathBuf::from("/h/.config/permatoken")))
        );
        assert_eq!(dir(Xdg::State, &[("PATH", "/bin")]), Ok(None));
        assert_eq!(dir(Xdg::State, &[("HOME", "")]), Ok(None));
    }

    #[test]
    fn a_variable_that_is_not_utf8_is_named() {
        use std::os::unix::ffi::OsStringExt;
        let bad = vec![(
            OsString::from("XDG_CONFIG_HOME"),
            OsString::from_vec(vec![0x2f, 0xff]),
        )];
        let err = permatoken_dir(Xdg::Config, bad.clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`XDG_CONFIG_HOME` is not valid UTF-8; set it to a folder path, or unset it"
        );
        // Only the variables of the folder asked for are read.
        assert_eq!(permatoken_dir(Xdg::State, bad), Ok(None));
    }

    #[test]
    fn home_that_is_not_utf8_matters_only_when_the_folder_is_under_it() {
        use std::os::unix::ffi::OsStringExt;
        let home = (OsString::from("HOME"), OsString::from_vec(vec![0x2f, 0xff]));
        let xdg = (OsString::from("XDG_STATE_HOME"), OsString::from("/x"));
        assert_eq!(
            permatoken_dir(Xdg::State, vec![home.clone(), xdg]),
            Ok(Some(PathBuf::from("/x/permatoken")))
        );
        assert_eq!(
            permatoken_dir(Xdg::State, vec![home]),
            Err(NotUtf8 { var: "HOME" })
        );
    }
}
