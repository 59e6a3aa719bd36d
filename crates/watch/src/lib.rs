//! `permatoken watch`: the daemon that checks every token it knows on a schedule, renews in time, fails
//! over to a backup, tells a person once when something needs them, and shows it all on `/metrics` and
//! a status page.
//!
//! Must never: print a secret (tokens, app secrets, alert routes' URLs and signing secrets), or know the
//! terminal: the binary renders.

pub mod alert;
mod announce;
mod batch;
mod check;
mod checklist;
pub mod claims;
pub mod clients;
pub mod config;
pub mod daemon;
mod delivery;
mod fleet;
pub mod http;
pub mod leadership;
mod memory;
pub mod metrics;
mod outcome;
pub mod page;
mod records;
pub mod schedule;
pub mod sets;
pub mod snapshot;
pub mod sources;
pub mod states;
