//! Reading the `--state` URL: what tokio-postgres takes, and the options permatoken handles itself
//! (`sslmode` with libpq's meaning, `sslrootcert`) taken out of it.
//!
//! The URL never holds the password: a URL is seen in `ps`, in shell history and in logs, so one
//! with a password is refused, and never repeated in the error. `sslmode`: `disable` (plain),
//! `prefer` (the default: TLS when the server offers it, the certificate not checked), `require`
//! (TLS or fail, the certificate not checked), and `verify-full` (TLS, the chain checked against
//! the system's roots plus `sslrootcert` if given, and the host name checked). `verify-ca` and
//! `allow` are refused: use `verify-full` or `prefer`; so is `sslrootcert` without `verify-full`
//! (libpq would check the chain then; not checking it silently would mislead).
//!
//! Must never: accept a password in the URL, or put the URL (it may hold one) in an error.

use std::path::PathBuf;

use tokio_postgres::Config;

use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

impl SslMode {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyFull => "verify-full",
        }
    }
}

pub(super) fn url_error(reason: impl Into<String>) -> Error {
    Error::PostgresUrl {
        reason: reason.into(),
    }
}

/// What the URL says, with the options permatoken handles itself taken out.
pub(super) struct Parsed {
    pub(super) config: Config,
    pub(super) ssl_mode: SslMode,
    pub(super) root_cert: Option<PathBuf>,
    /// The URL without its query, for messages.
    pub(super) location: String,
}

pub(super) fn parse_url(url: &str) -> Result<Parsed, Error> {
    let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        return Err(url_error("must start with `postgres://`"));
    }
    let mut parsed = url::Url::parse(url).map_err(|e| {
        url_error(format!(
            "is not a valid URL ({e}); see `permatoken watch --help`"
        ))
    })?;
    let refuse_password = || {
        url_error(
            "holds a password, which anyone on this machine can read in `ps` and which shell history \
             and logs keep: remove it from the URL and give it through PGPASSWORD, a passfile \
             (~/.pgpass, mode 0600) or `state_password_file`",
        )
    };
    if parsed.password().is_some() {
        return Err(refuse_password());
    }
    let mut ssl_mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match &*key {
            "password" => return Err(refuse_password()),
            "sslmode" => ssl_mode = parse_ssl_mode(&value)?,
            "sslrootcert" => root_cert = Some(PathBuf::from(&*value)),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if root_cert.is_some() && ssl_mode != SslMode::VerifyFull {
        // libpq would then check the chain; silently not checking it would be worse than refusing.
        return Err(url_error(format!(
            "gives `sslrootcert` with `sslmode={}`, which does not check the server: use \
             `sslmode=verify-full` to check it against that CA, or remove `sslrootcert`",
            ssl_mode.as_str()
        )));
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(&kept);
    }
    let config: Config = parsed
        .as_str()
        .parse()
        .map_err(|e| url_error(format!("cannot be used: {e}")))?;
    let mut shown = parsed.clone();
    shown.set_query(None);
    Ok(Parsed {
        config,
        ssl_mode,
        root_cert,
        location: shown.to_string(),
    })
}

fn parse_ssl_mode(value: &str) -> Result<SslMode, Error> {
    Ok(match value {
        "disable" => SslMode::Disable,
        "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-full" => SslMode::VerifyFull,
        "verify-ca" => {
            return Err(url_error(
                "asks for `sslmode=verify-ca`, which permatoken does not support: use \
                 `sslmode=verify-full` (the chain and the host name checked)",
            ));
        }
        other => {
            return Err(url_error(format!(
                "has `sslmode={}`; permatoken supports disable, prefer, require and verify-full",
                crate::clean_text(other)
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_a_password_is_refused_without_repeating_it() {
        for url in [
            "postgres://watch:PERMATOKENTEST-pw@db.example/permatoken",
            "postgres://watch@db.example/permatoken?password=PERMATOKENTEST-pw",
        ] {
            let err = parse_url(url).err().expect("refused");
            let shown = err.to_string();
            assert!(!shown.contains("PERMATOKENTEST"), "{shown}");
            assert!(shown.contains("PGPASSWORD"), "{shown}");
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_and_the_location_has_no_query() {
        let p = parse_url(
            "postgres://watch@db.example:6432/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(p.ssl_mode, SslMode::VerifyFull);
        assert_eq!(p.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(p.location, "postgres://watch@db.example:6432/fleet");
        assert_eq!(p.config.get_application_name(), Some("x"));
        assert_eq!(p.config.get_ports(), &[6432]);
        let err = parse_url("postgres://h/db?sslmode=verify-ca")
            .err()
            .unwrap();
        assert!(err.to_string().contains("verify-full"), "{err}");
        assert!(parse_url("mysql://h/db").is_err());
        let err = parse_url("postgres://h/db?sslmode=require&sslrootcert=/etc/ca.pem")
            .err()
            .unwrap();
        assert!(err.to_string().contains("sslmode=verify-full"), "{err}");
    }
}
