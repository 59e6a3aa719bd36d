//! Which proxy an `https://` call goes through, decided from the variables curl and most tools read
//! (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, lower case first), handed in by the caller.
//!
//! A proxy sees only a CONNECT tunnel: TLS runs end to end through it, so it never sees a token.
//! Plain `http://` (loopback only) never goes through a proxy, whatever `HTTP_PROXY` says: the bearer
//! token and the exchange body would travel to it in clear text.
//!
//! Must never: read the environment itself, or put a proxy's user name or password in an error or a
//! log (a proxy URL is shown as scheme, host and port only).

use std::ffi::OsStr;
use std::net::IpAddr;

use reqwest::Url;

use crate::error::Error;

/// The proxy set-up for `https://` calls. [`ProxyConfig::default`] is none: every call goes direct.
///
/// A bad value is kept as an error and raised only when a call would use it: a socks `ALL_PROXY`
/// meant for other tools does not stop calls to the sandbox on loopback.
#[derive(Clone, Default)]
pub struct ProxyConfig {
    https: Option<(Result<Url, String>, &'static str)>,
    no_proxy: Vec<String>,
    /// The `NO_PROXY` variable read, and why it could not be, if it could not.
    no_proxy_var: Option<(&'static str, Option<String>)>,
    /// The plain-http proxy variables that were set, to say that they are not followed.
    ignored: Vec<&'static str>,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let https = self.https.as_ref().map(|(url, var)| match url {
            Ok(url) => format!("{} ({var})", shown(url)),
            Err(_) => format!("unusable ({var})"),
        });
        f.debug_struct("ProxyConfig")
            .field("https", &https)
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// The variables read, lower case first as curl does.
const HTTPS_VARS: [&str; 4] = ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
const NO_PROXY_VARS: [&str; 2] = ["no_proxy", "NO_PROXY"];
const HTTP_VARS: [&str; 2] = ["http_proxy", "HTTP_PROXY"];

impl ProxyConfig {
    /// Reads the proxy variables from `vars` (the caller passes `std::env::vars_os()`).
    /// `ALL_PROXY` counts only when no https proxy is named; `HTTP_PROXY` never does.
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut found: Vec<(&'static str, std::ffi::OsString)> = Vec::new();
        for (key, value) in vars {
            let known = HTTPS_VARS
                .iter()
                .chain(&NO_PROXY_VARS)
                .chain(&HTTP_VARS)
                .find(|n| OsStr::new(n) == key.as_ref());
            if let Some(name) = known
                && !value.as_ref().is_empty()
            {
                found.push((name, value.as_ref().to_owned()));
            }
        }
        let first = |names: &[&'static str]| {
            names.iter().find_map(|name| {
                found
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(n, v)| (*n, v.to_str().ok_or_else(|| not_utf8(n))))
            })
        };
        let mut config = Self {
            https: first(&HTTPS_VARS)
                .map(|(var, value)| (value.and_then(|v| proxy_url(var, v)), var)),
            ..Self::default()
        };
        if let Some((var, value)) = first(&NO_PROXY_VARS) {
            match value {
                Ok(list) => {
                    config.no_proxy = list
                        .split(',')
                        .map(|entry| entry.trim().to_ascii_lowercase())
                        .filter(|entry| !entry.is_empty())
                        .collect();
                    config.no_proxy_var = Some((var, None));
                }
                Err(problem) => config.no_proxy_var = Some((var, Some(problem))),
            }
        }
        config.ignored = HTTP_VARS
            .into_iter()
            .filter(|name| found.iter().any(|(n, _)| n == name))
            .collect();
        config
    }

    /// A proxy for every `https://` call, with no exceptions; an error names no part of `proxy`.
    pub fn https(proxy: &str) -> Result<Self, Error> {
        let url = proxy_url("the proxy", proxy).map_err(Error::Config)?;
        Ok(Self {
            https: Some((Ok(url), "the configuration")),
            ..Self::default()
        })
    }

    /// The proxy a call to `url` goes through, and the variable that named it; `None` for plain http
    /// and for hosts `NO_PROXY` lists. A proxy variable that cannot be used is an error here, when
    /// it would be used.
    pub fn for_url(&self, url: &Url) -> Result<Option<(&Url, &'static str)>, Error> {
        if url.scheme() != "https" {
            return Ok(None);
        }
        let Some((proxy, var)) = &self.https else {
            return Ok(None);
        };
        let Some(host) = url.host() else {
            return Ok(None);
        };
        if let Some((_, Some(problem))) = &self.no_proxy_var {
            return Err(Error::Config(problem.clone()));
        }
        if self.no_proxy.iter().any(|entry| excludes(entry, &host)) {
            tracing::debug!(
                var = self.no_proxy_var.as_ref().map_or("NO_PROXY", |(v, _)| v),
                host = %host,
                "the host is excluded from the proxy: connecting directly"
            );
            return Ok(None);
        }
        match proxy {
            Ok(proxy) => Ok(Some((proxy, *var))),
            Err(problem) => Err(Error::Config(problem.clone())),
        }
    }

    /// The plain-http proxy variables that are set and not followed.
    pub(crate) fn ignored(&self) -> &[&'static str] {
        &self.ignored
    }
}

fn not_utf8(var: &str) -> String {
    format!(
        "`{var}` is not valid UTF-8; set it to a proxy URL such as http://proxy.example:3128, or unset it"
    )
}

/// `scheme://host:port` of a proxy URL: what may be shown of it.
pub(crate) fn shown(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn proxy_url(var: &str, value: &str) -> Result<Url, String> {
    // curl takes `proxy.example:3128` for `http://proxy.example:3128`.
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| {
        format!(
            "`{var}` is not a proxy URL ({e}); set it like http://proxy.example:3128, or unset it"
        )
    })?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(format!(
            "`{var}` names no proxy host; set it like http://proxy.example:3128, or unset it"
        )),
        other => Err(format!(
            "`{var}` names a {other}:// proxy; permatoken goes through http:// proxies (CONNECT) only: set `HTTPS_PROXY` to one, or add the Graph API's host to `NO_PROXY`"
        )),
    }
}

/// Whether the `NO_PROXY` entry `entry` (lower case) covers `host`: `*`, a domain and its
/// subdomains (`example.com`, `.example.com`, `*.example.com`), an address, or a CIDR block.
fn excludes(entry: &str, host: &url::Host<&str>) -> bool {
    if entry == "*" {
        return true;
    }
    let ip = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
        url::Host::Domain(_) => None,
    };
    match ip {
        Some(ip) => {
            let entry = entry.trim_start_matches('[');
            let entry = entry.split_once(']').map_or(entry, |(inside, _)| inside);
            if let Some((net, bits)) = entry.split_once('/') {
                return match (net.parse::<IpAddr>(), bits.parse::<u32>()) {
                    (Ok(net), Ok(bits)) => in_block(ip, net, bits),
                    _ => false,
                };
            }
            // `127.0.0.1:8443`: the port is not matched, the address is.
            let bare = match entry.parse::<IpAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => entry.rsplit_once(':').and_then(|(a, _)| a.parse().ok()),
            };
            bare == Some(ip)
        }
        None => {
            let url::Host::Domain(domain) = host else {
                return false;
            };
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            let entry = entry.split(':').next().unwrap_or(entry);
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            let entry = entry.trim_end_matches('.');
            !entry.is_empty()
                && (domain == entry
                    || domain
                        .strip_suffix(entry)
                        .is_some_and(|rest| rest.ends_with('.')))
        }
    }
}

fn in_block(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> ProxyConfig {
        ProxyConfig::from_vars(vars.iter().copied())
    }

    fn via(config: &ProxyConfig, url: &str) -> Option<String> {
        config
            .for_url(&Url::parse(url).unwrap())
            .unwrap()
            .map(|(u, var)| format!("{} {var}", shown(u)))
    }

    #[test]
    fn https_goes_through_the_https_proxy_and_plain_http_never_does() {
        let c = config(&[
            ("HTTPS_PROXY", "http://proxy.example:3128"),
            ("HTTP_PROXY", "http://clear.example:3128"),
        ]);
        assert_eq!(
            via(&c, "https://graph.facebook.com/v26.0/").as_deref(),
            Some("http://proxy.example:3128 HTTPS_PROXY")
        );
        assert_eq!(via(&c, "http://127.0.0.1:8080/"), None);
        assert_eq!(c.ignored(), ["HTTP_PROXY"]);
        let c = config(&[("ALL_PROXY", "http://all.example:1")]);
        assert_eq!(via(&c, "http://127.0.0.1:1/"), None);
        assert!(via(&c, "https://graph.facebook.com/").is_some());
    }

    #[test]
    fn lower_case_wins_and_all_proxy_is_the_fallback() {
        let c = config(&[
            ("ALL_PROXY", "http://all.example:1"),
            ("HTTPS_PROXY", "http://upper.example:2"),
            ("https_proxy", "lower.example:3"),
        ]);
        assert_eq!(
            via(&c, "https://graph.facebook.com/").as_deref(),
            Some("http://lower.example:3 https_proxy")
        );
    }

    #[test]
    fn no_proxy_matches_domains_addresses_and_blocks() {
        let c = config(&[
            ("https_proxy", "http://proxy.example:3128"),
            (
                "NO_PROXY",
                " .facebook.com, 10.0.0.0/8 ,::1, 127.0.0.1:8443,*.corp",
            ),
        ]);
        for direct in [
            "https://graph.facebook.com/",
            "https://facebook.com/",
            "https://10.2.3.4/",
            "https://[::1]:9/",
            "https://127.0.0.1:1/",
            "https://a.corp/",
        ] {
            assert_eq!(via(&c, direct), None, "{direct}");
        }
        for proxied in [
            "https://notfacebook.com/",
            "https://11.0.0.1/",
            "https://127.0.0.2/",
            "https://corp.example/",
        ] {
            assert!(via(&c, proxied).is_some(), "{proxied}");
        }
        let c = config(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "*")]);
        assert_eq!(via(&c, "https://graph.facebook.com/"), None);
    }

    #[test]
    fn bad_values_name_the_variable_never_the_value_and_only_when_used() {
        let graph = Url::parse("https://graph.facebook.com/").unwrap();
        let loopback = Url::parse("http://127.0.0.1:8080/").unwrap();
        for (var, value) in [
            ("HTTPS_PROXY", "socks5://user:PERMATOKENTEST-pw@proxy:1080"),
            ("https_proxy", "http://user:PERMATOKENTEST-pw@[bad"),
            ("ALL_PROXY", "http://user:PERMATOKENTEST-pw@:1"),
        ] {
            let c = ProxyConfig::from_vars([(var, value)]);
            assert!(c.for_url(&loopback).unwrap().is_none());
            let err = c.for_url(&graph).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
            assert!(!err.contains("PERMATOKENTEST"), "{err}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let bad = OsStr::from_bytes(b"http://user:PERMATOKENTEST\xe9@p:1");
            let c = ProxyConfig::from_vars([(OsStr::new("HTTPS_PROXY"), bad)]);
            let err = c.for_url(&graph).unwrap_err().to_string();
            assert!(err.contains("`HTTPS_PROXY` is not valid UTF-8"), "{err}");
            let c = ProxyConfig::from_vars([
                (OsStr::new("HTTPS_PROXY"), OsStr::new("http://p:1")),
                (OsStr::new("NO_PROXY"), bad),
            ]);
            let err = c.for_url(&graph).unwrap_err().to_string();
            assert!(err.contains("`NO_PROXY` is not valid UTF-8"), "{err}");
        }
    }

    #[test]
    fn debug_shows_no_credentials() {
        let c = config(&[("HTTPS_PROXY", "http://me:PERMATOKENTEST-pw@proxy:3128")]);
        let text = format!("{c:?}");
        assert!(text.contains("proxy:3128") && !text.contains("PERMATOKENTEST"));
    }
}
