//! One module a command; each parses what it was given, calls the library crates, and renders.

mod check;
mod common;
mod doctor;
mod renew;
mod sandbox;
mod scan;

use crate::cli::{Cli, Command};

pub(crate) use scan::fix as scan_fix;

/// An error that stops a command: what happened and what to do, rendered in one place.
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    /// 3 (could not tell / usage) unless the command says otherwise.
    pub(crate) code: u8,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()),
            code: 3,
        }
    }
}

/// Runs a command and returns its exit code.
pub(crate) async fn run(cli: Cli) -> u8 {
    let result = match cli.command {
        Command::Check(args) => check::run(args).await,
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Exchange(args) => renew::exchange(args).await,
        Command::Refresh(args) => renew::refresh(args).await,
        Command::Mint(args) => renew::mint(args).await,
        Command::Doctor(args) => doctor::doctor(args).await,
        Command::SendTest(args) => doctor::send_test(args).await,
        Command::Scan(args) => scan::run(args).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "permatoken", &mut std::io::stdout());
            Ok(0)
        }
    };
    result.unwrap_or_else(|failure| {
        crate::render::error(&failure.message, failure.hint.as_deref());
        failure.code
    })
}
