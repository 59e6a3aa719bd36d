//! TLS for the PostgreSQL state: the rustls configuration each `sslmode` asks for, and this
//! crate's own small bridge from tokio-rustls to tokio-postgres, with the `tls-server-end-point`
//! channel binding (SCRAM-SHA-256-PLUS) hashed with ring. The published bridge crate brings an
//! X.509 parser and a second SHA-2 stack for those few bytes; the certificate's signature
//! algorithm is read with `permatoken-x509`. rustls with the ring provider; never OpenSSL.
//!
//! Must never: check less than the `sslmode` says (`verify-full` checks the chain and the name;
//! `prefer` and `require` still check the handshake's signatures), or read a certificate file
//! without a cap.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::TlsConnector;

use super::read_capped;
use super::url::{SslMode, url_error};
use crate::Error;

/// The rustls configuration for `mode`: any certificate (the handshake's signatures still
/// checked) below `verify-full`; at `verify-full`, the system's roots and `root_cert`'s.
pub(super) fn config(
    mode: SslMode,
    root_cert: Option<&Path>,
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |why: String| url_error(format!("cannot set up TLS: {why}"));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?;
    if mode != SslMode::VerifyFull {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth());
    }
    let extra = match root_cert {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let pem = read_capped(path, "read the `sslrootcert` file")?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    tls_error(format!(
                        "`sslrootcert` `{}` is not valid PEM: {e}",
                        path.display()
                    ))
                })?;
            if certs.is_empty() {
                return Err(tls_error(format!(
                    "`sslrootcert` `{}` holds no certificate",
                    path.display()
                )));
            }
            certs
        }
        None => Vec::new(),
    };
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider)
        .map_err(|e| tls_error(format!("cannot load the system's root certificates: {e}")))?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Accepts any certificate but still checks the handshake's signatures: `prefer` and `require`
/// encrypt without authenticating the server, as libpq does.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres's TLS traits over tokio-rustls.
#[derive(Clone)]
pub(super) struct MakeRustls(Arc<rustls::ClientConfig>);

impl MakeRustls {
    pub(super) fn new(config: rustls::ClientConfig) -> Self {
        Self(Arc::new(config))
    }
}

pub(super) struct Connect {
    config: Arc<rustls::ClientConfig>,
    host: String,
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<Connect> {
        Ok(Connect {
            config: Arc::clone(&self.0),
            host: host.to_owned(),
        })
    }
}

type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Handshake<S>;

    fn connect(self, stream: S) -> Handshake<S> {
        Box::pin(async move {
            let name = ServerName::try_from(self.host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(Stream(stream))
        })
    }
}

pub(super) struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| end_point(cert.as_ref()))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with its signature's hash (SHA-1
/// and MD5 taken up to SHA-256); `None` for a signature without one (Ed25519, RSA-PSS).
fn end_point(cert: &[u8]) -> Option<Vec<u8>> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    let oid = permatoken_x509::signature_algorithm(cert)?;
    let algorithm = match oid.split_last()? {
        (0x04 | 0x05 | 0x0b, prefix) if prefix == RSA => &ring::digest::SHA256,
        (0x0c, prefix) if prefix == RSA => &ring::digest::SHA384,
        (0x0d, prefix) if prefix == RSA => &ring::digest::SHA512,
        (0x02, prefix) if prefix == ECDSA => &ring::digest::SHA256,
        (0x03, prefix) if prefix == ECDSA => &ring::digest::SHA384,
        (0x04, prefix) if prefix == ECDSA => &ring::digest::SHA512,
        _ => return None,
    };
    Some(ring::digest::digest(algorithm, cert).as_ref().to_vec())
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_binding_hashes_the_certificate_with_its_signatures_hash() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().as_ref();
        // rcgen signs with ECDSA P-256 and SHA-256 by default.
        assert_eq!(
            end_point(der).unwrap(),
            ring::digest::digest(&ring::digest::SHA256, der).as_ref()
        );
        assert_eq!(end_point(&der[..der.len() / 2]), None);
        assert_eq!(end_point(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(end_point(&[]), None);
    }
}
