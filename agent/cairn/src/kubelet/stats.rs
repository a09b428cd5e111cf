//! Resource usage for the API server's metrics API (`kubectl top`): `GET /stats/resource`
//! answers a [`Summary`] of the node and its running containers
//! (`cairn_apiserver::resource_metrics`).
//!
//! CPU usage is a rate, so it takes two readings of cumulative counters (`/proc/stat` for the
//! node, each container's `cpu.stat`). Nothing reads them in the background, so an idle node
//! does no work and writes nothing: each request takes a reading, and the rate is the average
//! over the window since the previous request's reading when that is [`MIN_WINDOW`] to
//! [`MAX_WINDOW`] old and knew every container now running. Otherwise (the first request, a
//! container started since, a stale reading) the kubelet reads again after [`MIN_WINDOW`] and
//! answers over that window. A request within [`MIN_WINDOW`] of the last reading gets the last
//! answer again, so concurrent requests agree and cost nothing. Memory is the working set at
//! the reading (`/proc/meminfo` for the node, `memory.current` − `inactive_file` for a
//! container, missing where the memory controller is not on cgroup v2).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use cairn_apiserver::resource_metrics::{ContainerUsage, PodUsage, Summary, Usage};
use cairn_runtime::{cgroup, Runtime};
use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::Response;
use tokio::sync::Mutex;

/// The shortest window a rate is taken over (`/proc/stat` counts in 10 ms ticks).
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// The longest: beyond it the average says little about now, and a fresh window is taken.
pub const MAX_WINDOW: Duration = Duration::from_secs(60);

/// The previous reading and the answer made with it.
#[derive(Default)]
pub struct Sampler {
    last: Mutex<Option<(Reading, Summary)>>,
}

impl Sampler {
    /// The node's usage now (waiting [`MIN_WINDOW`] when no earlier reading serves).
    pub async fn summary(&self, runtime: &Runtime) -> Summary {
        let mut last = self.last.lock().await;
        if let Some((reading, summary)) = last.as_ref() {
            if reading.at.elapsed() < MIN_WINDOW {
                return summary.clone();
            }
        }
        let mut now = read(runtime).await;
        let usable = last.take().and_then(|(prev, _)| {
            let window = now.at.saturating_duration_since(prev.at);
            let (summary, complete) = between(&prev, &now);
            (complete && (MIN_WINDOW..=MAX_WINDOW).contains(&window)).then_some(summary)
        });
        let summary = match usable {
            Some(summary) => summary,
            None => {
                tokio::time::sleep(MIN_WINDOW).await;
                let again = read(runtime).await;
                let (summary, _) = between(&now, &again);
                now = again;
                summary
            }
        };
        *last = Some((now, summary.clone()));
        summary
    }
}

/// `GET /stats/resource`.
pub async fn respond(
    sampler: &Sampler,
    runtime: &Runtime,
) -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    let summary = sampler.summary(runtime).await;
    let body = serde_json::to_vec(&summary).unwrap_or_default();
    let mut resp = Response::new(http_body_util::Full::new(Bytes::from(body)).boxed());
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Cumulative counters at one moment.
#[derive(Debug, Clone)]
pub struct Reading {
    at: Instant,
    /// `at` as the API writes times.
    time: String,
    node_cpu_nanos: Option<u64>,
    /// The node's online CPUs, the most its CPU rate can be.
    node_cpus: Option<u64>,
    node_memory_bytes: Option<u64>,
    /// The running containers, by container id.
    containers: BTreeMap<String, Container>,
}

#[derive(Debug, Clone)]
struct Container {
    pod_uid: String,
    name: String,
    usage: cgroup::Usage,
}

async fn read(runtime: &Runtime) -> Reading {
    let runtime = runtime.clone();
    let empty = Reading {
        at: Instant::now(),
        time: cairn_apiserver::meta::now(),
        node_cpu_nanos: None,
        node_cpus: None,
        node_memory_bytes: None,
        containers: BTreeMap::new(),
    };
    tokio::task::spawn_blocking(move || Reading::take(&runtime))
        .await
        .unwrap_or(empty)
}

impl Reading {
    /// The node's counters and those of every running container with a cgroup.
    fn take(runtime: &Runtime) -> Reading {
        let proc = |file: &str| std::fs::read_to_string(file).ok();
        let stat = proc("/proc/stat");
        let containers = runtime
            .ids()
            .into_iter()
            .filter(|id| runtime.running(id))
            .filter_map(|id| {
                // `<pod uid>_<container name>_<attempt>`
                let mut parts = id.rsplitn(3, '_');
                let (_attempt, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
                let dir = runtime.spec(&id)?.cgroup?;
                let container = Container {
                    pod_uid: uid.to_owned(),
                    name: name.to_owned(),
                    usage: cgroup::usage(&dir),
                };
                Some((id, container))
            })
            .collect();
        Reading {
            at: Instant::now(),
            time: cairn_apiserver::meta::now(),
            node_cpu_nanos: stat
                .as_deref()
                .and_then(crate::procfs::parse_cpu_busy_nanos),
            node_cpus: stat.as_deref().and_then(crate::procfs::parse_cpu_count),
            node_memory_bytes: proc("/proc/meminfo")
                .and_then(|t| crate::procfs::parse_memory_working_set(&t)),
            containers,
        }
    }
}

/// The usage between two readings, and whether `prev` knew every container of `now` (those
/// it did not know are left out).
fn between(prev: &Reading, now: &Reading) -> (Summary, bool) {
    let window = now.at.saturating_duration_since(prev.at);
    let rate = |before: Option<u64>, after: Option<u64>| -> Option<u64> {
        let used = u128::from(after?.checked_sub(before?)?);
        let nanos = window.as_nanos();
        (nanos > 0).then(|| (used * 1_000_000_000 / nanos) as u64)
    };
    let micros_to_nanos = |u: &cgroup::Usage| u.cpu_usage_micros.map(|m| m * 1000);
    let mut complete = true;
    let mut pods: BTreeMap<&str, Vec<ContainerUsage>> = BTreeMap::new();
    for (id, c) in &now.containers {
        let Some(before) = prev.containers.get(id) else {
            complete = false;
            continue;
        };
        pods.entry(&c.pod_uid).or_default().push(ContainerUsage {
            name: c.name.clone(),
            usage: Usage {
                cpu_nano_cores: rate(micros_to_nanos(&before.usage), micros_to_nanos(&c.usage)),
                memory_working_set_bytes: c.usage.memory_working_set_bytes,
            },
        });
    }
    let summary = Summary {
        time: now.time.clone(),
        // Rates use the exact window; it is told in milliseconds (`1.002s`, not `1.001774766s`).
        window_nanos: window.as_millis() as u64 * 1_000_000,
        node: Usage {
            // `/proc/stat` counts whole 10 ms ticks, so a busy node's count over a 1 s
            // window can come out a tick or two above what its CPUs can do (2005m on two
            // cores): no more than all of them is said.
            cpu_nano_cores: rate(prev.node_cpu_nanos, now.node_cpu_nanos).map(|r| {
                now.node_cpus
                    .map_or(r, |cpus| r.min(cpus.saturating_mul(1_000_000_000)))
            }),
            memory_working_set_bytes: now.node_memory_bytes,
        },
        pods: pods
            .into_iter()
            .map(|(uid, containers)| PodUsage {
                uid: uid.to_owned(),
                containers,
            })
            .collect(),
    };
    (summary, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(
        at: Instant,
        node_cpu: u64,
        containers: &[(&str, Option<u64>, Option<u64>)],
    ) -> Reading {
        Reading {
            at,
            time: "2025-06-01T10:00:00Z".into(),
            node_cpu_nanos: Some(node_cpu),
            node_cpus: Some(2),
            node_memory_bytes: Some(512 << 20),
            containers: containers
                .iter()
                .map(|(id, cpu_micros, memory)| {
                    let mut parts = id.splitn(3, '_');
                    let container = Container {
                        pod_uid: parts.next().unwrap().into(),
                        name: parts.next().unwrap().into(),
                        usage: cgroup::Usage {
                            cpu_usage_micros: *cpu_micros,
                            memory_working_set_bytes: *memory,
                            ..Default::default()
                        },
                    };
                    ((*id).to_owned(), container)
                })
                .collect(),
        }
    }

    #[test]
    fn rates_are_taken_over_the_window_between_readings() {
        let t0 = Instant::now();
        let prev = reading(
            t0,
            10_000_000_000,
            &[
                ("u1_web_0", Some(1_000_000), Some(1 << 20)),
                ("u1_side_0", None, None),
            ],
        );
        let now = reading(
            t0 + Duration::from_millis(2000),
            11_000_000_000,
            &[
                // 0.5 s of CPU in 2 s: 250m.
                ("u1_web_0", Some(1_500_000), Some(3 << 20)),
                ("u1_side_0", None, None),
                // Started after `prev`: left out, and the answer is not complete.
                ("u2_main_0", Some(10), Some(4096)),
            ],
        );
        let (summary, complete) = between(&prev, &now);
        assert!(!complete);
        assert_eq!(summary.window_nanos, 2_000_000_000);
        assert_eq!(
            summary.node.cpu_nano_cores,
            Some(500_000_000),
            "1 s of CPU in 2 s"
        );
        assert_eq!(summary.node.memory_working_set_bytes, Some(512 << 20));
        assert_eq!(summary.pods.len(), 1);
        let pod = &summary.pods[0];
        assert_eq!(pod.uid, "u1");
        let web = pod.containers.iter().find(|c| c.name == "web").unwrap();
        assert_eq!(web.usage.cpu_nano_cores, Some(250_000_000));
        assert_eq!(
            web.usage.memory_working_set_bytes,
            Some(3 << 20),
            "memory is the latest"
        );
        let side = pod.containers.iter().find(|c| c.name == "side").unwrap();
        assert_eq!(side.usage, Usage::default(), "no counters, no figures");

        let (_, complete) = between(&now, &now);
        assert!(complete);
        let soon = reading(
            t0 + Duration::from_nanos(1_001_774_766),
            10_000_000_000,
            &[],
        );
        assert_eq!(
            between(&prev, &soon).0.window_nanos,
            1_001_000_000,
            "told in ms"
        );
        // Counters going back (they never should) give no figure rather than a huge one.
        let back = reading(t0 + Duration::from_secs(3), 9_000_000_000, &[]);
        let (summary, _) = between(&now, &back);
        assert_eq!(summary.node.cpu_nano_cores, None);
        // 2.01 s of ticks in 1 s on two CPUs: all of both, not more.
        let over = reading(t0 + Duration::from_secs(4), 11_010_000_000, &[]);
        let (summary, _) = between(&back, &over);
        assert_eq!(summary.node.cpu_nano_cores, Some(2_000_000_000));
    }

    #[tokio::test]
    async fn a_first_request_waits_for_a_window_and_the_next_reuses_it() {
        let dir = std::env::temp_dir().join(format!("cairn-stats-{}", std::process::id()));
        let runtime = Runtime::new(&dir, std::path::Path::new("/bin/false"), None).unwrap();
        let sampler = Sampler::default();
        let started = Instant::now();
        let first = sampler.summary(&runtime).await;
        assert!(started.elapsed() >= MIN_WINDOW);
        assert!(first.window_nanos >= MIN_WINDOW.as_nanos() as u64);
        assert!(first.node.cpu_nano_cores.is_some());
        assert!(first.node.memory_working_set_bytes.unwrap() > 0);
        assert!(first.pods.is_empty());
        // Within the window: the same answer, at once.
        let again = Instant::now();
        assert_eq!(sampler.summary(&runtime).await, first);
        assert!(again.elapsed() < MIN_WINDOW);
        // Later: over the window since the last reading, without waiting.
        tokio::time::sleep(MIN_WINDOW).await;
        let later = Instant::now();
        let next = sampler.summary(&runtime).await;
        assert!(later.elapsed() < MIN_WINDOW);
        assert!(next.window_nanos >= MIN_WINDOW.as_nanos() as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
