//! Where the PostgreSQL state's password comes from, first found wins: [`PgOptions::password_file`]
//! (the daemon's `state_password_file`), `PGPASSWORD`, or a passfile (`PGPASSFILE`, else
//! `~/.pgpass`; libpq's format; ignored unless its mode gives nothing to the group or others, as
//! libpq does). Files are read capped (`read_capped`) into memory zeroed on drop.
//!
//! Must never: show, log or store the password, or put a file's content in an error.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::Config;
use tokio_postgres::config::Host;
use zeroize::Zeroizing;

use super::read_capped;
use crate::Error;

/// How the PostgreSQL state finds its password and how long it waits for the server. Debug never
/// shows the password.
#[derive(Clone, Default)]
pub struct PgOptions {
    /// A file holding only the password (the daemon's `state_password_file`); one trailing newline
    /// is dropped. Wins over everything else.
    pub password_file: Option<PathBuf>,
    /// `PGPASSWORD`, used when there is no password file.
    pub env_password: Option<Zeroizing<String>>,
    /// `PGPASSFILE`: the passfile to read instead of `~/.pgpass`.
    pub passfile: Option<PathBuf>,
    /// The home folder, where `.pgpass` is looked for when `passfile` is not given.
    pub home: Option<PathBuf>,
    /// How long to wait for the server to answer a connection (10 s if not given).
    pub connect_timeout: Option<Duration>,
}

impl PgOptions {
    /// `PGPASSWORD`, `PGPASSFILE` and `HOME` from the environment (a value that is not UTF-8 is
    /// ignored, as libpq would fail to use it).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::vars_os().find(|(k, _)| k == name).map(|(_, v)| v);
        Self {
            password_file: None,
            env_password: var("PGPASSWORD")
                .and_then(|v| v.into_string().ok())
                .filter(|v| !v.is_empty())
                .map(Zeroizing::new),
            passfile: var("PGPASSFILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            home: var("HOME").filter(|v| !v.is_empty()).map(PathBuf::from),
            connect_timeout: None,
        }
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("password_file", &self.password_file)
            .field(
                "env_password",
                &self.env_password.as_ref().map(|_| "<redacted>"),
            )
            .field("passfile", &self.passfile)
            .field("home", &self.home)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

fn read_password_file(path: &Path) -> Result<Zeroizing<String>, Error> {
    let bytes = read_capped(path, "read the state password file")?;
    let bad = |why: &str| Error::Io {
        action: "read the state password file",
        path: path.to_path_buf(),
        source: std::io::Error::other(why.to_owned()),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("it is not UTF-8 text"))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err(bad("it is empty: put the password in it"));
    }
    if text.contains('\n') {
        return Err(bad(
            "it holds more than one line: put only the password in it",
        ));
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// Splits a passfile line on unescaped `:`, undoing `\:` and `\\`.
fn passfile_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next()
                    && let Some(last) = fields.last_mut()
                {
                    last.push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

/// The password a passfile gives for this host, port, database and user, if any.
fn passfile_lookup(text: &str, want: [&str; 4]) -> Option<Zeroizing<String>> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = passfile_fields(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = fields[..4]
            .iter()
            .zip(want)
            .all(|(field, want)| field == "*" || field == want);
        let password = Zeroizing::new(fields.drain(4..).collect::<Vec<_>>().join(":"));
        for f in &mut fields {
            zeroize::Zeroize::zeroize(f);
        }
        if matches {
            return Some(password);
        }
    }
    None
}

/// The password to offer, and why a passfile was passed over (for the error if one is then asked).
pub(super) fn find_password(
    config: &Config,
    options: &PgOptions,
) -> Result<(Option<Zeroizing<String>>, Option<String>), Error> {
    if let Some(path) = &options.password_file {
        return Ok((Some(read_password_file(path)?), None));
    }
    if let Some(p) = &options.env_password {
        return Ok((Some(p.clone()), None));
    }
    match (&options.passfile, &options.home) {
        (Some(p), _) => from_passfile(config, p, true),
        (None, Some(home)) => from_passfile(config, &home.join(".pgpass"), false),
        (None, None) => Ok((None, None)),
    }
}

/// [`find_password`] from the passfile at `path`, given in `PGPASSFILE` (`explicit`: a mode that
/// gives the group or others anything is then an error) or found in the home folder.
fn from_passfile(
    config: &Config,
    path: &Path,
    explicit: bool,
) -> Result<(Option<Zeroizing<String>>, Option<String>), Error> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok((None, None));
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let note = format!(
            "the passfile `{}` was ignored: its mode is {mode:04o}, and a passfile must be readable by its owner only (`chmod 600 {}`)",
            path.display(),
            path.display()
        );
        if explicit {
            return Err(Error::Io {
                action: "use the passfile",
                path: path.to_path_buf(),
                source: std::io::Error::other(format!(
                    "its mode is {mode:04o}: a passfile must be readable by its owner only (`chmod 600 {}`)",
                    path.display()
                )),
            });
        }
        return Ok((None, Some(note)));
    }
    let bytes = read_capped(path, "read the passfile")?;
    let text = String::from_utf8_lossy(&bytes);
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches a Unix socket against `localhost`.
        _ => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or("*").to_owned();
    let db = config.get_dbname().unwrap_or(&user).to_owned();
    let found = passfile_lookup(&text, [&host, &port, &db, &user]);
    if let std::borrow::Cow::Owned(mut s) = text {
        zeroize::Zeroize::zeroize(&mut s);
    }
    let note = found.is_none().then(|| {
        format!(
            "the passfile `{}` has no line for {host}:{port}:{db}:{user}",
            path.display()
        )
    });
    Ok((found, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passfile_lines_match_with_wildcards_and_escapes() {
        let text = "# comment\nother:5432:*:watch:nope\n127.0.0.1:*:fleet:watch:se\\:cr\\\\et\n";
        let got = passfile_lookup(text, ["127.0.0.1", "5432", "fleet", "watch"]).unwrap();
        assert_eq!(got.as_str(), "se:cr\\et");
        assert!(passfile_lookup(text, ["127.0.0.1", "5432", "other", "watch"]).is_none());
    }

    #[test]
    fn a_password_file_is_capped_and_its_errors_say_why_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "PERMATOKENTEST-pw\n").unwrap();
        assert_eq!(
            read_password_file(&file).unwrap().as_str(),
            "PERMATOKENTEST-pw"
        );
        for (content, why) in [
            (vec![b'x'; 64 * 1024 + 1], "it is larger than 64 KiB"),
            (b"\n".to_vec(), "it is empty"),
            (b"PERMATOKENTEST-a\nb\n".to_vec(), "more than one line"),
            (b"PERMATOKENTEST\xff".to_vec(), "not UTF-8"),
        ] {
            std::fs::write(&file, content).unwrap();
            let shown = read_password_file(&file).unwrap_err().to_string();
            assert!(
                shown.starts_with("cannot read the state password file `"),
                "{shown}"
            );
            assert!(shown.contains(why), "{shown}");
            assert!(!shown.contains("PERMATOKENTEST"), "{shown}");
        }
        let err = read_password_file(&dir.path().join("missing")).unwrap_err();
        assert!(
            matches!(err, Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let options = PgOptions {
            env_password: Some(Zeroizing::new("PERMATOKENTEST-pw".to_owned())),
            ..PgOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("PERMATOKENTEST"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
