//! `GET /{app-id}` with the app token: whether an app id and secret work, with the secret only in the
//! `Authorization` header. `/debug_token` would need the app token in its query as `input_token`.
//!
//! Must never: put the app token or its secret into a URL.

use serde::Deserialize;

use crate::client::{Bearer, Call, path_segment};
use crate::{Budget, Client, Error};
use permatoken_secret::AppToken;

/// `GET /{app-id}?fields=id,name`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct App {
    /// The app id (Graph ids are strings).
    pub id: String,
    /// The app's name.
    #[serde(default)]
    pub name: Option<String>,
}

impl Client {
    /// `GET /{app-id}?fields=id,name` called with the app token `app` itself: it answers when the app
    /// id and secret work, and a Graph error (190, 101) when they do not.
    pub async fn app(&self, app: &AppToken, budget: &Budget) -> Result<App, Error> {
        let call =
            Call::get(path_segment(app.app_id())?, Bearer::App(app)).query("fields", "id,name");
        self.call(call, budget).await
    }
}
