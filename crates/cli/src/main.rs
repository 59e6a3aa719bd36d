//! The `permatoken` binary: argument definitions, rendering and exit codes. Commands are thin: parse,
//! call a library crate, render. This is the only place that exits the process.

mod cli;
mod commands;
mod render;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc, not glibc's malloc: `watch` at 100,000 tokens allocates and frees tens of megabytes
/// each round (a snapshot, the state's rows, a set's listing on the blocking pool), and glibc keeps
/// much of what was freed resident (per-thread arenas, and an mmap threshold that rises to the
/// largest block freed). Measured at 100,000 tokens, the same build: 358 MB peak resident with glibc,
/// 242 MB with mimalloc (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        render::internal_error(location.as_deref());
    }));
    if let Err((message, hint)) = cli::check_environment() {
        if let Some(action) = cli::json_requested(std::env::args_os().skip(1)) {
            let status = permatoken_inspect::Status::Unknown;
            render::json_error(status, action, None, &message, Some(&hint));
        }
        render::error(&message, Some(&hint));
        return ExitCode::from(3);
    }
    let cli = match cli::Cli::try_parse().and_then(|cli| cli.validate().map(|()| cli)) {
        Ok(cli) => cli,
        Err(e) => {
            let json = cli::json_requested(std::env::args_os().skip(1));
            return ExitCode::from(render::usage_error(&e, json));
        }
    };
    cli.global
        .apply(matches!(cli.command, cli::Command::Watch(_)));
    // `watch` runs on one thread (blocking work still goes to tokio's pool): its work is waiting on
    // the network and the store, and with its scheduler on this thread and checks and scrapes on
    // two workers, glibc's per-thread arenas held a 10,000-token fleet's memory two and a half
    // times over (BENCHMARKS.md, "Memory at 10,000 tokens").
    let mut builder = if matches!(cli.command, cli::Command::Watch(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            render::error(&format!("cannot start the async runtime: {e}"), None);
            return ExitCode::from(3);
        }
    };
    // The hook has said what it can; a panic is "could not tell" (3), not Rust's 101.
    let run = std::panic::AssertUnwindSafe(|| runtime.block_on(commands::run(cli)));
    ExitCode::from(std::panic::catch_unwind(run).unwrap_or(3))
}
