//! The files a valid configuration names, looked at now: for `watch --check-config`, which would
//! otherwise pass an `env_file` that does not exist, to be found hours later as `cannot_be_checked`.
//! Each file that is missing, is no file, or cannot be opened is a warning (a file may appear
//! before its first check, so it is not an error; `--strict` makes it one), as is a `backups`
//! variable its env file does not hold, and what a `[[token_set]]`'s walk reports now.
//!
//! Must never: put a file's content in a message (they hold tokens and secrets: only variable
//! names are looked for), or change anything it looks at.

use std::path::Path;

use super::{AppSource, Backups, Config, SecretFrom, Target, TokenSource};

/// The most bytes of an env file read for its variable names, as the daemon reads one.
const MAX_ENV_FILE: u64 = 1024 * 1024;

/// What cannot be read now among the files `config` names, one warning a problem.
pub fn unreadable_files(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut look = |what: &str, key: &str, path: &Path| {
        if let Err(why) = openable(path) {
            warnings.push(format!(
                "{what}: cannot read its `{key}` `{}`: {why}",
                path.display()
            ));
            false
        } else {
            true
        }
    };
    if let Some(path) = &config.state_password_file {
        look("the state", "state_password_file", path);
    }
    for route in &config.routes {
        let what = format!("alert route `{}`", route.name);
        if let Target::UrlFile(path) = &route.target {
            look(&what, "url_file", path);
        }
        if let Some(path) = &route.secret_file {
            look(&what, "secret_file", path);
        }
    }
    let mut missing_backups = Vec::new();
    for token in &config.tokens {
        let what = format!("token `{}`", token.name);
        let env_file = match &token.source {
            TokenSource::EnvFile { path, .. } => look(&what, "env_file", path).then_some(path),
            TokenSource::TokenFile { path } => {
                look(&what, "token_file", path);
                None
            }
            _ => None,
        };
        match &token.app {
            AppSource::Given {
                secret: Some(SecretFrom::File(path)),
                ..
            } => {
                look(&what, "app_secret_file", path);
            }
            AppSource::EnvFile(path) if !matches!(&token.source, TokenSource::EnvFile { path: p, .. } if p == path) =>
            {
                look(&what, "env_file", path);
            }
            _ => {}
        }
        if let (Some(path), Backups::Keys(keys)) = (env_file, &token.backups) {
            missing_backups.extend(absent_keys(path, keys).into_iter().map(|key| {
                format!(
                    "{what}: its backup `{key}` is not in `{}`, so it cannot take the token's place",
                    path.display()
                )
            }));
        }
    }
    warnings.extend(missing_backups);
    for set in &config.token_sets {
        let expansion = crate::sets::expand(set, &config.routes);
        for folder in &expansion.blocked {
            warnings.push(format!(
                "token set `{}`: cannot look into `{}`",
                set.name,
                folder.display()
            ));
        }
        for (token, problem) in expansion.problems {
            let about = token.map_or_else(
                || format!("token set `{}`", set.name),
                |t| format!("token `{t}`"),
            );
            warnings.push(format!("{about}: {problem}"));
        }
    }
    warnings
}

/// Whether `path` is a file this process may open for reading now.
fn openable(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied to this user".to_owned(),
        _ => e.to_string(),
    })?;
    match file.metadata() {
        Ok(meta) if meta.is_dir() => Err("it is a folder, not a file".to_owned()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// The `keys` the env file at `path` does not set (none when it cannot be read or parsed: the
/// check of the token says that).
fn absent_keys<'a>(path: &Path, keys: &'a [String]) -> Vec<&'a str> {
    let Ok(bytes) = permatoken_fs::read_secret(path, MAX_ENV_FILE) else {
        return Vec::new();
    };
    let Some(document) = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| permatoken_dotenv::parse(text).ok())
    else {
        return Vec::new();
    };
    keys.iter()
        .map(String::as_str)
        .filter(|key| document.get(key).is_none())
        .collect()
}
