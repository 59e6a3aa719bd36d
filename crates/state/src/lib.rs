//! permatoken watch's memory: what it knows of each token, every check's result, renewals,
//! failovers and the alerts it sent, so that a restart neither forgets nor repeats itself.
//!
//! Tokens are keyed by the full SHA-256 of the token (the short fingerprint collides in large fleets).
//!
//! Must never: store a secret (a token, an app secret, a route's URL), or know the terminal.
