//! `/metrics`: what a Prometheus server scrapes from a Cairn control plane, in the
//! OpenMetrics text format (prometheus-client, the Prometheus project's Rust client).
//!
//! Names follow kube-apiserver's where it has one, so existing dashboards and alerts apply:
//! - `apiserver_request_total{verb,group,resource,subresource,code}`;
//! - `apiserver_request_duration_seconds{verb,group,resource,subresource}` (not watches:
//!   they last as long as the client wants);
//! - `apiserver_longrunning_requests{verb="WATCH",group,resource}`: watches open now;
//! - `apiserver_storage_size_bytes`, `cairn_store_writes_total`, `cairn_store_commits_total`
//!   (`writes / commits` is the group-commit size), `cairn_store_revision`,
//!   `cairn_store_rows`: read from the datastore at each scrape;
//! - `cairn_certificate_expiration_timestamp_seconds{certificate}`: when each certificate
//!   the node serves or hands out stops being valid.
//!
//! Access needs an authenticated client (certificate or token), like every path but health
//! and version.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use cairn_store::Store;

/// The media type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Request latency buckets, in seconds: 1 ms to ~30 s.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// The API server's metrics. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    durations: Histograms,
    watches: Family<Labels, Gauge>,
    certificates: Family<Labels, Gauge<f64, AtomicU64>>,
}

/// What one request was, for its labels.
#[derive(Debug, Clone, Default)]
pub struct RequestLabels {
    /// kube-apiserver's verb: GET, LIST, WATCH, CREATE, UPDATE, PATCH, DELETE,
    /// DELETECOLLECTION, or the HTTP method for paths outside the resource API.
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
}

impl RequestLabels {
    fn labels(&self) -> Labels {
        vec![
            ("verb", self.verb.clone()),
            ("group", self.group.clone()),
            ("resource", self.resource.clone()),
            ("subresource", self.subresource.clone()),
        ]
    }
}

impl Metrics {
    /// Metrics for a server whose datastore is `store`.
    pub fn new(store: Arc<dyn Store>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Requests answered, by verb, resource and HTTP status code",
            requests.clone(),
        );
        let durations: Histograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "apiserver_request_duration_seconds",
            "Time to answer a request (watches excluded), by verb and resource",
            durations.clone(),
        );
        let watches = Family::<Labels, Gauge>::default();
        registry.register(
            "apiserver_longrunning_requests",
            "Watches open now, by resource",
            watches.clone(),
        );
        let certificates = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "cairn_certificate_expiration_timestamp_seconds",
            "When a certificate of this node stops being valid (Unix time)",
            certificates.clone(),
        );
        registry.register_collector(Box::new(StoreCollector { store }));
        Metrics {
            registry,
            requests,
            durations,
            watches,
            certificates,
        }
    }

    /// Counts one answered request (and its latency, unless it was a watch).
    pub fn observe(&self, request: &RequestLabels, code: u16, elapsed: Duration) {
        let mut labels = request.labels();
        if request.verb != "WATCH" {
            self.durations
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64());
        }
        labels.push(("code", code.to_string()));
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts a watch as open until the returned guard is dropped.
    pub fn watch_opened(&self, request: &RequestLabels) -> WatchGuard {
        let labels = vec![
            ("verb", "WATCH".to_owned()),
            ("group", request.group.clone()),
            ("resource", request.resource.clone()),
        ];
        let gauge = self.watches.get_or_create(&labels).clone();
        gauge.inc();
        WatchGuard { gauge }
    }

    /// Records when the certificate `name` (PEM, the first one counts) expires. A PEM that
    /// does not parse is reported and left out.
    pub fn set_certificate(&self, name: &str, pem: &str) {
        match not_after(pem) {
            Ok(at) => {
                self.certificates
                    .get_or_create(&vec![("certificate", name.to_owned())])
                    .set(at as f64);
            }
            Err(e) => eprintln!("cairn: metrics: certificate {name}: {e}"),
        }
    }

    /// Everything, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Keeps a watch counted in `apiserver_longrunning_requests`.
#[derive(Debug)]
pub struct WatchGuard {
    gauge: Gauge,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The `notAfter` of the first certificate in `pem`, as Unix seconds.
pub fn not_after(pem: &str) -> Result<u64, String> {
    use rustls::pki_types::pem::PemObject as _;
    use x509_cert::der::Decode as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = x509_cert::Certificate::from_der(&der).map_err(|e| e.to_string())?;
    Ok(cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs())
}

/// Reads the datastore's figures at each scrape.
struct StoreCollector {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        fn gauge(
            encoder: &mut DescriptorEncoder,
            name: &str,
            help: &str,
            value: i64,
        ) -> Result<(), std::fmt::Error> {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
        }
        fn counter(
            encoder: &mut DescriptorEncoder,
            name: &str,
            help: &str,
            value: u64,
        ) -> Result<(), std::fmt::Error> {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
        }
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        if let Ok(rev) = self.store.current_revision() {
            gauge(
                &mut encoder,
                "cairn_store_revision",
                "The datastore's current revision (the newest resourceVersion)",
                as_i64(rev),
            )?;
        }
        let Some(stats) = self.store.metrics() else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "apiserver_storage_size_bytes",
            "Size of the datastore on disk (database and write-ahead log)",
            as_i64(stats.size_bytes),
        )?;
        gauge(
            &mut encoder,
            "cairn_store_rows",
            "Rows in the datastore's revision log (current objects plus uncompacted history)",
            as_i64(stats.rows),
        )?;
        counter(
            &mut encoder,
            "cairn_store_writes",
            "Writes applied to the datastore since it was opened",
            stats.writes,
        )?;
        counter(
            &mut encoder,
            "cairn_store_commits",
            "Transactions committed since the datastore was opened (group commit: several writes per commit)",
            stats.commits,
        )
    }
}

#[cfg(test)]
mod tests;
