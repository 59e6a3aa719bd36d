//! `permatoken watch`: the daemon that checks every token it knows on a schedule, renews in time, fails
//! over to a backup, tells a person once when something needs them, and shows it all on `/metrics` and
//! a status page.
//!
//! Must never: print a secret (tokens, app secrets, alert routes' URLs and signing secrets), or know the
//! terminal: the binary renders.

pub mod alert;
mod batch;
pub mod claims;
pub mod config;
pub mod daemon;
pub mod http;
pub mod metrics;
pub mod page;
pub mod sets;
pub mod snapshot;
pub mod states;
