//! Just enough DER to read what permatoken needs of a certificate: its `notAfter` (the webhook
//! certificate's expiry `doctor` reports) and the OID of its signature algorithm (the hash of the
//! PostgreSQL state's `tls-server-end-point` channel binding). A full X.509 parser would bring a
//! crate tree for these few bytes.
//!
//! The certificates read here were verified by rustls first, or are only hashed; still, any byte
//! string gives an answer or `None`, never a panic, in time linear in its length.
//!
//! Must never: verify anything (rustls does), or allocate for what it reads.

use jiff::Timestamp;

/// Tag, content and what follows, of the DER element at the start of `input`; `None` when it is
/// cut short or its length takes more than four bytes.
pub fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The certificate's `tbsCertificate` and what follows it (`signatureAlgorithm`, `signature`).
fn certificate(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (SEQUENCE, certificate, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, rest) = tlv(certificate)? else {
        return None;
    };
    Some((tbs, rest))
}

/// The certificate's `notAfter`, or `None` if it is not a certificate this can read.
pub fn not_after(der: &[u8]) -> Option<Timestamp> {
    let (tbs, _) = certificate(der)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2; // version
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2; // serial, signature algorithm, issuer
    }
    let (SEQUENCE, validity, _) = tlv(rest)? else {
        return None;
    };
    let after = tlv(validity)?.2; // past notBefore
    let (tag, time, _) = tlv(after)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let full = match (tag, text.len()) {
        (UTC_TIME, 12) => {
            let yy: u32 = text[..2].parse().ok()?;
            format!("{}{text}", if yy >= 50 { "19" } else { "20" })
        }
        (GENERALIZED_TIME, 14) => text.to_owned(),
        _ => return None,
    };
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[0..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    iso.parse().ok()
}

/// The OID (its content bytes) of `Certificate.signatureAlgorithm`: DER `SEQUENCE { tbs,
/// SEQUENCE { OID, … }, … }`.
pub fn signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    let (_, rest) = certificate(der)?;
    let (SEQUENCE, algorithm, _) = tlv(rest)? else {
        return None;
    };
    let (OID, oid, _) = tlv(algorithm)? else {
        return None;
    };
    Some(oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_until(y: i32, m: u8, d: u8) -> rcgen::Certificate {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap()
    }

    #[test]
    fn reads_not_after_of_a_certificate_made_now() {
        let cert = certificate_until(2031, 7, 4);
        assert_eq!(
            not_after(cert.der()).unwrap().to_string(),
            "2031-07-04T00:00:00Z"
        );
        // From 2050 on, the time is a GeneralizedTime.
        let cert = certificate_until(2051, 1, 2);
        assert_eq!(
            not_after(cert.der()).unwrap().to_string(),
            "2051-01-02T00:00:00Z"
        );
    }

    #[test]
    fn reads_the_signature_algorithm() {
        // rcgen signs with ECDSA P-256 and SHA-256 by default: 1.2.840.10045.4.3.2.
        let cert = certificate_until(2031, 7, 4);
        assert_eq!(
            signature_algorithm(cert.der()),
            Some(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02][..])
        );
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x03\x30\x01\x00",
            b"\x30\x80",
            b"hello",
        ] {
            assert_eq!(not_after(bytes), None);
            assert_eq!(signature_algorithm(bytes), None);
        }
        // Every prefix of a real certificate, too.
        let cert = certificate_until(2031, 7, 4);
        for end in 0..cert.der().len() {
            assert_eq!(not_after(&cert.der()[..end]), None);
            assert_eq!(signature_algorithm(&cert.der()[..end]), None);
        }
    }
}
