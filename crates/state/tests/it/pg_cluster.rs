//! A throwaway PostgreSQL cluster for tests: Debian's binaries (`/usr/lib/postgresql/*/bin`), run as
//! the `postgres` user (tests run as root) in a temporary folder, listening on a free loopback port
//! and a socket in that folder, stopped (`pg_ctl stop -m immediate`) when dropped.
//!
//! Roles: `postgres` (superuser, trusted), `trusted` (no password, trusted from 127.0.0.1) and
//! `watch` (a password made at run time, SCRAM); pg_hba.conf rejects a role named `rejected`.
//! Under `CI=true` a missing PostgreSQL fails the test; elsewhere the test is skipped, loudly.
//!
//! Shared with crates/cli's tests by `#[path]`: keep it free of anything but std and tempfile.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const TRUSTED: &str = "trusted";
pub const WATCH: &str = "watch";

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    pub port: u16,
    password: String,
    /// The server's options, its port in them: [`PgCluster::start_again`] starts it as it was.
    options: String,
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn find_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn uid_of(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|s| s.trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unavailable(why: &str) -> Option<PgCluster> {
    let ci = std::env::vars_os().any(|(k, v)| k == "CI" && v == "true");
    assert!(!ci, "PostgreSQL is needed under CI=true: {why}");
    eprintln!(
        "\n*** SKIPPED: no PostgreSQL for this test ({why}); install Debian's `postgresql` ***\n"
    );
    None
}

/// Runs `program` from the cluster's `bin` as the `postgres` user.
fn as_postgres(bin: &Path, program: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(program));
    c
}

fn run(mut c: Command, what: &str) -> String {
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl PgCluster {
    /// A running cluster without TLS, or `None` (said) where PostgreSQL is not available.
    pub fn start() -> Option<Self> {
        Self::start_with_tls(None)
    }

    /// With `tls = Some((certificate PEM, key PEM))`, the server offers TLS with them.
    pub fn start_with_tls(tls: Option<(&str, &str)>) -> Option<Self> {
        let Some(bin) = find_bin() else {
            return unavailable("no /usr/lib/postgresql/*/bin/initdb");
        };
        if !is_root() {
            return unavailable(
                "the cluster is started as `postgres` through runuser, which needs root",
            );
        }
        let Some((uid, gid)) = uid_of("postgres") else {
            return unavailable("no `postgres` user");
        };
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let data = dir.path().join("data");
        let socket = dir.path().join("socket");
        std::fs::create_dir(&socket).unwrap();
        std::os::unix::fs::chown(&socket, Some(uid), Some(gid)).unwrap();
        let mut initdb = as_postgres(&bin, "initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(initdb, "initdb");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all trusted 127.0.0.1/32 trust\n\
             host all rejected 127.0.0.1/32 reject\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -c port={{port}} -k {} -c fsync=off -c max_connections=40",
            socket.display()
        );
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = data.join(name);
                std::fs::write(&path, pem).unwrap();
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .unwrap();
            }
            options.push_str(" -c ssl=on");
        }
        // A port taken between choosing and binding is tried again with another.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let log = dir.path().join("server.log");
            let options = options.replace("{port}", &port.to_string());
            let out = as_postgres(&bin, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &options])
                .arg("start")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                let mut cluster = Self {
                    dir,
                    bin,
                    data,
                    socket,
                    port,
                    password: String::new(),
                    options,
                };
                cluster.password = format!("PERMATOKENTEST-pw-{}-{port}", std::process::id());
                let password = cluster.password.clone();
                cluster.psql(
                    "postgres",
                    &format!(
                        "CREATE ROLE {TRUSTED} LOGIN CREATEDB; CREATE ROLE {WATCH} LOGIN CREATEDB PASSWORD '{password}';"
                    ),
                );
                return Some(cluster);
            }
            last = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("PostgreSQL did not start:\n{last}");
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended, as in a restart), keeping its
    /// data for [`PgCluster::start_again`].
    pub fn stop(&self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"]);
        run(c, "pg_ctl stop");
    }

    /// Starts the stopped server again, on the same port.
    pub fn start_again(&self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &self.options, "start"]);
        run(c, "pg_ctl start");
    }

    /// The `watch` role's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://<role>@127.0.0.1:<port>/<db>` followed by `query`.
    pub fn url(&self, role: &str, db: &str, query: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{db}{query}", self.port)
    }

    /// Creates database `db` owned by `owner`.
    pub fn create_database(&self, db: &str, owner: &str) {
        self.psql("postgres", &format!("CREATE DATABASE {db} OWNER {owner};"));
    }

    /// Runs `sql` (given on standard input, so nothing shows in `ps`) as the superuser over the
    /// socket; returns the unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut child = as_postgres(&self.bin, "psql")
            .arg("-h")
            .arg(&self.socket)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `pg_dump` of `db` as plain SQL text, data included.
    pub fn dump(&self, db: &str) -> String {
        let mut c = as_postgres(&self.bin, "pg_dump");
        c.arg("-h")
            .arg(&self.socket)
            .args(["-p", &self.port.to_string(), "-U", "postgres", db]);
        run(c, "pg_dump")
    }

    /// A folder the test may write into (owned by root; the server does not read it).
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
