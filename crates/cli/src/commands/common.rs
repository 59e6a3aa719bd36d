//! What several commands share: reading credentials, setting up the Graph client, the windows.

use std::io::{BufRead, IsTerminal, Read};

use jiff::SignedDuration;
use permatoken_config::{Credentials, Request};
use permatoken_fs::ReadError;
use permatoken_graph::{Client, Config};
use permatoken_inspect::{AppCredentials, Thresholds};
use permatoken_secret::AccessToken;

use super::Failure;
use crate::cli::{GraphArgs, SourceArgs, WindowArgs};

pub(crate) fn thresholds(windows: &WindowArgs) -> Thresholds {
    Thresholds {
        warn: SignedDuration::from_hours(i64::from(windows.warn_days) * 24),
        crit: SignedDuration::from_hours(i64::from(windows.crit_days) * 24),
    }
}

pub(crate) fn graph_config(graph: &GraphArgs) -> Result<Config, Failure> {
    let mut config = Config::new(graph.graph_url.clone());
    config.version = graph.graph_version.clone();
    config.proxy = permatoken_graph::ProxyConfig::from_vars(std::env::vars_os());
    if let Some(path) = &graph.ca_file {
        let pem = permatoken_fs::read_capped(path, MAX_CA_FILE).map_err(|e| {
            let why = match e {
                ReadError::Io(e) => e.to_string(),
                // "it is larger than 1 MiB"
                e => format!("{e}, more than any bundle of CA certificates"),
            };
            Failure::new(
                format!("cannot read the CA file `{}`: {why}", path.display()),
                "--ca-file takes a PEM file of CA certificates to trust beside the system's",
            )
        })?;
        config.extra_roots_pem = Some(pem);
    }
    Ok(config)
}

/// The most bytes of a `--ca-file`: a PEM bundle of the public roots, ~150 of them, is ~220 KiB.
const MAX_CA_FILE: u64 = 1 << 20;

pub(crate) fn client(config: Config) -> Result<Client, Failure> {
    Client::new(config).map_err(|e| {
        Failure::new(
            e.to_string(),
            "see --help for --graph-url, --graph-version and --ca-file",
        )
    })
}

pub(crate) fn app_of(credentials: &Credentials) -> AppCredentials {
    AppCredentials {
        app_id: credentials.app_id.as_ref().map(|s| s.value.clone()),
        app_secret: credentials.app_secret.as_ref().map(|s| s.value.clone()),
    }
}

/// The token on standard input: a line typed or pasted at a terminal, or all of a pipe, at most
/// [`permatoken_config::MAX_FILE`] (a token is a few hundred bytes: a log or `/dev/zero` piped in by
/// mistake costs the cap, not the machine's memory).
fn read_token_stdin() -> Result<AccessToken, Failure> {
    let hint = "pipe the token in: `permatoken check --token-stdin < token.txt`";
    let failed = |e: std::io::Error| {
        Failure::new(
            format!("cannot read the token from standard input: {e}"),
            hint,
        )
    };
    let stdin = std::io::stdin();
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    if stdin.is_terminal() {
        // Typed or pasted by a person: the line ends it (a pipe ends at end of input).
        eprintln!("Paste the token and press Enter (it is shown nowhere else):");
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(failed)?;
        return Ok(AccessToken::new(line));
    }
    let cap = permatoken_config::MAX_FILE;
    stdin
        .lock()
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > cap {
        return Err(Failure::new(
            format!(
                "standard input holds more than {}: it is not a token",
                permatoken_fs::human_bytes(cap)
            ),
            hint,
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        Failure::new(
            "the token on standard input is not UTF-8 text",
            "a Meta token is plain ASCII: copy it again, whole, from where it was generated",
        )
    })?;
    Ok(AccessToken::new(text))
}

pub(crate) fn read_credentials(source: &SourceArgs) -> Result<Credentials, Failure> {
    let token_stdin = if source.token_stdin {
        Some(read_token_stdin()?)
    } else {
        None
    };
    let request = Request {
        token_file: source.token_file.clone(),
        token_stdin,
        env_file: source.env_file.clone(),
        cwd: std::env::current_dir().unwrap_or_else(|_| ".".into()),
    };
    let credentials = permatoken_config::resolve(&request, std::env::vars_os())
        .map_err(|e| Failure::of_config(&e))?;
    for warning in &credentials.warnings {
        crate::render::warning(warning);
    }
    Ok(credentials)
}

/// Starts the built-in sandbox on this runtime, for `--sandbox`.
pub(crate) async fn start_sandbox() -> Result<permatoken_sandbox::Running, Failure> {
    permatoken_sandbox::Sandbox::start(&permatoken_sandbox::Options::default())
        .await
        .map_err(|e| {
            Failure::new(
                format!("cannot start the built-in sandbox: {e}"),
                "it listens on a free port of 127.0.0.1; check that loopback networking works",
            )
        })
}
