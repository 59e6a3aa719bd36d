//! Where the HTTP endpoint listens (`--listen`, `listen`), in the forms people write: an address
//! (`127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464`), `:9464` for every interface, or
//! `localhost:9464`; and binding it, to one socket or two.
//!
//! `:PORT` is every interface of both families: `[::]`, which on Linux also takes IPv4 unless
//! `net.ipv6.bindv6only` is set, and `0.0.0.0` beside it when it does not (or alone, on a host
//! without IPv6). `localhost` is the loopback addresses `127.0.0.1` and `::1` (RFC 6761), not
//! whatever a resolver answers: a listen address never depends on DNS or `/etc/hosts`. Both are
//! bound when the host has both; one suffices.
//!
//! Must never: resolve a name through the network, or bind an address it was not given (a name
//! other than `localhost` is refused, never guessed).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use tokio::net::TcpListener;

/// A listen address as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// An address and port.
    Addr(SocketAddr),
    /// `:PORT`: every interface, IPv6 and IPv4.
    Any(u16),
    /// `localhost:PORT`: `127.0.0.1` and `::1`.
    Localhost(u16),
}

/// Why a text is not a listen address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a listen address: write an address and port (`127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464`), `:9464` for every interface, or `localhost:9464`"
)]
pub struct BadListen(String);

impl FromStr for Listen {
    type Err = BadListen;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = || BadListen(text.chars().take(100).collect());
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::Addr(addr));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        match host {
            "" => Ok(Self::Any(port)),
            _ if host.eq_ignore_ascii_case("localhost") => Ok(Self::Localhost(port)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(addr) => write!(f, "{addr}"),
            Self::Any(port) => write!(f, ":{port}"),
            Self::Localhost(port) => write!(f, "localhost:{port}"),
        }
    }
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Self {
        Self::Addr(addr)
    }
}

impl Listen {
    /// Whether only this host can connect: a loopback address, or `localhost`.
    pub fn is_loopback(&self) -> bool {
        match self {
            Self::Addr(addr) => addr.ip().is_loopback(),
            Self::Any(_) => false,
            Self::Localhost(_) => true,
        }
    }

    /// Binds the listeners: one for an address, up to two for `:PORT` and `localhost:PORT` (the
    /// second on the port the first got, so that port 0 is one port). An error only when none
    /// could be bound (the first family's error), or when an address given as such fails.
    pub async fn bind(&self) -> io::Result<Vec<TcpListener>> {
        let (first, second, port) = match *self {
            Self::Addr(addr) => return Ok(vec![TcpListener::bind(addr).await?]),
            Self::Any(port) => (
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port,
            ),
            Self::Localhost(port) => (
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                port,
            ),
        };
        let mut listeners = Vec::with_capacity(2);
        let error = match TcpListener::bind((first, port)).await {
            Ok(listener) => {
                let port = listener.local_addr()?.port();
                listeners.push(listener);
                match TcpListener::bind((second, port)).await {
                    Ok(listener) => listeners.push(listener),
                    // `localhost`'s other address held by another program: its clients would
                    // reach that one, so say so.
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse && self.is_loopback() => {
                        tracing::warn!(
                            "listening on {first}:{port} only: {second}:{port} is taken ({e})"
                        );
                    }
                    // `[::]` took IPv4 too (so `0.0.0.0` is in use by it), or the host lacks the
                    // family: one suffices.
                    Err(e) => tracing::debug!("not also listening on {second}:{port}: {e}"),
                }
                return Ok(listeners);
            }
            // Taken, or not ours to take: that is the answer, whatever the other family says.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
                ) =>
            {
                return Err(e);
            }
            Err(e) => e,
        };
        // No IPv6 on this host (`:PORT`), or no IPv4 loopback: the other family alone.
        match TcpListener::bind((second, port)).await {
            Ok(listener) => Ok(vec![listener]),
            Err(_) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_people_write() {
        for (text, listen) in [
            (
                "127.0.0.1:9464",
                Listen::Addr("127.0.0.1:9464".parse().unwrap()),
            ),
            ("[::1]:9464", Listen::Addr("[::1]:9464".parse().unwrap())),
            (":9464", Listen::Any(9464)),
            ("localhost:9464", Listen::Localhost(9464)),
            (" LocalHost:0 ", Listen::Localhost(0)),
        ] {
            assert_eq!(text.parse(), Ok(listen), "{text}");
        }
        assert_eq!(Listen::Any(9464).to_string(), ":9464");
        assert!(Listen::Localhost(1).is_loopback() && !Listen::Any(1).is_loopback());
        for bad in [
            "",
            ":",
            "9464",
            "localhost",
            "example.com:9464",
            ":65536",
            "[::1]",
            "*:9464",
        ] {
            assert!(bad.parse::<Listen>().is_err(), "{bad}");
        }
    }
}
