//! The Graph API client of permatoken.
//!
//! This room speaks HTTP to Meta's Graph API (or the sandbox) and turns answers into typed values and
//! typed errors: the one place where an error's meaning is decided ([`classify`]), where retries happen,
//! and where a token is put into a request. It keeps every token in the `Authorization` header (the one
//! exception is `/debug_token`'s `input_token`, which the API takes only in the query; batches carry
//! their sub-requests' tokens in the POST body instead, see `batch.rs`), adds `appsecret_proof`
//! whenever the app secret is known, and never logs a URL's query values.
//!
//! Must never: read the environment or files, print, or decide policy (what to renew or alert on is the
//! caller's business).

mod app;
mod batch;
mod body;
mod client;
mod error;
mod proxy;
mod types;
mod usage;
mod whatsapp;

pub use app::App;
pub use batch::{BatchOutcome, MAX_BATCH};
pub use body::{Capped, MAX_ANSWER_BYTES, human_bytes, read_capped};
pub use client::{
    Answer, Budget, Caller, Client, Config, DEFAULT_GRAPH_URL, DEFAULT_GRAPH_VERSION,
    RequestCounts, RetryPolicy, tls_config,
};
pub use error::{Endpoint, Error, ErrorClass, GraphError, Limit, classify, human, limit_of};
pub use proxy::ProxyConfig;
pub use types::{GranularScope, Me, NewToken, TokenInfo, TokenInfoError};
pub use usage::Usage;
pub use whatsapp::{
    Business, BusinessAccount, HealthEntity, HealthError, HealthStatus, OwnerBusiness, PhoneNumber,
    Sent, SentContact, SentMessage, Throughput,
};
