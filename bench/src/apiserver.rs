//! What the API server was asked to do in a phase: its requests by verb and resource
//! (`apiserver_request_total`) and the watch events it sent by kind
//! (`apiserver_watch_events_total`), read from its `/metrics`. When the API server bounds a
//! phase, these say which writes and which watchers it spent the time on.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

/// Counter totals at one moment, keyed by a readable series name ("POST keys.kubekms.io",
/// "watch events Secret").
#[derive(Clone, Default)]
pub struct ApiCounters(BTreeMap<String, f64>);

impl ApiCounters {
    /// Scrape the API server's metrics through `client` (which must be allowed `/metrics`).
    pub async fn scrape(client: &kube::Client) -> Result<Self> {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .context("a GET of /metrics")?;
        let text = client
            .request_text(request)
            .await
            .context("the API server's /metrics")?;
        Ok(Self::parse(&text))
    }

    fn parse(text: &str) -> Self {
        let mut totals = BTreeMap::new();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let name = if let Some(labels) = series.strip_prefix("apiserver_request_total{") {
                let resource = label(labels, "resource");
                if resource.is_empty() {
                    continue;
                }
                let mut what = format!("{} {resource}", label(labels, "verb"));
                let group = label(labels, "group");
                if !group.is_empty() {
                    what = format!("{what}.{group}");
                }
                let sub = label(labels, "subresource");
                if !sub.is_empty() {
                    what = format!("{what}/{sub}");
                }
                what
            } else if let Some(labels) = series.strip_prefix("apiserver_watch_events_total{") {
                format!("watch events {}", label(labels, "kind"))
            } else {
                continue;
            };
            *totals.entry(name).or_insert(0.0) += value;
        }
        Self(totals)
    }

    /// The series that grew since `earlier`, largest first.
    pub fn since(&self, earlier: &ApiCounters) -> Vec<(String, f64)> {
        let mut grown: Vec<(String, f64)> = self
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v - earlier.0.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, d)| *d >= 1.0)
            .collect();
        grown.sort_by(|a, b| b.1.total_cmp(&a.1));
        grown
    }
}

/// The value of `name="..."` in a Prometheus label set (empty when absent).
fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    let needle = format!("{name}=\"");
    let mut rest = labels;
    while let Some(at) = rest.find(&needle) {
        // A match must start the label set or follow a comma, not end another label's name.
        let starts_label = at == 0 || rest.as_bytes().get(at - 1) == Some(&b',');
        let value = &rest[at + needle.len()..];
        if starts_label {
            return value.split('"').next().unwrap_or("");
        }
        rest = value;
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_watch_events_by_name() {
        let before = ApiCounters::parse(
            "apiserver_request_total{code=\"201\",group=\"kubekms.io\",resource=\"keys\",subresource=\"\",verb=\"APPLY\",version=\"v1alpha1\"} 2\n",
        );
        let after = ApiCounters::parse(concat!(
            "# HELP apiserver_request_total Counter\n",
            "apiserver_request_total{code=\"201\",group=\"kubekms.io\",resource=\"keys\",subresource=\"\",verb=\"APPLY\",version=\"v1alpha1\"} 7\n",
            "apiserver_request_total{code=\"409\",group=\"kubekms.io\",resource=\"keys\",subresource=\"\",verb=\"APPLY\",version=\"v1alpha1\"} 1\n",
            "apiserver_request_total{code=\"200\",group=\"kubekms.io\",resource=\"keys\",subresource=\"status\",verb=\"PATCH\",version=\"v1alpha1\"} 3\n",
            "apiserver_request_total{code=\"201\",group=\"\",resource=\"secrets\",subresource=\"\",verb=\"POST\",version=\"v1\"} 4\n",
            "apiserver_watch_events_total{group=\"\",kind=\"Secret\",version=\"v1\"} 12\n",
            "apiserver_request_total{code=\"200\",group=\"\",resource=\"\",subresource=\"\",verb=\"GET\",version=\"\"} 9\n",
        ));
        assert_eq!(
            after.since(&before),
            vec![
                ("watch events Secret".to_owned(), 12.0),
                ("APPLY keys.kubekms.io".to_owned(), 6.0),
                ("POST secrets".to_owned(), 4.0),
                ("PATCH keys.kubekms.io/status".to_owned(), 3.0),
            ]
        );
    }

    #[test]
    fn a_label_name_inside_another_is_not_taken() {
        assert_eq!(
            label("subresource=\"status\",resource=\"keys\"", "resource"),
            "keys"
        );
        assert_eq!(label("resource=\"keys\"", "group"), "");
    }
}
