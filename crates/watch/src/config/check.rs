//! The file as read made a [`Config`]: names, sources, app credentials, backups, routes and sets
//! checked table by table, each mistake at its line and column with what is allowed there. The
//! policy keys were read and checked by the key table; here each token's and set's are merged over
//! `[defaults]` ([`keys::merge`]).
//!
//! Must never: read a file named in the configuration (it may appear later), or put a route's URL
//! or a header's value in a message.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::keys::{self, Least, Settings};
use super::read::{RawConfig, RawRoute, RawToken, RawTokenSet, Table, nearest};
use super::{
    AppSource, Backups, Config, DEFAULT_KEY, Loaded, Policy, Problem, Route, RouteKind, SecretFrom,
    SecretText, SecretUrl, StateLocation, Target, TokenConfig, TokenSet, TokenSource,
    frequent_checks_warnings, plain_http_warning,
};

/// Checks `raw`, read from the file at `path`.
pub(super) fn check(raw: RawConfig, path: &Path) -> Result<Loaded, Problem> {
    let mut checker = Checker {
        folder: path.parent().unwrap_or(Path::new("/")).to_owned(),
        warnings: Vec::new(),
    };
    let listen = raw.listen.as_ref().map(listen).transpose()?;
    let state = raw.state.map(|s| checker.state(&s)).transpose()?;
    let state_password_file = raw
        .state_password_file
        .map(|s| checker.path(&s))
        .transpose()?;
    let defaults = match &raw.defaults {
        Some(d) => keys::merge(&keys::builtin(), d.get_ref(), d.span())?,
        None => keys::builtin(),
    };
    let routes = checker.routes(raw.routes)?;
    let tokens = checker.tokens(raw.tokens, &defaults, &routes)?;
    let token_sets = checker.token_sets(raw.token_sets, &defaults, &tokens, &routes)?;
    checker
        .warnings
        .extend(frequent_checks_warnings(&tokens, &token_sets));
    Ok(Loaded {
        config: Config {
            path: Some(path.to_owned()),
            listen,
            state,
            state_password_file,
            defaults: defaults.policy,
            tokens,
            routes,
            token_sets,
            max_concurrent_reloads: defaults.max_concurrent_reloads,
            retention: defaults.retention,
            batch_checks: defaults.batch_checks,
        },
        warnings: checker.warnings,
    })
}

struct Checker {
    /// The configuration file's folder, against which relative paths are resolved.
    folder: PathBuf,
    warnings: Vec<String>,
}

impl Checker {
    fn path(&self, value: &Spanned<String>) -> Result<PathBuf, Problem> {
        let text = value.get_ref();
        if text.trim().is_empty() {
            return Err(Problem::new(value.span(), "the path is empty"));
        }
        let path = Path::new(text);
        Ok(if path.is_absolute() {
            path.to_owned()
        } else {
            self.folder.join(path)
        })
    }

    fn state(&self, value: &Spanned<String>) -> Result<StateLocation, Problem> {
        match StateLocation::parse(value.get_ref(), Path::new("")) {
            StateLocation::File(_) => self.path(value).map(StateLocation::File),
            url => Ok(url),
        }
    }

    fn routes(&mut self, raw: Vec<Spanned<RawRoute>>) -> Result<Vec<Route>, Problem> {
        let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
        for route in raw {
            let raw = route.into_inner();
            let name = name("route", &raw.name)?;
            if routes.iter().any(|known| known.name == name) {
                return Err(Problem::new(
                    raw.name.span(),
                    format!("a second route is named `{name}`; route names must be unique"),
                ));
            }
            routes.push(self.route(name, raw)?);
        }
        Ok(routes)
    }

    fn tokens(
        &self,
        raw: Vec<Spanned<Table<RawToken>>>,
        defaults: &Settings,
        routes: &[Route],
    ) -> Result<Vec<TokenConfig>, Problem> {
        let mut tokens = Vec::with_capacity(raw.len());
        let mut names = HashSet::with_capacity(raw.len());
        for table in raw {
            let span = table.span();
            let Table { own, policy } = table.into_inner();
            let name = name("token", &own.name)?;
            if !names.insert(name.clone()) {
                return Err(Problem::new(
                    own.name.span(),
                    format!("a second token is named `{name}`; token names must be unique"),
                ));
            }
            let policy = keys::merge(defaults, &policy, span)?.policy;
            tokens.push(self.token(name, own, policy, routes)?);
        }
        Ok(tokens)
    }

    /// One token, `name` checked, `policy` merged: what is left are its own keys.
    fn token(
        &self,
        name: String,
        raw: RawToken,
        policy: Policy,
        routes: &[Route],
    ) -> Result<TokenConfig, Problem> {
        if let Some(secret) = &raw.app_secret {
            return Err(Problem::new(
                secret.span(),
                format!(
                    "token `{name}`: the app secret is never written in the configuration; leave it in the token's env file as `FACEBOOK_APP_SECRET`, or set `app_id` and `app_secret_file` (a file holding the secret only) or `app_secret_env` (a variable's name)"
                ),
            ));
        }
        let source = self.source(&name, &raw)?;
        let app = self.app(&name, &raw, &source)?;
        let backups = backups(&name, raw.backups, &source)?;
        let alerts = alerts(&name, &raw.alerts, routes)?;
        Ok(TokenConfig {
            name,
            source,
            app,
            policy: policy.into(),
            backups,
            reload: raw.reload.filter(|r| !r.trim().is_empty()),
            alerts: alerts.into(),
            set: None,
        })
    }

    /// Exactly one of `env_file` (with `key`), `token_file` and `env`.
    fn source(&self, name: &str, raw: &RawToken) -> Result<TokenSource, Problem> {
        let given: Vec<&Spanned<String>> = [&raw.env_file, &raw.token_file, &raw.env]
            .into_iter()
            .flatten()
            .collect();
        if let Some(second) = given.get(1) {
            return Err(Problem::new(
                second.span(),
                format!(
                    "token `{name}` has more than one source; keep exactly one of `env_file`, `token_file` and `env`"
                ),
            ));
        }
        let source = match (&raw.env_file, &raw.token_file, &raw.env) {
            (Some(file), _, _) => TokenSource::EnvFile {
                path: self.path(file)?,
                key: match &raw.key {
                    Some(k) => variable("key", k)?,
                    None => DEFAULT_KEY.into(),
                },
            },
            (None, Some(file), _) => TokenSource::TokenFile {
                path: self.path(file)?,
            },
            (None, None, Some(var)) => TokenSource::Environment {
                variable: variable("env", var)?,
            },
            (None, None, None) => {
                return Err(Problem::new(
                    raw.name.span(),
                    format!(
                        "token `{name}` has no source; set one of `env_file` (a .env file, with `key`), `token_file` (a file holding the token only) or `env` (a variable of the environment)"
                    ),
                ));
            }
        };
        if let (Some(key), TokenSource::TokenFile { .. } | TokenSource::Environment { .. }) =
            (&raw.key, &source)
        {
            return Err(Problem::new(
                key.span(),
                format!(
                    "token `{name}`: `key` names the variable of an `env_file`; with `token_file` or `env` leave it out"
                ),
            ));
        }
        Ok(source)
    }

    /// `app_id` with `app_secret_file` or `app_secret_env` (or neither), else beside the token.
    fn app(&self, name: &str, raw: &RawToken, source: &TokenSource) -> Result<AppSource, Problem> {
        let id = match (&raw.app_id, &raw.app_secret_file, &raw.app_secret_env) {
            (_, Some(_), Some(env)) => {
                return Err(Problem::new(
                    env.span(),
                    format!(
                        "token `{name}`: set either `app_secret_file` or `app_secret_env`, not both"
                    ),
                ));
            }
            (None, Some(s), None) | (None, None, Some(s)) => {
                return Err(Problem::new(
                    s.span(),
                    format!(
                        "token `{name}`: the app secret needs its app: set `app_id` too (the number at the top of App Dashboard → Settings → Basic)"
                    ),
                ));
            }
            (Some(id), _, _) => id,
            (None, None, None) => {
                return Ok(match source {
                    TokenSource::EnvFile { path, .. } => AppSource::EnvFile(path.clone()),
                    _ => AppSource::Environment,
                });
            }
        };
        let app_id = id.get_ref().trim();
        if app_id.is_empty() || !app_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Problem::new(
                id.span(),
                "`app_id` is a number (App Dashboard → Settings → Basic); write it as a string: app_id = \"1234567890\"",
            ));
        }
        let secret = match (&raw.app_secret_file, &raw.app_secret_env) {
            (Some(file), _) => Some(SecretFrom::File(self.path(file)?)),
            (None, Some(env)) => Some(SecretFrom::Env(variable("app_secret_env", env)?)),
            (None, None) => None,
        };
        Ok(AppSource::Given {
            app_id: app_id.to_owned(),
            secret,
        })
    }

    fn token_sets(
        &self,
        raw: Vec<Spanned<Table<RawTokenSet>>>,
        defaults: &Settings,
        tokens: &[TokenConfig],
        routes: &[Route],
    ) -> Result<Vec<TokenSet>, Problem> {
        let mut sets: Vec<TokenSet> = Vec::with_capacity(raw.len());
        for table in raw {
            let written = &table.get_ref().own.name;
            let name = name("token set", written)?;
            if tokens.iter().any(|t| t.name == name) || sets.iter().any(|s| s.name == name) {
                return Err(Problem::new(
                    written.span(),
                    format!(
                        "a token or token set is already named `{name}`; token and set names must be unique"
                    ),
                ));
            }
            let prefixed = |t: &&TokenConfig| {
                t.name
                    .strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
            };
            if let Some(clash) = tokens.iter().find(prefixed) {
                return Err(Problem::new(
                    written.span(),
                    format!(
                        "token set `{name}` names its tokens `{name}/…`, and token `{}` is named so too; rename one of them",
                        clash.name
                    ),
                ));
            }
            sets.push(self.token_set(name, table, defaults, routes)?);
        }
        Ok(sets)
    }

    /// One set, `name` checked and unique: its pattern, its route variable, and the token each
    /// file makes.
    fn token_set(
        &self,
        name: String,
        table: Spanned<Table<RawTokenSet>>,
        defaults: &Settings,
        routes: &[Route],
    ) -> Result<TokenSet, Problem> {
        let span = table.span();
        let Table { own: raw, policy } = table.into_inner();
        if name.contains('/') {
            return Err(Problem::new(
                raw.name.span(),
                format!(
                    "token set `{name}`: a set's name has no `/` (its tokens are named `<set>/<what * matched>`)"
                ),
            ));
        }
        let pattern = self.pattern(&name, &raw)?;
        if let Some(key) = &raw.alert_route_key {
            if raw.env_files.is_none() {
                return Err(Problem::new(
                    key.span(),
                    format!(
                        "token set `{name}`: `alert_route_key` names a variable of each env file; it needs `env_files`"
                    ),
                ));
            }
            variable("alert_route_key", key)?;
        }
        let settings = keys::merge(defaults, &policy, span)?;
        let alert_route_key = raw.alert_route_key.clone().map(Spanned::into_inner);
        let mut template = self.token(name.clone(), raw.into_token(), settings.policy, routes)?;
        template.set = Some(name.as_str().into());
        Ok(TokenSet {
            name,
            pattern,
            template,
            alert_route_key,
            max_concurrent_reloads: settings.max_concurrent_reloads,
        })
    }

    /// `env_files` or `token_files`: an absolute pattern with a `*` and no `**`.
    fn pattern(&self, name: &str, raw: &RawTokenSet) -> Result<PathBuf, Problem> {
        let written = match (&raw.env_files, &raw.token_files) {
            (Some(_), Some(second)) => {
                return Err(Problem::new(
                    second.span(),
                    format!(
                        "token set `{name}`: set either `env_files` or `token_files`, not both"
                    ),
                ));
            }
            (Some(p), None) | (None, Some(p)) => p,
            (None, None) => {
                return Err(Problem::new(
                    raw.name.span(),
                    format!(
                        "token set `{name}` has no files; set `env_files` (like \"/srv/clients/*/.env\") or `token_files` (files holding the token only)"
                    ),
                ));
            }
        };
        let path = self.path(written)?;
        let segments: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let refuse = |why: &str| {
            Err(Problem::new(
                written.span(),
                format!("token set `{name}`: {why}"),
            ))
        };
        if segments.iter().any(|s| s.contains("**")) {
            return refuse(
                "`**` is not supported; a `*` matches within one folder or file name, like \"/srv/clients/*/.env\"",
            );
        }
        if !segments.iter().any(|s| s.contains('*')) {
            return refuse(
                "the pattern has no `*`; each token is named by what the wildcards match, like \"/srv/clients/*/.env\" (for one file, use [[token]])",
            );
        }
        Ok(path)
    }

    /// One route, `name` checked and unique.
    fn route(&mut self, name: String, raw: RawRoute) -> Result<Route, Problem> {
        let kind = route_kind(&name, &raw.kind)?;
        let target = match kind {
            RouteKind::Command => command(&name, &raw)?,
            RouteKind::Webhook | RouteKind::Slack | RouteKind::Alertmanager => {
                self.url(&name, kind, &raw)?
            }
        };
        if kind == RouteKind::Command
            && let Some(h) = &raw.headers
        {
            return Err(Problem::new(
                h.span(),
                format!(
                    "route `{name}` is a command; `headers` belong to webhook, slack and alertmanager routes"
                ),
            ));
        }
        let headers = headers(&name, raw.headers)?;
        let secret_file = raw.secret_file.as_ref().map(|s| self.path(s)).transpose()?;
        if kind == RouteKind::Command
            && let Some(s) = &raw.secret_file
        {
            return Err(Problem::new(
                s.span(),
                format!(
                    "route `{name}` is a command; `secret_file` signs HTTP bodies of webhook, slack and alertmanager routes"
                ),
            ));
        }
        let timeout = match &raw.timeout {
            Some(t) => keys::duration("timeout", t, Least::Positive)?,
            None => crate::alert::DEFAULT_TIMEOUT,
        };
        Ok(Route {
            name,
            kind,
            target,
            secret_file,
            headers,
            timeout,
        })
    }

    /// A webhook's or Slack's `url` or `url_file`; a plain `http://` URL is allowed, with a warning.
    fn url(&mut self, name: &str, kind: RouteKind, raw: &RawRoute) -> Result<Target, Problem> {
        match (&raw.url, &raw.url_file, &raw.command) {
            (_, _, Some(c)) => Err(Problem::new(
                c.span(),
                format!(
                    "route `{name}` is a {}; `command` belongs to kind = \"command\"",
                    kind.as_str()
                ),
            )),
            (Some(_), Some(file), None) => Err(Problem::new(
                file.span(),
                format!("route `{name}`: set either `url` or `url_file`, not both"),
            )),
            (Some(url), None, None) => {
                let parsed = SecretUrl::parse(url.get_ref()).map_err(|e| {
                    Problem::new(
                        url.span(),
                        format!("route `{name}`: the `url` is not usable: {e}"),
                    )
                })?;
                if parsed.is_plain_http() {
                    self.warnings.push(plain_http_warning(name, &parsed));
                }
                Ok(Target::Url(parsed))
            }
            (None, Some(file), None) => Ok(Target::UrlFile(self.path(file)?)),
            (None, None, None) => Err(Problem::new(
                raw.kind.span(),
                format!(
                    "route `{name}` needs `url`, or `url_file` (a file holding the URL only, which keeps it out of this file)"
                ),
            )),
        }
    }
}

/// A name the page, alerts and metrics show: not empty, at most 100 characters, no control
/// characters, and no spaces around it. `name = "orders "` would read as `orders` everywhere it
/// is shown and compare as another name everywhere it is looked up, so it is refused rather than
/// trimmed behind the writer's back.
fn name(what: &str, written: &Spanned<String>) -> Result<String, Problem> {
    let text = written.get_ref();
    let name = text.trim();
    let problem = |message: String| Problem::new(written.span(), message);
    if name.is_empty() {
        return Err(problem(
            "the name is empty; give it one, like name = \"orders\"".into(),
        ));
    }
    if name.len() > 100 || name.chars().any(char::is_control) {
        return Err(problem(
            "a name is at most 100 characters, without control characters".into(),
        ));
    }
    if name != text {
        // Only the trimmed ends may hold control characters (a tab, a newline): shown escaped.
        let shown: String = text
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        return Err(problem(format!(
            "the {what} name `{shown}` has spaces around it; write `{name}`"
        )));
    }
    Ok(name.to_owned())
}

fn listen(value: &Spanned<String>) -> Result<crate::listen::Listen, Problem> {
    value
        .get_ref()
        .parse()
        .map_err(|e: crate::listen::BadListen| Problem::new(value.span(), format!("`listen`: {e}")))
}

/// The value of `key`, a variable's name.
fn variable(key: &str, value: &Spanned<String>) -> Result<String, Problem> {
    let name = value.get_ref();
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(name.clone())
    } else {
        Err(Problem::new(
            value.span(),
            format!(
                "`{key}`: `{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"
            ),
        ))
    }
}

/// `backups`: variables of the token's env file; only a token with `env_file` has them.
fn backups(
    name: &str,
    raw: Option<Vec<Spanned<String>>>,
    source: &TokenSource,
) -> Result<Backups, Problem> {
    let Some(keys) = raw else {
        return Ok(Backups::Series);
    };
    if !matches!(source, TokenSource::EnvFile { .. })
        && let Some(first) = keys.first()
    {
        return Err(Problem::new(
            first.span(),
            format!(
                "token `{name}`: `backups` are variables of its env file; only a token with `env_file` has backups"
            ),
        ));
    }
    let keys = keys
        .iter()
        .map(|k| variable("backups", k))
        .collect::<Result<_, _>>()?;
    Ok(Backups::Keys(keys))
}

/// `alerts`: each the name of an `[[alert]]`.
fn alerts(name: &str, raw: &[Spanned<String>], routes: &[Route]) -> Result<Vec<String>, Problem> {
    let known: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    raw.iter()
        .map(|a| {
            let wanted = a.get_ref();
            if known.contains(&wanted.as_str()) {
                return Ok(wanted.clone());
            }
            let mut message = format!(
                "token `{name}` sends alerts to `{wanted}`, and no `[[alert]]` has that name"
            );
            if known.is_empty() {
                message.push_str("; add an [[alert]] with name = \"…\"");
            } else {
                message.push_str(&format!("; routes: `{}`", known.join("`, `")));
                if let Some(near) = nearest(wanted, &known) {
                    message.push_str(&format!("; did you mean `{near}`?"));
                }
            }
            Err(Problem::new(a.span(), message))
        })
        .collect()
}

fn route_kind(name: &str, kind: &Spanned<String>) -> Result<RouteKind, Problem> {
    const KINDS: [&str; 4] = ["webhook", "slack", "command", "alertmanager"];
    match kind.get_ref().as_str() {
        "webhook" => Ok(RouteKind::Webhook),
        "slack" => Ok(RouteKind::Slack),
        "command" => Ok(RouteKind::Command),
        "alertmanager" => Ok(RouteKind::Alertmanager),
        other => {
            let mut message = format!(
                "route `{name}`: unknown kind `{other}`; allowed: `webhook`, `slack`, `command`, `alertmanager`"
            );
            if let Some(near) = nearest(other, &KINDS) {
                message.push_str(&format!("; did you mean `{near}`?"));
            }
            Err(Problem::new(kind.span(), message))
        }
    }
}

/// A command route's `command`: not empty, and neither `url` nor `url_file`.
fn command(name: &str, raw: &RawRoute) -> Result<Target, Problem> {
    if let Some(extra) = raw.url.as_ref().or(raw.url_file.as_ref()) {
        return Err(Problem::new(
            extra.span(),
            format!("route `{name}` is a command; it takes `command`, not `url` or `url_file`"),
        ));
    }
    match &raw.command {
        Some(c) if !c.get_ref().trim().is_empty() => Ok(Target::Command(c.get_ref().clone())),
        Some(c) => Err(Problem::new(
            c.span(),
            format!("route `{name}`: the command is empty"),
        )),
        None => Err(Problem::new(
            raw.kind.span(),
            format!(
                "route `{name}` is a command and needs `command`, run with `sh -c` with the alert JSON on its standard input"
            ),
        )),
    }
}

/// Extra headers of a webhook or Slack route: strings, valid in HTTP, none that permatoken sets.
/// A value may be a secret: no message shows one.
fn headers(
    name: &str,
    raw: Option<Spanned<toml::Table>>,
) -> Result<Vec<(String, SecretText)>, Problem> {
    let Some(table) = raw else {
        return Ok(Vec::new());
    };
    let span = table.span();
    let refuse = |message: String| Err(Problem::new(span.clone(), message));
    let mut headers = Vec::new();
    for (key, value) in table.into_inner() {
        let toml::Value::String(value) = value else {
            return refuse(format!("route `{name}`: header `{key}` must be a string"));
        };
        if reqwest::header::HeaderName::from_bytes(key.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(&value).is_err()
        {
            return refuse(format!(
                "route `{name}`: header `{key}` is not a valid HTTP header name and value"
            ));
        }
        let lower = key.to_ascii_lowercase();
        if ["content-type", "content-length", "host"].contains(&lower.as_str())
            || lower == crate::alert::SIGNATURE_HEADER.to_ascii_lowercase()
        {
            return refuse(format!(
                "route `{name}`: header `{key}` is set by permatoken itself"
            ));
        }
        headers.push((key, SecretText::new(value)));
    }
    Ok(headers)
}
