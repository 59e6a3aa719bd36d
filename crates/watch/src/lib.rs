//! `permatoken watch`: the daemon that checks every token it knows on a schedule, renews in time, fails
//! over to a backup, tells a person once when something needs them, and shows it all on `/metrics` and
//! a status page.
//!
//! One module per job (`docs/architecture.md` follows a round through them): [`daemon`] holds the
//! loop and the round, [`leadership`] the rules of who acts, [`schedule`] when each token is next
//! checked, [`sources`] where a check's inputs are read, `batch` and `check` the Graph calls and
//! the renewal engine, `outcome`, [`states`], `announce` and `lasted` what a check means and what
//! is told, `delivery`, [`alert`], [`alertmanager`] and [`signature`] how it is sent, [`snapshot`],
//! [`metrics`], [`http`] and [`page`] what is shown, [`health`] what the probes are told, [`config`]
//! the configuration, [`startup`] waiting for the state's database at start, and [`notify`] telling
//! systemd the daemon is ready and alive.
//!
//! Must never: print a secret (tokens, app secrets, alert routes' URLs and signing secrets), or know the
//! terminal: the binary renders.

pub mod alert;
pub mod alertmanager;
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
pub mod health;
pub mod http;
mod lasted;
pub mod leadership;
pub mod listen;
mod memory;
pub mod metrics;
pub mod notify;
mod outcome;
pub mod page;
mod records;
pub mod schedule;
pub mod sets;
pub mod signature;
pub mod snapshot;
pub mod sources;
pub mod startup;
pub mod states;
