"""The Python `kubernetes` client against cairn: create, list (in pages), watch, patch, scale,
delete.

Usage: client.py KUBECONFIG. Prints one JSON object of what it saw; the Rust test
(tests/kubectl.rs, python_client_*) asserts on it.
"""
import json
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()
out = {}


def configmap(name, **data):
    meta = client.V1ObjectMeta(name=name, labels={"app": "py"})
    return client.V1ConfigMap(metadata=meta, data=data or None)


core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))
created = core.create_namespaced_config_map("py", configmap("one", k="v"))
out["uid"] = created.metadata.uid
listed = core.list_namespaced_config_map("py", label_selector="app=py")
out["listed"] = [i.metadata.name for i in listed.items]


def create_later():
    time.sleep(0.5)
    core.create_namespaced_config_map("py", configmap("two"))


threading.Thread(target=create_later).start()
seen = []
w = watch.Watch()
for event in w.stream(
    core.list_namespaced_config_map,
    "py",
    resource_version=listed.metadata.resource_version,
    timeout_seconds=15,
):
    seen.append([event["type"], event["object"].metadata.name])
    if event["object"].metadata.name == "two":
        w.stop()
out["watched"] = seen

page = core.list_namespaced_config_map("py", limit=1)
rest = core.list_namespaced_config_map("py", limit=1, _continue=page.metadata._continue)
out["pages"] = [
    [i.metadata.name for i in page.items],
    page.metadata.remaining_item_count,
    [i.metadata.name for i in rest.items],
    rest.metadata._continue,
]

core.patch_namespaced_config_map("one", "py", {"data": {"k": "w"}})
out["patched"] = core.read_namespaced_config_map("one", "py").data

deployment = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]},
        },
    },
}
apps.create_namespaced_deployment("py", deployment)
apps.patch_namespaced_deployment_scale("web", "py", {"spec": {"replicas": 4}})
out["replicas"] = apps.read_namespaced_deployment("web", "py").spec.replicas

for name, call in [
    ("missing", lambda: core.read_namespaced_config_map("nope", "py")),
    ("duplicate", lambda: core.create_namespaced_config_map("py", configmap("one"))),
]:
    try:
        call()
        out[name] = None
    except ApiException as e:
        out[name] = [e.status, json.loads(e.body)["reason"]]

core.delete_namespaced_config_map("one", "py")
out["after_delete"] = sorted(i.metadata.name for i in core.list_namespaced_config_map("py").items)
print(json.dumps(out))
