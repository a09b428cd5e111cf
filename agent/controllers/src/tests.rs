//! Controllers driven step by step against the API over the in-memory store and over SQLite,
//! with a stand-in kubelet that reports every pod Running and Ready.

use std::sync::Arc;

use cairn_apiserver::Api;
use cairn_store::{MemoryStore, SqliteOptions, SqliteStore, Store};
use serde_json::{json, Value};

use crate::client::{Client, DEPLOYMENTS, NAMESPACES, PODS, REPLICA_SETS, SERVICE_ACCOUNTS};
use crate::deployment::{Deployments, HASH_LABEL, REVISION};
use crate::replicaset::ReplicaSets;
use crate::runtime::{Controller, Key};
use crate::serviceaccount::DefaultServiceAccounts;

/// The same test against both stores.
fn each_store(test: impl Fn(Client)) {
    test(client_over(Arc::new(MemoryStore::new())));
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default()).unwrap();
    test(client_over(Arc::new(sqlite)));
}

fn client_over(store: Arc<dyn Store>) -> Client {
    let client = Client::new(Api::new(store));
    client
        .create(NAMESPACES, "", &json!({"metadata": {"name": "d"}}))
        .unwrap();
    client
}

/// Marks every pod Running and Ready, as a kubelet would once its containers run.
fn kubelet(client: &Client) {
    for mut pod in client.list(PODS, "").unwrap() {
        if pod["metadata"].get("deletionTimestamp").is_some() {
            stop(client, &pod);
            continue;
        }
        if pod["status"]["phase"] == "Running" {
            continue;
        }
        pod["status"] = json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        let ns = pod["metadata"]["namespace"].as_str().unwrap().to_owned();
        client.update_status(PODS, &ns, &pod).unwrap();
    }
}

/// What a kubelet does with a terminating pod once its containers have stopped: deletes it
/// for good (grace 0, this pod only).
fn stop(client: &Client, pod: &Value) {
    let options =
        json!({"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}});
    client
        .delete(
            PODS,
            pod["metadata"]["namespace"].as_str().unwrap(),
            pod["metadata"]["name"].as_str().unwrap(),
            Some(&options),
        )
        .unwrap();
}

/// Runs the controllers (and the kubelet) over every object until nothing changes; calls
/// `check` after every round.
fn settle(client: &Client, check: &dyn Fn(&Client)) -> usize {
    for round in 0..50 {
        let before = client.api().store.current_revision().unwrap();
        for d in client.list(DEPLOYMENTS, "").unwrap() {
            Deployments.reconcile(client, &Key::of(&d)).unwrap();
        }
        for rs in client.list(REPLICA_SETS, "").unwrap() {
            ReplicaSets.reconcile(client, &Key::of(&rs)).unwrap();
        }
        kubelet(client);
        crate::gc::sweep(client).unwrap();
        check(client);
        if client.api().store.current_revision().unwrap() == before {
            return round;
        }
    }
    panic!("the controllers did not settle in 50 rounds");
}

fn active_pods(client: &Client) -> Vec<Value> {
    client
        .list(PODS, "d")
        .unwrap()
        .into_iter()
        .filter(crate::pods::is_active)
        .collect()
}

fn deployment(image: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "d"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    })
}

fn set_template_image(client: &Client, image: &str) {
    let mut d = client.get(DEPLOYMENTS, "d", "web").unwrap().unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    client.update(DEPLOYMENTS, "d", &d).unwrap();
}

fn images(client: &Client) -> Vec<String> {
    let mut out: Vec<String> = active_pods(client)
        .iter()
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_deployment_rolls_out_scales_and_rolls_back() {
    each_store(|client| {
        client
            .create(DEPLOYMENTS, "d", &deployment("web:1", 3))
            .unwrap();
        settle(&client, &|_| {});
        let rss = client.list(REPLICA_SETS, "d").unwrap();
        assert_eq!(rss.len(), 1);
        let rs = &rss[0];
        let hash = rs["metadata"]["labels"][HASH_LABEL].as_str().unwrap();
        assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(rs["metadata"]["annotations"][REVISION], "1");
        assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
        let pods = active_pods(&client);
        assert_eq!(pods.len(), 3);
        for pod in &pods {
            assert_eq!(
                pod["metadata"]["ownerReferences"][0]["name"],
                rs["metadata"]["name"]
            );
            assert_eq!(pod["metadata"]["labels"][HASH_LABEL], hash);
            assert!(pod["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("web-{hash}-")));
        }
        let d = client.get(DEPLOYMENTS, "d", "web").unwrap().unwrap();
        assert_eq!(d["status"]["availableReplicas"], 3);
        assert_eq!(d["status"]["updatedReplicas"], 3);
        assert_eq!(
            d["status"]["observedGeneration"],
            d["metadata"]["generation"]
        );
        let progressing = &d["status"]["conditions"][1];
        assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
        // Settled means settled: another pass writes nothing.
        let rev = client.api().store.current_revision().unwrap();
        assert_eq!(settle(&client, &|_| {}), 0);
        assert_eq!(client.api().store.current_revision().unwrap(), rev);

        // A new image rolls: never more than 3 + 1 (25% surge) pods, never fewer than 3
        // ready (25% of 3 rounds down to 0 unavailable).
        set_template_image(&client, "web:2");
        settle(&client, &|c| {
            let pods = active_pods(c);
            assert!(pods.len() <= 4, "surge exceeded: {}", pods.len());
            let ready = pods
                .iter()
                .filter(|p| crate::pods::ready_since(p).is_some())
                .count();
            assert!(ready >= 3, "availability dropped to {ready}");
        });
        assert_eq!(images(&client), ["web:2"; 3]);
        let rss = client.list(REPLICA_SETS, "d").unwrap();
        assert_eq!(rss.len(), 2, "the old one stays, at zero, for rollbacks");
        let revisions: Vec<(&str, i64)> = rss
            .iter()
            .map(|rs| {
                (
                    rs["metadata"]["annotations"][REVISION].as_str().unwrap(),
                    rs["spec"]["replicas"].as_i64().unwrap(),
                )
            })
            .collect();
        assert!(
            revisions.contains(&("1", 0)) && revisions.contains(&("2", 3)),
            "{revisions:?}"
        );

        // Back to the first template: its ReplicaSet returns as revision 3.
        set_template_image(&client, "web:1");
        settle(&client, &|_| {});
        assert_eq!(images(&client), ["web:1"; 3]);
        let back = client
            .list(REPLICA_SETS, "d")
            .unwrap()
            .into_iter()
            .find(|rs| rs["spec"]["replicas"] == 3)
            .unwrap();
        assert_eq!(back["metadata"]["annotations"][REVISION], "3");
        assert_eq!(back["metadata"]["name"], rs["metadata"]["name"]);

        // Scaling.
        let mut d = client.get(DEPLOYMENTS, "d", "web").unwrap().unwrap();
        d["spec"]["replicas"] = json!(1);
        client.update(DEPLOYMENTS, "d", &d).unwrap();
        settle(&client, &|_| {});
        assert_eq!(active_pods(&client).len(), 1);
        let d = client.get(DEPLOYMENTS, "d", "web").unwrap().unwrap();
        assert_eq!(d["status"]["replicas"], 1);
    });
}

#[test]
fn recreate_stops_the_old_pods_before_starting_new_ones() {
    each_store(|client| {
        let mut d = deployment("web:1", 2);
        d["spec"]["strategy"] = json!({"type": "Recreate"});
        client.create(DEPLOYMENTS, "d", &d).unwrap();
        settle(&client, &|_| {});
        set_template_image(&client, "web:2");
        settle(&client, &|c| {
            let images = images(c);
            assert!(
                !(images.contains(&"web:1".to_owned()) && images.contains(&"web:2".to_owned())),
                "old and new pods at once: {images:?}"
            );
        });
        assert_eq!(images(&client), ["web:2"; 2]);
    });
}

#[test]
fn a_replica_set_adopts_orphans_releases_strays_and_replaces_lost_pods() {
    each_store(|client| {
        let orphan = json!({"metadata": {"name": "orphan", "labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        client.create(PODS, "d", &orphan).unwrap();
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "a", "namespace": "d"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "a"}},
                     "template": {"metadata": {"labels": {"app": "a"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        });
        client.create(REPLICA_SETS, "d", &rs).unwrap();
        settle(&client, &|_| {});
        let pods = active_pods(&client);
        assert_eq!(pods.len(), 2, "the orphan counts");
        let adopted = client.get(PODS, "d", "orphan").unwrap().unwrap();
        assert_eq!(adopted["metadata"]["ownerReferences"][0]["name"], "a");

        // A pod relabelled out of the selector is released and replaced.
        let mut stray = adopted;
        stray["metadata"]["labels"]["app"] = json!("other");
        client.update(PODS, "d", &stray).unwrap();
        settle(&client, &|_| {});
        let stray = client.get(PODS, "d", "orphan").unwrap().unwrap();
        assert!(crate::runtime::controller_of(&stray).is_none());
        let owned: Vec<Value> = active_pods(&client)
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "a")
            .collect();
        assert_eq!(owned.len(), 2);

        // A deleted pod is replaced; the status counts what is there.
        let name = owned[0]["metadata"]["name"].as_str().unwrap().to_owned();
        client.delete(PODS, "d", &name, None).unwrap();
        settle(&client, &|_| {});
        let rs = client.get(REPLICA_SETS, "d", "a").unwrap().unwrap();
        assert_eq!(rs["status"]["replicas"], 2);
        assert_eq!(rs["status"]["readyReplicas"], 2);
        assert_eq!(rs["status"]["availableReplicas"], 2);
        let events = client.list(crate::client::EVENTS, "d").unwrap();
        assert!(events
            .iter()
            .any(|e| e["reason"] == "SuccessfulCreate" && e["involvedObject"]["name"] == "a"));
    });
}

#[test]
fn every_namespace_gets_a_default_service_account() {
    each_store(|client| {
        let key = Key::new("", "d");
        DefaultServiceAccounts.reconcile(&client, &key).unwrap();
        assert!(client
            .get(SERVICE_ACCOUNTS, "d", "default")
            .unwrap()
            .is_some());
        client
            .delete(SERVICE_ACCOUNTS, "d", "default", None)
            .unwrap();
        DefaultServiceAccounts.reconcile(&client, &key).unwrap();
        assert!(client
            .get(SERVICE_ACCOUNTS, "d", "default")
            .unwrap()
            .is_some());
        // A namespace that is gone is nothing to do.
        DefaultServiceAccounts
            .reconcile(&client, &Key::new("", "gone"))
            .unwrap();
    });
}

#[test]
fn template_hashes_are_stable_and_safe() {
    let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}});
    let h = crate::deployment::template_hash(&t);
    assert_eq!(h, crate::deployment::template_hash(&t.clone()));
    assert!(
        h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{h}"
    );
    let other = json!({"metadata": {"labels": {"app": "web2"}}, "spec": {"containers": []}});
    assert_ne!(h, crate::deployment::template_hash(&other));
}

fn settled_web(client: &Client) {
    client
        .create(DEPLOYMENTS, "d", &deployment("web:1", 2))
        .unwrap();
    settle(client, &|_| {});
    assert_eq!(active_pods(client).len(), 2);
}

#[test]
fn deleting_an_owner_propagates_in_the_background_foreground_or_not_at_all() {
    each_store(|client| {
        // Background (the default): the deployment goes at once, its replica set and pods after.
        settled_web(&client);
        client.delete(DEPLOYMENTS, "d", "web", None).unwrap();
        assert!(client.get(DEPLOYMENTS, "d", "web").unwrap().is_none());
        settle(&client, &|_| {});
        assert!(client.list(REPLICA_SETS, "d").unwrap().is_empty());
        assert!(client.list(PODS, "d").unwrap().is_empty());

        // Foreground: the deployment stays, marked, until its dependents are gone.
        settled_web(&client);
        let foreground = json!({"propagationPolicy": "Foreground"});
        client
            .delete(DEPLOYMENTS, "d", "web", Some(&foreground))
            .unwrap();
        let marked = client.get(DEPLOYMENTS, "d", "web").unwrap().unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(
            marked["metadata"]["finalizers"],
            json!(["foregroundDeletion"])
        );
        settle(&client, &|_| {});
        assert!(client.get(DEPLOYMENTS, "d", "web").unwrap().is_none());
        assert!(client.list(REPLICA_SETS, "d").unwrap().is_empty());
        assert!(client.list(PODS, "d").unwrap().is_empty());

        // Orphan: the deployment goes, the replica set and its pods stay, unowned.
        settled_web(&client);
        let orphan = json!({"propagationPolicy": "Orphan"});
        client
            .delete(DEPLOYMENTS, "d", "web", Some(&orphan))
            .unwrap();
        settle(&client, &|_| {});
        assert!(client.get(DEPLOYMENTS, "d", "web").unwrap().is_none());
        let rss = client.list(REPLICA_SETS, "d").unwrap();
        assert_eq!(rss.len(), 1);
        assert!(crate::runtime::controller_of(&rss[0]).is_none(), "released");
        assert_eq!(active_pods(&client).len(), 2, "its pods live on");

        // A dependent with a second, live owner only loses the dangling reference.
        let keeper = client
            .create(
                crate::client::Res::core("configmaps"),
                "d",
                &json!({"metadata": {"name": "keeper"}}),
            )
            .unwrap();
        let mut pod = active_pods(&client).remove(0);
        let refs = pod["metadata"]["ownerReferences"].as_array_mut().unwrap();
        refs.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "uid": keeper["metadata"]["uid"]}));
        let pod = client.update(PODS, "d", &pod).unwrap();
        let rs_name = rss[0]["metadata"]["name"].as_str().unwrap().to_owned();
        client.delete(REPLICA_SETS, "d", &rs_name, None).unwrap();
        settle(&client, &|_| {});
        let kept = client
            .get(PODS, "d", pod["metadata"]["name"].as_str().unwrap())
            .unwrap()
            .unwrap();
        let refs = kept["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0]["kind"], "ConfigMap");
        assert_eq!(
            active_pods(&client).len(),
            1,
            "the other pod went with its replica set"
        );
        let name = kept["metadata"]["name"].as_str().unwrap();
        let e = client
            .delete(
                PODS,
                "d",
                name,
                Some(&json!({"propagationPolicy": "Sideways"})),
            )
            .unwrap_err();
        assert_eq!(e.code_reason().0, 400, "{e}");
        assert!(
            client.get(PODS, "d", name).unwrap().is_some(),
            "a refused delete deletes nothing"
        );
    });
}

fn node(client: &Client, name: &str, cpu: &str, memory: &str, extra: Value) {
    let mut node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    if let Some(extra) = extra.as_object() {
        for (k, v) in extra {
            match k.as_str() {
                "labels" => {
                    for (lk, lv) in v.as_object().unwrap() {
                        node["metadata"]["labels"][lk] = lv.clone();
                    }
                }
                "annotations" => node["metadata"]["annotations"] = v.clone(),
                "taints" => node["spec"]["taints"] = v.clone(),
                "unschedulable" => node["spec"]["unschedulable"] = v.clone(),
                "podCIDR" => node["spec"]["podCIDR"] = v.clone(),
                "notReady" => node["status"]["conditions"][0]["status"] = json!("False"),
                _ => panic!("{k}"),
            }
        }
    }
    let created = client.create(crate::client::NODES, "", &node).unwrap();
    // The status is the kubelet's: written through /status.
    let mut with_status = created;
    with_status["status"] = node["status"].clone();
    client
        .update_status(crate::client::NODES, "", &with_status)
        .unwrap();
}

fn pending_pod(client: &Client, name: &str, spec: Value) {
    let mut pod = json!({"metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "i"}]}});
    for (k, v) in spec.as_object().unwrap() {
        pod["spec"][k] = v.clone();
    }
    client.create(PODS, "d", &pod).unwrap();
}

fn node_of(client: &Client, pod: &str) -> String {
    client.get(PODS, "d", pod).unwrap().unwrap()["spec"]["nodeName"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn schedule(client: &Client) {
    crate::scheduler::Scheduler
        .reconcile(client, &Key::new("", "*"))
        .unwrap();
}

#[test]
fn the_scheduler_filters_scores_and_explains() {
    each_store(|client| {
        node(
            &client,
            "small",
            "1",
            "1Gi",
            json!({"labels": {"disk": "hdd"}}),
        );
        node(
            &client,
            "big",
            "4",
            "8Gi",
            json!({"labels": {"disk": "ssd", "zone": "a"}}),
        );
        node(
            &client,
            "tainted",
            "8",
            "16Gi",
            json!({"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}),
        );
        node(&client, "down", "8", "16Gi", json!({"notReady": true}));
        node(
            &client,
            "cordoned",
            "8",
            "16Gi",
            json!({"unschedulable": true}),
        );

        pending_pod(&client, "ssd", json!({"nodeSelector": {"disk": "ssd"}}));
        pending_pod(
            &client,
            "hungry",
            json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "3500m", "memory": "1Gi"}}}]}),
        );
        pending_pod(
            &client,
            "gpu",
            json!({"tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["tainted"]}]}]}}}}),
        );
        pending_pod(
            &client,
            "huge",
            json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "100"}}}]}),
        );
        pending_pod(&client, "elsewhere", json!({"schedulerName": "other"}));
        schedule(&client);

        assert_eq!(node_of(&client, "ssd"), "big");
        assert_eq!(node_of(&client, "hungry"), "big", "only big has 3.5 CPUs");
        assert_eq!(node_of(&client, "gpu"), "tainted");
        assert_eq!(node_of(&client, "elsewhere"), "", "another scheduler's pod");
        assert_eq!(node_of(&client, "huge"), "");
        let huge = client.get(PODS, "d", "huge").unwrap().unwrap();
        let cond = &huge["status"]["conditions"][0];
        assert_eq!(cond["reason"], "Unschedulable");
        let message = cond["message"].as_str().unwrap();
        assert!(message.starts_with("0/5 nodes are available:"), "{message}");
        for why in [
            "Insufficient cpu",
            "node(s) were not ready",
            "node(s) were unschedulable",
            "untolerated taint {gpu: yes}",
        ] {
            assert!(message.contains(why), "{why}: {message}");
        }
        let events = client.list(crate::client::EVENTS, "d").unwrap();
        assert!(events
            .iter()
            .any(|e| e["reason"] == "FailedScheduling" && e["involvedObject"]["name"] == "huge"));
        assert!(events.iter().any(|e| e["reason"] == "Scheduled"
            && e["message"].as_str().unwrap().ends_with("d/ssd to big")));
        // Nothing changes on a second pass: the explanation is not rewritten.
        let rev = client.api().store.current_revision().unwrap();
        schedule(&client);
        assert_eq!(client.api().store.current_revision().unwrap(), rev);

        // The big node's CPU is spoken for: the next big pod waits.
        pending_pod(
            &client,
            "second",
            json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "1"}}}]}),
        );
        schedule(&client);
        assert_eq!(
            node_of(&client, "second"),
            "small",
            "the only untainted node with a free CPU"
        );
    });
}

#[test]
fn replicas_spread_and_anti_affinity_keeps_them_apart() {
    each_store(|client| {
        for n in ["n1", "n2", "n3"] {
            node(&client, n, "4", "8Gi", json!({}));
        }
        let mut d = deployment("web:1", 3);
        d["spec"]["template"]["spec"]["affinity"] = json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}]}});
        client.create(DEPLOYMENTS, "d", &d).unwrap();
        settle(&client, &|_| {});
        schedule(&client);
        let mut nodes: Vec<String> = active_pods(&client)
            .iter()
            .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_owned())
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["n1", "n2", "n3"]);
        // A fourth replica has nowhere to go.
        let mut d = client.get(DEPLOYMENTS, "d", "web").unwrap().unwrap();
        d["spec"]["replicas"] = json!(4);
        client.update(DEPLOYMENTS, "d", &d).unwrap();
        settle(&client, &|_| {});
        schedule(&client);
        let unbound = active_pods(&client)
            .into_iter()
            .filter(|p| p["spec"]["nodeName"].as_str().unwrap_or("").is_empty())
            .count();
        assert_eq!(unbound, 1);
    });
}

#[test]
fn quantities() {
    use crate::scheduler::quantity;
    assert_eq!(quantity(&json!("100m")), 0.1);
    assert_eq!(quantity(&json!("2")), 2.0);
    assert_eq!(quantity(&json!("128Mi")), 134217728.0);
    assert_eq!(quantity(&json!("1G")), 1e9);
    assert_eq!(quantity(&json!(3)), 3.0);
    assert_eq!(quantity(&json!("junk")), 0.0);
    assert_eq!(quantity(&Value::Null), 0.0);
}

#[test]
fn events_expire_after_an_hour() {
    each_store(|client| {
        let pod = client
            .create(PODS, "d", &json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
            .unwrap();
        crate::events::record(&client, &pod, "Normal", "Test", "first", "test");
        let now = jiff::Timestamp::now();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(
            crate::events::expire(&client, now, hour).unwrap(),
            0,
            "fresh events stay"
        );
        let later = now + jiff::SignedDuration::from_secs(3601);
        assert_eq!(crate::events::expire(&client, later, hour).unwrap(), 1);
        assert!(client.list(crate::client::EVENTS, "d").unwrap().is_empty());
    });
}

#[test]
fn services_get_the_addresses_of_the_pods_they_select() {
    use crate::endpoints::{Endpoints, ENDPOINTS, ENDPOINT_SLICES, SERVICES};
    each_store(|client| {
        let svc = json!({"metadata": {"name": "web", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "metrics", "port": 9090, "targetPort": 9090}]}});
        client.create(SERVICES, "d", &svc).unwrap();
        for (name, ip, ready, port) in [
            ("a", "10.42.0.5", true, 8080),
            ("b", "10.42.0.6", false, 8080),
            ("c", "10.42.0.7", true, 3000),
        ] {
            let pod = json!({"metadata": {"name": name, "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                    "ports": [{"name": "http", "containerPort": port}]}]}});
            let mut pod = client.create(PODS, "d", &pod).unwrap();
            pod["status"] = json!({"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]});
            client.update_status(PODS, "d", &pod).unwrap();
        }
        // Not selected, and selected without an IP yet: neither is an endpoint.
        client
            .create(
                PODS,
                "d",
                &json!({"metadata": {"name": "other", "labels": {"app": "db"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}),
            )
            .unwrap();
        client
            .create(
                PODS,
                "d",
                &json!({"metadata": {"name": "new", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}),
            )
            .unwrap();

        Endpoints.reconcile(&client, &Key::new("d", "web")).unwrap();
        let ep = client.get(ENDPOINTS, "d", "web").unwrap().unwrap();
        assert_eq!(ep["metadata"]["labels"]["tier"], "front");
        let subsets = ep["subsets"].as_array().unwrap();
        assert_eq!(
            subsets.len(),
            2,
            "pods resolve the named port differently: {ep}"
        );
        let by_port = |port: i64| {
            subsets
                .iter()
                .find(|s| {
                    s["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "http" && p["port"] == port)
                })
                .unwrap()
        };
        let s8080 = by_port(8080);
        assert_eq!(s8080["addresses"][0]["ip"], "10.42.0.5");
        assert_eq!(s8080["addresses"][0]["targetRef"]["name"], "a");
        assert_eq!(s8080["notReadyAddresses"][0]["ip"], "10.42.0.6");
        assert_eq!(by_port(3000)["addresses"][0]["ip"], "10.42.0.7");
        assert!(s8080["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics" && p["port"] == 9090));

        let slices = client.list(ENDPOINT_SLICES, "d").unwrap();
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "web"
        );
        assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
        let endpoints = slice["endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 3);
        assert_eq!(endpoints[1]["conditions"]["ready"], false);

        // Unchanged: nothing written.
        let rev = client.api().store.current_revision().unwrap();
        Endpoints.reconcile(&client, &Key::new("d", "*")).unwrap();
        assert_eq!(client.api().store.current_revision().unwrap(), rev);

        // A pod that goes leaves; a deleted service takes its Endpoints and slice along.
        client.delete(PODS, "d", "a", None).unwrap();
        Endpoints.reconcile(&client, &Key::new("d", "*")).unwrap();
        let ep = client.get(ENDPOINTS, "d", "web").unwrap().unwrap();
        assert!(!ep.to_string().contains("10.42.0.5"));
        client.delete(SERVICES, "d", "web", None).unwrap();
        Endpoints.reconcile(&client, &Key::new("d", "web")).unwrap();
        crate::gc::sweep(&client).unwrap();
        assert!(client.get(ENDPOINTS, "d", "web").unwrap().is_none());
        assert!(client.list(ENDPOINT_SLICES, "d").unwrap().is_empty());
    });
}

#[test]
fn manifests_are_applied_reapplied_and_their_removed_objects_deleted() {
    use crate::client::Res;
    use crate::manifests::scan;
    each_store(|client| {
        cairn_apiserver::bootstrap::ensure_system_namespaces(client.api()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        let cms = Res::core("configmaps");
        std::fs::write(
            dir.path().join("app.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: shop\ndata:\n  colour: red\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata: {}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("list.json"),
            r#"{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed"}}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let report = scan(&client, &dirs);
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(report.applied.len(), 2, "{report:?}");
        let settings = client.get(cms, "shop", "settings").unwrap().unwrap();
        assert_eq!(settings["data"]["colour"], "red");
        assert_eq!(
            settings["metadata"]["managedFields"][0]["manager"],
            "cairn-manifests"
        );
        assert!(
            client.get(cms, "default", "extra").unwrap().is_some(),
            "namespace defaults"
        );
        assert!(client.get(cms, "default", "listed").unwrap().is_some());

        // Unchanged files are not applied again.
        assert_eq!(scan(&client, &dirs), Default::default());

        // Edited: the change applies, the object no longer in the file is deleted.
        std::fs::write(
            dir.path().join("app.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: shop\ndata:\n  colour: blue\n",
        )
        .unwrap();
        let report = scan(&client, &dirs);
        assert_eq!(report.deleted.len(), 1, "{report:?}");
        assert_eq!(
            client.get(cms, "shop", "settings").unwrap().unwrap()["data"]["colour"],
            "blue"
        );
        assert!(client.get(cms, "default", "extra").unwrap().is_none());

        // Broken: malformed YAML and unknown kinds change nothing and say why.
        std::fs::write(dir.path().join("app.yaml"), "kind: [unclosed\n").unwrap();
        std::fs::write(
            dir.path().join("odd.yaml"),
            "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n",
        )
        .unwrap();
        let report = scan(&client, &dirs);
        assert_eq!(report.failed.len(), 2, "{report:?}");
        assert!(report
            .failed
            .iter()
            .any(|f| f.contains("app.yaml") && f.contains("document 1")));
        assert!(report
            .failed
            .iter()
            .any(|f| f.contains("Gadget g: no such kind")));
        assert!(
            client.get(cms, "shop", "settings").unwrap().is_some(),
            "kept while broken"
        );

        // Skipped files are left alone; removed files take their objects along.
        std::fs::remove_file(dir.path().join("odd.yaml")).unwrap();
        std::fs::write(dir.path().join("app.yaml.skip"), "").unwrap();
        std::fs::remove_file(dir.path().join("list.json")).unwrap();
        let report = scan(&client, &dirs);
        assert!(report.failed.is_empty(), "{report:?}");
        assert!(client.get(cms, "default", "listed").unwrap().is_none());
        assert!(
            client.get(cms, "shop", "settings").unwrap().is_some(),
            "skipped, not removed"
        );
        std::fs::remove_file(dir.path().join("app.yaml.skip")).unwrap();
        std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
        scan(&client, &dirs);
        assert!(client.get(cms, "shop", "settings").unwrap().is_none());
    });
}

#[test]
fn a_cycle_of_owners_ends_when_one_of_them_goes() {
    use crate::client::Res;
    let cms = Res::core("configmaps");
    each_store(|client| {
        let a = client
            .create(cms, "d", &json!({"metadata": {"name": "a"}}))
            .unwrap();
        let mut b = client
            .create(cms, "d", &json!({"metadata": {"name": "b"}}))
            .unwrap();
        client
            .create(cms, "d", &json!({"metadata": {"name": "bystander"}}))
            .unwrap();
        let owner = |o: &Value| json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]}]);
        b["metadata"]["ownerReferences"] = owner(&a);
        let b = client.update(cms, "d", &b).unwrap();
        let mut a = client.get(cms, "d", "a").unwrap().unwrap();
        a["metadata"]["ownerReferences"] = owner(&b);
        client.update(cms, "d", &a).unwrap();
        // Both have a live owner: nothing happens.
        crate::gc::sweep(&client).unwrap();
        assert!(client.get(cms, "d", "a").unwrap().is_some());
        assert!(client.get(cms, "d", "b").unwrap().is_some());
        // One goes: the other follows, once, and nothing else is touched.
        client.delete(cms, "d", "a", None).unwrap();
        let deleted = client.get(cms, "d", "a").unwrap();
        crate::gc::collect(&client, &a).unwrap();
        assert!(deleted.is_none());
        assert!(client.get(cms, "d", "b").unwrap().is_none());
        crate::gc::sweep(&client).unwrap();
        assert!(client.get(cms, "d", "bystander").unwrap().is_some());
    });
}

/// Ends every running pod of a Job in `phase`, as a kubelet would when its container exits.
fn finish_job_pods(client: &Client, phase: &str) -> usize {
    let mut n = 0;
    for mut pod in client.list(PODS, "d").unwrap() {
        let of_job = crate::runtime::controller_of(&pod).is_some_and(|o| o["kind"] == "Job");
        if !of_job || !crate::pods::is_active(&pod) {
            continue;
        }
        pod["status"] = json!({"phase": phase});
        client.update_status(PODS, "d", &pod).unwrap();
        n += 1;
    }
    n
}

fn job_status(client: &Client) -> Value {
    client.get(crate::job::JOBS, "d", "batch").unwrap().unwrap()["status"].clone()
}

fn run_job(client: &Client) {
    crate::job::Jobs
        .reconcile(client, &Key::new("d", "batch"))
        .unwrap();
}

#[test]
fn jobs_run_to_completion_or_give_up() {
    each_store(|client| {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "batch"},
            "spec": {"completions": 3, "parallelism": 2, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
        let created = client.create(crate::job::JOBS, "d", &job).unwrap();
        let uid = created["metadata"]["uid"].as_str().unwrap();
        assert_eq!(
            created["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            uid
        );
        assert_eq!(
            created["spec"]["template"]["metadata"]["labels"]["job-name"],
            "batch"
        );
        assert_eq!(created["spec"]["backoffLimit"], 6);

        run_job(&client);
        assert_eq!(job_status(&client)["active"], 2, "two at a time");
        assert!(job_status(&client)["startTime"].is_string());
        assert_eq!(finish_job_pods(&client, "Succeeded"), 2);
        run_job(&client);
        assert_eq!(job_status(&client)["active"], 1, "only one more is needed");
        assert_eq!(finish_job_pods(&client, "Succeeded"), 1);
        run_job(&client);
        let status = job_status(&client);
        assert_eq!(status["succeeded"], 3);
        assert_eq!(status["conditions"][0]["type"], "Complete");
        assert!(status["completionTime"].is_string());
        // Done is done.
        let rev = client.api().store.current_revision().unwrap();
        run_job(&client);
        assert_eq!(client.api().store.current_revision().unwrap(), rev);
        assert_eq!(
            client.list(PODS, "d").unwrap().len(),
            3,
            "finished pods stay"
        );

        // A job whose pods keep failing stops after backoffLimit + 1 failures.
        client
            .delete(
                crate::job::JOBS,
                "d",
                "batch",
                Some(&json!({"propagationPolicy": "Background"})),
            )
            .unwrap();
        crate::gc::sweep(&client).unwrap();
        let mut failing = job.clone();
        failing["spec"] = json!({"backoffLimit": 1, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}});
        client.create(crate::job::JOBS, "d", &failing).unwrap();
        for _ in 0..2 {
            run_job(&client);
            assert_eq!(finish_job_pods(&client, "Failed"), 1);
        }
        run_job(&client);
        let status = job_status(&client);
        assert_eq!(status["failed"], 2);
        assert_eq!(status["conditions"][0]["type"], "Failed");
        assert_eq!(status["conditions"][0]["reason"], "BackoffLimitExceeded");
        assert_eq!(status["active"], 0);
    });
}

fn cron_job(client: &Client) -> Value {
    client
        .get(crate::cronjob::CRON_JOBS, "d", "tick")
        .unwrap()
        .unwrap()
}

fn run_cron(client: &Client) -> crate::runtime::Outcome {
    crate::cronjob::CronJobs
        .reconcile(client, &Key::new("d", "tick"))
        .unwrap()
}

/// Pretends the CronJob last ran `minutes` ago.
fn last_ran(client: &Client, minutes: i64) {
    let mut cj = cron_job(client);
    let then = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(minutes);
    cj["status"]["lastScheduleTime"] = json!(then.to_string());
    client
        .update_status(crate::cronjob::CRON_JOBS, "d", &cj)
        .unwrap();
}

fn cron_jobs_of(client: &Client) -> Vec<Value> {
    let cj = cron_job(client);
    client
        .list(crate::job::JOBS, "d")
        .unwrap()
        .into_iter()
        .filter(|j| crate::runtime::is_controlled_by(j, &cj))
        .collect()
}

/// Marks every Job of the CronJob finished (`Complete` or `Failed`).
fn finish_jobs(client: &Client, outcome: &str) {
    for mut job in cron_jobs_of(client) {
        if job["status"]["conditions"].is_array() {
            continue;
        }
        job["status"] = json!({"conditions": [{"type": outcome, "status": "True"}],
                               "completionTime": jiff::Timestamp::now().to_string()});
        client.update_status(crate::job::JOBS, "d", &job).unwrap();
    }
}

#[test]
fn cron_jobs_start_jobs_on_schedule_with_their_policies() {
    each_store(|client| {
        let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
            "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid",
                     "successfulJobsHistoryLimit": 2,
                     "jobTemplate": {"metadata": {"labels": {"app": "tick"}}, "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}}});
        let created = client.create(crate::cronjob::CRON_JOBS, "d", &cj).unwrap();
        assert_eq!(created["spec"]["failedJobsHistoryLimit"], 1, "defaulted");

        // Nothing is due right after creation; the controller asks to look again within a minute.
        match run_cron(&client) {
            crate::runtime::Outcome::After(d) => assert!(d <= std::time::Duration::from_secs(61)),
            other => panic!("{other:?}"),
        }
        assert!(cron_jobs_of(&client).is_empty());

        // Three minutes missed: one Job, for the newest of them.
        last_ran(&client, 3);
        run_cron(&client);
        let jobs = cron_jobs_of(&client);
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!(job["metadata"]["labels"]["app"], "tick");
        let at: jiff::Timestamp = job["metadata"]["annotations"][crate::cronjob::SCHEDULED_AT]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let age = jiff::Timestamp::now().as_second() - at.as_second();
        assert!((0..60).contains(&age), "the newest missed time: {age}s ago");
        assert_eq!(
            job["metadata"]["name"],
            format!("tick-{}", at.as_second() / 60)
        );
        let status = cron_job(&client)["status"].clone();
        assert_eq!(status["active"][0]["name"], job["metadata"]["name"]);
        assert_eq!(status["lastScheduleTime"], at.to_string());

        // Re-entrant: the same pass again makes nothing new.
        run_cron(&client);
        assert_eq!(cron_jobs_of(&client).len(), 1);

        // Forbid: while that Job runs, a due time waits.
        last_ran(&client, 2);
        run_cron(&client);
        assert_eq!(cron_jobs_of(&client).len(), 1, "Forbid waits");
        // Once it ends, the waiting time runs (same scheduled minute: the same name).
        finish_jobs(&client, "Complete");
        run_cron(&client);
        let status = cron_job(&client)["status"].clone();
        assert!(status["lastSuccessfulTime"].is_string());

        // Replace: the running Job goes, a new one comes.
        for job in cron_jobs_of(&client) {
            let name = job["metadata"]["name"].as_str().unwrap();
            client
                .delete(
                    crate::job::JOBS,
                    "d",
                    name,
                    Some(&json!({"propagationPolicy": "Background"})),
                )
                .unwrap();
        }
        crate::gc::sweep(&client).unwrap();
        let mut cj = cron_job(&client);
        cj["spec"]["concurrencyPolicy"] = json!("Replace");
        client.update(crate::cronjob::CRON_JOBS, "d", &cj).unwrap();
        let owned = |name: &str, done_at: Option<&str>| {
            let mut job = json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "ownerReferences": [crate::runtime::controller_ref(&cj)]},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "i"}]}}}});
            job = client.create(crate::job::JOBS, "d", &job).unwrap();
            if let Some(at) = done_at {
                job["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}],
                                       "completionTime": at});
                client.update_status(crate::job::JOBS, "d", &job).unwrap();
            }
        };
        owned("tick-running", None);
        last_ran(&client, 3);
        run_cron(&client);
        let names: Vec<String> = cron_jobs_of(&client)
            .iter()
            .filter(|j| j["metadata"].get("deletionTimestamp").is_none())
            .map(|j| j["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_ne!(names[0], "tick-running", "replaced");

        // History: the two newest successful Jobs stay, older ones go.
        for (name, at) in [
            ("tick-old-1", "2026-01-01T00:01:00Z"),
            ("tick-old-2", "2026-01-01T00:02:00Z"),
            ("tick-old-3", "2026-01-01T00:03:00Z"),
        ] {
            owned(name, Some(at));
        }
        finish_jobs(&client, "Complete"); // the one started above, newest of all
        run_cron(&client);
        crate::gc::sweep(&client).unwrap();
        let mut kept: Vec<String> = cron_jobs_of(&client)
            .iter()
            .filter(|j| j["metadata"].get("deletionTimestamp").is_none())
            .filter(|j| j["status"]["conditions"][0]["type"] == "Complete")
            .map(|j| j["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        kept.sort();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.contains(&"tick-old-3".to_owned()), "{kept:?}");
        assert!(!kept.contains(&"tick-old-1".to_owned()), "{kept:?}");

        // Suspended: nothing starts.
        let mut cj = cron_job(&client);
        cj["spec"]["suspend"] = json!(true);
        client.update(crate::cronjob::CRON_JOBS, "d", &cj).unwrap();
        finish_jobs(&client, "Complete");
        let count = cron_jobs_of(&client).len();
        last_ran(&client, 3);
        run_cron(&client);
        assert_eq!(cron_jobs_of(&client).len(), count);

        // A bad schedule never gets in.
        let mut bad = cj.clone();
        bad["metadata"] = json!({"name": "bad"});
        bad["spec"]["schedule"] = json!("every minute");
        let e = client
            .create(crate::cronjob::CRON_JOBS, "d", &bad)
            .unwrap_err();
        assert!(
            e.to_string().contains("spec.schedule: Invalid value"),
            "{e}"
        );
    });
}

fn run_daemons(client: &Client) {
    crate::daemonset::DaemonSets
        .reconcile(client, &Key::new("", "*"))
        .unwrap();
}

/// The nodes the DaemonSet's live pods are bound to, sorted, and their template hashes.
fn daemon_pods(client: &Client) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = active_pods(client)
        .iter()
        .filter(|p| crate::runtime::controller_of(p).is_some_and(|o| o["kind"] == "DaemonSet"))
        .map(|p| {
            (
                p["spec"]["nodeName"].as_str().unwrap_or("").to_owned(),
                p["metadata"]["labels"][crate::daemonset::REVISION_HASH]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn daemon_sets_put_one_pod_on_each_fitting_node_and_roll_updates() {
    each_store(|client| {
        node(&client, "a", "2", "2Gi", json!({}));
        node(&client, "b", "2", "2Gi", json!({"unschedulable": true}));
        node(
            &client,
            "c",
            "2",
            "2Gi",
            json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}),
        );
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"containers": [{"name": "c", "image": "agent:1"}]}}}});
        client
            .create(crate::daemonset::DAEMON_SETS, "d", &ds)
            .unwrap();
        run_daemons(&client);
        schedule(&client);
        kubelet(&client);
        let placed = daemon_pods(&client);
        let nodes: Vec<&str> = placed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            nodes,
            ["a", "b"],
            "cordoned b keeps its daemon; tainted c gets none"
        );
        // Re-entrant: nothing more.
        let rev = client.api().store.current_revision().unwrap();
        run_daemons(&client);
        let after = client.api().store.current_revision().unwrap();
        assert!(after - rev <= 1, "at most a status write");
        let status = client
            .get(crate::daemonset::DAEMON_SETS, "d", "agent")
            .unwrap()
            .unwrap()["status"]
            .clone();
        assert_eq!(status["desiredNumberScheduled"], 2);
        assert_eq!(status["numberReady"], 2);

        // Tolerating the taint brings c in; a node that goes takes its pod along.
        let mut ds = client
            .get(crate::daemonset::DAEMON_SETS, "d", "agent")
            .unwrap()
            .unwrap();
        ds["spec"]["template"]["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]);
        client
            .update(crate::daemonset::DAEMON_SETS, "d", &ds)
            .unwrap();
        client.delete(crate::client::NODES, "", "b", None).unwrap();
        // Rolling update, one node at a time (maxUnavailable 1).
        let mut rounds = 0;
        loop {
            run_daemons(&client);
            schedule(&client);
            let pods = daemon_pods(&client);
            let missing = 2 - pods.iter().filter(|(n, _)| n == "a" || n == "c").count() as i64;
            assert!(
                missing <= 1,
                "never more than one node without its daemon: {pods:?}"
            );
            kubelet(&client);
            let hashes: std::collections::BTreeSet<&str> =
                pods.iter().map(|(_, h)| h.as_str()).collect();
            let nodes: Vec<&str> = pods.iter().map(|(n, _)| n.as_str()).collect();
            if nodes == ["a", "c"] && hashes.len() == 1 {
                break;
            }
            rounds += 1;
            assert!(rounds < 10, "the update did not finish: {pods:?}");
        }
        assert!(rounds >= 1);
        let pods = daemon_pods(&client);
        assert!(!pods.iter().any(|(n, _)| n == "b"), "{pods:?}");
        // A daemon pod being deleted is replaced only once it is gone.
        let on_c = active_pods(&client)
            .into_iter()
            .find(|p| p["spec"]["nodeName"] == "c")
            .unwrap();
        client.delete_object(PODS, &on_c, None).unwrap();
        run_daemons(&client);
        let terminating = client
            .get(PODS, "d", on_c["metadata"]["name"].as_str().unwrap())
            .unwrap()
            .unwrap();
        assert!(terminating["metadata"]["deletionTimestamp"].is_string());
        assert!(
            !daemon_pods(&client).iter().any(|(n, _)| n == "c"),
            "no second pod on c while the first stops: {:?}",
            daemon_pods(&client)
        );
        stop(&client, &terminating);
        run_daemons(&client);
        schedule(&client);
        let nodes: Vec<String> = daemon_pods(&client).into_iter().map(|(n, _)| n).collect();
        assert_eq!(nodes, ["a", "c"], "replaced once gone");
    });
}

fn run_sets(client: &Client) {
    crate::statefulset::StatefulSets
        .reconcile(client, &Key::new("d", "db"))
        .unwrap();
}

/// The set's live pods: (name, template hash).
fn set_pods(client: &Client) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = client
        .list(PODS, "d")
        .unwrap()
        .iter()
        .filter(|p| crate::runtime::controller_of(p).is_some_and(|o| o["kind"] == "StatefulSet"))
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                p["metadata"]["labels"][crate::daemonset::REVISION_HASH]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn stateful_sets_make_ordered_pods_with_their_own_claims() {
    each_store(|client| {
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
            "spec": {"replicas": 3, "serviceName": "db",
                     "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}},
                                  "spec": {"containers": [{"name": "c", "image": "db:1"}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"],
                                 "resources": {"requests": {"storage": "1Gi"}}}}]}});
        client
            .create(crate::statefulset::STATEFUL_SETS, "d", &sts)
            .unwrap();
        // One at a time: db-1 only once db-0 runs and is ready.
        run_sets(&client);
        run_sets(&client);
        let names: Vec<String> = set_pods(&client).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["db-0"]);
        let pod = client.get(PODS, "d", "db-0").unwrap().unwrap();
        assert_eq!(pod["spec"]["hostname"], "db-0");
        assert_eq!(pod["spec"]["subdomain"], "db");
        assert_eq!(
            pod["metadata"]["labels"][crate::statefulset::POD_INDEX_LABEL],
            "0"
        );
        assert_eq!(
            pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "data-db-0"
        );
        assert!(client
            .get(crate::statefulset::CLAIMS, "d", "data-db-0")
            .unwrap()
            .is_some());
        for _ in 0..5 {
            kubelet(&client);
            run_sets(&client);
        }
        let names: Vec<String> = set_pods(&client).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["db-0", "db-1", "db-2"]);
        let status = client
            .get(crate::statefulset::STATEFUL_SETS, "d", "db")
            .unwrap()
            .unwrap()["status"]
            .clone();
        assert_eq!(status["readyReplicas"], 3);

        // A lost pod comes back under its name, with its claim.
        client.delete(PODS, "d", "db-1", None).unwrap();
        run_sets(&client);
        let pod = client.get(PODS, "d", "db-1").unwrap().unwrap();
        assert_eq!(
            pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "data-db-1"
        );
        kubelet(&client);

        // A new template rolls from the highest ordinal down, one pod at a time.
        let mut sts = client
            .get(crate::statefulset::STATEFUL_SETS, "d", "db")
            .unwrap()
            .unwrap();
        sts["spec"]["template"]["spec"]["containers"][0]["image"] = json!("db:2");
        client
            .update(crate::statefulset::STATEFUL_SETS, "d", &sts)
            .unwrap();
        let old_hash = set_pods(&client)[0].1.clone();
        let mut order = Vec::new();
        for _ in 0..12 {
            run_sets(&client);
            let pods = set_pods(&client);
            assert!(pods.len() >= 2, "one pod down at a time: {pods:?}");
            for (name, hash) in &pods {
                if *hash != old_hash && !order.contains(name) {
                    order.push(name.clone());
                }
            }
            kubelet(&client);
        }
        assert_eq!(order, ["db-2", "db-1", "db-0"]);
        let status = client
            .get(crate::statefulset::STATEFUL_SETS, "d", "db")
            .unwrap()
            .unwrap()["status"]
            .clone();
        assert_eq!(status["currentRevision"], status["updateRevision"]);
        assert_eq!(status["updatedReplicas"], 3);

        // Scaling down removes the highest first; the claims stay.
        let mut sts = client
            .get(crate::statefulset::STATEFUL_SETS, "d", "db")
            .unwrap()
            .unwrap();
        sts["spec"]["replicas"] = json!(1);
        client
            .update(crate::statefulset::STATEFUL_SETS, "d", &sts)
            .unwrap();
        run_sets(&client);
        let names: Vec<String> = set_pods(&client).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["db-0", "db-1"], "db-2 first");
        run_sets(&client);
        let names: Vec<String> = set_pods(&client).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["db-0"]);
        assert!(client
            .get(crate::statefulset::CLAIMS, "d", "data-db-2")
            .unwrap()
            .is_some());
    });
}

#[test]
fn silent_nodes_turn_unknown_get_tainted_and_lose_their_pods() {
    each_store(|client| {
        node(&client, "a", "2", "2Gi", json!({}));
        let bound = |name: &str, tolerations: Value| {
            let mut pod = json!({"metadata": {"name": name},
                "spec": {"nodeName": "a", "containers": [{"name": "c", "image": "i"}]}});
            if !tolerations.is_null() {
                pod["spec"]["tolerations"] = tolerations;
            }
            client.create(PODS, "d", &pod).unwrap();
        };
        bound("patient", Value::Null);
        bound(
            "hasty",
            json!([{"key": crate::nodelifecycle::UNREACHABLE, "operator": "Exists",
                                "effect": "NoExecute", "tolerationSeconds": 0}]),
        );
        bound(
            "stubborn",
            json!([{"key": crate::nodelifecycle::UNREACHABLE, "operator": "Exists",
                                   "effect": "NoExecute"}]),
        );
        let patient = client.get(PODS, "d", "patient").unwrap().unwrap();
        assert_eq!(
            patient["spec"]["tolerations"][1]["tolerationSeconds"], 300,
            "DefaultTolerationSeconds: {}",
            patient["spec"]["tolerations"]
        );

        // Within the grace period nothing happens; the controller looks again when it ends.
        let lenient = crate::nodelifecycle::NodeLifecycle {
            grace: std::time::Duration::from_secs(60),
        };
        let rev = client.api().store.current_revision().unwrap();
        match lenient.reconcile(&client, &Key::new("", "a")).unwrap() {
            crate::runtime::Outcome::After(d) => assert!(d <= std::time::Duration::from_secs(61)),
            other => panic!("{other:?}"),
        }
        assert_eq!(client.api().store.current_revision().unwrap(), rev);

        // Past it: Unknown, unreachable taints, the intolerant pod evicted.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let strict = crate::nodelifecycle::NodeLifecycle {
            grace: std::time::Duration::ZERO,
        };
        let outcome = strict.reconcile(&client, &Key::new("", "a")).unwrap();
        let node = client.get(crate::client::NODES, "", "a").unwrap().unwrap();
        let ready = node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["status"], "Unknown");
        assert_eq!(ready["reason"], "NodeStatusUnknown");
        let taints: Vec<String> = node["spec"]["taints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                format!(
                    "{}:{}",
                    t["key"].as_str().unwrap(),
                    t["effect"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            taints,
            [
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        // Evicted gracefully: Terminating, for a kubelet that is not there to finish it.
        let states = |client: &Client| -> Vec<String> {
            client
                .list(PODS, "d")
                .unwrap()
                .iter()
                .map(|p| {
                    let name = p["metadata"]["name"].as_str().unwrap();
                    match p["metadata"]["deletionGracePeriodSeconds"].as_i64() {
                        Some(g) => format!("{name} terminating {g}s"),
                        None => name.to_owned(),
                    }
                })
                .collect()
        };
        assert_eq!(
            states(&client),
            ["hasty terminating 30s", "patient", "stubborn"]
        );
        match outcome {
            crate::runtime::Outcome::After(d) => {
                assert!(
                    d > std::time::Duration::from_secs(290),
                    "patient goes after 300 s: {d:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Re-entrant.
        let rev = client.api().store.current_revision().unwrap();
        strict.reconcile(&client, &Key::new("", "a")).unwrap();
        assert_eq!(client.api().store.current_revision().unwrap(), rev);

        // The kubelet reports again: the taints go.
        let mut node = node;
        node["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
            "lastHeartbeatTime": cairn_apiserver::meta::now()}]);
        client
            .update_status(crate::client::NODES, "", &node)
            .unwrap();
        lenient.reconcile(&client, &Key::new("", "a")).unwrap();
        let healthy = client.get(crate::client::NODES, "", "a").unwrap().unwrap();
        assert!(
            healthy["spec"].get("taints").is_none(),
            "{}",
            healthy["spec"]
        );

        // The Node deleted: its pods go at once, terminating or not (pod GC). Pods elsewhere stay.
        self::node(&client, "b", "2", "2Gi", json!({}));
        client
            .create(
                PODS,
                "d",
                &json!({"metadata": {"name": "elsewhere"},
                "spec": {"nodeName": "b", "containers": [{"name": "c", "image": "i"}]}}),
            )
            .unwrap();
        client.delete(crate::client::NODES, "", "a", None).unwrap();
        lenient.reconcile(&client, &Key::new("", "a")).unwrap();
        assert_eq!(states(&client), ["elsewhere"]);
    });
}

#[test]
fn indexed_jobs_run_each_index_once_and_finished_jobs_expire() {
    each_store(|client| {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "batch"},
            "spec": {"completions": 3, "parallelism": 2, "completionMode": "Indexed",
                     "template": {"spec": {"restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "i"}]}}}});
        client.create(crate::job::JOBS, "d", &job).unwrap();
        let indexes = |client: &Client| -> Vec<String> {
            let mut out: Vec<String> = active_pods(client)
                .iter()
                .map(|p| {
                    p["metadata"]["annotations"][crate::job::INDEX]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            out.sort();
            out
        };
        run_job(&client);
        assert_eq!(indexes(&client), ["0", "1"]);
        let pod = &active_pods(&client)[0];
        let index = pod["metadata"]["annotations"][crate::job::INDEX]
            .as_str()
            .unwrap();
        assert_eq!(pod["spec"]["hostname"], format!("batch-{index}"));
        assert!(pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "JOB_COMPLETION_INDEX" && e["value"] == index));
        finish_job_pods(&client, "Succeeded");
        run_job(&client);
        assert_eq!(indexes(&client), ["2"], "only the index still to do");
        assert_eq!(job_status(&client)["completedIndexes"], "0-1");
        finish_job_pods(&client, "Succeeded");
        run_job(&client);
        let status = job_status(&client);
        assert_eq!(status["completedIndexes"], "0-2");
        assert_eq!(status["conditions"][0]["type"], "Complete");
        // A finished Job stays until it has a TTL; with a zero TTL it goes on the next pass.
        run_job(&client);
        let mut done = client.get(crate::job::JOBS, "d", "batch").unwrap().unwrap();
        done["spec"]["ttlSecondsAfterFinished"] = json!(0);
        client.update(crate::job::JOBS, "d", &done).unwrap();
        run_job(&client);
        assert!(client
            .get(crate::job::JOBS, "d", "batch")
            .unwrap()
            .is_none());
        crate::gc::sweep(&client).unwrap();
        assert!(
            client.list(PODS, "d").unwrap().is_empty(),
            "its pods went with it"
        );

        // Indexed needs completions.
        let mut bad = job.clone();
        bad["spec"]["completions"] = Value::Null;
        let e = client.create(crate::job::JOBS, "d", &bad).unwrap_err();
        assert!(
            e.to_string().contains("spec.completions: Required value"),
            "{e}"
        );
    });
}

#[test]
fn aggregated_cluster_roles_show_the_rules_they_collect() {
    each_store(|client| {
        cairn_apiserver::authz::defaults::ensure(client.api()).unwrap();
        let role = |name: &str| {
            client
                .get(crate::aggregation::CLUSTER_ROLES, "", name)
                .unwrap()
                .unwrap()
        };
        let run = || {
            crate::aggregation::ClusterRoleAggregation
                .reconcile(&client, &Key::new("", "*"))
                .unwrap()
        };
        run();
        let view = role("view")["rules"].to_string();
        assert!(
            view.contains("\"pods\"") && !view.contains("\"secrets\""),
            "{view}"
        );
        let admin = role("admin")["rules"].to_string();
        assert!(
            admin.contains("rolebindings") && admin.contains("secrets"),
            "{admin}"
        );
        // A chart's role labelled aggregate-to-edit extends edit (and only edit).
        client
            .create(
                crate::aggregation::CLUSTER_ROLES,
                "",
                &json!({"metadata": {"name": "widgets-edit",
                    "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
                    "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["*"]}]}),
            )
            .unwrap();
        run();
        assert!(role("edit")["rules"].to_string().contains("widgets"));
        assert!(!role("view")["rules"].to_string().contains("widgets"));
        // Settled: nothing more to write; a restart's defaults keep the collected rules.
        let rev = client.api().store.current_revision().unwrap();
        run();
        assert!(cairn_apiserver::authz::defaults::ensure(client.api())
            .unwrap()
            .is_empty());
        assert_eq!(client.api().store.current_revision().unwrap(), rev);
    });
}

/// A signer standing in for the cluster CA (the real one is `cairn`'s, tested end to end by
/// its join test): the "certificate" names the subject and the lifetime.
struct NamingSigner;

impl crate::csr::Signer for NamingSigner {
    fn sign_client(
        &self,
        request: &cairn_apiserver::csr::Request,
        lifetime: std::time::Duration,
    ) -> Result<String, String> {
        Ok(format!(
            "{} for {}s",
            request.common_name.clone().unwrap_or_default(),
            lifetime.as_secs()
        ))
    }
}

fn csr(name: &str, cn: &str, user: &str, groups: &[&str]) -> Value {
    use base64::Engine as _;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": crate::csr::KUBELET_CLIENT,
            "usages": ["digital signature", "client auth"],
            "expirationSeconds": 3600,
            "username": user,
            "groups": groups,
        },
    })
}

fn csr_state(client: &Client, name: &str) -> (Vec<String>, String) {
    let obj = client.get(crate::csr::CSRS, "", name).unwrap().unwrap();
    let types = obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["type"].as_str().unwrap().to_owned())
        .collect();
    let cert = obj["status"]["certificate"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    (types, cert)
}

#[test]
fn node_certificates_are_approved_signed_or_held_for_a_taken_name() {
    use crate::csr::{Approver, Signing, CSRS};
    use base64::Engine as _;
    each_store(|client| {
        cairn_apiserver::authz::defaults::ensure(client.api()).unwrap();
        let signing = Signing(Arc::new(NamingSigner));
        let run = |name: &str| {
            Approver.reconcile(&client, &Key::new("", name)).unwrap();
            signing.reconcile(&client, &Key::new("", name)).unwrap();
        };
        let bootstrapper = ["system:bootstrappers", "system:authenticated"];
        // A join token's request: approved and signed, for the requested hour.
        client
            .create(
                CSRS,
                "",
                &csr(
                    "a",
                    "system:node:n1",
                    "system:bootstrap:abcdef",
                    &bootstrapper,
                ),
            )
            .unwrap();
        run("a");
        let (types, cert) = csr_state(&client, "a");
        assert_eq!(types, ["Approved"]);
        let cert = base64::engine::general_purpose::STANDARD
            .decode(cert)
            .unwrap();
        assert_eq!(String::from_utf8(cert).unwrap(), "system:node:n1 for 3600s");

        // Someone the RBAC rules do not allow to ask: left for an administrator.
        client
            .create(
                CSRS,
                "",
                &csr("b", "system:node:n1", "alice", &["system:authenticated"]),
            )
            .unwrap();
        run("b");
        assert_eq!(csr_state(&client, "b"), (vec![], String::new()));

        // A name another machine holds: held with the reason until the Node goes.
        node(
            &client,
            "n2",
            "1",
            "1Gi",
            json!({"annotations": {crate::csr::NODE_KEY_ANNOTATION: "f".repeat(64)}}),
        );
        client
            .create(
                CSRS,
                "",
                &csr(
                    "c",
                    "system:node:n2",
                    "system:bootstrap:abcdef",
                    &bootstrapper,
                ),
            )
            .unwrap();
        run("c");
        let held = client.get(CSRS, "", "c").unwrap().unwrap();
        assert_eq!(held["status"]["conditions"][0]["type"], "NameInUse");
        let message = held["status"]["conditions"][0]["message"].as_str().unwrap();
        assert!(message.contains("kubectl delete node n2"), "{message}");
        assert!(
            message.contains("kubectl certificate approve c"),
            "{message}"
        );
        client.delete(crate::client::NODES, "", "n2", None).unwrap();
        Approver.reconcile(&client, &Key::new("", "*")).unwrap();
        signing.reconcile(&client, &Key::new("", "c")).unwrap();
        let (mut types, cert) = csr_state(&client, "c");
        types.sort();
        assert_eq!(types, ["Approved", "NameInUse"]);
        assert!(!cert.is_empty());

        // Approved by hand but not a node's subject: the kubelet signer fails it.
        client
            .create(
                CSRS,
                "",
                &csr("d", "bob", "system:bootstrap:abcdef", &bootstrapper),
            )
            .unwrap();
        run("d");
        assert_eq!(csr_state(&client, "d").0, Vec::<String>::new());
        let mut approved = client.get(CSRS, "", "d").unwrap().unwrap();
        approved["status"]["conditions"] = json!([{"type": "Approved", "status": "True"}]);
        client
            .update_subresource(
                CSRS,
                "",
                &approved,
                cairn_apiserver::request::Subresource::Approval,
            )
            .unwrap();
        run("d");
        let failed = client.get(CSRS, "", "d").unwrap().unwrap();
        let conditions = failed["status"]["conditions"].as_array().unwrap();
        let failure = conditions.iter().find(|c| c["type"] == "Failed").unwrap();
        assert!(failure["message"]
            .as_str()
            .unwrap()
            .contains("system:node:<name>"));
        assert!(conditions.iter().any(|c| c["type"] == "Approved"));
        assert!(failed["status"].get("certificate").is_none());
    });
}

#[test]
fn every_node_gets_a_pod_range_of_its_own() {
    use crate::client::{EVENTS, NODES};
    use crate::nodeipam::{NodeIpam, CLUSTER_CIDR_ANNOTATION};
    use crate::runtime::Outcome;
    each_store(|client| {
        // Four /24s: one already held by a node from before a restart, three to give out.
        let ipam = NodeIpam::new("10.42.0.0/22".parse().unwrap()).unwrap();
        client
            .create(NAMESPACES, "", &json!({"metadata": {"name": "default"}}))
            .unwrap();
        node(
            &client,
            "old",
            "2",
            "2Gi",
            json!({"podCIDR": "10.42.1.0/24"}),
        );
        for name in ["a", "b", "c", "d"] {
            node(&client, name, "2", "2Gi", json!({}));
        }
        let range = |name: &str| {
            let n = client.get(NODES, "", name).unwrap().unwrap();
            (
                n["spec"]["podCIDR"].as_str().unwrap_or("").to_owned(),
                n["spec"]["podCIDRs"].clone(),
            )
        };
        for name in ["a", "b", "c"] {
            assert_eq!(
                ipam.reconcile(&client, &Key::new("", name)).unwrap(),
                Outcome::Done
            );
        }
        assert_eq!(range("a"), ("10.42.0.0/24".into(), json!(["10.42.0.0/24"])));
        assert_eq!(
            range("b").0,
            "10.42.2.0/24",
            "the old node's range is skipped"
        );
        assert_eq!(range("c").0, "10.42.3.0/24");
        let a = client.get(NODES, "", "a").unwrap().unwrap();
        assert_eq!(
            a["metadata"]["annotations"][CLUSTER_CIDR_ANNOTATION],
            "10.42.0.0/22"
        );
        assert_eq!(a["status"]["allocatable"]["cpu"], "2", "the status is kept");

        // The range is full: no range, an Event, a look again later.
        let outcome = ipam.reconcile(&client, &Key::new("", "d")).unwrap();
        assert!(matches!(outcome, Outcome::After(_)), "{outcome:?}");
        assert_eq!(range("d").0, "");
        let events = client.list(EVENTS, "default").unwrap();
        let full = events
            .iter()
            .find(|e| e["reason"] == "CIDRNotAvailable")
            .expect("a CIDRNotAvailable event");
        assert_eq!(full["involvedObject"]["name"], "d");
        assert!(
            full["message"].as_str().unwrap().contains("10.42.0.0/22"),
            "{full}"
        );

        // A node that had its range keeps it and gets podCIDRs and the annotation; a second
        // pass writes nothing.
        ipam.reconcile(&client, &Key::new("", "old")).unwrap();
        assert_eq!(
            range("old"),
            ("10.42.1.0/24".into(), json!(["10.42.1.0/24"]))
        );
        let rev = client.api().store.current_revision().unwrap();
        for name in ["a", "old"] {
            ipam.reconcile(&client, &Key::new("", name)).unwrap();
        }
        assert_eq!(client.api().store.current_revision().unwrap(), rev);

        // A deleted node's range goes to the next node that needs one.
        client.delete(NODES, "", "b", None).unwrap();
        ipam.reconcile(&client, &Key::new("", "d")).unwrap();
        assert_eq!(range("d").0, "10.42.2.0/24");
        ipam.reconcile(&client, &Key::new("", "gone")).unwrap();

        assert!(NodeIpam::new("10.42.0.0/25".parse().unwrap()).is_err());
    });
}
