//! `--git`: every blob in a repository's history, each distinct blob read once, through the `git`
//! command (`git log --raw` for which commit brought which blob to which path, `git cat-file --batch`
//! for the contents). Each finding names the oldest commit that brought its secret to its path, and
//! whether the secret is still anywhere in HEAD's tree.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
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
    /// `git` refused.
    #[error("`git {command}` failed in `{repo}`: {stderr}")]
    Failed {
        /// What was run.
        command: String,
        /// Where.
        repo: String,
        /// What git said.
        stderr: String,
    },
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
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

/// Scans every blob of the history of the repository at `repo`.
pub fn scan_git(repo: &Path, options: &Options) -> Result<Scan, GitError> {
    git(repo, &["rev-parse", "--git-dir"])?;
    // Oldest first: the first time a (blob, path) pair appears is the commit that brought it.
    let log = git(
        repo,
        &[
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
    for line in log.split(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(line);
        if line.len() == 40 && line.bytes().all(|b| b.is_ascii_hexdigit()) {
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
        if fields.len() < 5 || fields[4].starts_with('D') {
            continue;
        }
        let blob = fields[3];
        if blob.bytes().all(|b| b == b'0') {
            continue;
        }
        let entry = brought.entry(blob.to_owned()).or_default();
        if !entry.iter().any(|(p, _, _)| p == path) {
            entry.push((path.to_owned(), commits as usize, commit.clone()));
        }
    }
    let head: HashSet<String> = match git(repo, &["ls-tree", "-r", "--full-tree", "HEAD"]) {
        Ok(tree) => String::from_utf8_lossy(&tree)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
            .collect(),
        Err(_) => HashSet::new(), // an empty repository has no HEAD
    };

    // Every object in pack order (`--unordered`): delta bases are then still in git's cache, which
    // makes reading a history several times faster than asking for blobs one by one.
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["cat-file", "--batch-all-objects", "--batch", "--unordered"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(GitError::Spawn)?;
    let mut out = BufReader::with_capacity(1 << 20, child.stdout.take().expect("piped"));
    let detectors = Detectors::new();
    let mut scan = Scan::default();
    scan.stats.commits = commits;
    // (path, kind, sha) -> finding, the oldest commit kept.
    let mut found: HashMap<(String, Kind, String), (usize, crate::Finding)> = HashMap::new();
    let mut head_secrets: HashSet<String> = HashSet::new();
    let mut header = String::new();
    loop {
        header.clear();
        if out.read_line(&mut header).unwrap_or(0) == 0 {
            break;
        }
        let mut parts = header.split_whitespace();
        let (Some(id), Some(kind), Some(size)) = (parts.next(), parts.next(), parts.next()) else {
            continue; // "<id> missing"
        };
        let Some((blob, places)) = brought.get_key_value(id) else {
            // Trees, commits, and blobs no commit reaches: read past them.
            let size: u64 = size.parse().unwrap_or(0);
            if std::io::copy(&mut (&mut out).take(size + 1), &mut std::io::sink()).is_err() {
                break;
            }
            continue;
        };
        let size: usize = size.parse().unwrap_or(0);
        let mut content = vec![0; size + 1]; // the content and its trailing newline
        if out.read_exact(&mut content).is_err() {
            break;
        }
        content.pop();
        if kind != "blob" {
            continue;
        }
        scan.stats.blobs += 1;
        if size as u64 > options.max_file_size {
            scan.stats.skipped_large += 1;
            continue;
        }
        if looks_binary(&content) {
            scan.stats.skipped_binary += 1;
            continue;
        }
        scan.stats.files += 1;
        scan.stats.bytes += size as u64;
        let mut allowed = 0;
        let hits = findings_in(&detectors, "", &content, &mut allowed);
        scan.stats.allowed += allowed;
        if head.contains(blob) {
            head_secrets.extend(hits.iter().map(|f| f.sha256.clone()));
        }
        for (path, order, commit) in places {
            for hit in &hits {
                let key = (path.clone(), hit.kind, hit.sha256.clone());
                let older = found.get(&key).is_none_or(|(o, _)| order < o);
                if older {
                    let mut finding = hit.clone();
                    finding.path = path.clone();
                    finding.commit = Some(commit.clone());
                    found.insert(key, (*order, finding));
                }
            }
        }
    }
    let _ = child.wait();
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
