//! The rendered text, against a real SQLite store in a temporary directory.

use cairn_store::{SqliteOptions, SqliteStore};

use super::*;

fn labels(verb: &str, resource: &str) -> RequestLabels {
    RequestLabels {
        verb: verb.into(),
        group: String::new(),
        resource: resource.into(),
        subresource: String::new(),
    }
}

fn line<'a>(text: &'a str, starts: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(starts))
        .unwrap_or_else(|| panic!("no line {starts}:\n{text}"))
}

#[test]
fn requests_watches_store_and_certificates_are_rendered() {
    let dir = std::env::temp_dir().join(format!("cairn-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store =
        Arc::new(SqliteStore::open(dir.join("state.db"), SqliteOptions::default()).unwrap());
    for i in 0..3 {
        store.create(&format!("/registry/x/{i}"), b"{}").unwrap();
    }
    let metrics = Metrics::new(store.clone());

    let get = labels("GET", "configmaps");
    metrics.observe(&get, 200, Duration::from_millis(3));
    metrics.observe(&get, 200, Duration::from_millis(40));
    metrics.observe(&get, 404, Duration::from_millis(1));
    let watch = labels("WATCH", "pods");
    let first = metrics.watch_opened(&watch);
    let second = metrics.watch_opened(&watch);
    drop(first);
    metrics.observe(&watch, 200, Duration::from_secs(600));

    let ca = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_after = rcgen::date_time_ymd(2036, 1, 2);
        params.self_signed(&key).unwrap().pem()
    };
    metrics.set_certificate("ca", &ca);
    metrics.set_certificate("broken", "not a certificate");

    let text = metrics.render();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(line(&text, r#"apiserver_request_total{verb="GET",group="",resource="configmaps",subresource="",code="200"}"#).ends_with(" 2"));
    assert!(line(&text, r#"apiserver_request_total{verb="GET",group="",resource="configmaps",subresource="",code="404"}"#).ends_with(" 1"));
    // Latency: 3 observations, one above 25 ms; watches are not timed.
    assert!(line(
        &text,
        r#"apiserver_request_duration_seconds_count{verb="GET""#
    )
    .ends_with(" 3"));
    assert!(line(
        &text,
        r#"apiserver_request_duration_seconds_bucket{le="0.025",verb="GET""#
    )
    .ends_with(" 2"));
    assert!(!text.contains(r#"apiserver_request_duration_seconds_count{verb="WATCH""#));
    assert!(line(
        &text,
        r#"apiserver_longrunning_requests{verb="WATCH",group="",resource="pods"}"#
    )
    .ends_with(" 1"));
    drop(second);
    assert!(line(&metrics.render(), "apiserver_longrunning_requests{").ends_with(" 0"));

    assert!(
        line(
            &text,
            r#"cairn_certificate_expiration_timestamp_seconds{certificate="ca"}"#
        )
        .ends_with(" 2082844800.0"),
        "{text}"
    );
    assert!(!text.contains("broken"));
    assert!(line(&text, "cairn_store_revision ").ends_with(" 3"));
    assert!(line(&text, "cairn_store_writes_total ").ends_with(" 3"));
    assert!(line(&text, "cairn_store_rows ").ends_with(" 3"));
    let size: u64 = line(&text, "apiserver_storage_size_bytes ")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 4096, "{size}");
    drop(metrics);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_store_without_figures_leaves_them_out() {
    let metrics = Metrics::new(Arc::new(cairn_store::MemoryStore::new()));
    let text = metrics.render();
    assert!(text.contains("cairn_store_revision 0"), "{text}");
    assert!(!text.contains("cairn_store_writes"), "{text}");
}
