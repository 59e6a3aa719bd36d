//! Finding leaked Meta credentials: access tokens, app tokens and app secrets, in files, standard
//! input and git history, each decoded offline to the app it belongs to.
//!
//! This room reads and detects; the binary renders and verifies. A finding keeps its secret only as
//! the `secret` crate's type for it ([`Secret`]), zeroed on drop and never serialised, for `--verify`;
//! the baseline keys on its SHA-256.
//!
//! Time and memory are linear in what is read, whatever it holds: the detectors look at bounded
//! windows, and line and column are counted in one pass over each buffer.
//!
//! Must never: print or serialise a secret, follow a `.git` folder's internals as files, change
//! anything it scans, or read a file larger than the size limit into memory.

mod detect;
mod git;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use permatoken_secret::{AccessToken, AppSecret, AppToken};
use serde::{Deserialize, Serialize};

pub use detect::Kind;
use detect::{Detectors, Hit};
pub use git::{GitError, scan_git};

/// A found secret, as the `secret` crate types it: `Debug` shows only a fingerprint, the memory is
/// zeroed on drop, and nothing serialises it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Secret {
    /// `EAA…`.
    AccessToken(AccessToken),
    /// `APP_ID|APP_SECRET` (or `%7C`): its app id and secret parts.
    AppToken(AppToken),
    /// A bare app secret.
    AppSecret(AppSecret),
}

impl Secret {
    /// The secret of kind `kind` written as `text`; `None` when the text does not have the kind's
    /// shape (the detectors only report text that does).
    fn new(kind: Kind, text: &str) -> Option<Self> {
        Some(match kind {
            Kind::AccessToken => Self::AccessToken(AccessToken::new(text)),
            Kind::AppToken => Self::AppToken(AppToken::parse(text)?),
            Kind::AppSecret => Self::AppSecret(AppSecret::new(text)),
        })
    }

    /// The fingerprint shown for it: never the secret.
    pub fn fingerprint(&self) -> String {
        match self {
            Self::AccessToken(t) => t.fingerprint(),
            Self::AppToken(t) => t.fingerprint(),
            Self::AppSecret(s) => s.fingerprint(),
        }
    }
}

/// What `--verify` found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verified {
    /// It works: rotate it now.
    Live,
    /// It expired.
    Expired,
    /// The API refuses it.
    Invalid,
    /// Could not tell.
    Unknown,
}

/// One leaked secret, where it was found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What it is.
    pub kind: Kind,
    /// The path as given, joined with the file's relative path; `-` for standard input.
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in Unicode code points.
    pub column: usize,
    /// First and last characters and a short SHA-256: never the secret.
    pub fingerprint: String,
    /// The app it belongs to (decoded from a token, or assigned near a secret).
    pub app_id: Option<String>,
    /// In `--git` scans: the oldest commit that brought this secret to this path.
    pub commit: Option<String>,
    /// In `--git` scans: whether the secret is still in HEAD's tree.
    pub at_head: Option<bool>,
    /// `--verify`'s answer.
    pub verified: Option<Verified>,
    /// SHA-256 of the secret, hex: the baseline's key, so moving a line does not revive a finding.
    pub sha256: String,
    #[serde(skip)]
    secret: Secret,
}

impl Finding {
    /// The secret, for `--verify`.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }
}

/// Counts for the report.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// Files (or blobs) read.
    pub files: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Files skipped because they look binary (a NUL byte in the first 8 KiB).
    pub skipped_binary: u64,
    /// Files skipped because they are larger than the limit.
    pub skipped_large: u64,
    /// Files that could not be read.
    pub unreadable: u64,
    /// Findings silenced by a `permatoken:allow` comment.
    pub allowed: u64,
    /// Findings silenced by the baseline.
    pub baselined: u64,
    /// In `--git` scans: distinct blobs read, and commits walked.
    pub blobs: u64,
    /// Commits walked.
    pub commits: u64,
}

/// A finished scan.
#[derive(Debug, Default, Serialize)]
pub struct Scan {
    /// What was found, sorted by path, line and column.
    pub findings: Vec<Finding>,
    /// Counts.
    pub stats: Stats,
}

/// How to scan.
#[derive(Debug, Clone)]
pub struct Options {
    /// Honour `.gitignore` and `.ignore` files.
    pub respect_gitignore: bool,
    /// Files larger than this are skipped and counted.
    pub max_file_size: u64,
    /// Worker threads.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            respect_gitignore: false,
            max_file_size: 50 * 1024 * 1024,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files read so far.
    pub files: AtomicU64,
    /// Bytes read so far.
    pub bytes: AtomicU64,
}

const ALLOW: &[u8] = b"permatoken:allow";

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn looks_binary(bytes: &[u8]) -> bool {
    memchr::memchr(0, &bytes[..bytes.len().min(8192)]).is_some()
}

/// Code points in `bytes`: every byte that does not continue a UTF-8 sequence starts one. Exact for
/// UTF-8, and additive, so a line can be counted piece by piece; in text that is not UTF-8 a stray
/// continuation byte counts as nothing.
fn code_points(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| !(0x80..0xc0).contains(*b)).count()
}

/// Line and column of ascending positions in a buffer, counted in one pass: each byte is looked at a
/// bounded number of times however many findings the buffer holds, so a crafted file of a million
/// findings on one line costs no more than reading it.
struct Position<'a> {
    text: &'a [u8],
    /// Counted up to here.
    at: usize,
    /// 1-based line and column of `at`.
    line: usize,
    column: usize,
    /// The start of the line of `at`.
    line_start: usize,
    /// Whether the line starting at `.0` holds `permatoken:allow`, once asked.
    allow: Option<(usize, bool)>,
}

impl<'a> Position<'a> {
    fn new(text: &'a [u8]) -> Self {
        Self {
            text,
            at: 0,
            line: 1,
            column: 1,
            line_start: 0,
            allow: None,
        }
    }

    /// Moves to `to`, which is not before the previous position.
    fn advance(&mut self, to: usize) {
        let between = &self.text[self.at..to];
        match memchr::memrchr(b'\n', between) {
            Some(last) => {
                self.line += memchr::memchr_iter(b'\n', between).count();
                self.line_start = self.at + last + 1;
                self.column = 1 + code_points(&self.text[self.line_start..to]);
            }
            None => self.column += code_points(between),
        }
        self.at = to;
    }

    /// Whether the current line holds `permatoken:allow`: each line searched once.
    fn allowed(&mut self) -> bool {
        match self.allow {
            Some((start, allowed)) if start == self.line_start => allowed,
            _ => {
                let rest = &self.text[self.line_start..];
                let line = &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())];
                let allowed = memchr::memmem::find(line, ALLOW).is_some();
                self.allow = Some((self.line_start, allowed));
                allowed
            }
        }
    }
}

/// The findings of one buffer, named `path`; allowed ones only counted.
pub(crate) fn findings_in(
    detectors: &Detectors,
    path: &str,
    text: &[u8],
    allowed: &mut u64,
) -> Vec<Finding> {
    // The detectors give hits in ascending order, so one cursor serves them all.
    let hits: Vec<Hit> = detectors.detect(text);
    let mut out = Vec::with_capacity(hits.len());
    let mut position = Position::new(text);
    for hit in hits {
        position.advance(hit.range.start);
        if position.allowed() {
            *allowed += 1;
            continue;
        }
        let bytes = &text[hit.range.clone()];
        // Every detector matches ASCII only; anything else would be a detector's bug, not a secret.
        let Some(secret) = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| Secret::new(hit.kind, text))
        else {
            continue;
        };
        out.push(Finding {
            kind: hit.kind,
            path: path.to_owned(),
            line: position.line,
            column: position.column,
            fingerprint: secret.fingerprint(),
            app_id: hit.app_id,
            commit: None,
            at_head: None,
            verified: None,
            sha256: sha256_hex(bytes),
            secret,
        });
    }
    out
}

/// Scans one buffer (standard input, a blob).
pub fn scan_bytes(path: &str, bytes: &[u8]) -> Scan {
    // Built once: a fuzzer or a pre-commit hook calls this for many small buffers.
    static DETECTORS: std::sync::OnceLock<Detectors> = std::sync::OnceLock::new();
    let detectors = DETECTORS.get_or_init(Detectors::new);
    let mut scan = Scan::default();
    scan.stats.files = 1;
    scan.stats.bytes = bytes.len() as u64;
    scan.findings = findings_in(detectors, path, bytes, &mut scan.stats.allowed);
    scan
}

/// Scans files and folders: a parallel walk of every file, hidden ones included, `.git` internals
/// skipped.
pub fn scan_paths(paths: &[PathBuf], options: &Options, progress: Option<&Progress>) -> Scan {
    let detectors = Detectors::new();
    let findings = Mutex::new(Vec::new());
    let stats = Mutex::new(Stats::default());
    let Some((first, rest)) = paths.split_first() else {
        return Scan::default();
    };
    let mut walk = ignore::WalkBuilder::new(first);
    for p in rest {
        walk.add(p);
    }
    let respect = options.respect_gitignore;
    walk.hidden(false)
        .git_ignore(respect)
        .git_exclude(respect)
        .git_global(respect)
        .ignore(respect)
        .parents(respect)
        .require_git(false)
        .follow_links(false)
        .threads(options.threads)
        .filter_entry(|e| e.file_name() != ".git");
    walk.build_parallel().run(|| {
        let detectors = &detectors;
        let findings = &findings;
        let stats = &stats;
        Box::new(move |entry| {
            let Ok(entry) = entry else {
                stats.lock().unwrap_or_else(|e| e.into_inner()).unreadable += 1;
                return ignore::WalkState::Continue;
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return ignore::WalkState::Continue;
            }
            let path = entry.path();
            let size = entry.metadata().map_or(0, |m| m.len());
            if size > options.max_file_size {
                stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .skipped_large += 1;
                return ignore::WalkState::Continue;
            }
            let Ok(bytes) = read_capped(path, options.max_file_size) else {
                stats.lock().unwrap_or_else(|e| e.into_inner()).unreadable += 1;
                return ignore::WalkState::Continue;
            };
            let Some(bytes) = bytes else {
                // It grew past the limit after its size was read.
                stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .skipped_large += 1;
                return ignore::WalkState::Continue;
            };
            if let Some(p) = progress {
                p.files.fetch_add(1, Ordering::Relaxed);
                p.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            if looks_binary(&bytes) {
                stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .skipped_binary += 1;
                return ignore::WalkState::Continue;
            }
            let mut allowed = 0;
            let found = findings_in(detectors, &display(path), &bytes, &mut allowed);
            {
                let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                s.files += 1;
                s.bytes += bytes.len() as u64;
                s.allowed += allowed;
            }
            if !found.is_empty() {
                findings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(found);
            }
            ignore::WalkState::Continue
        })
    });
    let mut findings = findings.into_inner().unwrap_or_else(|e| e.into_inner());
    findings.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
    Scan {
        findings,
        stats: stats.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}

/// The file's bytes, or `None` when it holds more than `limit`: never more than `limit + 1` in memory.
fn read_capped(path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A baseline: secrets already known, by kind and SHA-256, so moving a line does not revive them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Baseline {
    /// Format version.
    pub version: u32,
    /// The known secrets.
    pub secrets: Vec<BaselineEntry>,
}

/// One known secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineEntry {
    /// Its kind.
    pub kind: Kind,
    /// SHA-256 of the secret, hex.
    pub sha256: String,
}

impl Baseline {
    /// The baseline of a scan's findings.
    pub fn of(scan: &Scan) -> Self {
        let mut secrets: Vec<BaselineEntry> = scan
            .findings
            .iter()
            .map(|f| BaselineEntry {
                kind: f.kind,
                sha256: f.sha256.clone(),
            })
            .collect();
        secrets.sort_by(|a, b| (a.kind, &a.sha256).cmp(&(b.kind, &b.sha256)));
        secrets.dedup();
        Self {
            version: 1,
            secrets,
        }
    }

    /// Drops the findings the baseline knows, and counts them.
    pub fn apply(&self, scan: &mut Scan) {
        // A set: a baseline and a scan of a hundred thousand entries each must not cost their product.
        let known: std::collections::HashSet<(Kind, &str)> = self
            .secrets
            .iter()
            .map(|s| (s.kind, s.sha256.as_str()))
            .collect();
        let before = scan.findings.len();
        scan.findings
            .retain(|f| !known.contains(&(f.kind, f.sha256.as_str())));
        scan.stats.baselined += (before - scan.findings.len()) as u64;
    }
}
