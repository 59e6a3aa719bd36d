//! One module a command; each parses what it was given, calls the library crates, and renders.

mod check;
mod common;
mod doctor;
mod renew;
mod sandbox;
mod scan;
mod watch;

use crate::cli::{Cli, Command};

pub(crate) use scan::fix as scan_fix;

/// An error that stops a command: what happened and what to do, rendered in one place.
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    /// 3 (could not tell / usage) unless the command says otherwise.
    pub(crate) code: u8,
    /// The stable code of the problem in the JSON's `error` (`token_malformed`), when it has one.
    pub(crate) error_code: Option<&'static str>,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()),
            code: 3,
            error_code: None,
        }
    }

    /// The failure of reading the credentials, with its stable code if it has one.
    pub(crate) fn of_config(e: &permatoken_config::Error) -> Self {
        Self {
            error_code: e.code(),
            ..Self::new(e.to_string(), e.hint())
        }
    }
}

impl Command {
    /// Whether the command was asked for one JSON object on standard output, and the `action` it
    /// names there (the renewal commands say which one ran).
    fn json_output(&self) -> Option<Option<&'static str>> {
        match self {
            Command::Check(args) => args.json.then_some(None),
            Command::Doctor(args) => args.json.then_some(None),
            Command::SendTest(args) => args.json.then_some(None),
            Command::Watch(args) => args.json.then_some(None),
            Command::Exchange(args) => args.write.json.then_some(Some("exchange")),
            Command::Refresh(args) => args.write.json.then_some(Some("refresh")),
            Command::Mint(args) => args.write.json.then_some(Some("mint")),
            // Scan's formats are its findings' (SARIF has its own shape); its errors go to stderr.
            Command::Scan(_)
            | Command::Sandbox(_)
            | Command::Completions { .. }
            | Command::ManPages { .. } => None,
        }
    }
}

/// Runs a command and returns its exit code.
///
/// The one way out for failures: the error and its hint on standard error, and, when the command was
/// asked for JSON, the one object scripts wait for on standard output, whatever the command.
pub(crate) async fn run(cli: Cli) -> u8 {
    let json = cli.command.json_output();
    let result = match cli.command {
        Command::Check(args) => check::run(args).await,
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Exchange(args) => renew::exchange(args).await,
        Command::Refresh(args) => renew::refresh(args).await,
        Command::Mint(args) => renew::mint(args).await,
        Command::Doctor(args) => doctor::doctor(args).await,
        Command::SendTest(args) => doctor::send_test(args).await,
        Command::Scan(args) => scan::run(args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "permatoken", &mut script);
            crate::render::stdout_bytes(&script);
            Ok(0)
        }
        Command::ManPages { dir } => man_pages(&dir),
    };
    result.unwrap_or_else(|failure| {
        if let Some(action) = json {
            crate::render::json_error(
                status_of(failure.code),
                action,
                failure.error_code,
                &failure.message,
                failure.hint.as_deref(),
            );
        }
        crate::render::error(&failure.message, failure.hint.as_deref());
        failure.code
    })
}

/// Writes the man pages of every command that `--help` lists into `dir` (`clap_mangen`).
fn man_pages(dir: &std::path::Path) -> Result<u8, Failure> {
    let cmd = <Cli as clap::CommandFactory>::command();
    std::fs::create_dir_all(dir)
        .and_then(|()| clap_mangen::generate_to(cmd, dir))
        .map_err(|e| {
            Failure::new(
                format!("cannot write the man pages into `{}`: {e}", dir.display()),
                "pass a folder you may write to",
            )
        })?;
    Ok(0)
}

/// The verdict an exit code stands for (DESIGN §4).
pub(crate) fn status_of(code: u8) -> permatoken_inspect::Status {
    use permatoken_inspect::Status;
    match code {
        0 => Status::Ok,
        1 => Status::Warning,
        2 => Status::Critical,
        _ => Status::Unknown,
    }
}
