//! Running the reload command (`--then`) after a token was written: `sh -c CMD`, with no token or
//! secret in its environment, so the service reads the new token from its file and never inherits an
//! old one from us (DESIGN §5). Its output goes to our standard error, keeping standard output for data.

use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use serde::Serialize;

/// What the reload command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reload {
    /// The command, as given.
    pub command: String,
    /// Its exit code; `None` if it could not start or was killed by a signal.
    pub exit_code: Option<i32>,
    /// Whether it succeeded.
    pub ok: bool,
    /// Why it could not start, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Variables a reload command must never inherit.
fn is_secret_variable(name: &str) -> bool {
    name.starts_with("WHATSAPP_ACCESS_TOKEN")
        || name == "FACEBOOK_APP_SECRET"
        || name == "WHATSAPP_WEBHOOK_VERIFY_TOKEN"
}

/// `sh -c command`, with no token or secret variable in its environment: what `--then` runs, and
/// what `watch` runs for a command alert route.
pub fn secret_free_command(command: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_secret_variable) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs `command` with `sh -c` and waits for it.
pub fn reload(command: &str) -> Reload {
    reload_with_args(command, &[])
}

/// Runs `command` with `sh -c` and `args` as its positional parameters (`$1`, `$2`, …; `$0` is
/// `permatoken`), and waits for it. The arguments are never part of the shell text, so a file name
/// such as `$(touch x)` is data, not code.
pub fn reload_with_args(command: &str, args: &[std::ffi::OsString]) -> Reload {
    let mut cmd = secret_free_command(command);
    if !args.is_empty() {
        cmd.arg("permatoken").args(args);
    }
    cmd.stdin(Stdio::null());
    if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
        cmd.stdout(Stdio::from(fd));
    }
    match cmd.status() {
        Ok(status) => Reload {
            command: command.to_owned(),
            exit_code: status.code(),
            ok: status.success(),
            error: None,
        },
        Err(e) => Reload {
            command: command.to_owned(),
            exit_code: None,
            ok: false,
            error: Some(format!("cannot run `sh -c`: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_status_is_reported_and_secret_names_are_known() {
        // That the variables are really dropped is shown end to end, where the binary runs with them
        // set (crates/cli/tests/it/renew.rs).
        assert!(reload("true").ok);
        assert_eq!(reload("exit 7").exit_code, Some(7));
        assert!(!reload("exit 7").ok);
        assert!(is_secret_variable("WHATSAPP_ACCESS_TOKEN_BACKUP_3"));
        let dir = std::env::temp_dir().join(format!("permatoken-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hostile = dir.join("$(touch pwned)");
        let out = dir.join("args");
        let command = format!("printf '%s|%s' \"$1\" \"$2\" > '{}'", out.display());
        let run = reload_with_args(&command, &[hostile.clone().into(), "two".into()]);
        assert!(run.ok, "{run:?}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("{}|two", hostile.display())
        );
        assert!(!Path::new("pwned").exists() && !dir.join("pwned").exists());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!is_secret_variable("FACEBOOK_APP_ID"));
    }
}
