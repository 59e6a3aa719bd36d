//! A corpus of true and false positives made at run time (credentials generated here, never committed
//! in live-looking form): every true positive is found, with its app, and nothing else is.

use std::fs;
use std::path::Path;

use permatoken_scan::{Baseline, Kind, Options, scan_git, scan_paths};

fn hex(n: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"0123456789abcdef"[(x % 16) as usize])
        })
        .collect()
}

const APP: u64 = 634_974_688_087_057;
const OTHER_APP: u64 = 350_685_531_728;

struct Corpus {
    dir: tempfile::TempDir,
    token: String,
    other_token: String,
    secret: String,
    secret2: String,
    secret3: String,
}

fn corpus() -> Corpus {
    let dir = tempfile::tempdir().unwrap();
    let token = permatoken_sandbox::fake_token(APP)
        .expose_secret()
        .to_owned();
    let other_token = permatoken_sandbox::fake_token(OTHER_APP)
        .expose_secret()
        .to_owned();
    let (secret, secret2, secret3) = (hex(32, 11), hex(32, 22), hex(32, 33));
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    // True positives.
    write(
        ".env",
        &format!(
            "# service\nWHATSAPP_ACCESS_TOKEN={token}\nFACEBOOK_APP_ID={APP}\nFACEBOOK_APP_SECRET={secret}\n"
        ),
    );
    write(
        "config/app.json",
        &format!(
            "{{\n  \"facebook\": {{\n    \"app_id\": \"{APP}\",\n    \"app_secret\": \"{secret2}\"\n  }}\n}}\n"
        ),
    );
    write(
        "deploy/settings.yaml",
        &format!("whatsapp:\n  phone: 123\n  token: {other_token}\n"),
    );
    write(
        "src/refresh.py",
        &format!(
            "import requests\nURL = \"https://graph.facebook.com/oauth/access_token?grant_type=fb_exchange_token&client_id={APP}&client_secret={secret3}&fb_exchange_token=x\"\n"
        ),
    );
    write(
        "src/app_token.js",
        &format!(
            "const APP_TOKEN = '{APP}|{secret}';\nfetch(`https://graph.facebook.com/debug_token?access_token={APP}%7C{secret2}`);\n"
        ),
    );
    // False positives: none of these is a Meta credential.
    let b64: String = (0..400)
        .map(|i| char::from(b"ABCDEFGHabcdefgh0123456789+/"[i * 7 % 28]))
        .collect();
    write(
        "fp/hashes.txt",
        &format!(
            "commit = \"{}\"\nchecksum: {}\nsecret = {}\nsession_secret = \"{}\"\n",
            hex(40, 1),
            hex(32, 2),
            hex(40, 3),
            hex(32, 4)
        ),
    );
    write(
        "fp/github.yml",
        &format!(
            "github:\n  client_id: Iv1.{}\n  client_secret: {}\n",
            hex(16, 5),
            hex(32, 6)
        ),
    );
    write(
        "fp/blob.txt",
        &format!(
            "data:image/png;base64,iVBORw0KGgoEAAAAAAAA{b64}\n\"EAA{}\"\n",
            "A".repeat(120)
        ),
    );
    let bad_escapes = format!("EAAG{}Zx{}", "abcdefgh".repeat(12), "Qq".repeat(20));
    write(
        "fp/random.txt",
        &format!("value: {bad_escapes}\nword: x{token}\nshort: \"EAAB\"\n"),
    );
    write(
        "fp/package-lock.json",
        "{\"integrity\": \"sha512-EAAq3ZFnxwD1mpZ1R6eGWbJWb9dL1aWGmKA4Oz+vVA9Y/EAAAK==\"}\n",
    );
    write(
        "fp/uuid.env",
        &format!("SECRET_KEY={}\nAPP_SECRET={}\n", hex(32, 7), hex(32, 8)),
    );
    write("fp/binary.bin", "EAA\0binary");
    Corpus {
        dir,
        token,
        other_token,
        secret,
        secret2,
        secret3,
    }
}

#[test]
fn every_true_positive_and_nothing_else() {
    let c = corpus();
    let root = c.dir.path().to_path_buf();
    let scan = scan_paths(std::slice::from_ref(&root), &Options::default(), None);
    let got: Vec<(Kind, String, usize, Option<String>)> = scan
        .findings
        .iter()
        .map(|f| {
            (
                f.kind,
                f.path
                    .strip_prefix(&root.display().to_string())
                    .unwrap()
                    .to_owned(),
                f.line,
                f.app_id.clone(),
            )
        })
        .collect();
    let app = Some(APP.to_string());
    let want = vec![
        (Kind::AccessToken, "/.env".to_owned(), 2, app.clone()),
        (Kind::AppSecret, "/.env".to_owned(), 4, app.clone()),
        (
            Kind::AppSecret,
            "/config/app.json".to_owned(),
            4,
            app.clone(),
        ),
        (
            Kind::AccessToken,
            "/deploy/settings.yaml".to_owned(),
            3,
            Some(OTHER_APP.to_string()),
        ),
        (
            Kind::AppToken,
            "/src/app_token.js".to_owned(),
            1,
            app.clone(),
        ),
        (
            Kind::AppToken,
            "/src/app_token.js".to_owned(),
            2,
            app.clone(),
        ),
        (
            Kind::AppSecret,
            "/src/refresh.py".to_owned(),
            2,
            app.clone(),
        ),
    ];
    assert_eq!(got, want, "{:#?}", scan.findings);
    assert_eq!(scan.stats.skipped_binary, 1);
    // Columns count code points from 1; fingerprints never hold the secret.
    let env = &scan.findings[0];
    assert_eq!(env.column, "WHATSAPP_ACCESS_TOKEN=".len() + 1);
    for f in &scan.findings {
        for s in [&c.token, &c.other_token, &c.secret, &c.secret2, &c.secret3] {
            assert!(!f.fingerprint.contains(s.as_str()));
        }
    }
    let json = serde_json::to_string(&scan).unwrap();
    for s in [&c.token, &c.other_token, &c.secret, &c.secret2, &c.secret3] {
        assert!(!json.contains(s.as_str()), "a secret in the JSON");
    }
}

#[test]
fn allow_comments_and_baselines_silence_known_secrets() {
    let c = corpus();
    let root = c.dir.path().to_path_buf();
    let first = scan_paths(std::slice::from_ref(&root), &Options::default(), None);
    let baseline = Baseline::of(&first);
    // Moving a line does not revive it: the baseline is keyed by the secret, not its place.
    let env = root.join(".env");
    let text = fs::read_to_string(&env).unwrap();
    fs::write(&env, format!("\n\n{text}")).unwrap();
    let mut again = scan_paths(std::slice::from_ref(&root), &Options::default(), None);
    baseline.apply(&mut again);
    assert!(again.findings.is_empty(), "{:#?}", again.findings);
    assert_eq!(again.stats.baselined, 7);
    fs::write(
        &env,
        format!(
            "WHATSAPP_ACCESS_TOKEN={} # permatoken:allow (a revoked token in docs)\n",
            c.token
        ),
    )
    .unwrap();
    let scan = scan_paths(&[env], &Options::default(), None);
    assert!(scan.findings.is_empty());
    assert_eq!(scan.stats.allowed, 1);
}

#[test]
fn gitignore_is_honoured_only_when_asked() {
    let c = corpus();
    let root = c.dir.path();
    fs::write(root.join(".gitignore"), "deploy/\n").unwrap();
    let all = scan_paths(&[root.to_path_buf()], &Options::default(), None);
    let options = Options {
        respect_gitignore: true,
        ..Options::default()
    };
    let respected = scan_paths(&[root.to_path_buf()], &options, None);
    assert_eq!(all.findings.len(), respected.findings.len() + 1);
}

fn run_git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[test]
fn git_history_names_the_oldest_commit_and_whether_head_still_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    run_git(repo, &["init", "-q", "-b", "main"]);
    let token = permatoken_sandbox::fake_token(APP)
        .expose_secret()
        .to_owned();
    let secret = hex(32, 99);
    fs::write(
        repo.join(".env"),
        format!("WHATSAPP_ACCESS_TOKEN={token}\n"),
    )
    .unwrap();
    fs::write(
        repo.join("fb.py"),
        format!("FACEBOOK_APP_SECRET = '{secret}'\n"),
    )
    .unwrap();
    run_git(repo, &["add", "-A"]);
    run_git(repo, &["commit", "-qm", "first"]);
    let first = String::from_utf8(
        std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["rev-parse", "HEAD"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    // The token moves down a line (a new blob, same secret), then the secret is removed.
    fs::write(
        repo.join(".env"),
        format!("# prod\nWHATSAPP_ACCESS_TOKEN={token}\n"),
    )
    .unwrap();
    fs::write(
        repo.join("fb.py"),
        "FACEBOOK_APP_SECRET = os.environ['FACEBOOK_APP_SECRET']\n",
    )
    .unwrap();
    run_git(repo, &["commit", "-qam", "second"]);
    let scan = scan_git(repo, &Options::default()).unwrap();
    assert_eq!(scan.stats.commits, 2);
    assert_eq!(scan.stats.blobs, 4, "each distinct blob read once");
    let by_path = |p: &str| {
        scan.findings
            .iter()
            .find(|f| f.path == p)
            .unwrap_or_else(|| panic!("{p}: {:#?}", scan.findings))
    };
    let env = by_path(".env");
    assert_eq!(
        env.commit.as_deref(),
        Some(first.as_str()),
        "the oldest commit that brought it"
    );
    assert_eq!(env.at_head, Some(true));
    let fb = by_path("fb.py");
    assert_eq!(fb.kind, Kind::AppSecret);
    assert_eq!(fb.at_head, Some(false), "removed, but still in history");
    assert_eq!(scan.findings.len(), 2);
}

#[test]
fn a_sha256_repository_names_its_commits_and_paths_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    run_git(repo, &["init", "-q", "--object-format=sha256"]);
    fs::write(
        repo.join("réglages.env"),
        format!("FACEBOOK_APP_SECRET={}\n", hex(32, 98)),
    )
    .unwrap();
    run_git(repo, &["add", "-A"]);
    run_git(repo, &["commit", "-qm", "first"]);
    let scan = scan_git(repo, &Options::default()).unwrap();
    assert_eq!(scan.stats.commits, 1);
    assert_eq!(scan.findings.len(), 1);
    assert_eq!(scan.findings[0].commit.as_ref().map(String::len), Some(64));
    assert_eq!(scan.findings[0].path, "réglages.env", "not octal-escaped");
}
