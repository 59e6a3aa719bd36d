//! The `permatoken` binary: argument definitions, rendering and exit codes. Commands are thin: parse,
//! call a library crate, render. This is the only place that exits the process.

mod cli;
mod commands;
mod render;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are successes; any other usage error is "could not tell" (DESIGN §4),
            // not clap's default 2, which means "critical" here.
            return ExitCode::from(if e.use_stderr() { 3 } else { 0 });
        }
    };
    cli.global.apply();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            render::error(&format!("cannot start the async runtime: {e}"), None);
            return ExitCode::from(3);
        }
    };
    let code = runtime.block_on(commands::run(cli));
    ExitCode::from(code)
}
