//! Telling the service manager how the daemon is: systemd's `sd_notify` protocol, a few datagrams
//! on the socket named by `$NOTIFY_SOCKET` (`Type=notify`, `WatchdogSec=`).
//!
//! [`Notifier::ready`] says `READY=1` as the first round begins, [`Notifier::alive`] says
//! `WATCHDOG=1` at most every half of `$WATCHDOG_USEC`, [`Notifier::stopping`] `STOPPING=1`, and
//! [`Notifier::status`] a short `STATUS=` line for `systemctl status`. Without `$NOTIFY_SOCKET`
//! (not under systemd, or not `Type=notify`) every call does nothing.
//!
//! Must never: ping the watchdog from anywhere but the daemon's own loop and rounds (a timer task
//! of its own would go on pinging while the loop hangs, and the watchdog would never fire), block
//! (the socket is non-blocking: a full queue costs a message, never the loop), or fail the daemon
//! (a message that cannot be sent is logged once at debug and dropped).

use std::ffi::OsString;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// Where the service manager listens, and how often it wants to hear from the loop.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `$WATCHDOG_USEC`: how often `WATCHDOG=1` is sent, when systemd asked for it.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    ready: bool,
    stopping: bool,
}

impl Notifier {
    /// A notifier that tells no one.
    pub fn none() -> Self {
        Self::default()
    }

    /// The notifier the environment asks for (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`);
    /// a notifier that tells no one when `NOTIFY_SOCKET` is unset or unusable.
    pub fn from_env(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let (mut socket, mut usec, mut pid) = (None, None, None);
        for (key, value) in vars {
            match key.to_str() {
                Some("NOTIFY_SOCKET") => socket = Some(value),
                Some("WATCHDOG_USEC") => usec = value.into_string().ok(),
                Some("WATCHDOG_PID") => pid = value.into_string().ok(),
                _ => {}
            }
        }
        let Some(address) = socket.as_deref().and_then(address_of) else {
            return Self::none();
        };
        let socket = match UnixDatagram::unbound().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::debug!("cannot notify the service manager: {e}");
                return Self::none();
            }
        };
        // WATCHDOG_PID names the process the watchdog is for: a child that inherited the
        // variables is not it.
        let ours = pid.is_none_or(|p| p.trim().parse() == Ok(std::process::id()));
        let ping_every = usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(|u| Duration::from_micros(u) / 2);
        Self {
            socket: Some((socket, address)),
            ping_every,
            ..Self::default()
        }
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// `READY=1` with a status line, once: the daemon's first round begins.
    pub fn ready(&mut self, status: &str) {
        if self.ready {
            return;
        }
        self.ready = true;
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
        self.last_ping = Some(Instant::now());
    }

    /// Whether `READY=1` was sent (or would have been, without a service manager).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// `WATCHDOG=1`, when half of the watchdog's interval has passed since the last one. Called
    /// from the loop and the rounds only: each call says the loop made progress.
    pub fn alive(&mut self) {
        // systemd's watchdog runs from `READY=1` on; before it, the start's timeout applies.
        let Some(every) = self.ping_every.filter(|_| self.ready) else {
            return;
        };
        let now = Instant::now();
        if self
            .last_ping
            .is_some_and(|at| now.saturating_duration_since(at) < every)
        {
            return;
        }
        self.last_ping = Some(now);
        self.send("WATCHDOG=1");
    }

    /// How long until the next `WATCHDOG=1` is due: the loop wakes then to send it. `None` without
    /// a watchdog, or before `READY=1`.
    pub fn ping_in(&self) -> Option<Duration> {
        let every = self.ping_every.filter(|_| self.ready)?;
        Some(
            self.last_ping
                .map_or(Duration::ZERO, |at| every.saturating_sub(at.elapsed())),
        )
    }

    /// A short `STATUS=` line, shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `EXTEND_TIMEOUT_USEC=`: the start (before `READY=1`) may take `by` more from now, as while
    /// waiting for the state's database.
    pub fn extend_start(&self, by: Duration, status: &str) {
        self.send(&format!(
            "EXTEND_TIMEOUT_USEC={}\nSTATUS={}",
            by.as_micros(),
            one_line(status)
        ));
    }

    /// `STOPPING=1`, once: a stop was asked for.
    pub fn stopping(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.send("STOPPING=1\nSTATUS=stopping: the checks under way finish first");
    }

    fn send(&self, message: &str) {
        let Some((socket, address)) = &self.socket else {
            return;
        };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), address) {
            tracing::debug!("cannot notify the service manager: {e}");
        }
    }
}

/// The socket address `NOTIFY_SOCKET` names: a path, or an abstract name written `@name`.
fn address_of(value: &std::ffi::OsStr) -> Option<SocketAddr> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = value.as_bytes();
    match bytes.split_first() {
        None => None,
        Some((b'@', name)) => abstract_address(name),
        Some((b'/', _)) => SocketAddr::from_pathname(value).ok(),
        // systemd sends only these two forms (a vsock address is for virtual machines).
        Some(_) => None,
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> Option<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt as _;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt as _;
    SocketAddr::from_abstract_name(name).ok()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_name: &[u8]) -> Option<SocketAddr> {
    None
}

/// A status on one line: the protocol is one `KEY=value` a line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn bound() -> (tempfile::TempDir, UnixDatagram, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        (dir, socket, path.to_str().unwrap().to_owned())
    }

    fn received(socket: &UnixDatagram) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let mut out = Vec::new();
        while let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_nothing_fails() {
        let mut n = Notifier::from_env(vars(&[("WATCHDOG_USEC", "1000")]));
        assert!(!n.is_active());
        n.ready("x");
        n.alive();
        n.stopping();
        assert!(n.is_ready());
        assert_eq!(n.ping_in(), None);
    }

    #[test]
    fn ready_once_then_a_ping_at_half_the_watchdog_interval_at_most() {
        let (_dir, socket, path) = bound();
        let mut n = Notifier::from_env(vars(&[
            ("NOTIFY_SOCKET", &path),
            ("WATCHDOG_USEC", "60000000"),
        ]));
        assert_eq!(n.ping_in(), None, "no watchdog before READY=1");
        n.ready("watching 1 token(s)\nsecond line");
        n.ready("again");
        // Just pinged by READY: the next is half a minute away.
        n.alive();
        assert!(n.ping_in().unwrap() > Duration::from_secs(25));
        n.stopping();
        n.stopping();
        assert_eq!(
            received(&socket),
            [
                "READY=1\nSTATUS=watching 1 token(s) second line",
                "STOPPING=1\nSTATUS=stopping: the checks under way finish first"
            ]
        );
    }

    #[test]
    fn the_watchdog_of_another_process_is_not_ours() {
        let (_dir, socket, path) = bound();
        let mut n = Notifier::from_env(vars(&[
            ("NOTIFY_SOCKET", &path),
            ("WATCHDOG_USEC", "2"),
            ("WATCHDOG_PID", "1"),
        ]));
        assert_eq!(n.ping_in(), None);
        n.alive();
        assert!(received(&socket).is_empty());
        let mut ours = Notifier::from_env(vars(&[
            ("NOTIFY_SOCKET", &path),
            ("WATCHDOG_USEC", "2"),
            ("WATCHDOG_PID", &std::process::id().to_string()),
        ]));
        ours.ready("");
        // Two microseconds: due again at once.
        std::thread::sleep(Duration::from_millis(1));
        ours.alive();
        assert_eq!(received(&socket), ["READY=1\nSTATUS=", "WATCHDOG=1"]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_is_written_with_an_at_sign() {
        let name = format!("permatoken-notify-test-{}", std::process::id());
        let address = abstract_address(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        socket.set_nonblocking(true).unwrap();
        let n = Notifier::from_env(vars(&[("NOTIFY_SOCKET", &format!("@{name}"))]));
        n.status("standby");
        assert_eq!(received(&socket), ["STATUS=standby"]);
        // Neither a relative path nor an empty value is an address.
        assert!(!Notifier::from_env(vars(&[("NOTIFY_SOCKET", "relative")])).is_active());
        assert!(!Notifier::from_env(vars(&[("NOTIFY_SOCKET", "")])).is_active());
    }
}
