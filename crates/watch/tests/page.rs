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

use http_support::{HOSTILE, NEW_TOKEN, NO_FILE, PASSWORD_CHANGED, fleet, now, snapshot};
use permatoken_watch::http::{self, AppState};
use permatoken_watch::metrics::Counters;
use permatoken_watch::page::escape;
use permatoken_watch::page::view::{TokenPage, TokenQuery};
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
    // Line-break opportunities are markup of their own; the words are what is asserted.
    let dom = dom.replace("<wbr>", "");
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
    assert!(dom.contains("expires in 10 days"), "countdown: {dom}");
    assert!(dom.contains("expired 3 days ago"), "{dom}");
    // The dead token says why and what to do, on its card.
    let legacy = card_of(&dom, "legacy");
    assert!(
        legacy.contains(&format!(
            "<p class=\"why\">{}</p>",
            escape(PASSWORD_CHANGED)
        )),
        "{legacy}"
    );
    assert!(
        legacy.contains(&format!(
            "<p class=\"fix\"><b>Fix:</b> {}</p>",
            escape(NEW_TOKEN)
        )),
        "{legacy}"
    );
    // The token whose file is gone says so, and when it was last tried, not "not valid".
    let gone = card_of(&dom, &escape(HOSTILE));
    assert!(gone.contains(&escape(NO_FILE)), "{gone}");
    let tried = gone
        .split("<dt>last tried</dt><dd>")
        .nth(1)
        .and_then(|rest| rest.split("</dd>").next())
        .unwrap_or_else(|| panic!("no last tried: {gone}"));
    assert!(
        tried.ends_with(" ago)") && tried.contains("UTC ("),
        "{tried}"
    );
    assert!(
        gone.contains("<dt>last check</dt><dd>never answered</dd>"),
        "{gone}"
    );
    assert!(!gone.contains("not valid"), "{gone}");
    assert!(dom.contains("pager: HTTP 503 — failing since"), "{dom}");
    assert!(dom.contains("missing"), "{dom}");
    assert!(dom.contains("<svg class=\"chart\""), "{dom}");
    // The hostile name stayed text: no element was made from it.
    assert!(!dom.contains(HOSTILE), "{dom}");

    runtime.shutdown_background();
}

/// The markup of the card named `name` (as escaped in the DOM) in a dumped DOM.
fn card_of<'d>(dom: &'d str, name: &str) -> &'d str {
    let at = dom
        .find(&format!("<h2 class=\"name\">{name}</h2>"))
        .unwrap_or_else(|| panic!("no card of {name}:\n{dom}"));
    let end = dom[at..].find("</article>").map_or(dom.len(), |e| at + e);
    &dom[at..end]
}

/// The names and states of the cards in a dumped DOM, in order.
fn cards(dom: &str) -> Vec<(String, String)> {
    dom.split("<article class=\"token ")
        .skip(1)
        .map(|card| {
            let class = card.split('"').next().unwrap();
            let state = class
                .split(' ')
                .find_map(|c| c.strip_prefix("st-"))
                .unwrap()
                .to_owned();
            let name = card
                .split("<h2 class=\"name\">")
                .nth(1)
                .and_then(|rest| rest.split("</h2>").next())
                .unwrap()
                .replace("<wbr>", "");
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
    return (a.className.match(/st-(\S+)/) || [])[1] + ':' + a.querySelector('.name').textContent;
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

/// A fleet of 29 as an operator has one: 24 ok shops, `billing` critical (a permission missing),
/// `legacy` dead (the password changed), `clients/c07` whose file is gone, and `aa-orders` (ok)
/// whose backup `zz-spare` is dead, a name that sorts last of all.
fn fleet_of_29(now: i64) -> snapshot::Snapshot {
    use http_support::{DAY, reason, token};
    use snapshot::{Role, Status, TokenState};
    let mut s = snapshot(now);
    let mut tokens = Vec::new();
    let mut orders = token("aa-orders", TokenState::Ok, Status::Ok, now);
    orders.expires_at = Some(now + 30 * DAY);
    let mut spare = token("zz-spare", TokenState::Dead, Status::Critical, now);
    spare.role = Role::Backup("aa-orders".to_owned());
    spare.expires_at = Some(now - 2 * DAY);
    spare.reason = reason(
        "the token expired 2 days ago",
        "put a new backup token in the env file",
        now - 60,
        false,
    );
    let mut billing = token("billing", TokenState::Critical, Status::Critical, now);
    billing.expires_at = Some(now + 2 * DAY + 3 * 3600);
    billing.missing_permissions = vec!["whatsapp_business_messaging".to_owned()];
    billing.reason = reason(
        "the token lacks the permission whatsapp_business_messaging, so WhatsApp calls fail with code 10 or 200",
        "permissions cannot be added to a token: generate a new one with whatsapp_business_messaging ticked",
        now - 60,
        false,
    );
    let mut legacy = token("legacy", TokenState::Dead, Status::Critical, now);
    legacy.expires_at = Some(now - DAY - 3 * 3600 - 6 * 60 - 28);
    legacy.reason = reason(PASSWORD_CHANGED, NEW_TOKEN, now - 60, false);
    let mut gone = token(
        "clients/c07",
        TokenState::CannotBeChecked,
        Status::Unknown,
        now,
    );
    gone.last_check = None;
    gone.reason = reason(
        "the token could not be read: cannot read `/srv/clients/c07/.env`: No such file or directory (os error 2)",
        "check the file named in the message and its permissions",
        now - 300,
        true,
    );
    tokens.extend([orders, billing, legacy, gone]);
    for i in 1..=24 {
        let mut shop = token(&format!("shop-{i:02}"), TokenState::Ok, Status::Ok, now);
        shop.expires_at = Some(now + (40 + i) * DAY);
        tokens.push(shop);
    }
    // Configuration order: the backup after everything, as a `[[token_set]]` might list it.
    tokens.push(spare);
    s.tokens = tokens;
    s
}

/// Opens the status page in a frame of the size its query asks (`?w=412&h=915`: a window opened by
/// a script is always 800 px wide in headless chromium, and its own window no narrower than 500;
/// the page served at `/framed` is the status page with the same Content-Security-Policy but for
/// `frame-ancestors`), and writes what a reader sees
/// into its own DOM: the page's height and whether it overflows sideways, each word broken where
/// it should not be, and the tokens in order; then switches to the table, then sorts it by expiry,
/// by clicking the links, and writes the same again.
const FLEET_HARNESS: &str = r#"<!doctype html><html><head><style>
body{margin:0}iframe{border:0;display:block}#out{position:absolute;top:0;left:0;visibility:hidden}
</style></head><body><div id="out"></div><iframe id="frame" src="/framed"></iframe><script>
var size = new URLSearchParams(location.search);
var frame = document.getElementById('frame');
frame.style.width = size.get('w') + 'px';
frame.style.height = size.get('h') + 'px';
var w = frame.contentWindow;
var out = document.getElementById('out');
// A line that begins inside a word: a letter or digit on both sides of the break (a break after
// `_`, `/`, `-`, a space or a bracket is where a line may end).
function midWord(d) {
  var bad = [];
  var walk = d.createTreeWalker(d.body, NodeFilter.SHOW_TEXT);
  var prev = null, node;
  var BLOCK = 'p,dd,dt,h1,h2,td,th,li,a,button,span.meta,span.name,span.fix,span.badge';
  while ((node = walk.nextNode())) {
    var block = node.parentElement.closest(BLOCK);
    if (!block || node.parentElement.closest('svg,script,style')) { continue; }
    for (var i = 0; i < node.data.length; i++) {
      var r = d.createRange();
      r.setStart(node, i);
      r.setEnd(node, i + 1);
      var rects = r.getClientRects();
      var ch = node.data[i];
      // A space where a line ends takes no room: it still ends a word.
      if (/\s/.test(ch)) { if (prev) { prev.ch = ' '; } continue; }
      if (!rects.length || !rects[0].width) { continue; }
      var top = rects[0].top;
      if (prev && prev.block === block && top > prev.top + 4 && /[\p{L}\p{N}]/u.test(prev.ch) && /[\p{L}\p{N}]/u.test(ch)) {
        bad.push(JSON.stringify(block.textContent.slice(0, 80)) + ' at ' + prev.ch + '|' + ch);
      }
      prev = { ch: ch, top: top, block: block };
    }
  }
  return bad;
}
function seen(step) {
  var d = w.document;
  var rows = Array.prototype.map.call(d.querySelectorAll('#tokens article, #tokens tbody tr'), function (a) {
    return a.querySelector('.name').textContent;
  });
  var p = document.createElement('p');
  p.textContent = 'STEP ' + step + ' | ' + w.innerWidth + ' | ' + d.documentElement.scrollHeight +
    ' | ' + (d.documentElement.scrollWidth > w.innerWidth ? 'overflow ' + d.documentElement.scrollWidth : 'fits') +
    ' | ' + w.location.search + ' | ' + midWord(d).join(' ; ') + ' | ' + rows.join(',');
  out.appendChild(p);
}
var steps = [
  function () { seen('cards'); w.document.querySelector('#views a[data-view="table"]').click(); },
  function () { seen('table'); w.document.querySelector('#tokens th a[data-sort="expiry"]').click(); },
  function () { seen('expiry'); }
];
var i = 0;
function next() { if (i < steps.length) { steps[i++](); setTimeout(next, 1500); } }
setTimeout(next, 1500);
</script></body></html>"#;

/// The body of a plain HTTP/1.0 GET of `path`, as a browser without a script gets it.
fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(BROWSER_DEADLINE)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    answer
}

/// The names in the rows of the server's table, in order.
fn table_rows(dom: &str) -> Vec<String> {
    dom.split("<tr class=\"row st-")
        .skip(1)
        .filter_map(|r| r.split("<span class=\"name\">").nth(1))
        .filter_map(|r| r.split("</span>").next())
        .map(|name| name.replace("<wbr>", ""))
        .collect()
}

/// One step the fleet harness saw.
#[derive(Debug)]
struct Seen {
    width: u32,
    height: u32,
    fits: String,
    search: String,
    mid_word: String,
    rows: Vec<String>,
}

fn fleet_steps(browser: &Path, profile: &Path, addr: SocketAddr, size: &str) -> Vec<Seen> {
    let dom = run_chromium(
        browser,
        profile,
        &[
            "--disable-popup-blocking".to_owned(),
            "--virtual-time-budget=10000".to_owned(),
            "--window-size=1280,900".to_owned(),
            "--dump-dom".to_owned(),
            format!("http://{addr}/harness?{size}"),
        ],
    );
    dom.split("<p>STEP ")
        .skip(1)
        .filter_map(|p| p.split("</p>").next())
        .map(|p| {
            let p = p
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">");
            let f: Vec<&str> = p.split(" | ").collect();
            assert_eq!(f.len(), 7, "{p}");
            Seen {
                width: f[1].parse().unwrap(),
                height: f[2].parse().unwrap(),
                fits: f[3].to_owned(),
                search: f[4].to_owned(),
                mid_word: f[5].to_owned(),
                rows: f[6].split(',').map(str::to_owned).collect(),
            }
        })
        .collect()
}

#[test]
fn a_fleet_reads_as_cards_and_as_a_sorted_table_on_a_desktop_and_a_phone() {
    let Some(browser) =
        browser_or_skip("a_fleet_reads_as_cards_and_as_a_sorted_table_on_a_desktop_and_a_phone")
    else {
        return;
    };
    let fleet = fleet_of_29(now());
    let framed = Arc::new(fleet.clone());
    let extra = axum::Router::new()
        .route(
            "/harness",
            axum::routing::get(|| async { axum::response::Html(FLEET_HARNESS) }),
        )
        .route(
            "/framed",
            axum::routing::get(
                move |axum::extract::RawQuery(raw): axum::extract::RawQuery| {
                    let snapshot = framed.clone();
                    async move {
                        let query = TokenQuery::parse(raw.as_deref()).unwrap();
                        let html =
                            permatoken_watch::page::render(&TokenPage::select(&snapshot, &query));
                        let csp =
                            permatoken_watch::page::csp().replace("; frame-ancestors 'none'", "");
                        (
                            [(axum::http::header::CONTENT_SECURITY_POLICY, csp)],
                            axum::response::Html(html),
                        )
                    }
                },
            ),
        );
    let (runtime, addr, _) = serve_with(fleet, extra);
    let dir = tempfile::tempdir().unwrap();
    let shops: Vec<String> = (1..=24).map(|i| format!("shop-{i:02}")).collect();
    // Worst first, each backup right under its primary: the dead spare brings `aa-orders` up.
    let by_state: Vec<String> = ["aa-orders", "zz-spare", "legacy", "billing", "clients/c07"]
        .into_iter()
        .map(str::to_owned)
        .chain(shops.iter().cloned())
        .collect();
    // Soonest expiry first (the expired first of all), the unknown last.
    let by_expiry: Vec<String> = ["aa-orders", "zz-spare", "legacy", "billing"]
        .into_iter()
        .map(str::to_owned)
        .chain(shops.iter().cloned())
        .chain(["clients/c07".to_owned()])
        .collect();
    for (size, width, most) in [("w=1280&h=900", 1280, 2_600), ("w=412&h=915", 412, 5_200)] {
        for view in ["", "view=table"] {
            let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "watch-fleet-{width}{}.png",
                view.replace("view=", "-")
            ));
            run_chromium(
                &browser,
                &dir.path().join("profile-shot"),
                &[
                    "--virtual-time-budget=5000".to_owned(),
                    format!("--screenshot={}", shot.display()),
                    format!("--window-size={width},3000"),
                    format!("http://{addr}/?{view}"),
                ],
            );
            eprintln!("the fleet's page: {}", shot.display());
        }
        let steps = fleet_steps(&browser, &dir.path().join(format!("p{width}")), addr, size);
        assert_eq!(steps.len(), 3, "{steps:?}");
        let (cards, table, expiry) = (&steps[0], &steps[1], &steps[2]);
        for step in &steps {
            assert_eq!(
                step.width, width,
                "the window is not the size asked: {step:?}"
            );
            assert_eq!(step.fits, "fits", "wider than the screen: {step:?}");
            assert_eq!(step.mid_word, "", "a word broken inside: {step:?}");
        }
        assert_eq!(cards.rows, by_state, "{cards:?}");
        assert!(cards.height < most, "29 tokens at {width} px: {cards:?}");
        assert_eq!(table.search, "?view=table", "{table:?}");
        assert_eq!(table.rows, by_state, "{table:?}");
        assert!(table.height < cards.height, "{table:?} {cards:?}");
        assert_eq!(expiry.search, "?view=table&sort=expiry", "{expiry:?}");
        assert_eq!(expiry.rows, by_expiry, "{expiry:?}");
        eprintln!(
            "{width} px: cards {} px, table {} px high",
            cards.height, table.height
        );
    }

    // Without a script, the server's table, sorted as its link asks, and the links to the rest:
    // what the server sends is what a reader without a script sees.
    let dom = http_get(addr, "/?view=table&sort=expiry").replace("<wbr>", "");
    assert_eq!(table_rows(&dom), by_expiry, "{dom}");
    assert!(
        dom.contains("<tr class=\"row st-dead backup\">"),
        "the spare is marked as a backup: {dom}"
    );
    assert!(dom.contains("expired 1 day ago"), "{dom}");
    assert!(dom.contains("expires in 2 days"), "{dom}");
    assert!(dom.contains(&escape(PASSWORD_CHANGED)), "{dom}");
    assert!(
        dom.contains("cannot read `/srv/clients/c07/.env`: No such file"),
        "{dom}"
    );
    assert!(dom.contains("tried 5 minutes ago"), "{dom}");
    for link in [
        "<a class=\"view\" data-view=\"cards\" href=\"?sort=expiry\">cards</a>",
        "<a class=\"sort\" data-sort=\"state\" href=\"?view=table\">State</a>",
        // One page: nowhere to step to.
        "<a id=\"next\" class=\"step\" rel=\"next\" aria-disabled=\"true\">Next ›</a>",
    ] {
        assert!(dom.contains(link), "{link}: {dom}");
    }
    // The pager is links too: the second page of ten, and the way to the first and the third.
    let dom = http_get(addr, "/?view=table&sort=expiry&per_page=10&page=2");
    assert_eq!(table_rows(&dom), by_expiry[10..20], "{dom}");
    for link in [
        "<a id=\"prev\" class=\"step\" rel=\"prev\" href=\"?per_page=10&amp;view=table&amp;sort=expiry\">",
        "<a id=\"next\" class=\"step\" rel=\"next\" href=\"?page=3&amp;per_page=10&amp;view=table&amp;sort=expiry\">",
        "<a class=\"view\" data-view=\"cards\" href=\"?page=2&amp;per_page=10&amp;sort=expiry\">",
    ] {
        assert!(dom.contains(link), "{link}: {dom}");
    }
    runtime.shutdown_background();
}

/// At 100,000 tokens the table is one page of them, as the cards are: 50 rows, or at most 500 when
/// the link asks; the rest is a link away. No browser: what the server sends is what is bounded.
#[test]
fn a_table_of_a_hundred_thousand_tokens_is_one_page_of_them() {
    let (runtime, addr, _) = serve(fleet(100_000, now()));
    let dom = http_get(addr, "/?view=table&sort=expiry");
    assert_eq!(table_rows(&dom).len(), 50);
    assert!(dom.contains("1–50 of 100,000"), "{dom}");
    let dom = http_get(addr, "/?view=table&per_page=500&page=200");
    let rows = table_rows(&dom);
    assert_eq!(rows.len(), 500);
    assert!(dom.contains("99,501–100,000 of 100,000"), "{dom}");
    assert!(
        dom.contains("<a id=\"next\" class=\"step\" rel=\"next\" aria-disabled=\"true\">"),
        "the last page: {dom}"
    );
    // Some 2 kB a row at most, markup and embedded JSON together.
    assert!(dom.len() < 200_000 + 500 * 2_048, "{} bytes", dom.len());
    runtime.shutdown_background();
}
