//! A small builder so a test reads like the user's session: files, environment, arguments, then the
//! exit code and output.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use permatoken_sandbox::{Options, Running, Sandbox};
use serde_json::Value;

/// A sandbox on its own thread, for the lifetime of one test.
pub(crate) fn sandbox() -> Running {
    Sandbox::start_background(&Options::default()).expect("the sandbox starts on loopback")
}

/// A sandbox started with `options`.
pub(crate) fn sandbox_with(options: &Options) -> Running {
    Sandbox::start_background(options).expect("the sandbox starts on loopback")
}

pub(crate) struct Test {
    dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<String>,
}

pub(crate) struct Outcome {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Test {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary folder"),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
        }
    }

    /// A test pointed at `sandbox`, as `PERMATOKEN_GRAPH_URL` would point a user's.
    pub(crate) fn against(sandbox: &Running) -> Self {
        Self::new().env("PERMATOKEN_GRAPH_URL", &sandbox.url())
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_owned());
        self
    }

    /// Writes a file in the test's working folder (mode 0600, as a careful user keeps secrets).
    pub(crate) fn write(self, name: &str, content: &str) -> Self {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("make the test file's folder");
        }
        std::fs::write(&path, content).expect("write a test file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        self
    }

    /// A `.env` with the scenario token of `sandbox` and, if `with_app`, the sandbox app's credentials.
    pub(crate) fn dotenv(self, sandbox: &Running, scenario: &str, with_app: bool) -> Self {
        let token = sandbox.token(scenario).expect("a known scenario");
        let mut text = format!("WHATSAPP_ACCESS_TOKEN={}\n", token.expose_secret());
        if with_app {
            text.push_str(&app_lines(sandbox));
        }
        self.write(".env", &text)
    }

    /// Runs, and keeps the test's folder (also `HOME`) for looking at what was written.
    pub(crate) fn run_keep(self) -> (Outcome, tempfile::TempDir) {
        let outcome = self.spawn();
        (outcome.0, outcome.1)
    }

    pub(crate) fn run(self) -> Outcome {
        self.spawn().0
    }

    fn spawn(self) -> (Outcome, tempfile::TempDir) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_permatoken"));
        cmd.args(&self.args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the permatoken binary runs");
        if let Some(text) = &self.stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().expect("the binary finishes");
        let outcome = Outcome {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        };
        (outcome, self.dir)
    }
}

/// The token of a sandbox scenario, as text.
pub(crate) fn token_of(sandbox: &Running, scenario: &str) -> String {
    sandbox
        .token(scenario)
        .expect("a known scenario")
        .expose_secret()
        .to_owned()
}

pub(crate) fn app_lines(sandbox: &Running) -> String {
    format!(
        "FACEBOOK_APP_ID={}\nFACEBOOK_APP_SECRET={}\n",
        sandbox.app().id,
        sandbox.app_secret().expose_secret()
    )
}

impl Outcome {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Codes of the findings in a JSON report.
    pub(crate) fn codes(&self) -> Vec<String> {
        finding_codes(&self.json())
    }

    #[track_caller]
    pub(crate) fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

pub(crate) fn finding_codes(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings is an array")
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect()
}
