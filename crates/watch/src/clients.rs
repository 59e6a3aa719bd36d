//! One Graph API client per app, made with that app's secret (every call then carries its
//! `appsecret_proof`), and made again when the secret changes; and the requests they made, added
//! to `permatoken_graph_requests_total`.
//!
//! Must never: keep a client made with an app secret that is no longer the app's (its calls would
//! fail with a proof of the old secret), or lose the count of a client's requests when it goes.

use std::collections::HashMap;

use permatoken_graph::{Client, RequestCounts};
use permatoken_inspect::AppCredentials;
use permatoken_secret::AppSecret;

use crate::metrics::Counters;

/// The Graph client could not be made (its settings: the CA, the proxy).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the Graph API client: {0}")]
pub struct ClientError(String);

/// A client per app id: the fingerprint of the secret it was made with, the client, and its
/// request counts already added to the metrics.
pub(crate) struct Clients {
    config: permatoken_graph::Config,
    by_app: HashMap<String, (String, Client, RequestCounts)>,
}

impl Clients {
    /// Clients made from `config` (base URL, version, CA, proxy); each app's secret is added per app.
    pub(crate) fn new(config: permatoken_graph::Config) -> Self {
        Self {
            config,
            by_app: HashMap::new(),
        }
    }

    /// The settings every client is made from.
    pub(crate) fn config(&self) -> &permatoken_graph::Config {
        &self.config
    }

    /// The client of `app`, made now if there is none or its secret changed.
    pub(crate) fn client_for(
        &mut self,
        app: &AppCredentials,
        counters: &Counters,
    ) -> Result<Client, ClientError> {
        let id = app.app_id.clone().unwrap_or_default();
        let print = app
            .app_secret
            .as_ref()
            .map(AppSecret::fingerprint)
            .unwrap_or_default();
        if let Some((p, client, _)) = self.by_app.get(&id)
            && *p == print
        {
            return Ok(client.clone());
        }
        // A client about to be replaced (the app secret changed) has its last requests counted first.
        self.count_requests(counters);
        let mut config = self.config.clone();
        config.app_secret = app.app_secret.clone();
        let client = Client::new(config).map_err(|e| ClientError(e.to_string()))?;
        self.by_app
            .insert(id, (print, client.clone(), RequestCounts::default()));
        Ok(client)
    }

    /// Adds the Graph requests made since the last call to `permatoken_graph_requests_total`.
    pub(crate) fn count_requests(&mut self, counters: &Counters) {
        for (_, client, counted) in self.by_app.values_mut() {
            let now = client.request_counts();
            for ((outcome, total), (_, before)) in
                now.by_outcome().into_iter().zip(counted.by_outcome())
            {
                counters.graph_requests(outcome, total.saturating_sub(before));
            }
            *counted = now;
        }
    }
}
