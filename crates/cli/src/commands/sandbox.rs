//! `permatoken sandbox`: run the Graph API emulator until Ctrl-C or SIGTERM.
//!
//! The one command that prints tokens: the sandbox's own fake ones, made at start.

use std::io::Write;

use permatoken_sandbox::{Faults, Options, SCENARIOS, Sandbox};

use super::Failure;
use crate::cli::SandboxArgs;

pub(crate) async fn run(args: SandboxArgs) -> Result<u8, Failure> {
    let options = Options {
        port: args.port,
        require_proof: args.require_proof,
        faults: Faults {
            latency_ms: args.latency_ms,
            server_errors: args.server_errors,
            rate_limits: args.rate_limits,
            regain_minutes: args.regain_minutes,
            truncate: args.truncate,
            ..Faults::default()
        },
        tls: args.tls,
        extra_tokens: usize::try_from(args.extra_tokens).unwrap_or(usize::MAX),
    };
    let running = Sandbox::start(&options).await.map_err(|e| {
        Failure::new(
            format!("cannot listen on 127.0.0.1:{}: {e}", args.port),
            "pick another --port, or leave it out to take any free one",
        )
    })?;
    if let Some(path) = &args.extra_tokens_json {
        running.write_extra_tokens(path).map_err(|e| {
            Failure::new(
                format!(
                    "cannot write the extra tokens to `{}`: {e}",
                    path.display()
                ),
                "--extra-tokens-json takes a file that does not exist yet, in a folder you may write to",
            )
        })?;
    }
    let stopped = shutdown_signal();
    let url = running.url();
    let ca_file = match running.ca_pem() {
        Some(_) => Some(running.write_ca(args.ca_out.as_deref()).map_err(|e| {
            let place = args.ca_out.as_deref().map_or_else(
                || "a new folder of the temporary folder".to_owned(),
                |p| format!("`{}`", p.display()),
            );
            Failure::new(
                format!("cannot write the sandbox's CA certificate to {place}: {e}"),
                "--ca-out takes a file that does not exist yet, in a folder you may write to",
            )
        })?),
        None => None,
    };
    let mut out = anstream::stdout().lock();
    let _ = writeln!(
        out,
        "permatoken sandbox: a Graph API emulator on {url} (fake app and tokens, made now)\n"
    );
    let _ = writeln!(out, "Point permatoken at it:");
    let _ = writeln!(out, "  export PERMATOKEN_GRAPH_URL={url}");
    let _ = writeln!(out, "  export FACEBOOK_APP_ID={}", running.app().id);
    let _ = writeln!(
        out,
        "  export FACEBOOK_APP_SECRET={}",
        running.app_secret().expose_secret()
    );
    let _ = writeln!(
        out,
        "  export WHATSAPP_BUSINESS_ACCOUNT_ID={}",
        permatoken_sandbox::ACCOUNTS[0].id
    );
    let _ = writeln!(
        out,
        "  export WHATSAPP_PHONE_NUMBER_ID={}",
        permatoken_sandbox::PHONES[0].id
    );
    let _ = writeln!(out, "  export WHATSAPP_ACCESS_TOKEN=<a token below>");
    let _ = writeln!(
        out,
        "  (the system user for `permatoken mint --system-user`: {})",
        running.system_user_id()
    );
    if let Some(path) = &ca_file {
        let _ = writeln!(
            out,
            "  permatoken check --ca-file {}   # trusts the CA made for this run",
            path.display()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Scenario tokens:");
    for scenario in SCENARIOS {
        if let Some(token) = running.token(scenario.name) {
            let _ = writeln!(out, "  {:<24}{}", scenario.name, scenario.about);
            let _ = writeln!(out, "    {}", token.expose_secret());
        }
    }
    if args.extra_tokens > 0 {
        let _ = match &args.extra_tokens_json {
            Some(path) => writeln!(
                out,
                "\n{} extra tokens (never-expiring system-user tokens) written to {}",
                args.extra_tokens,
                path.display()
            ),
            None => writeln!(
                out,
                "\n{} extra tokens (never-expiring system-user tokens): not printed; --extra-tokens-json FILE writes them",
                args.extra_tokens
            ),
        };
    }
    let admin = format!(
        "{}: {}",
        permatoken_sandbox::ADMIN_HEADER,
        running.admin_secret()
    );
    let _ = writeln!(
        out,
        "\nAdmin API (only with the header `{admin}`):\n  curl -H '{admin}' {url}/_sandbox/requests\n  POST {url}/_sandbox/faults {{\"latency_ms\":100,\"server_errors\":1,\"rate_limits\":1,\"regain_minutes\":5,\"truncate\":1}}\n  POST {url}/_sandbox/faults {{\"throttle_secs\":30,\"throttle_grow_ms\":100}}   GET {url}/_sandbox/throttle\n  POST {url}/_sandbox/clock {{\"advance_seconds\":86400}}   GET {url}/_sandbox/scenarios\nCtrl-C stops it."
    );
    let _ = out.flush();
    drop(out);
    stopped.await;
    // The folder made for this run's CA goes with the run; a file the user named stays.
    if let (Some(path), None) = (&ca_file, &args.ca_out) {
        let _ = std::fs::remove_file(path);
        if let Some(folder) = path.parent() {
            let _ = std::fs::remove_dir(folder);
        }
    }
    Ok(0)
}

/// Registers for Ctrl-C and SIGTERM at once, and returns what ends at the first of them. Registered
/// before the banner says the sandbox is up: a signal sent right after it must still clean up.
pub(super) fn shutdown_signal() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            return Box::pin(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
        }
    }
    Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
