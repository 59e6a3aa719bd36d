//! End-to-end tests: the real `permatoken` binary against the sandbox on a loopback port, asserting
//! what a user sees (exit codes, JSON fields, words of the report) and what the sandbox received.

mod alertmanager;
mod canary;
mod check;
mod credentials;
mod doctor;
mod environment;
mod extra_tokens;
mod faults;
mod fidelity;
mod harness;
mod hostile;
mod output;
mod package;
mod prometheus;
mod proxy;
mod renew;
mod scan;
mod systemd;
mod tls;
mod watch;
mod watch_clock;
mod watch_delivery;
mod watch_faults;
mod watch_fleet;
mod watch_leader;
mod watch_notify;
mod watch_ops;
mod watch_postgres;
