//! Reading an answer's body in bounded memory: chunk by chunk, up to a cap, so that a broken proxy
//! or a hostile server streaming gigabytes costs at most the cap.
//!
//! Must never: trust a declared `Content-Length` for more than refusing early, or keep reading past
//! the cap.

/// The most bytes read of one Graph API answer. Real answers are a few KiB; the largest permatoken
/// asks for (a page of phone numbers) stays far below this.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// A body read up to a cap.
#[derive(Debug)]
pub enum Capped {
    /// The whole body, no longer than the cap.
    Whole(Vec<u8>),
    /// The body is longer than the cap: what was read is dropped and the connection with it.
    OverLimit,
}

/// Reads `response`'s body, at most `limit` bytes. Memory stays under twice `limit` whatever the
/// server sends; the time is bounded by the request's timeout.
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Capped, reqwest::Error> {
    let declared = response.content_length();
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(Capped::OverLimit);
    }
    // A declared length is only a hint: reserve no more than the cap for it.
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(limit));
    while let Some(chunk) = response.chunk().await? {
        if chunk.len() > limit - body.len() {
            return Ok(Capped::OverLimit);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Capped::Whole(body))
}

/// `4 MiB`, `64 KiB`, `300 bytes`: a [`read_capped`] cap as a person reads it. The one writing of
/// it is `permatoken_fs::human_bytes`, so a file's cap and an answer's read the same; this takes the
/// `usize` that [`read_capped`] takes.
pub fn human_bytes(n: usize) -> String {
    permatoken_fs::human_bytes(u64::try_from(n).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_caps() {
        assert_eq!(human_bytes(MAX_ANSWER_BYTES), "4 MiB");
        assert_eq!(human_bytes(64 * 1024), "64 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
