//! `permatoken scan`: walk, detect (permatoken-scan), verify (permatoken-graph), render.

use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use permatoken_graph::{Budget, Client, Endpoint};
use permatoken_inspect::{AppCredentials, FindingCode, Subject, Thresholds};
use permatoken_scan::{
    Baseline, Finding, GitError, Kind, Options, Progress, Scan, Secret, Verified,
};
use permatoken_secret::{AccessToken, AppToken};
use serde_json::json;

use super::{Failure, common};
use crate::cli::{ScanArgs, ScanFormat};
use crate::render;

/// The largest baseline read: an entry is some 150 bytes, so this holds hundreds of thousands of
/// findings, and a file pointed at by mistake (a log, a dump) costs this much at most.
const MAX_BASELINE: u64 = 64 << 20;

/// At most this many verifications in flight: few enough to stay inside the API's rate limits.
const VERIFY_CONCURRENCY: usize = 4;

fn fail(code: u8, message: String, hint: &str) -> Failure {
    Failure {
        message,
        hint: Some(hint.to_owned()),
        code,
        error_code: None,
    }
}

pub(crate) async fn run(args: ScanArgs) -> Result<u8, Failure> {
    let options = Options {
        respect_gitignore: args.respect_gitignore,
        max_file_size: args.max_file_size.saturating_mul(1024 * 1024),
        ..Options::default()
    };
    let started = Instant::now();
    let mut scan = if args.git {
        let mut all = Scan::default();
        for repo in &args.paths {
            let scan = permatoken_scan::scan_git(repo, &options).map_err(|e| {
                let hint = match e {
                    GitError::Spawn(_) => "install git, or scan the files without --git",
                    GitError::Unread { .. } => {
                        "a history that cannot be read whole is never reported as clean"
                    }
                    _ => {
                        "--git takes the folder of a git repository; nothing was reported as clean"
                    }
                };
                // git's stderr and the paths it names come from the repository: make them safe for a
                // terminal.
                fail(3, render::sanitise(&e.to_string()), hint)
            })?;
            merge(&mut all, scan);
        }
        all
    } else {
        scan_inputs(&args, &options)?
    };
    if let Some(path) = &args.baseline {
        let text = permatoken_fs::read_capped(path, MAX_BASELINE).map_err(|e| {
            fail(
                3,
                format!("cannot read the baseline `{}`: {e}", path.display()),
                "make one with --write-baseline FILE",
            )
        })?;
        let baseline: Baseline = serde_json::from_slice(&text).map_err(|e| {
            fail(
                3,
                format!("`{}` is not a permatoken baseline: {e}", path.display()),
                "make one with --write-baseline FILE",
            )
        })?;
        baseline.apply(&mut scan);
    }
    if let Some(path) = &args.write_baseline {
        let text = serde_json::to_string_pretty(&Baseline::of(&scan)).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|e| {
            fail(
                3,
                format!("cannot write the baseline `{}`: {e}", path.display()),
                "choose a writable path",
            )
        })?;
    }
    if args.verify && !scan.findings.is_empty() {
        verify(&args, &mut scan).await?;
    }
    let elapsed = started.elapsed();
    let live = scan
        .findings
        .iter()
        .any(|f| f.verified == Some(Verified::Live));
    let code = match (scan.findings.is_empty(), live) {
        (true, _) => 0,
        (false, true) => 2,
        (false, false) => 1,
    };
    let mut out = anstream::stdout().lock();
    let _ = match args.format {
        ScanFormat::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(
                &json!({"findings": scan.findings, "stats": stats(&scan, elapsed)})
            )
            .unwrap_or_default()
        ),
        ScanFormat::Sarif => writeln!(out, "{:#}", sarif(&scan)),
        ScanFormat::Human => render::scan(&mut out, &scan, elapsed.as_secs_f64()),
    };
    Ok(code)
}

fn stats(scan: &Scan, elapsed: Duration) -> serde_json::Value {
    let mut v = serde_json::to_value(&scan.stats).unwrap_or_default();
    v["findings"] = json!(scan.findings.len());
    v["elapsed_ms"] = json!(elapsed.as_millis() as u64);
    v
}

fn merge(all: &mut Scan, scan: Scan) {
    all.findings.extend(scan.findings);
    let (a, s) = (&mut all.stats, scan.stats);
    a.files += s.files;
    a.bytes += s.bytes;
    a.skipped_binary += s.skipped_binary;
    a.skipped_large += s.skipped_large;
    a.unreadable += s.unreadable;
    a.allowed += s.allowed;
    a.blobs += s.blobs;
    a.commits += s.commits;
}

fn scan_inputs(args: &ScanArgs, options: &Options) -> Result<Scan, Failure> {
    let (stdin, paths): (Vec<_>, Vec<_>) = args
        .paths
        .iter()
        .cloned()
        .partition(|p| p.as_os_str() == "-");
    let mut all = Scan::default();
    if !stdin.is_empty() {
        let mut bytes = Vec::new();
        // Capped like a file: a pipe can stream without end.
        std::io::stdin()
            .lock()
            .take(options.max_file_size.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| {
                fail(
                    3,
                    format!("cannot read standard input: {e}"),
                    "pipe text in: `git diff --cached | permatoken scan -`",
                )
            })?;
        if bytes.len() as u64 > options.max_file_size {
            // Skipping it, as a large file is skipped, would report a clean scan of unread text.
            return Err(fail(
                3,
                format!(
                    "standard input holds more than {} MiB (--max-file-size); nothing was scanned",
                    args.max_file_size
                ),
                "raise --max-file-size, or scan the files themselves",
            ));
        }
        merge(&mut all, permatoken_scan::scan_bytes("-", &bytes));
    }
    for path in &paths {
        if !path.exists() {
            return Err(fail(
                3,
                format!("`{}` does not exist", path.display()),
                "give files or folders to scan, or `-` for standard input",
            ));
        }
    }
    if !paths.is_empty() {
        let progress = Arc::new(Progress::default());
        let done = Arc::new(AtomicBool::new(false));
        let ticker = std::io::stderr()
            .is_terminal()
            .then(|| spawn_progress(progress.clone(), done.clone()));
        let scan = permatoken_scan::scan_paths(&paths, options, Some(&progress));
        done.store(true, Ordering::Relaxed);
        if let Some(t) = ticker {
            let _ = t.join();
        }
        merge(&mut all, scan);
    }
    all.findings
        .sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
    Ok(all)
}

/// A one-line progress display on a terminal, for long scans; erased at the end.
fn spawn_progress(progress: Arc<Progress>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut shown = false;
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if started.elapsed() < Duration::from_millis(500) {
                continue; // short scans show nothing
            }
            let files = progress.files.load(Ordering::Relaxed);
            let mb = progress.bytes.load(Ordering::Relaxed) as f64 / 1e6;
            eprint!("\r\x1b[2Kscanning… {files} files, {mb:.0} MB");
            shown = true;
        }
        if shown {
            eprint!("\r\x1b[2K");
        }
    })
}

async fn verify(args: &ScanArgs, scan: &mut Scan) -> Result<(), Failure> {
    let config = common::graph_config(&args.graph)?;
    let client = common::client(config)?;
    let budget = Budget::new(Duration::from_secs(60));
    let semaphore = Arc::new(tokio::sync::Semaphore::new(VERIFY_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let mut seen = std::collections::HashSet::new();
    for f in &scan.findings {
        if !seen.insert(f.sha256.clone()) {
            continue;
        }
        let (client, semaphore) = (client.clone(), semaphore.clone());
        let (secret, sha, app_id) = (f.secret().clone(), f.sha256.clone(), f.app_id.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            (sha, verify_one(&client, secret, app_id, &budget).await)
        });
    }
    let mut results = std::collections::HashMap::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok((sha, verdict)) = done {
            results.insert(sha, verdict);
        }
    }
    for f in &mut scan.findings {
        f.verified = results.get(&f.sha256).copied();
    }
    Ok(())
}

async fn verify_one(
    client: &Client,
    secret: Secret,
    app_id: Option<String>,
    budget: &Budget,
) -> Verified {
    let app = match secret {
        Secret::AccessToken(token) => return verify_token(client, &token, budget).await,
        Secret::AppToken(app) => app,
        Secret::AppSecret(secret) => match app_id {
            Some(id) => AppToken::new(id, secret),
            // A secret without its app id cannot be tried.
            None => return Verified::Unknown,
        },
        _ => return Verified::Unknown,
    };
    // The app token travels in the `Authorization` header only: `/debug_token` would need it in
    // its query, and URLs end up in logs.
    match client.app(&app, budget).await {
        Ok(_) => Verified::Live,
        Err(e) => {
            let refused = e.graph_error().is_some_and(|g| g.code == Some(101));
            if refused || e.class(Endpoint::Other).token_is_dead() {
                Verified::Invalid
            } else {
                Verified::Unknown
            }
        }
    }
}

/// A token is live when `/me` answers with it, also when `/debug_token` cannot say more (a
/// system-user token may not inspect itself: code 100, which is neither dead nor unknown).
async fn verify_token(client: &Client, token: &AccessToken, budget: &Budget) -> Verified {
    let subject = Subject {
        token,
        source: "scan",
        variable: None,
    };
    let report = permatoken_inspect::check(
        client,
        subject,
        &AppCredentials::default(),
        Thresholds::default(),
        jiff::Timestamp::now(),
        budget,
    )
    .await;
    let dead = report.is_dead();
    if report.token.valid == Some(true) || (report.identity.is_some() && !dead) {
        Verified::Live
    } else if report
        .findings
        .iter()
        .any(|f| f.code == FindingCode::TokenExpired)
    {
        Verified::Expired
    } else if dead {
        Verified::Invalid
    } else {
        Verified::Unknown
    }
}

/// How to rotate what was found.
pub(crate) fn fix(kind: Kind, app_id: Option<&str>) -> String {
    let app = app_id.map_or_else(|| "the app".to_owned(), |id| format!("app {id}"));
    match kind {
        Kind::AccessToken => format!(
            "revoke it and make a new one: a system-user token in Business Settings → Users → System users → the user → Revoke tokens; a user token by removing {app} in the user's Settings → Business Integrations (or changing the password); keep the new one out of the repository (`.env` in .gitignore)"
        ),
        Kind::AppToken | Kind::AppSecret => format!(
            "reset the secret of {app}: App Dashboard → Settings → Basic → App secret → Reset; then update `FACEBOOK_APP_SECRET` everywhere (appsecret_proof and webhook signatures change with it)"
        ),
    }
}

fn sarif(scan: &Scan) -> serde_json::Value {
    let rule = |id: &str, text: &str, kind: Kind| {
        json!({
            "id": id,
            "shortDescription": {"text": text},
            "help": {"text": fix(kind, None)},
            "defaultConfiguration": {"level": "error"},
        })
    };
    let results: Vec<serde_json::Value> = scan
        .findings
        .iter()
        .map(|f: &Finding| {
            let kind = serde_json::to_value(f.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let mut text = format!("Meta {} {}", kind.replace('_', " "), f.fingerprint);
            if let Some(app) = &f.app_id {
                text.push_str(&format!(" of app {app}"));
            }
            if let Some(v) = f.verified {
                text.push_str(&format!(
                    ", verified {}",
                    serde_json::to_value(v)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ));
            }
            json!({
                "ruleId": kind,
                "level": "error",
                "message": {"text": text},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": f.path.trim_start_matches("./")},
                    "region": {"startLine": f.line, "startColumn": f.column},
                }}],
                "partialFingerprints": {"secretSha256/v1": f.sha256},
            })
        })
        .collect();
    json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{
            "tool": {"driver": {
                "name": "permatoken",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": [
                    rule("access_token", "Meta access token", Kind::AccessToken),
                    rule("app_token", "Meta app access token (APP_ID|APP_SECRET)", Kind::AppToken),
                    rule("app_secret", "Meta app secret", Kind::AppSecret),
                ],
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}
