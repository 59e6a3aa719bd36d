//! A `command` route: `sh -c COMMAND` with the alert JSON on standard input, its output captured
//! and cut short, killed after the route's timeout.
//!
//! Must never: pass a secret in the command's environment (`secret_free_command`), or block on a
//! command that does not read its input or floods its output.

use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Bodies, Delivered, DeliveryError, MAX_REPLY_BYTES, shown};
use crate::config::Route;

/// Runs a command route: `sh -c COMMAND` with the secret-free environment of `--then`, the alert
/// JSON on standard input, its output captured up to [`MAX_REPLY_BYTES`] a stream, killed after
/// the route's timeout.
pub(super) async fn deliver_command(
    route: &Route,
    command: &str,
    alert: &Bodies,
) -> Result<Delivered, DeliveryError> {
    let fail = |retryable: bool, reason: String| DeliveryError {
        route: route.name.clone(),
        host: None,
        status: None,
        retryable,
        reason,
    };
    let mut cmd = tokio::process::Command::from(permatoken_renew::secret_free_command(command));
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(false, format!("cannot run `sh -c`: {e}")))?;
    let body = alert.json.clone();
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let run = async {
        // A command that does not read its input must not block us: a closed pipe is fine.
        let write = async {
            let _ = stdin.write_all(&body).await;
            drop(stdin);
        };
        let (_, out, err, status) = tokio::join!(
            write,
            read_stream(&mut stdout),
            read_stream(&mut stderr),
            child.wait()
        );
        (out, err, status)
    };
    let (out, err, status) = match tokio::time::timeout(route.timeout, run).await {
        Ok(done) => done,
        Err(_) => {
            let _ = child.start_kill();
            return Err(fail(
                true,
                format!(
                    "the command did not finish within {}",
                    permatoken_graph::human(route.timeout)
                ),
            ));
        }
    };
    let status = status.map_err(|e| fail(true, format!("cannot wait for the command: {e}")))?;
    let said = [out, err]
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    let said = shown(&said);
    if status.success() {
        Ok(Delivered {
            route: route.name.clone(),
            status: None,
            reply: said,
        })
    } else {
        let code = status.code().map_or_else(
            || "was killed by a signal".to_owned(),
            |c| format!("exited with {c}"),
        );
        let said = if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        };
        Err(fail(true, format!("the command {code}{said}")))
    }
}

/// Up to [`MAX_REPLY_BYTES`] of a stream; the rest is read and dropped so the command never blocks
/// on a full pipe.
async fn read_stream(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_REPLY_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}
