//! Where credentials come from, and in which order (DESIGN §3).
//!
//! The token: `--token-file` or `--token-stdin` (the token only), then an explicit `--env-file`, then
//! the process environment, then `./.env` when present. Every other variable: `--env-file`, the
//! environment, `./.env`. `./.env` is not read when `--env-file` names another file: an explicit file is
//! the whole configuration. Every value remembers where it came from, so the output can say so.
//!
//! Files are read through `permatoken-fs` into memory zeroed when dropped, and one larger than
//! [`MAX_FILE`] is refused after reading that much of it: whatever it is, it is not a `.env` or a
//! token file.
//!
//! Must never: take a token from the command line, or put a value in an error or in `Debug` output.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use permatoken_fs::ReadError;
use permatoken_secret::{AccessToken, AppSecret, VerifyToken};
use zeroize::Zeroizing;

/// The variable that holds the primary token.
pub const TOKEN_VAR: &str = "WHATSAPP_ACCESS_TOKEN";
/// The variable that holds the app id.
pub const APP_ID_VAR: &str = "FACEBOOK_APP_ID";
/// The variable that holds the app secret.
pub const APP_SECRET_VAR: &str = "FACEBOOK_APP_SECRET";
/// The WhatsApp Business Account id.
pub const WABA_VAR: &str = "WHATSAPP_BUSINESS_ACCOUNT_ID";
/// The phone number id.
pub const PHONE_VAR: &str = "WHATSAPP_PHONE_NUMBER_ID";
/// The webhook URL Meta calls.
pub const WEBHOOK_URL_VAR: &str = "WHATSAPP_WEBHOOK_URL";
/// The webhook verify token (a secret).
pub const VERIFY_TOKEN_VAR: &str = "WHATSAPP_WEBHOOK_VERIFY_TOKEN";
/// The first backup token; later ones are `_BACKUP_2`, `_BACKUP_3`, …
pub const BACKUP_VAR: &str = "WHATSAPP_ACCESS_TOKEN_BACKUP";

/// The most bytes of a `.env` or token file: real ones hold a few lines. The same cap as the one
/// `permatoken-dotenv` puts on a file it rewrites.
pub const MAX_FILE: u64 = permatoken_dotenv::MAX_FILE;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--token-file PATH`.
    TokenFile(PathBuf),
    /// `--token-stdin`.
    Stdin,
    /// `--env-file PATH`, or `./.env` found in the working folder.
    EnvFile(PathBuf),
    /// The process environment.
    Environment,
    /// Made up by `--sandbox`.
    Sandbox,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenFile(p) | Self::EnvFile(p) => write!(f, "{}", p.display()),
            Self::Stdin => f.write_str("standard input"),
            Self::Environment => f.write_str("the environment"),
            Self::Sandbox => f.write_str("the built-in sandbox"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Its source.
    pub source: Source,
    /// The variable it was read from (`None` for a token file or standard input).
    pub var: Option<String>,
}

/// Everything `check` and its kin need to know, as found.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `WHATSAPP_ACCESS_TOKEN`.
    pub token: Option<Sourced<AccessToken>>,
    /// `WHATSAPP_ACCESS_TOKEN_BACKUP`, `_BACKUP_2`, … in that order.
    pub backups: Vec<Sourced<AccessToken>>,
    /// `FACEBOOK_APP_ID`.
    pub app_id: Option<Sourced<String>>,
    /// `FACEBOOK_APP_SECRET`.
    pub app_secret: Option<Sourced<AppSecret>>,
    /// `WHATSAPP_BUSINESS_ACCOUNT_ID`.
    pub waba_id: Option<Sourced<String>>,
    /// `WHATSAPP_PHONE_NUMBER_ID`.
    pub phone_number_id: Option<Sourced<String>>,
    /// `WHATSAPP_WEBHOOK_URL`.
    pub webhook_url: Option<Sourced<String>>,
    /// `WHATSAPP_WEBHOOK_VERIFY_TOKEN`.
    pub verify_token: Option<Sourced<VerifyToken>>,
    /// Things worth a warning that do not stop the run (duplicate keys, loose file modes).
    pub warnings: Vec<String>,
}

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
    /// The token read from standard input by `--token-stdin`.
    pub token_stdin: Option<AccessToken>,
    /// `--env-file`.
    pub env_file: Option<PathBuf>,
    /// The working folder, where `./.env` is looked for.
    pub cwd: PathBuf,
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_FILE`]: only that much of it was read.
    #[error("`{}` is larger than {}: it is not {what}", path.display(), permatoken_fs::human_bytes(*cap))]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The most bytes allowed.
        cap: u64,
        /// What the file was to be: "an env file", "a token file".
        what: &'static str,
    },
    /// A `.env` file does not parse.
    #[error("`{path}` is not a valid .env file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: permatoken_dotenv::ParseError,
    },
    /// A variable we need holds bytes that are not UTF-8 (a token pasted with a Latin-1 byte).
    #[error("`{var}` from {origin} is not UTF-8 text")]
    NotUtf8 {
        /// The variable (or `--token-file`).
        var: String,
        /// Where it came from.
        origin: Source,
    },
    /// A `.env` file holds bytes that are not UTF-8.
    #[error("`{path}` is not UTF-8 text: line {line} holds a byte that is not")]
    NotUtf8File {
        /// The file.
        path: PathBuf,
        /// The first line with such a byte, from 1.
        line: usize,
    },
    /// The token has no Meta token's shape (`place` names the file and variable, never the value):
    /// it is sent nowhere.
    #[error(
        "{place} does not hold a Meta access token (EAA followed by letters and digits), so it was not sent to Meta"
    )]
    Malformed {
        /// `` `WHATSAPP_ACCESS_TOKEN` in ./.env ``, or the token file.
        place: String,
    },
    /// A value is there but cannot be right.
    #[error("`{var}` from {origin} {problem}")]
    Invalid {
        /// The variable (or `--token-file`).
        var: String,
        /// Where it came from.
        origin: Source,
        /// What is wrong with it, without quoting it.
        problem: String,
    },
}

impl Error {
    /// The stable code of the problem, as `check --json` shows it (README, "Finding codes"): a token
    /// that is no token is `token_malformed`, whatever is wrong with it.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Malformed { .. } => Some("token_malformed"),
            Self::Invalid { var, .. } if var != APP_ID_VAR && var != APP_SECRET_VAR => {
                Some("token_malformed")
            }
            _ => None,
        }
    }

    /// What to do about it, for the `hint:` line.
    pub fn hint(&self) -> String {
        match self {
            Self::Read { .. } => "check the path and that this user may read the file".into(),
            Self::TooLarge { .. } => {
                "check the path: a `.env` file holds a few `KEY=value` lines, a token file one token".into()
            }
            Self::Parse { .. } => {
                "fix that line; values with spaces or `#` need quotes: KEY=\"a value\"".into()
            }
            Self::Invalid { var, .. } if var == APP_ID_VAR => {
                "the app id is the number at the top of App Dashboard → Settings → Basic".into()
            }
            Self::Invalid { var, .. } if var == APP_SECRET_VAR => {
                "the app secret is under App Dashboard → Settings → Basic → App secret → Show".into()
            }
            Self::NotUtf8 { var, .. } if var == TOKEN_VAR || var.starts_with(BACKUP_VAR) || var == "--token-file" => {
                "a Meta token is plain ASCII: copy it again, whole, from where it was generated (Business Settings → System users, or WhatsApp → API Setup), and check the terminal or editor saves UTF-8".into()
            }
            Self::NotUtf8 { var, .. } => format!("set `{var}` again as plain text (check the terminal or editor saves UTF-8)"),
            Self::NotUtf8File { .. } => {
                "save the file as UTF-8 (an editor's \"Save with encoding\"); Meta tokens and ids are plain ASCII".into()
            }
            Self::Malformed { .. } => "this file does not hold a Meta access token: check that it is the token's file (a key, a certificate or a JSON file is not), and put the token there alone, copied whole (EAA followed by 150–260 letters and digits)".into(),
            Self::Invalid { .. } => "copy the token again, whole, from where it was generated (Business Settings → System users, or WhatsApp → API Setup)".into(),
        }
    }
}

/// A variable source, for lookups in precedence order.
struct Layer {
    source: Source,
    /// `None`: the value is not UTF-8. Kept, not dropped, so that asking for it is an error naming the
    /// variable rather than a silent fall-through to a lower layer.
    vars: Vec<(String, Option<String>)>,
}

/// Reads credentials from the places `request` allows, plus `environment` (the process environment as
/// bytes, `std::env::vars_os()`, passed in so tests can set it).
///
/// A variable that is not UTF-8 is an error naming it (never showing it) only when it is one we read;
/// any other is ignored, as is a variable whose name is not UTF-8.
pub fn resolve(
    request: &Request,
    environment: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Credentials, Error> {
    let mut credentials = Credentials::default();
    let layers = layers(request, environment, &mut credentials.warnings)?;
    let lookup = |name: &str| find(&layers, name);

    credentials.token = if let Some(path) = &request.token_file {
        Some(read_token_file(path, &mut credentials.warnings)?)
    } else if let Some(token) = &request.token_stdin {
        Some(Sourced {
            value: token.clone(),
            source: Source::Stdin,
            var: None,
        })
    } else {
        lookup(TOKEN_VAR)?.map(|s| Sourced {
            value: AccessToken::new(s.value),
            source: s.source,
            var: s.var,
        })
    };
    if let Some(token) = &credentials.token {
        validate_token(token)?;
    }
    credentials.backups = backups(&layers)?;

    credentials.app_id = lookup(APP_ID_VAR)?.map(|mut s| {
        s.value = s.value.trim().to_owned();
        s
    });
    if let Some(id) = &credentials.app_id
        && (!(1..=20).contains(&id.value.len()) || !id.value.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(Error::Invalid {
            var: APP_ID_VAR.into(),
            origin: id.source.clone(),
            problem: "is not an app id: app ids are numbers, 10 to 16 digits".into(),
        });
    }
    let trimmed = |mut s: Sourced<String>| {
        s.value = s.value.trim().to_owned();
        s
    };
    credentials.waba_id = lookup(WABA_VAR)?.map(trimmed);
    credentials.phone_number_id = lookup(PHONE_VAR)?.map(trimmed);
    credentials.webhook_url = lookup(WEBHOOK_URL_VAR)?.map(trimmed);
    credentials.verify_token = lookup(VERIFY_TOKEN_VAR)?.map(|s| Sourced {
        value: VerifyToken::new(s.value),
        source: s.source,
        var: s.var,
    });
    for id in [&credentials.waba_id, &credentials.phone_number_id]
        .into_iter()
        .flatten()
    {
        if !id.value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Invalid {
                var: id.var.clone().unwrap_or_default(),
                origin: id.source.clone(),
                problem: "is not an id: WhatsApp ids are numbers (WhatsApp Manager and App Dashboard → WhatsApp → API Setup show them)".into(),
            });
        }
    }
    credentials.app_secret = lookup(APP_SECRET_VAR)?.map(|s| Sourced {
        value: AppSecret::new(s.value),
        source: s.source,
        var: s.var,
    });
    if let Some(secret) = &credentials.app_secret {
        let text = secret.value.expose_secret();
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            credentials.warnings.push(format!(
                "`{APP_SECRET_VAR}` from {} is not 32 hex characters, the shape of Meta app secrets; calls that use it will likely fail",
                secret.source
            ));
        }
    }
    Ok(credentials)
}

/// The variable sources in precedence order: `--env-file`, the environment, `./.env` (only without
/// `--env-file`).
fn layers(
    request: &Request,
    environment: impl IntoIterator<Item = (OsString, OsString)>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Layer>, Error> {
    let mut layers = Vec::new();
    if let Some(path) = &request.env_file {
        layers.push(read_env_file(path, warnings)?);
    }
    layers.push(Layer {
        source: Source::Environment,
        vars: environment
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok())))
            .collect(),
    });
    if request.env_file.is_none() {
        let path = request.cwd.join(".env");
        if path.is_file() {
            let mut layer = read_env_file(&path, warnings)?;
            // Named as people know it, whatever the folder: `./.env`.
            layer.source = Source::EnvFile(PathBuf::from("./.env"));
            layers.push(layer);
        }
    }
    Ok(layers)
}

/// The first non-blank value of `name` in precedence order.
fn find(layers: &[Layer], name: &str) -> Result<Option<Sourced<String>>, Error> {
    for layer in layers {
        let Some((_, value)) = layer.vars.iter().rev().find(|(k, _)| k == name) else {
            continue;
        };
        let Some(value) = value else {
            return Err(Error::NotUtf8 {
                var: name.to_owned(),
                origin: layer.source.clone(),
            });
        };
        if !value.trim().is_empty() {
            return Ok(Some(Sourced {
                value: value.clone(),
                source: layer.source.clone(),
                var: Some(name.to_owned()),
            }));
        }
    }
    Ok(None)
}

/// `--token-file`: the file holds the token alone.
fn read_token_file(path: &Path, warnings: &mut Vec<String>) -> Result<Sourced<AccessToken>, Error> {
    let bytes = read_file(path, "a token file")?;
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::NotUtf8 {
        var: "--token-file".into(),
        origin: Source::TokenFile(path.to_owned()),
    })?;
    check_file_mode(path, warnings);
    Ok(Sourced {
        value: AccessToken::new(text),
        source: Source::TokenFile(path.to_owned()),
        var: None,
    })
}

/// `WHATSAPP_ACCESS_TOKEN_BACKUP`, `_BACKUP_2`, … found in any layer, in that order, each checked.
fn backups(layers: &[Layer]) -> Result<Vec<Sourced<AccessToken>>, Error> {
    let mut names: Vec<String> = layers
        .iter()
        .flat_map(|l| l.vars.iter().map(|(k, _)| k.clone()))
        .filter_map(|k| backup_index(&k).map(|_| k))
        .collect();
    names.sort_by_key(|k| backup_index(k));
    names.dedup();
    let mut backups = Vec::new();
    for name in names {
        if let Some(s) = find(layers, &name)? {
            let token = Sourced {
                value: AccessToken::new(s.value),
                source: s.source,
                var: s.var,
            };
            validate_token(&token)?;
            backups.push(token);
        }
    }
    Ok(backups)
}

/// `WHATSAPP_ACCESS_TOKEN_BACKUP` → 1, `…_BACKUP_2` → 2; anything else → `None`.
fn backup_index(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(BACKUP_VAR)?;
    if rest.is_empty() {
        return Some(1);
    }
    rest.strip_prefix('_')?.parse().ok().filter(|n| *n >= 2)
}

fn validate_token(token: &Sourced<AccessToken>) -> Result<(), Error> {
    let text = token.value.expose_secret();
    let var = token.var.clone().unwrap_or_else(|| "the token".into());
    let problem = if text.is_empty() {
        Some("is empty")
    } else if text.contains('|') {
        Some(
            "is an app token (`APP_ID|APP_SECRET`), not a user or system-user token: it cannot send WhatsApp messages, and it holds the app secret, so keep it out of this variable",
        )
    } else if text.starts_with("Bearer ") {
        Some("starts with `Bearer `: store the token alone, without the header's prefix")
    } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("holds spaces or line breaks inside it, so it was not copied whole")
    } else if !text.is_ascii() {
        Some(
            "holds characters that are not in Meta tokens (a typographic quote or an invisible character copied with it?)",
        )
    } else if text.starts_with(['"', '\'']) {
        Some("starts with a quote that the file's quoting did not remove")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::Invalid {
            var,
            origin: token.source.clone(),
            problem: problem.into(),
        }),
        // A key, a path or a JSON text read by mistake must not leave the machine in a URL.
        None if !token.value.has_meta_shape() => Err(Error::Malformed {
            place: match &token.var {
                Some(var) => format!("`{var}` in {}", token.source),
                None => token.source.to_string(),
            },
        }),
        None => Ok(()),
    }
}

/// The whole of a file holding secrets, at most [`MAX_FILE`] bytes of it; `what` names what it was
/// to be, for the error when it is larger.
fn read_file(path: &Path, what: &'static str) -> Result<Zeroizing<Vec<u8>>, Error> {
    permatoken_fs::read_secret(path, MAX_FILE).map_err(|e| match e {
        ReadError::TooLarge { cap } => Error::TooLarge {
            path: path.to_owned(),
            cap,
            what,
        },
        ReadError::Io(source) => Error::Read {
            path: path.to_owned(),
            source,
        },
        // `ReadError` may grow; whatever else it says is a failure to read the file.
        other => Error::Read {
            path: path.to_owned(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

fn read_env_file(path: &Path, warnings: &mut Vec<String>) -> Result<Layer, Error> {
    let bytes = read_file(path, "an env file")?;
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::NotUtf8File {
        path: path.to_owned(),
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    let env = permatoken_dotenv::parse(text).map_err(|source| Error::Parse {
        path: path.to_owned(),
        source,
    })?;
    for (key, lines) in env.duplicates() {
        let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
        warnings.push(format!(
            "`{key}` is set more than once in `{}` (lines {}); the last one is used",
            path.display(),
            lines.join(", ")
        ));
    }
    check_file_mode(path, warnings);
    Ok(Layer {
        source: Source::EnvFile(path.to_owned()),
        vars: env
            .entries()
            .map(|e| (e.key.to_owned(), Some(e.value.to_owned())))
            .collect(),
    })
}

#[cfg(unix)]
fn check_file_mode(path: &Path, warnings: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "`{}` holds secrets but other users may read it (mode {mode:o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
    }
}

#[cfg(not(unix))]
fn check_file_mode(_: &Path, _: &mut Vec<String>) {}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "EAAPERMATOKENTESTfromdotenv";
    const T2: &str = "EAAPERMATOKENTESTfromenvironment";

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn a_variable_that_is_not_utf8_is_named_never_shown_and_ignored_when_unused() {
        use std::os::unix::ffi::OsStringExt;
        let dir = tempfile::tempdir().unwrap();
        let request = Request {
            cwd: dir.path().to_owned(),
            ..Request::default()
        };
        let latin1 = |text: &str| OsString::from_vec([text.as_bytes(), b"\xe9tail"].concat());
        for var in [
            TOKEN_VAR,
            "WHATSAPP_ACCESS_TOKEN_BACKUP_2",
            APP_SECRET_VAR,
            APP_ID_VAR,
        ] {
            let environment = vec![
                (
                    OsString::from(TOKEN_VAR),
                    OsString::from("EAAPERMATOKENTESTxxxxxxxxxxxxxxxxxxxx"),
                ),
                (OsString::from(var), latin1("EAAPERMATOKENTESTcanary")),
            ];
            let err = resolve(&request, environment).unwrap_err();
            let shown = format!("{err} {err:?} {}", err.hint());
            assert!(matches!(err, Error::NotUtf8 { .. }), "{shown}");
            assert!(shown.contains(&format!("`{var}`")), "{shown}");
            assert!(!shown.contains("canary"), "{shown}");
        }
        let environment = vec![
            (
                OsString::from(TOKEN_VAR),
                OsString::from("EAAPERMATOKENTESTxxxxxxxxxxxxxxxxxxxx"),
            ),
            (OsString::from("UNRELATED"), latin1("x")),
            (
                OsString::from_vec(b"NAME_\xff".to_vec()),
                OsString::from("x"),
            ),
        ];
        assert!(resolve(&request, environment).unwrap().token.is_some());
    }

    #[test]
    fn a_file_that_is_not_utf8_names_its_line_never_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, b"# ok\nFACEBOOK_APP_ID=1234567890\nWHATSAPP_ACCESS_TOKEN=EAAPERMATOKENTEST\xe9canary\n").unwrap();
        let request = Request {
            cwd: dir.path().to_owned(),
            ..Request::default()
        };
        let err = resolve(&request, env(&[])).unwrap_err();
        let shown = format!("{err} {err:?} {}", err.hint());
        assert!(shown.contains("line 3"), "{shown}");
        assert!(!shown.contains("canary"), "{shown}");
        // The same bytes as a token file, read from a folder without a `.env`.
        let elsewhere = tempfile::tempdir().unwrap();
        let request = Request {
            token_file: Some(path),
            cwd: elsewhere.path().to_owned(),
            ..Request::default()
        };
        let err = resolve(&request, env(&[])).unwrap_err();
        let shown = format!("{err} {err:?} {}", err.hint());
        assert!(shown.contains("--token-file"), "{shown}");
        assert!(!shown.contains("canary"), "{shown}");
    }

    #[test]
    fn precedence_is_explicit_before_implicit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            format!(
                "{TOKEN_VAR}={T1}\n{APP_ID_VAR}=1234567890\n{BACKUP_VAR}_2=EAAPERMATOKENTESTb2\n"
            ),
        )
        .unwrap();
        let request = Request {
            cwd: dir.path().into(),
            ..Request::default()
        };
        let creds = resolve(
            &request,
            env(&[(TOKEN_VAR, T2), (BACKUP_VAR, "EAAPERMATOKENTESTb1")]),
        )
        .unwrap();
        let token = creds.token.unwrap();
        assert_eq!(token.value.expose_secret(), T2);
        assert_eq!(token.source, Source::Environment);
        assert_eq!(
            creds.app_id.unwrap().source,
            Source::EnvFile("./.env".into())
        );
        let backups: Vec<&str> = creds
            .backups
            .iter()
            .map(|b| b.value.expose_secret())
            .collect();
        assert_eq!(backups, ["EAAPERMATOKENTESTb1", "EAAPERMATOKENTESTb2"]);

        let file = dir.path().join("token");
        std::fs::write(&file, format!("{T1}\n")).unwrap();
        let request = Request {
            token_file: Some(file.clone()),
            cwd: dir.path().into(),
            ..Request::default()
        };
        let token = resolve(&request, env(&[(TOKEN_VAR, T2)]))
            .unwrap()
            .token
            .unwrap();
        assert_eq!(
            (token.value.expose_secret(), token.source),
            (T1, Source::TokenFile(file))
        );
    }

    #[test]
    fn an_explicit_env_file_shadows_dot_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            format!("{APP_ID_VAR}=1111111111\n"),
        )
        .unwrap();
        let other = dir.path().join("prod.env");
        std::fs::write(&other, format!("{TOKEN_VAR}={T1}\n")).unwrap();
        let request = Request {
            env_file: Some(other),
            cwd: dir.path().into(),
            ..Request::default()
        };
        let creds = resolve(&request, env(&[])).unwrap();
        assert!(creds.app_id.is_none());
        assert_eq!(creds.token.unwrap().value.expose_secret(), T1);
    }

    #[test]
    fn bad_values_are_named_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let request = Request {
            cwd: dir.path().into(),
            ..Request::default()
        };
        let err = resolve(&request, env(&[(TOKEN_VAR, "EAAPERMATOKENTEST half")])).unwrap_err();
        assert!(err.to_string().contains(TOKEN_VAR), "{err}");
        assert!(!err.to_string().contains("half"), "{err}");
        let err = resolve(&request, env(&[(TOKEN_VAR, "1234567890|PERMATOKENTEST")])).unwrap_err();
        assert!(err.to_string().contains("app token"), "{err}");
        assert!(!err.to_string().contains("PERMATOKENTEST"), "{err}");
        let err = resolve(&request, env(&[(APP_ID_VAR, "my-app")])).unwrap_err();
        assert!(err.hint().contains("Settings → Basic"), "{}", err.hint());
        let creds = resolve(&request, env(&[(APP_SECRET_VAR, "nothex")])).unwrap();
        assert_eq!(creds.warnings.len(), 1);
    }

    #[test]
    fn a_file_larger_than_any_env_or_token_file_is_refused_naming_it_and_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        // A real token line first: the file is refused for its size, whatever it holds.
        let mut big = format!("{TOKEN_VAR}={T1}\n").into_bytes();
        big.resize(MAX_FILE as usize + 1, b'#');
        std::fs::write(dir.path().join(".env"), &big).unwrap();
        std::fs::write(dir.path().join("token"), &big).unwrap();
        let implicit = Request {
            cwd: dir.path().into(),
            ..Request::default()
        };
        let explicit = Request {
            env_file: Some(dir.path().join(".env")),
            ..implicit.clone()
        };
        let token_file = Request {
            token_file: Some(dir.path().join("token")),
            cwd: dir.path().join("elsewhere"),
            ..Request::default()
        };
        for (request, name, what) in [
            (&implicit, ".env", "an env file"),
            (&explicit, ".env", "an env file"),
            (&token_file, "token", "a token file"),
        ] {
            let err = resolve(request, env(&[])).unwrap_err();
            assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!(
                    "`{}` is larger than 1 MiB: it is not {what}",
                    dir.path().join(name).display()
                )
            );
            assert!(err.hint().contains("check the path"), "{}", err.hint());
            assert!(!format!("{err:?}").contains("PERMATOKENTEST"));
        }
        // At the cap exactly, the file is read.
        std::fs::write(dir.path().join(".env"), &big[..MAX_FILE as usize]).unwrap();
        let creds = resolve(&implicit, env(&[])).unwrap();
        assert_eq!(creds.token.unwrap().value.expose_secret(), T1);
    }

    #[test]
    fn parse_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.env");
        std::fs::write(&file, "A=1\nB=\"open\n").unwrap();
        let request = Request {
            env_file: Some(file),
            cwd: dir.path().into(),
            ..Request::default()
        };
        let err = resolve(&request, env(&[])).unwrap_err();
        assert!(err.to_string().contains("line 2, column 3"), "{err}");
    }
}
