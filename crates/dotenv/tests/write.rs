//! Safe writes: modes, owners, symlinks, backups, stale temporaries, and a SIGKILL at random moments.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use permatoken_dotenv::{BACKUPS_KEPT, Locked, MAX_FILE, WriteError};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o777
}

/// The lock of `path`. Held by nobody else, except for a moment by a child another test forks
/// (between fork and exec it shares our open files), so it may have to wait an instant.
fn lock(path: &Path) -> Locked {
    Locked::open(path, Duration::from_secs(30), |_| {}).unwrap()
}

/// FNV-1a of a file name: how every permatoken version names that file's temporaries.
fn name_hash(name: &str) -> String {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_new_file_is_0600_and_an_existing_one_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    let written = lock(&path).replace(b"A=1\n", None).unwrap();
    assert_eq!(written.backup, None, "nothing to back up");
    assert_eq!(fs::read(&path).unwrap(), b"A=1\n");
    assert_eq!(mode(&path), 0o600);
    // A rewrite never loosens nor tightens: a service reading the file through its group (0640)
    // keeps reading it; a loose mode is `check`'s warning, not ours to change.
    let backups = dir.path().join("backups");
    for (n, chosen) in [0o640, 0o644, 0o400, 0o660].into_iter().enumerate() {
        fs::set_permissions(&path, fs::Permissions::from_mode(chosen)).unwrap();
        let written = lock(&path)
            .replace(format!("A={n}\n").as_bytes(), Some(&backups))
            .unwrap();
        assert_eq!(mode(&path), chosen, "{chosen:o} kept");
        let backup = written.backup.expect("backed up");
        assert_eq!(mode(&backup), 0o600, "a backup is a new file of ours: 0600");
    }
    let lock = dir.path().join(".env.lock");
    assert_eq!(mode(&lock), 0o600);
}

#[test]
fn a_file_larger_than_any_env_file_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    let mut big = b"WHATSAPP_ACCESS_TOKEN=EAAPERMATOKENTEST\n".to_vec();
    big.resize(MAX_FILE as usize + 1, b'#');
    fs::write(&path, &big).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let backups = dir.path().join("state").join("backups");
    let locked = lock(&path);
    for err in [
        locked.read().unwrap_err(),
        locked.check_size().unwrap_err(),
        locked.replace(b"A=1\n", Some(&backups)).unwrap_err(),
        locked.replace(b"A=1\n", None).unwrap_err(),
    ] {
        assert!(
            matches!(err, WriteError::TooLarge { cap: MAX_FILE, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "`{}` is larger than 1 MiB, more than any .env or token file, so it was left as it is",
                path.display()
            )
        );
    }
    drop(locked);
    assert_eq!(fs::read(&path).unwrap(), big, "byte for byte as it was");
    assert_eq!(mode(&path), 0o644, "not even its mode changed");
    assert!(!backups.exists(), "no backup folder made for nothing");
    assert_eq!(names_in(dir.path()), [".env", ".env.lock"]);
    // At the cap, it is an ordinary file.
    fs::write(&path, &big[..MAX_FILE as usize]).unwrap();
    let locked = lock(&path);
    assert_eq!(locked.read().unwrap().unwrap().len(), MAX_FILE as usize);
    locked.replace(b"A=1\n", Some(&backups)).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"A=1\n");
}

#[test]
fn owner_and_group_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    fs::write(&path, "A=1\n").unwrap();
    let before = fs::metadata(&path).unwrap();
    // As root (CI), give the file to another owner first, so keeping it is not a coincidence.
    let (uid, gid) = if before.uid() == 0 {
        (65534, 65534)
    } else {
        (before.uid(), before.gid())
    };
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
    lock(&path).replace(b"A=2\n", None).unwrap();
    let after = fs::metadata(&path).unwrap();
    assert_eq!((after.uid(), after.gid()), (uid, gid));
}

/// Run by `an_owner_that_cannot_be_kept_stops_the_write_and_says_so` as another user: rewrites
/// the file and prints the error.
#[test]
fn writer_for_the_owner_test() {
    let Some(path) = std::env::var_os("PERMATOKEN_OWNER_TEST_FILE") else {
        return;
    };
    let locked = lock(Path::new(&path));
    // Asked first (before a token is minted), then the write itself.
    match locked.check_owner() {
        Ok(()) => println!("check: ok"),
        Err(e) => println!("check: {e}"),
    }
    match locked.replace(b"A=2\n", None) {
        Ok(_) => println!("write: written"),
        Err(e) => println!("write: {e}"),
    }
}

#[test]
fn an_owner_that_cannot_be_kept_stops_the_write_and_says_so() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    if fs::metadata(dir.path()).unwrap().uid() != 0 {
        eprintln!("skipped: only root can give a file a group its writer is not in");
        return;
    }
    // `nobody` may write the folder and the file, but the file's group is root's, which `nobody`
    // cannot give the rewritten file.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join(".env");
    fs::write(&path, "A=1\n").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(0)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o660)).unwrap();
    // A copy of this test binary that `nobody` can run, wherever the build folder is.
    let exe = dir.path().join("writer");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["--exact", "writer_for_the_owner_test", "--nocapture"])
        .env("PERMATOKEN_OWNER_TEST_FILE", &path)
        .output()
        .expect("setpriv (util-linux) runs");
    let said = String::from_utf8_lossy(&out.stdout);
    let refusal = format!(
        "cannot keep the owner and group of `{}` (uid 65534, gid 0) on its new content: Operation not permitted (os error 1); so it was left as it is",
        path.display()
    );
    for step in ["check", "write"] {
        assert!(
            said.contains(&format!("{step}: {refusal}")),
            "{step}: {said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(fs::read(&path).unwrap(), b"A=1\n", "nothing written");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (65534, 0, 0o660)
    );
    fs::remove_file(&exe).unwrap();
    assert_eq!(
        names_in(dir.path()),
        [".env", ".env.lock"],
        "no temporary left"
    );
}

#[test]
fn a_symlink_is_written_through_and_stays_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("shared.env");
    fs::write(&real, "A=1\n").unwrap();
    let link = dir.path().join(".env");
    std::os::unix::fs::symlink("shared.env", &link).unwrap();
    let locked = lock(&link);
    assert_eq!(locked.target(), real);
    locked.replace(b"A=2\n", None).unwrap();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&real).unwrap(), b"A=2\n");
}

#[test]
fn backups_live_outside_the_project_and_the_last_five_are_kept() {
    let project = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let backups = state.path().join("permatoken/backups");
    let path = project.path().join(".env");
    fs::write(&path, "A=0\n").unwrap();
    let mut made = Vec::new();
    for i in 1..=7 {
        let written = lock(&path)
            .replace(format!("A={i}\n").as_bytes(), Some(&backups))
            .unwrap();
        let backup = written.backup.expect("a backup of the previous content");
        assert_eq!(
            fs::read_to_string(&backup).unwrap(),
            format!("A={}\n", i - 1)
        );
        assert_eq!(mode(&backup), 0o600);
        made.push(backup);
    }
    assert_eq!(mode(&backups), 0o700);
    let mut left: Vec<_> = fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    assert_eq!(left.len(), BACKUPS_KEPT);
    assert_eq!(left, made[2..], "the oldest go first");
    // Nothing but the file and its lock beside the project's .env: no backup a `git add .` could take.
    let mut beside: Vec<_> = fs::read_dir(project.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    beside.sort();
    assert_eq!(beside, [".env", ".env.lock"]);
}

#[test]
fn stale_temporary_files_are_removed_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    let stale = dir
        .path()
        .join(format!(".permatoken-tmp.{}.12345-678", name_hash(".env")));
    fs::write(&stale, "half a tok").unwrap();
    let unrelated = dir
        .path()
        .join(format!(".permatoken-tmp.{}.1-2", name_hash("prod.env")));
    fs::write(&unrelated, "").unwrap();
    lock(&path).replace(b"A=1\n", None).unwrap();
    assert!(!stale.exists());
    assert!(unrelated.exists(), "only this file's temporaries");
}

/// Run by `a_writer_killed_at_random_moments_never_leaves_a_half_file` in a child process: writes the
/// two versions in turn, forever, until killed.
#[test]
fn writer_for_the_kill_test() {
    let Some(path) = std::env::var_os("PERMATOKEN_KILL_TEST_FILE") else {
        return;
    };
    let backups = std::env::var_os("PERMATOKEN_KILL_TEST_BACKUPS").unwrap();
    let (old, new) = versions();
    for i in 0.. {
        let content = if i % 2 == 0 { &new } else { &old };
        let locked = lock(Path::new(&path));
        locked
            .replace(content.as_bytes(), Some(Path::new(&backups)))
            .unwrap();
    }
}

fn versions() -> (String, String) {
    let token = |c: char| format!("EAAPERMATOKENTEST{}", c.to_string().repeat(3000));
    (
        format!("# app\nWHATSAPP_ACCESS_TOKEN={}\nOTHER=1\n", token('o')),
        format!("# app\nWHATSAPP_ACCESS_TOKEN={}\nOTHER=1\n", token('n')),
    )
}

#[test]
fn a_writer_killed_at_random_moments_never_leaves_a_half_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    let backups = dir.path().join("state");
    let (old, new) = versions();
    fs::write(&path, &old).unwrap();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut kills = 0;
    let mut seen_new = false;
    let mut seed = u64::from(std::process::id()) | 1;
    while kills < 300 && started.elapsed() < Duration::from_secs(60) {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "writer_for_the_kill_test",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PERMATOKEN_KILL_TEST_FILE", &path)
            .env("PERMATOKEN_KILL_TEST_BACKUPS", &backups)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // xorshift: a different moment each time, 0 to 15 ms after the start.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 15_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let now = fs::read_to_string(&path).unwrap();
        assert!(
            now == old || now == new,
            "after kill {kills} the file is neither version ({} bytes)",
            now.len()
        );
        seen_new |= now == new;
    }
    assert!(kills >= 100, "only {kills} kills in the time allowed");
    assert!(seen_new, "the writer got to write at least once");
    // The next writer cleans up what the killed ones left.
    lock(&path).replace(old.as_bytes(), None).unwrap();
    let temps = fs::read_dir(dir.path()).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".permatoken-tmp.")
    });
    assert_eq!(temps.count(), 0);
}

#[test]
fn a_held_lock_is_reported_at_once_and_waited_for_only_so_long() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    fs::write(&path, "A=1\n").unwrap();
    let holder = lock(&path);
    let mut told = None;
    let err = Locked::open(&path, Duration::from_millis(50), |held| {
        told = Some(held.to_owned())
    })
    .err()
    .expect("the lock is held");
    let lock_file = dir.path().join(".env.lock");
    assert_eq!(told.as_deref(), Some(lock_file.as_path()), "told at once");
    match &err {
        WriteError::LockHeld { lock, target, .. } => {
            assert_eq!(lock, &lock_file);
            assert_eq!(target, &path);
        }
        other => panic!("not LockHeld: {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&lock_file.display().to_string()) && message.contains("still locked"),
        "{message}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"A=1\n", "left as it was");
    drop(holder);
    lock(&path).replace(b"A=2\n", None).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"A=2\n");
}

#[test]
fn the_backups_of_a_file_named_like_another_plus_a_suffix_are_its_own() {
    let project = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let env = project.path().join(".env");
    let env1 = project.path().join(".env.1");
    fs::write(&env, "A=0\n").unwrap();
    fs::write(&env1, "B=0\n").unwrap();
    let kept = lock(&env)
        .replace(b"A=1\n", Some(backups.path()))
        .unwrap()
        .backup
        .unwrap();
    for i in 1..=BACKUPS_KEPT + 2 {
        lock(&env1)
            .replace(format!("B={i}\n").as_bytes(), Some(backups.path()))
            .unwrap();
    }
    assert_eq!(
        fs::read(&kept).unwrap(),
        b"A=0\n",
        "the one backup of .env survives"
    );
    let of_env1 = names_in(backups.path())
        .into_iter()
        .filter(|n| n.contains(".env.1."))
        .count();
    assert_eq!(of_env1, BACKUPS_KEPT);
}

#[test]
fn a_file_name_as_long_as_the_system_allows_is_written_locked_and_backed_up() {
    let dir = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let name = "e".repeat(255);
    let path = dir.path().join(&name);
    fs::write(&path, "A=0\n").unwrap();
    let stale = dir
        .path()
        .join(format!(".permatoken-tmp.{}.1-2", name_hash(&name)));
    fs::write(&stale, "half").unwrap();
    for i in 1..=BACKUPS_KEPT + 1 {
        let written = lock(&path)
            .replace(format!("A={i}\n").as_bytes(), Some(backups.path()))
            .unwrap();
        assert_eq!(
            fs::read(written.backup.unwrap()).unwrap(),
            format!("A={}\n", i - 1).as_bytes()
        );
    }
    assert_eq!(fs::read(&path).unwrap(), b"A=6\n");
    assert_eq!(names_in(backups.path()).len(), BACKUPS_KEPT);
    // The file, and its lock under a short name; the killed writer's temporary is gone.
    let beside = names_in(dir.path());
    assert_eq!(beside.len(), 2, "{beside:?}");
    assert!(beside.contains(&name));
    assert!(beside.iter().any(|n| n.starts_with(".permatoken-lock.")));
}
