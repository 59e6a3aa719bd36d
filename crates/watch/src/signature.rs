//! How a signed alert body is signed: the `X-Permatoken-Signature-256` header (GitHub's scheme: the
//! hex HMAC-SHA256 of the body) that receivers already check, and the Standard Webhooks headers
//! (<https://www.standardwebhooks.com/>): `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. The timestamp is
//! signed, so a receiver can refuse a replayed body (the libraries refuse one older than 5 minutes).
//!
//! The key: a Standard Webhooks secret is `whsec_` followed by the base64 of the key's bytes. A
//! `secret_file` holding such a secret is used so (decoded) for `webhook-signature`; any other text
//! is the key's bytes as written, and the receiver's library is given `whsec_` + the base64 of that
//! text ([`standard_secret_for`]). `X-Permatoken-Signature-256` is keyed by the file's text as
//! written in both cases, as it always was.
//!
//! Must never: show the key, or sign with a key it could not decode (a `whsec_` secret that is not
//! base64 is an error the route's delivery reports).

use permatoken_secret::AppSecret;
use ring::hmac;

/// The header of the GitHub-style signature.
pub const SIGNATURE_HEADER: &str = "X-Permatoken-Signature-256";

/// The prefix of a Standard Webhooks secret.
const WHSEC: &str = "whsec_";

/// The headers that sign `body`, sent as the alert `id` at `timestamp` (Unix seconds), keyed by
/// `secret` (a `secret_file`'s trimmed text). Fails when a `whsec_` secret is not base64.
pub fn headers(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Vec<(&'static str, String)>, String> {
    let github = AppSecret::new(secret).sign(body);
    Ok(vec![
        (SIGNATURE_HEADER, format!("sha256={github}")),
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            standard_signature(secret, id, timestamp, body)?,
        ),
    ])
}

/// `v1,<base64 signature>` of Standard Webhooks.
pub fn standard_signature(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, String> {
    let key = match secret.strip_prefix(WHSEC) {
        Some(encoded) => base64_decode(encoded).ok_or_else(|| {
            "`secret_file` holds a `whsec_` secret whose rest is not base64; write the secret whole, as the receiver shows it".to_owned()
        })?,
        None => secret.as_bytes().to_vec(),
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(format!(".{timestamp}.").as_bytes());
    context.update(body);
    Ok(format!("v1,{}", base64_encode(context.sign().as_ref())))
}

/// The `whsec_` secret a Standard Webhooks receiver is given for a `secret_file` holding `secret`.
pub fn standard_secret_for(secret: &str) -> String {
    if secret.starts_with(WHSEC) {
        secret.to_owned()
    } else {
        format!("{WHSEC}{}", base64_encode(secret.as_bytes()))
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padding optional; `None` when it is not base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut held) = (0u32, 0u32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = bits << 6 | v;
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held & 0xff) as u8);
        }
    }
    // A lone character left over (6 bits) is not base64.
    (held < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector the Standard Webhooks reference libraries test against (their `sign` tests).
    #[test]
    fn the_standard_webhooks_vector_signs_alike() {
        assert_eq!(
            standard_signature(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_plain_secret_is_the_key_a_whsec_secret_of_its_base64_names() {
        let plain = "PERMATOKENTEST-hook-key";
        let whsec = standard_secret_for(plain);
        assert!(whsec.starts_with("whsec_"), "{whsec}");
        let body = b"{\"id\":\"x\"}";
        assert_eq!(
            standard_signature(plain, "x", 1_800_000_000, body).unwrap(),
            standard_signature(&whsec, "x", 1_800_000_000, body).unwrap()
        );
        assert_eq!(standard_secret_for(&whsec), whsec);
        assert!(standard_signature("whsec_not base64!", "x", 1, body).is_err());
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
        }
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(base64_decode("Zm9vYg").unwrap(), b"foob");
        assert!(base64_decode("Z").is_none());
    }
}
