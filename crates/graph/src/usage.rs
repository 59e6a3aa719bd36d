//! The rate-limit usage headers (`graph-api.md` §7): how much of its hourly allowance the app has used,
//! and how long Meta says to wait once it is spent. Unparseable headers are ignored, never an error.

use std::time::Duration;

use serde::Deserialize;

/// What the usage headers of one answer said.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Usage {
    /// Highest percentage in `X-App-Usage` (`call_count`, `total_cputime`, `total_time`).
    pub app_percent: Option<f64>,
    /// Highest percentage over all entries of `X-Business-Use-Case-Usage`.
    pub business_percent: Option<f64>,
    /// Longest `estimated_time_to_regain_access` (minutes in the header).
    pub regain_after: Option<Duration>,
}

#[derive(Deserialize)]
struct Counts {
    #[serde(default)]
    call_count: Option<f64>,
    #[serde(default)]
    total_cputime: Option<f64>,
    #[serde(default)]
    total_time: Option<f64>,
    #[serde(default)]
    estimated_time_to_regain_access: Option<f64>,
}

impl Counts {
    fn highest(&self) -> Option<f64> {
        [self.call_count, self.total_cputime, self.total_time]
            .into_iter()
            .flatten()
            .reduce(f64::max)
    }
}

impl Usage {
    /// Reads `X-App-Usage` and `X-Business-Use-Case-Usage` from a header map.
    pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let mut usage = Usage::default();
        if let Some(app) = text("x-app-usage").and_then(|t| serde_json::from_str::<Counts>(t).ok())
        {
            usage.app_percent = app.highest();
        }
        if let Some(buc) = text("x-business-use-case-usage").and_then(|t| {
            serde_json::from_str::<std::collections::HashMap<String, Vec<Counts>>>(t).ok()
        }) {
            for counts in buc.values().flatten() {
                usage.business_percent = max(usage.business_percent, counts.highest());
                let regain = counts
                    .estimated_time_to_regain_access
                    .filter(|m| m.is_finite() && *m > 0.0)
                    .map(|m| Duration::from_secs_f64(m.min(1e6) * 60.0));
                usage.regain_after = usage.regain_after.max(regain);
            }
        }
        usage
    }

    /// Whether any allowance is spent, so further calls would be refused.
    pub fn exhausted(&self) -> bool {
        max(self.app_percent, self.business_percent).is_some_and(|p| p >= 100.0)
    }
}

fn max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn reads_both_headers_and_the_longest_wait() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-app-usage",
            HeaderValue::from_static(r#"{"call_count":12,"total_cputime":40,"total_time":7}"#),
        );
        h.insert(
            "x-business-use-case-usage",
            HeaderValue::from_static(
                r#"{"123":[{"type":"whatsapp","call_count":100,"total_cputime":3,"total_time":4,"estimated_time_to_regain_access":5},{"type":"x","call_count":1,"estimated_time_to_regain_access":2}]}"#,
            ),
        );
        let usage = Usage::from_headers(&h);
        assert_eq!(usage.app_percent, Some(40.0));
        assert_eq!(usage.business_percent, Some(100.0));
        assert_eq!(usage.regain_after, Some(Duration::from_secs(300)));
        assert!(usage.exhausted());
    }

    #[test]
    fn garbage_headers_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert("x-app-usage", HeaderValue::from_static("{not json"));
        h.insert("x-business-use-case-usage", HeaderValue::from_static("[]"));
        assert_eq!(Usage::from_headers(&h), Usage::default());
    }
}
