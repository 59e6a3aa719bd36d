//! A rough figure, not a test: the time to inspect N extra sandbox tokens with `/debug_token` batched
//! (50 per POST) versus one call per token, one after the other, with the sandbox answering after
//! `LATENCY_MS` (default 0) milliseconds.
//!
//! `bench/batch.sh` (or `cargo run -p permatoken --example batch_vs_single --release -- 1000 100`).
//! It lives with the binary, which depends on both the client and the sandbox, because the client
//! must not know the emulator it is checked against (DESIGN §6).

use std::time::{Duration, Instant};

use permatoken_graph::{Budget, Caller, Client, Config};
use permatoken_sandbox::{Faults, Options, Sandbox};
use permatoken_secret::AppToken;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let latency_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let sandbox = Sandbox::start_background(&Options {
        extra_tokens: n,
        faults: Faults {
            latency_ms,
            ..Faults::default()
        },
        ..Options::default()
    })
    .expect("a sandbox");
    let app = AppToken::new(sandbox.app().id.to_string(), sandbox.app_secret().clone());
    let mut config = Config::new(sandbox.url());
    config.app_secret = Some(sandbox.app_secret().clone());
    let client = Client::new(config).expect("a client");
    let tokens = sandbox.extra_tokens();
    let budget = Budget::new(Duration::from_secs(3600));

    let started = Instant::now();
    let outcome = client
        .debug_token_batch(&app, &tokens, &budget)
        .await
        .expect("the batch runs");
    let batched = started.elapsed();
    let valid = outcome.results.iter().filter(|r| r.is_ok()).count();
    let requests = sandbox.requests().iter().filter(|r| !r.batched).count();
    println!(
        "batched: {n} tokens in {batched:?}, {} POSTs ({requests} HTTP requests), {valid} answered",
        outcome.posts
    );

    let started = Instant::now();
    for token in &tokens {
        client
            .debug_token(token, Caller::App(&app), &budget)
            .await
            .expect("an answer");
    }
    let single = started.elapsed();
    println!("one call per token: {n} tokens in {single:?}, {n} HTTP requests");
}
