//! The status page in a real headless browser (Debian's `chromium`): it loads, its script runs under
//! the page's own Content-Security-Policy, fetches `api/tokens`, and shows each token's name and
//! state; with 10,000 tokens it shows one page of 50 and where it stands ("1–50 of 10,000"), and a
//! link with `?state=&q=` shows only the matching tokens. A phone-sized screenshot is saved for a
//! person to look at. A page of the test's own opens the status page in a window and clicks its
//! pager and chips and types in its search box, as a person would.
//!
//! Under `CI=true` a missing chromium fails the test; elsewhere it is skipped with a loud message.

mod http_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_support::{HOSTILE, fleet, now, snapshot};
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

/// Serves `snapshot` on a loopback port from a runtime of its own; the list holds the path and query
/// of every `/api/tokens` request, to prove the page's script ran and what it asked for.
fn serve(
    snapshot: snapshot::Snapshot,
) -> (tokio::runtime::Runtime, SocketAddr, Arc<Mutex<Vec<String>>>) {
    serve_with(snapshot, axum::Router::new())
}

/// [`serve`], with `extra` routes beside the endpoint's own.
fn serve_with(
    snapshot: snapshot::Snapshot,
    extra: axum::Router,
) -> (tokio::runtime::Runtime, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let api_calls = Arc::new(Mutex::new(Vec::new()));
    let addr = runtime.block_on(async {
        // The charts' history for a few tokens; a fleet's tests look at paging, not charts.
        let (dir, store) = http_support::store(&snapshot, snapshot.tokens.len() <= 100).await;
        let (_publisher, subscriber) = snapshot::channel(snapshot);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AppState::new(addr, None, subscriber, Counters::default(), store).unwrap();
        let calls = api_calls.clone();
        let app = http::app(state)
            .merge(extra)
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    if request.uri().path() == "/api/tokens" {
                        calls.lock().unwrap().push(request.uri().to_string());
                    }
                    next.run(request)
                },
            ));
        tokio::spawn(async move {
            // The state file goes when the server does, with the runtime.
            let _dir = dir;
            let _ = axum::serve(listener, app).await;
        });
        addr
    });
    (runtime, addr, api_calls)
}

/// Debian's chromium, or `None` (outside CI only) after saying the test is skipped.
fn browser_or_skip(test: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        if std::env::var_os("CI").is_some_and(|v| v == "true") {
            panic!("chromium is not installed: `.ci/run` installs it with apt-get");
        }
        eprintln!("SKIPPED {test}: chromium is not installed (apt-get install chromium)");
    }
    found
}

fn dump_dom(browser: &Path, profile: &Path, url: &str) -> String {
    run_chromium(
        browser,
        profile,
        &[
            "--virtual-time-budget=5000".to_owned(),
            "--dump-dom".to_owned(),
            url.to_owned(),
        ],
    )
}

#[test]
fn the_status_page_shows_every_token_in_a_real_browser() {
    let Some(browser) = browser_or_skip("the_status_page_shows_every_token_in_a_real_browser")
    else {
        return;
    };
    let now = now();
    let (runtime, addr, api_calls) = serve(snapshot(now));
    let url = format!("http://{addr}/");
    let dir = tempfile::tempdir().unwrap();

    let dom = dump_dom(&browser, &dir.path().join("profile-dom"), &url);
    assert!(
        !api_calls.lock().unwrap().is_empty(),
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

    runtime.shutdown_background();
}

/// The names and states of the cards in a dumped DOM, in order.
fn cards(dom: &str) -> Vec<(String, String)> {
    dom.split("<article class=\"token st-")
        .skip(1)
        .map(|card| {
            let state = card.split('"').next().unwrap().to_owned();
            let name = card
                .split("<h2 class=\"name\">")
                .nth(1)
                .and_then(|rest| rest.split("</h2>").next())
                .unwrap()
                .to_owned();
            (name, state)
        })
        .collect()
}

#[test]
fn the_status_page_pages_through_ten_thousand_tokens_in_a_real_browser() {
    let Some(browser) =
        browser_or_skip("the_status_page_pages_through_ten_thousand_tokens_in_a_real_browser")
    else {
        return;
    };
    let (runtime, addr, api_calls) = serve(fleet(10_000, now()));
    let dir = tempfile::tempdir().unwrap();

    // The first page: 50 cards, all dead (worst first), and where they stand among 10,000.
    let url = format!("http://{addr}/");
    let dom = dump_dom(&browser, &dir.path().join("profile-all"), &url);
    assert_eq!(
        api_calls.lock().unwrap().first().map(String::as_str),
        Some("/api/tokens"),
        "the page's script did not fetch its page:\n{dom}"
    );
    let shown = cards(&dom);
    assert_eq!(shown.len(), 50, "{dom}");
    assert!(shown.iter().all(|(_, state)| state == "dead"), "{shown:?}");
    assert_eq!(shown[0].0, "shop-00003");
    assert!(dom.contains("1–50 of 10,000"), "{dom}");
    // Written by the script only (the server does not write the summary).
    assert!(
        dom.contains(
            "10,000 tokens: 1,667 ok, 1,667 expiring, 1,667 critical, 1,667 dead, 1,666 failed over, 1,666 cannot be checked"
        ),
        "{dom}"
    );
    assert!(
        dom.contains(">dead <span class=\"n\">1,667</span>"),
        "{dom}"
    );

    // A shared link with a state and a search shows only the matching tokens, and the script asks
    // the API for the same.
    api_calls.lock().unwrap().clear();
    let url = format!("http://{addr}/?state=dead&q=SHOP-012");
    let dom = dump_dom(&browser, &dir.path().join("profile-dead"), &url);
    let expected: Vec<(String, String)> = (1200..1300)
        .filter(|i| i % 6 == 3)
        .map(|i| (format!("shop-{i:05}"), "dead".to_owned()))
        .collect();
    assert_eq!(cards(&dom), expected, "{dom}");
    assert!(
        dom.contains(&format!("1–{n} of {n}", n = expected.len())),
        "{dom}"
    );
    assert!(
        dom.contains("data-state=\"dead\" aria-pressed=\"true\""),
        "{dom}"
    );
    assert!(
        api_calls
            .lock()
            .unwrap()
            .iter()
            .any(|uri| uri == "/api/tokens?q=SHOP-012&state=dead"),
        "{:?}",
        api_calls.lock().unwrap()
    );

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("watch-page-phone.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &browser,
        &dir.path().join("profile-shot"),
        &[
            "--virtual-time-budget=5000".to_owned(),
            format!("--screenshot={}", shot.display()),
            "--window-size=412,915".to_owned(),
            format!("http://{addr}/?page=3"),
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

/// A page of the test's own (same origin, no CSP) that opens the status page in a window of its
/// own, clicks and types in it as a person would, and writes what the status page then shows
/// (range, address bar, cards) into its own DOM, for `--dump-dom`.
const HARNESS: &str = r#"<!doctype html><html><body><div id="out"></div><script>
var w = window.open('/');
var out = document.getElementById('out');
function seen(step) {
  var d = w.document;
  var cards = Array.prototype.map.call(d.querySelectorAll('#tokens article'), function (a) {
    return a.className.replace('token st-', '') + ':' + a.querySelector('.name').textContent;
  });
  var p = document.createElement('p');
  p.textContent = 'STEP ' + step + ' | ' + d.getElementById('range').textContent + ' | ' +
    w.location.search + ' | ' + cards.length + ' | ' + cards.slice(0, 3).join(',');
  out.appendChild(p);
}
var steps = [
  function () { seen('open'); w.document.getElementById('next').click(); },
  function () { seen('next'); w.document.querySelector('#chips [data-state="ok"]').click(); },
  function () {
    seen('ok');
    var s = w.document.getElementById('search');
    s.value = 'SHOP-0000';
    s.dispatchEvent(new Event('input'));
  },
  function () { seen('search'); w.document.querySelector('#chips [data-state=""]').click(); },
  function () { seen('all'); }
];
var i = 0;
function next() { if (i < steps.length) { steps[i++](); setTimeout(next, 1500); } }
setTimeout(next, 1500);
</script></body></html>"#;

#[test]
fn the_status_page_answers_clicks_and_typing_in_a_real_browser() {
    let Some(browser) =
        browser_or_skip("the_status_page_answers_clicks_and_typing_in_a_real_browser")
    else {
        return;
    };
    let extra = axum::Router::new().route(
        "/harness",
        axum::routing::get(|| async { axum::response::Html(HARNESS) }),
    );
    let (runtime, addr, _) = serve_with(fleet(10_000, now()), extra);
    let dir = tempfile::tempdir().unwrap();
    let dom = run_chromium(
        &browser,
        &dir.path().join("profile"),
        &[
            "--disable-popup-blocking".to_owned(),
            "--virtual-time-budget=15000".to_owned(),
            "--dump-dom".to_owned(),
            format!("http://{addr}/harness"),
        ],
    );
    let steps: Vec<String> = dom
        .split("<p>STEP ")
        .skip(1)
        .filter_map(|p| p.split("</p>").next())
        .map(|p| p.replace("&amp;", "&"))
        .collect();
    assert_eq!(
        steps,
        [
            // Opened: the first 50 of 10,000, dead first.
            "open | 1–50 of 10,000 |  | 50 | dead:shop-00003,dead:shop-00009,dead:shop-00015",
            // Next: the second page, and the address bar says so.
            "next | 51–100 of 10,000 | ?page=2 | 50 | dead:shop-00303,dead:shop-00309,dead:shop-00315",
            // The `ok` chip: back to page 1, only ok tokens.
            "ok | 1–50 of 1,667 | ?state=ok | 50 | ok:shop-00000,ok:shop-00006,ok:shop-00012",
            // Typing, in any case: the search joins the filter.
            "search | 1–2 of 2 | ?q=SHOP-0000&state=ok | 2 | ok:shop-00000,ok:shop-00006",
            // The `all` chip: every state again, the search kept.
            "all | 1–10 of 10 | ?q=SHOP-0000 | 10 | dead:shop-00003,dead:shop-00009,failed_over:shop-00004",
        ],
        "{dom}"
    );
    runtime.shutdown_background();
}
