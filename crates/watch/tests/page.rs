//! The status page in a real headless browser (Debian's `chromium`): it loads, its script runs under
//! the page's own Content-Security-Policy, fetches `api/tokens`, and shows each token's name and
//! state; a phone-sized screenshot is saved for a person to look at.
//!
//! Under `CI=true` a missing chromium fails the test; elsewhere it is skipped with a loud message.

mod http_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_support::{HOSTILE, now, snapshot};
use permatoken_watch::http::{self, AppState};
use permatoken_watch::metrics::Counters;
use permatoken_watch::page::escape;
use permatoken_watch::snapshot;

/// Generous: a cold chromium on a loaded two-core machine takes seconds, not minutes.
const BROWSER_DEADLINE: Duration = Duration::from_secs(120);

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        if let Some(found) = std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
        {
            return Some(found);
        }
    }
    let debian = Path::new("/usr/bin/chromium");
    debian.is_file().then(|| debian.to_owned())
}

/// Runs chromium with `args` after the flags it needs as root and offline, and returns its standard
/// output. Killed if it outlives the deadline.
fn run_chromium(browser: &Path, profile: &Path, args: &[String]) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > BROWSER_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium ran longer than {BROWSER_DEADLINE:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[test]
fn the_status_page_shows_every_token_in_a_real_browser() {
    let Some(browser) = chromium() else {
        if std::env::var_os("CI").is_some_and(|v| v == "true") {
            panic!("chromium is not installed: `.ci/run` installs it with apt-get");
        }
        eprintln!(
            "SKIPPED the_status_page_shows_every_token_in_a_real_browser: chromium is not installed (apt-get install chromium)"
        );
        return;
    };
    let now = now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let api_calls = Arc::new(AtomicUsize::new(0));
    let addr = runtime.block_on(async {
        let (_publisher, subscriber) = snapshot::channel(snapshot(now));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AppState::new(addr, None, subscriber, Counters::default()).unwrap();
        let calls = api_calls.clone();
        // Counts the page's own fetches, to prove its script ran and reached the API.
        let app = http::app(state).layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                if request.uri().path() == "/api/tokens" {
                    calls.fetch_add(1, Ordering::SeqCst);
                }
                next.run(request)
            },
        ));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    });
    let url = format!("http://{addr}/");
    let dir = tempfile::tempdir().unwrap();

    let dom = run_chromium(
        &browser,
        &dir.path().join("profile-dom"),
        &[
            "--virtual-time-budget=5000".to_owned(),
            "--dump-dom".to_owned(),
            url.clone(),
        ],
    );
    assert!(
        api_calls.load(Ordering::SeqCst) >= 1,
        "the page's script never fetched api/tokens:\n{dom}"
    );
    for (name, state) in [
        ("orders", "ok"),
        ("orders-backup", "expiring"),
        ("billing", "critical"),
        ("legacy", "dead"),
        ("support", "failed over"),
        (HOSTILE, "cannot be checked"),
    ] {
        let card = format!(
            "<h2 class=\"name\">{}</h2><span class=\"badge\">{state}</span>",
            escape(name).replace("&quot;", "\"").replace("&#39;", "'")
        );
        assert!(dom.contains(&card), "{name} as {state} not shown:\n{dom}");
    }
    // Only the script writes these: the summary, the live countdown, routes and events.
    assert!(
        dom.contains(
            "6 tokens: 1 ok, 1 expiring, 1 critical, 1 dead, 1 failed over, 1 cannot be checked"
        ),
        "{dom}"
    );
    assert!(dom.contains("never expires"), "{dom}");
    assert!(dom.contains("10d 3h"), "countdown: {dom}");
    assert!(dom.contains("pager: HTTP 503 — failing since"), "{dom}");
    assert!(dom.contains("missing"), "{dom}");
    assert!(dom.contains("<svg class=\"chart\""), "{dom}");
    // The hostile name stayed text: no element was made from it.
    assert!(!dom.contains(HOSTILE), "{dom}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("watch-page-phone.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &browser,
        &dir.path().join("profile-shot"),
        &[
            "--virtual-time-budget=5000".to_owned(),
            format!("--screenshot={}", shot.display()),
            "--window-size=412,915".to_owned(),
            url,
        ],
    );
    let png = std::fs::read(&shot).expect("chromium saved a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a blank screenshot: {} bytes",
        png.len()
    );
    eprintln!(
        "screenshot of the status page on a phone: {}",
        shot.display()
    );
    runtime.shutdown_background();
}
