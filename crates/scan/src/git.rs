//! `--git`: every blob in a repository's history, each distinct blob read once, through the `git`
//! command (`git log --raw` for which commit brought which blob to which path, `git cat-file --batch`
//! for the contents). Each finding names the oldest commit that brought its secret to its path, and
//! whether the secret is still anywhere in HEAD's tree.
//!
//! It fails closed: git's non-zero exit, output cut short, or a blob the history names that git never
//! gave is an error naming what could not be read, never a clean scan. A blob over the size limit is
//! streamed past in bounded chunks, never held.
//!
//! Must never: report "clean" for a history it did not read whole, or hold a blob larger than the size
//! limit in memory.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Child;
use std::process::{Command, Stdio};

use crate::detect::{Detectors, Kind};
use crate::{Options, Scan, findings_in, looks_binary};

/// Why the history could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// `git` could not be run.
    #[error("cannot run `git` ({0}); --git needs git on the PATH")]
    Spawn(std::io::Error),
    /// `git` refused, or ended with a non-zero status.
    #[error("`git {command}` failed in `{repo}`: {stderr}")]
    Failed {
        /// What was run.
        command: String,
        /// Where.
        repo: String,
        /// What git said (at most a few KiB), not sanitised: a terminal needs it sanitised.
        stderr: String,
    },
    /// git's output could not be read, or ended in the middle of an object.
    #[error("cannot read the history of `{repo}`: {reason}; the scan is incomplete")]
    Read {
        /// Where.
        repo: String,
        /// What went wrong.
        reason: String,
    },
    /// Blobs the history names that git never gave: a damaged repository, or a partial clone.
    #[error(
        "{count} blob(s) of the history of `{repo}` could not be read ({examples}){git_said}; the repository is damaged or a partial clone: run `git fsck`, fetch the missing objects (a clone without --filter or --depth), then scan again"
    )]
    Unread {
        /// Where.
        repo: String,
        /// How many.
        count: usize,
        /// The first few, as `blob (path in commit)`.
        examples: String,
        /// `; git said: …` when git wrote to its standard error, else empty; not sanitised.
        git_said: String,
    },
}

/// How much of git's standard error is kept for a message.
const STDERR_CAP: usize = 4096;

fn stderr_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(STDERR_CAP)]);
    text.trim().to_owned()
}

fn git(repo: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(GitError::Spawn)?;
    if !out.status.success() {
        return Err(GitError::Failed {
            command: args.join(" "),
            repo: repo.display().to_string(),
            stderr: stderr_text(&out.stderr),
        });
    }
    Ok(out.stdout)
}

/// Reads a child's standard error on its own thread (so that neither pipe blocks the other), keeping
/// at most [`STDERR_CAP`] bytes.
fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<Vec<u8>> {
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut stderr) = stderr {
            let _ = (&mut stderr).take(STDERR_CAP as u64).read_to_end(&mut kept);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        }
        kept
    })
}

/// Scans every blob of the history of the repository at `repo`.
pub fn scan_git(repo: &Path, options: &Options) -> Result<Scan, GitError> {
    git(repo, &["rev-parse", "--git-dir"])?;
    // Oldest first: the first time a (blob, path) pair appears is the commit that brought it.
    let log = git(
        repo,
        &[
            // Paths as they are, not octal-escaped: `é.env`, not `"\303\251.env"`.
            "-c",
            "core.quotePath=false",
            "log",
            "--all",
            "--reverse",
            "--no-renames",
            "--raw",
            "--no-abbrev",
            "--format=%H",
        ],
    )?;
    let mut commit = String::new();
    let mut commits = 0u64;
    // blob -> [(path, commit index, commit)]
    let mut brought: HashMap<String, Vec<(String, usize, String)>> = HashMap::new();
    let mut pairs: HashSet<(String, String)> = HashSet::new();
    for line in log.split(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(line);
        // A commit id: 40 hex digits, or 64 in a SHA-256 repository.
        if matches!(line.len(), 40 | 64) && line.bytes().all(|b| b.is_ascii_hexdigit()) {
            commit = line.into_owned();
            commits += 1;
            continue;
        }
        let Some(raw) = line.strip_prefix(':') else {
            continue;
        };
        let Some((meta, path)) = raw.split_once('\t') else {
            continue;
        };
        let fields: Vec<&str> = meta.split(' ').collect();
        // Deleted paths bring nothing; a submodule (mode 160000) names a commit of another repository.
        if fields.len() < 5 || fields[4].starts_with('D') || fields[1] == "160000" {
            continue;
        }
        let blob = fields[3];
        if blob.bytes().all(|b| b == b'0') {
            continue;
        }
        // A set, not a search of the blob's paths: one blob at a hundred thousand paths (an empty
        // file, a vendored licence) must not cost their square.
        if pairs.insert((blob.to_owned(), path.to_owned())) {
            brought.entry(blob.to_owned()).or_default().push((
                path.to_owned(),
                commits as usize,
                commit.clone(),
            ));
        }
    }
    drop(pairs);
    // An empty repository has no HEAD; any other failure to read HEAD's tree is an error.
    let has_head = git(repo, &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]).is_ok();
    let head: HashSet<String> = if has_head {
        String::from_utf8_lossy(&git(repo, &["ls-tree", "-r", "--full-tree", "HEAD"])?)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
            .collect()
    } else {
        HashSet::new()
    };

    // Every object in pack order (`--unordered`): delta bases are then still in git's cache, which
    // makes reading a history several times faster than asking for blobs one by one.
    const CAT_FILE: [&str; 4] = ["cat-file", "--batch-all-objects", "--batch", "--unordered"];
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(CAT_FILE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(GitError::Spawn)?;
    let stderr = collect_stderr(&mut child);
    let mut out = BufReader::with_capacity(1 << 20, child.stdout.take().expect("piped"));
    let mut scan = Scan::default();
    scan.stats.commits = commits;
    let mut read = Reading::default();
    let result = read_objects(&mut out, &brought, &head, options, &mut scan, &mut read);
    drop(out);
    if result.is_err() {
        // Stop git rather than wait for it to write what nobody reads.
        let _ = child.kill();
    }
    let status = child.wait();
    let stderr = stderr.join().unwrap_or_default();
    let failed = |stderr: &[u8]| GitError::Failed {
        command: CAT_FILE.join(" "),
        repo: repo.display().to_string(),
        stderr: stderr_text(stderr),
    };
    let status = status.map_err(|e| GitError::Read {
        repo: repo.display().to_string(),
        reason: format!("waiting for git failed: {e}"),
    })?;
    match result {
        // git's own complaint says more than the read that failed because of it.
        Err(_) if !stderr.is_empty() => return Err(failed(&stderr)),
        Err(reason) => {
            return Err(GitError::Read {
                repo: repo.display().to_string(),
                reason,
            });
        }
        Ok(()) if !status.success() => return Err(failed(&stderr)),
        Ok(()) => {}
    }
    let unread: Vec<(&String, &(String, usize, String))> = brought
        .iter()
        .filter(|(blob, _)| !read.seen.contains(blob.as_str()))
        .filter_map(|(blob, places)| places.first().map(|p| (blob, p)))
        .collect();
    if !unread.is_empty() {
        let mut examples: Vec<String> = unread
            .iter()
            .map(|(blob, (path, _, commit))| {
                format!(
                    "{blob} ({path} in commit {})",
                    &commit[..commit.len().min(12)]
                )
            })
            .collect();
        examples.sort();
        let more = examples.len().saturating_sub(3);
        examples.truncate(3);
        let mut examples = examples.join(", ");
        if more > 0 {
            examples.push_str(&format!(" and {more} more"));
        }
        return Err(GitError::Unread {
            repo: repo.display().to_string(),
            count: unread.len(),
            examples,
            git_said: if stderr.is_empty() {
                String::new()
            } else {
                format!("; git said: {}", stderr_text(&stderr))
            },
        });
    }
    let Reading {
        found,
        head_secrets,
        ..
    } = read;
    let mut findings: Vec<crate::Finding> = found
        .into_values()
        .map(|(_, mut f)| {
            f.at_head = Some(head_secrets.contains(&f.sha256));
            f
        })
        .collect();
    findings.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
    scan.findings = findings;
    Ok(scan)
}

/// What reading the objects gathered.
#[derive(Default)]
struct Reading {
    /// (path, kind, sha) -> finding, the oldest commit kept.
    found: HashMap<(String, Kind, String), (usize, crate::Finding)>,
    /// Secrets in HEAD's tree.
    head_secrets: HashSet<String>,
    /// The blobs of the history that were read (or skipped for their size or content).
    seen: HashSet<String>,
}

/// The longest header line of `git cat-file --batch`: an object id, a type and a size.
const HEADER_CAP: u64 = 256;

/// Reads `git cat-file --batch` output to its end; `Err` says why it stopped early.
fn read_objects(
    out: &mut impl BufRead,
    brought: &HashMap<String, Vec<(String, usize, String)>>,
    head: &HashSet<String>,
    options: &Options,
    scan: &mut Scan,
    read: &mut Reading,
) -> Result<(), String> {
    let detectors = Detectors::new();
    let mut header = Vec::new();
    loop {
        header.clear();
        let n = out
            .take(HEADER_CAP)
            .read_until(b'\n', &mut header)
            .map_err(|e| format!("reading git's output failed: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        if header.last() != Some(&b'\n') {
            return Err("git's output ended in the middle of an object header".into());
        }
        let header = String::from_utf8_lossy(&header);
        let mut parts = header.split_whitespace();
        let (Some(id), Some(kind), Some(size)) = (parts.next(), parts.next(), parts.next()) else {
            // "<id> missing": the blob is then never seen, and reported as unread.
            continue;
        };
        let size: u64 = size.parse().map_err(|_| {
            format!(
                "git gave an object header without a size: {}",
                header.trim()
            )
        })?;
        let wanted = match brought.get_key_value(id) {
            Some(wanted) if kind == "blob" => {
                read.seen.insert(id.to_owned());
                if size > options.max_file_size {
                    scan.stats.blobs += 1;
                    scan.stats.skipped_large += 1;
                    None
                } else {
                    Some(wanted)
                }
            }
            _ => None,
        };
        let Some((blob, places)) = wanted else {
            // Trees, commits, blobs no commit reaches, blobs over the limit: streamed past in
            // bounded chunks, the object and its trailing newline.
            let skipped = std::io::copy(&mut out.take(size + 1), &mut std::io::sink())
                .map_err(|e| format!("reading git's output failed: {e}"))?;
            if skipped != size + 1 {
                return Err(format!("git's output ended in the middle of object {id}"));
            }
            continue;
        };
        // The content and its trailing newline; below the size limit, so bounded. Zeroed when
        // dropped: it may hold secrets.
        let mut content = zeroize::Zeroizing::new(vec![0; size as usize + 1]);
        out.read_exact(&mut content)
            .map_err(|_| format!("git's output ended in the middle of blob {blob}"))?;
        content.pop();
        scan.stats.blobs += 1;
        if looks_binary(&content) {
            scan.stats.skipped_binary += 1;
            continue;
        }
        scan.stats.files += 1;
        scan.stats.bytes += size;
        let mut allowed = 0;
        let hits = findings_in(&detectors, "", &content, &mut allowed);
        scan.stats.allowed += allowed;
        if head.contains(blob) {
            read.head_secrets
                .extend(hits.iter().map(|f| f.sha256.clone()));
        }
        for (path, order, commit) in places {
            for hit in &hits {
                let key = (path.clone(), hit.kind, hit.sha256.clone());
                let older = read.found.get(&key).is_none_or(|(o, _)| order < o);
                if older {
                    let mut finding = hit.clone();
                    finding.path = path.clone();
                    finding.commit = Some(commit.clone());
                    read.found.insert(key, (*order, finding));
                }
            }
        }
    }
}
