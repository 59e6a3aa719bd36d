//! Where a configured token and its app's credentials are read, and reading them now: the token
//! and its backups ([`TokenSpec::load`]), the app's id and secret ([`AppSource`]), and both from one
//! reading of a `.env` file that holds them together ([`load`], what `watch` does for every check).
//! Every file is read capped ([`permatoken_fs`]) into memory that is zeroed when dropped.
//!
//! Must never: put a file's content in an error, or read a file twice where one reading serves.

use std::path::{Path, PathBuf};

use permatoken_config::{Source, Sourced};
use permatoken_fs::ReadError;
use permatoken_inspect::AppCredentials;
use permatoken_secret::{AccessToken, AppSecret, AppToken};
use zeroize::Zeroizing;

use crate::{Target, TokenSpec};

/// Where the daemon reads a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `key` of a `.env` file (renewed and failed over in place).
    EnvFile {
        /// The file.
        path: PathBuf,
        /// The key, e.g. `WHATSAPP_ACCESS_TOKEN`.
        key: String,
    },
    /// A file holding only the token.
    TokenFile {
        /// The file.
        path: PathBuf,
    },
    /// A variable of this process's environment: checked, never written.
    Environment {
        /// The variable.
        variable: String,
    },
}

/// Why [`TokenSpec::load`] found no token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than any token file or `.env` file should be.
    #[error(
        "`{path}` is larger than {}, more than any `.env` or token file, so it was not read: check the path",
        permatoken_fs::human_bytes(MAX_FILE)
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A file holding a secret is larger than one secret could be.
    #[error("cannot read `{path}`: {reason}")]
    SecretTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size against the cap.
        reason: String,
    },
    /// The file is not UTF-8 text.
    #[error("`{path}` is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The `.env` file does not parse.
    #[error("`{path}` is not a valid .env file ({source})")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: permatoken_dotenv::ParseError,
    },
    /// The key or variable is not set, or is empty.
    #[error("`{key}` is not set in {place}")]
    Missing {
        /// The key.
        key: String,
        /// The file, or "the environment".
        place: String,
    },
}

/// No `.env` or token file worth reading is larger (the same cap as the commands').
const MAX_FILE: u64 = permatoken_config::MAX_FILE;

/// A `.env` or token file's text, in memory zeroed when dropped.
fn read_capped(path: &Path) -> Result<Zeroizing<String>, LoadError> {
    let mut bytes = permatoken_fs::read_secret(path, MAX_FILE).map_err(|e| match e {
        ReadError::TooLarge { .. } => LoadError::TooLarge {
            path: path.to_owned(),
        },
        ReadError::Io(source) => LoadError::Read {
            path: path.to_owned(),
            source,
        },
        other => LoadError::Read {
            path: path.to_owned(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    utf8(path, &mut bytes)
}

/// `bytes` as text, the buffer itself becoming the string: no second copy of a secret.
fn utf8(path: &Path, bytes: &mut Zeroizing<Vec<u8>>) -> Result<Zeroizing<String>, LoadError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(LoadError::NotUtf8 {
            path: path.to_owned(),
        });
    }
    let text = String::from_utf8(std::mem::take(&mut **bytes)).expect("checked to be UTF-8");
    Ok(Zeroizing::new(text))
}

/// The rank of `name` in `key`'s backup series: `KEY_BACKUP` → 1, `KEY_BACKUP_2` → 2.
fn backup_rank(key: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(key)?.strip_prefix("_BACKUP")?;
    if rest.is_empty() {
        return Some(1);
    }
    rest.strip_prefix('_')?.parse().ok().filter(|&n| n >= 2)
}

impl TokenSpec {
    /// A spec whose renewal goes back where the primary came from.
    pub fn new(primary: Sourced<AccessToken>, backups: Vec<Sourced<AccessToken>>) -> Self {
        Self {
            target: Target::of(&primary),
            primary,
            backups,
        }
    }

    /// Reads a configured token and its backups now. `backups`: keys of the same `.env` file, in
    /// order; `None` takes the `<key>_BACKUP`, `<key>_BACKUP_2`, … series found there. A token file
    /// or an environment variable has no backups.
    pub fn load(source: &TokenSource, backups: Option<&[String]>) -> Result<Self, LoadError> {
        let missing = |key: &str, place: String| LoadError::Missing {
            key: key.to_owned(),
            place,
        };
        match source {
            TokenSource::EnvFile { path, key } => {
                let text = read_capped(path)?;
                let doc = parse(path, &text)?;
                Self::from_env_file(path, key, backups, &doc)
            }
            TokenSource::TokenFile { path } => {
                let text = read_capped(path)?;
                let token = AccessToken::new(text.as_str());
                if token.expose_secret().is_empty() {
                    return Err(missing("the token", path.display().to_string()));
                }
                Ok(Self::new(
                    Sourced {
                        value: token,
                        source: Source::TokenFile(path.clone()),
                        var: None,
                    },
                    Vec::new(),
                ))
            }
            TokenSource::Environment { variable } => {
                let value = std::env::var_os(variable)
                    .and_then(|v| v.into_string().ok())
                    .map(Zeroizing::new)
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| missing(variable, "the environment".into()))?;
                Ok(Self::new(
                    Sourced {
                        value: AccessToken::new(value.as_str()),
                        source: Source::Environment,
                        var: Some(variable.clone()),
                    },
                    Vec::new(),
                ))
            }
        }
    }

    /// The token `key` of the parsed `.env` file `path`, and its backups (see [`TokenSpec::load`]).
    fn from_env_file(
        path: &Path,
        key: &str,
        backups: Option<&[String]>,
        doc: &permatoken_dotenv::Document,
    ) -> Result<Self, LoadError> {
        let missing = |key: &str, place: String| LoadError::Missing {
            key: key.to_owned(),
            place,
        };
        let sourced = |var: &str, value: &str| Sourced {
            value: AccessToken::new(value),
            source: Source::EnvFile(path.to_owned()),
            var: Some(var.to_owned()),
        };
        let value = doc
            .get(key)
            .map(|e| e.value.to_owned())
            .filter(|v| !v.trim().is_empty())
            .map(Zeroizing::new)
            .ok_or_else(|| missing(key, path.display().to_string()))?;
        let names: Vec<String> = match backups {
            Some(names) => names.to_vec(),
            None => {
                let mut found: Vec<(u32, String)> = doc
                    .entries()
                    .filter_map(|e| Some((backup_rank(key, e.key)?, e.key.to_owned())))
                    .collect();
                found.sort();
                found.dedup();
                found.into_iter().map(|(_, name)| name).collect()
            }
        };
        let backups = names
            .iter()
            .filter_map(|name| {
                let entry = doc.get(name)?;
                (!entry.value.trim().is_empty()).then(|| sourced(name, entry.value))
            })
            .collect();
        Ok(Self::new(sourced(key, &value), backups))
    }
}

/// `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET` of a `.env` file, when both are set there: for a
/// configured token whose app credentials live beside it. `None` when either is missing.
pub fn load_app(path: &Path) -> Result<Option<AppToken>, LoadError> {
    let text = read_capped(path)?;
    Ok(app_of(&parse(path, &text)?))
}

/// `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET` of a parsed `.env` file, when both are set.
fn app_of(doc: &permatoken_dotenv::Document) -> Option<AppToken> {
    let value = |key| {
        doc.get(key)
            .map(|e| e.value.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    match (
        value(permatoken_config::APP_ID_VAR),
        value(permatoken_config::APP_SECRET_VAR).map(Zeroizing::new),
    ) {
        (Some(id), Some(secret)) => Some(AppToken::new(id, AppSecret::new(secret.as_str()))),
        _ => None,
    }
}

/// A `.env` file's text, parsed.
fn parse(path: &Path, text: &str) -> Result<permatoken_dotenv::Document, LoadError> {
    permatoken_dotenv::parse(text).map_err(|source| LoadError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// The app credentials of an app token, for [`crate::Ctx::app`].
pub fn app_credentials(app: &AppToken) -> AppCredentials {
    AppCredentials {
        app_id: Some(app.app_id().to_owned()),
        app_secret: Some(app.secret().clone()),
    }
}

/// Where a token's app id and app secret are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET` of this env file (the token's, by default).
    EnvFile(PathBuf),
    /// `FACEBOOK_APP_ID` and `FACEBOOK_APP_SECRET` of the process environment (the default for a
    /// token file or a variable).
    Environment,
    /// This app id, and the secret from a file or a variable (or none).
    Given {
        /// The app id.
        app_id: String,
        /// Where the secret is.
        secret: Option<SecretFrom>,
    },
}

/// Where a secret value is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    /// A file holding the value only (surrounding white space ignored).
    File(PathBuf),
    /// A variable of the process environment.
    Env(String),
}

/// The most bytes read of a file holding an app secret.
const MAX_SECRET_FILE: u64 = 8 * 1024;

/// A variable of the process environment, trimmed; `None` when unset, empty or not UTF-8.
fn env(name: &str) -> Option<Zeroizing<String>> {
    std::env::var_os(name)
        .and_then(|v| v.into_string().ok())
        .map(|v| Zeroizing::new(v.trim().to_owned()))
        .filter(|v| !v.is_empty())
}

impl AppSource {
    /// The app's credentials, read now. Missing ones are `None` (a check then says what is
    /// missing); a file that cannot be read is an error naming it.
    pub fn load(&self) -> Result<AppCredentials, LoadError> {
        match self {
            Self::EnvFile(path) => Ok(load_app(path)?
                .map(|app| app_credentials(&app))
                .unwrap_or_default()),
            Self::Environment => Ok(AppCredentials {
                app_id: env(permatoken_config::APP_ID_VAR).map(|v| v.to_string()),
                app_secret: env(permatoken_config::APP_SECRET_VAR)
                    .map(|s| AppSecret::new(s.as_str())),
            }),
            Self::Given { app_id, secret } => {
                let secret = match secret {
                    None => None,
                    Some(SecretFrom::Env(name)) => env(name),
                    Some(SecretFrom::File(path)) => Some(secret_file(path)?),
                };
                Ok(AppCredentials {
                    app_id: Some(app_id.clone()),
                    app_secret: secret.map(|s| AppSecret::new(s.trim())),
                })
            }
        }
    }
}

/// A file holding one secret: its text, capped at [`MAX_SECRET_FILE`].
fn secret_file(path: &Path) -> Result<Zeroizing<String>, LoadError> {
    let mut bytes = permatoken_fs::read_secret(path, MAX_SECRET_FILE).map_err(|e| match e {
        ReadError::Io(source) => LoadError::Read {
            path: path.to_owned(),
            source,
        },
        other => LoadError::SecretTooLarge {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })?;
    utf8(path, &mut bytes)
}

/// A configured token, its backups and its app's credentials, read now, each file once: when the
/// app's credentials are in the token's own `.env` (the default), one reading gives both. The
/// app's credentials that cannot be read are the inner error: the token's check goes on without
/// them (and says what they would have told).
pub fn load(
    source: &TokenSource,
    backups: Option<&[String]>,
    app: &AppSource,
) -> Result<(TokenSpec, Result<AppCredentials, LoadError>), LoadError> {
    if let (TokenSource::EnvFile { path, key }, AppSource::EnvFile(app_path)) = (source, app)
        && path == app_path
    {
        let text = read_capped(path)?;
        let doc = parse(path, &text)?;
        let spec = TokenSpec::from_env_file(path, key, backups, &doc)?;
        let app = app_of(&doc)
            .map(|app| app_credentials(&app))
            .unwrap_or_default();
        return Ok((spec, Ok(app)));
    }
    Ok((TokenSpec::load(source, backups)?, app.load()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Destination;

    #[test]
    fn the_backup_series_is_found_by_rank() {
        let key = "WHATSAPP_ACCESS_TOKEN";
        assert_eq!(backup_rank(key, "WHATSAPP_ACCESS_TOKEN_BACKUP"), Some(1));
        assert_eq!(backup_rank(key, "WHATSAPP_ACCESS_TOKEN_BACKUP_2"), Some(2));
        assert_eq!(backup_rank(key, "WHATSAPP_ACCESS_TOKEN_BACKUP_1"), None);
        assert_eq!(backup_rank(key, "WHATSAPP_ACCESS_TOKEN_BACKUPX"), None);
        assert_eq!(backup_rank(key, "WHATSAPP_ACCESS_TOKEN"), None);
    }

    fn vars(spec: &TokenSpec) -> Vec<String> {
        spec.backups
            .iter()
            .map(|b| b.var.clone().unwrap())
            .collect()
    }

    #[test]
    fn a_spec_is_loaded_from_a_key_its_backups_a_token_file_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        std::fs::write(
            &env,
            "K=PERMATOKENTEST0\nK_BACKUP_10=PERMATOKENTEST10\nK_BACKUP=PERMATOKENTEST1\nK_BACKUP_2=PERMATOKENTEST2\nK_BACKUP_3=\nOTHER_BACKUP=x\nFACEBOOK_APP_ID=123\nFACEBOOK_APP_SECRET=PERMATOKENTESTsecret\n",
        )
        .unwrap();
        let source = TokenSource::EnvFile {
            path: env.clone(),
            key: "K".into(),
        };
        let spec = TokenSpec::load(&source, None).unwrap();
        assert_eq!(spec.primary.value.expose_secret(), "PERMATOKENTEST0");
        // Ranked by number, not by name; an empty one is no backup.
        assert_eq!(vars(&spec), ["K_BACKUP", "K_BACKUP_2", "K_BACKUP_10"]);
        assert_eq!(
            spec.target,
            Target::File {
                destination: Destination::EnvFile {
                    path: env.clone(),
                    variable: "K".into()
                },
                holds_input: true
            }
        );
        let given = ["K_BACKUP_2".to_owned(), "MISSING".to_owned()];
        let spec = TokenSpec::load(&source, Some(&given)).unwrap();
        assert_eq!(vars(&spec), ["K_BACKUP_2"]);
        let app = load_app(&env).unwrap().unwrap();
        assert_eq!(app.app_id(), "123");

        let missing = TokenSource::EnvFile {
            path: env.clone(),
            key: "NOPE".into(),
        };
        assert!(matches!(
            TokenSpec::load(&missing, None),
            Err(LoadError::Missing { .. })
        ));

        let file = dir.path().join("token");
        std::fs::write(&file, "PERMATOKENTESTfile\n").unwrap();
        let spec = TokenSpec::load(&TokenSource::TokenFile { path: file.clone() }, None).unwrap();
        assert_eq!(spec.primary.value.expose_secret(), "PERMATOKENTESTfile");
        assert_eq!(
            spec.target,
            Target::File {
                destination: Destination::TokenFile { path: file.clone() },
                holds_input: true
            }
        );
        std::fs::write(&file, vec![b'a'; MAX_FILE as usize + 1]).unwrap();
        let err = TokenSpec::load(&TokenSource::TokenFile { path: file }, None).unwrap_err();
        assert!(matches!(err, LoadError::TooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
    }

    #[test]
    fn an_app_secret_file_is_read_capped_and_trimmed_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "PERMATOKENTEST0123456789abcdef\n").unwrap();
        let given = |path: &Path| AppSource::Given {
            app_id: "1234".into(),
            secret: Some(SecretFrom::File(path.to_owned())),
        };
        let app = given(&file).load().unwrap();
        assert_eq!(app.app_id.as_deref(), Some("1234"));
        assert_eq!(
            app.app_secret.unwrap().expose_secret(),
            "PERMATOKENTEST0123456789abcdef"
        );
        std::fs::write(&file, "PERMATOKENTEST".repeat(1000)).unwrap();
        let e = given(&file).load().unwrap_err().to_string();
        assert!(e.contains("larger than 8 KiB"), "{e}");
        assert!(!e.contains("PERMATOKENTEST"), "{e}");
        let e = given(&dir.path().join("missing"))
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read `"), "{e}");
    }

    #[test]
    fn a_token_and_its_app_in_one_env_file_are_read_together_as_apart() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        std::fs::write(
            &env,
            "WHATSAPP_ACCESS_TOKEN=PERMATOKENTEST-primary\n\
             WHATSAPP_ACCESS_TOKEN_BACKUP=PERMATOKENTEST-backup\n\
             FACEBOOK_APP_ID=1234\nFACEBOOK_APP_SECRET=PERMATOKENTEST0123456789abcdef\n",
        )
        .unwrap();
        let source = TokenSource::EnvFile {
            path: env.clone(),
            key: "WHATSAPP_ACCESS_TOKEN".into(),
        };
        let app = AppSource::EnvFile(env.clone());
        let (spec, together) = load(&source, None, &app).unwrap();
        let together = together.unwrap();
        let apart = TokenSpec::load(&source, None).unwrap();
        let app_apart = app.load().unwrap();
        assert_eq!(spec.primary.value, apart.primary.value);
        assert_eq!(spec.backups.len(), 1);
        assert_eq!(spec.backups[0].value, apart.backups[0].value);
        assert_eq!(together.app_id, app_apart.app_id);
        assert_eq!(
            together.app_secret.map(|s| s.expose_secret().to_owned()),
            app_apart.app_secret.map(|s| s.expose_secret().to_owned())
        );
        // Without the app's keys: the token alone, and no app.
        std::fs::write(&env, "WHATSAPP_ACCESS_TOKEN=PERMATOKENTEST-primary\n").unwrap();
        let (_, none) = load(&source, None, &app).unwrap();
        assert_eq!(none.unwrap().app_id, None);
        // A token that cannot be read is the error, whatever the app.
        std::fs::write(&env, "OTHER=1\n").unwrap();
        assert!(matches!(
            load(&source, None, &app),
            Err(LoadError::Missing { .. })
        ));
    }
}
