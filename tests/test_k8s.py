"""k8s/ checked offline: every overlay rendered once by ``kubectl kustomize`` (missing kubectl fails).

- the objects each overlay must have (one node per organisation, four in all-in-one), in its
  namespace, no Secret; the Deployment runs the right service with the image's probe, uid and
  resources; each PodDisruptionBudget, ServiceMonitor and Service selects its own node only;
- every FEDSUITE_* setting loaded by the service's real config class, files on the right volumes,
  peers' addresses pointing at the Services that exist;
- every rendered pod spec against the Pod Security "restricted" profile (a checker that is shown to
  refuse what the profile refuses);
- NetworkPolicies evaluated: who reaches whose gRPC and metrics port equals the services' own
  authorisation tables (in one namespace by labels, across clusters by the ipBlock placeholders);
- built-in kinds by ``kubernetes-validate --strict``; ServiceMonitor, PrometheusRule and the
  optional cert-manager Certificate by the openAPIV3Schema of their CRDs (tests/data/crds), strict;
- all-in-one run as local processes with its rendered settings and volumes: probes pass, parties
  register, a job succeeds.
What only a cluster can prove is listed in k8s/README.md.
"""

from __future__ import annotations

import ipaddress
import re
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from fedcore.tls import ROLES
from fedsuite.local import free_port
from tests import test_deploy_files as deploy_files
from tests.test_deploy_files import (
    GRPC_PORT,
    METRICS_PORT,
    PROBE_DEADLINE_S,
    ROOT,
    Stage,
    load_node_config,
    parse_fedsuite_args,
    version,
)

# The Dockerfile's fixtures: the probes must run its HEALTHCHECK, the pods its USER.
stages, image_uid, probe_command = deploy_files.stages, deploy_files.image_uid, deploy_files.probe_command
image_files = deploy_files.image_files

K8S = ROOT / "k8s"
CRDS = ROOT / "tests" / "data" / "crds"
KUBECTL_TIMEOUT_S = 30
NODES = {"operator": "coordinator", "neutral": "arbiter", "bank": "party", "telecom": "party"}
"""Organisation -> the service its node runs (k8s/nodes/<org>)."""
NODE_IDS = {"operator": "coordinator", "neutral": "arbiter", "bank": "bank", "telecom": "telecom"}
"""Organisation -> its node id (the certificate's common name); the coordinator and arbiter keep the
ids parties and the coordinator expect by default (coordinator_id, arbiter_id)."""
OVERLAYS = {**{org: [org] for org in NODES}, "all-in-one": list(NODES)}
"""Overlay -> the organisations' nodes it deploys."""
NAMESPACES = {**{org: f"fedsuite-{org}" for org in NODES}, "all-in-one": "fedsuite-demo"}
PLACEHOLDERS = {  # organisation -> (its egress address, its load balancer): k8s/README.md's table
    "operator": ("192.0.2.1/32", "192.0.2.101/32"),
    "neutral": ("203.0.113.1/32", "203.0.113.101/32"),
    "bank": ("198.51.100.1/32", "198.51.100.101/32"),
    "telecom": ("198.51.100.2/32", "198.51.100.102/32"),
}
ADMINS_CIDR = "192.0.2.64/26"
"""The operator's admins' network (placeholder): they call the coordinator."""
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}


def server_policies() -> dict[str, dict[str, frozenset[str]]]:
    """Service -> its method table, as each server.py assembles it (the interceptor enforces these)."""
    from fedsuite.arbiter.servicer import POLICY as ARBITER
    from fedsuite.coordinator.servicer import POLICY as COORDINATOR
    from fedsuite.exchange import POLICY as EXCHANGE
    from fedsuite.party.servicer import POLICY as PARTY

    return {"coordinator": COORDINATOR, "party": {**PARTY, **EXCHANGE}, "arbiter": {**ARBITER, **EXCHANGE}}


def callers(role: str) -> set[str]:
    """Roles the service ``role`` accepts calls from."""
    return set().union(*server_policies()[role].values())


# -- rendering ---------------------------------------------------------------------------------------
def kustomize(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                          timeout=KUBECTL_TIMEOUT_S)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    """Each overlay rendered by ``kubectl kustomize``."""
    return {overlay: kustomize(kubectl, K8S / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def with_cert_manager(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The bank's overlay with the cert-manager component added, as k8s/README.md tells an operator."""
    work = tmp_path_factory.mktemp("cert-manager")
    shutil.copytree(K8S, work / "k8s")
    kustomization = work / "k8s" / "overlays" / "bank" / "kustomization.yaml"
    data = yaml.safe_load(kustomization.read_text())
    data["components"].append("../../components/cert-manager")
    kustomization.write_text(yaml.safe_dump(data))
    return kustomize(kubectl, kustomization.parent)


def kind_of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in kind_of(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def unhashed(name: str) -> str:
    """configMapGenerator appends a content hash (a changed setting rolls the pod)."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def deployment(docs: list[dict[str, Any]], org: str) -> dict[str, Any]:
    return named(docs, "Deployment", f"fedsuite-{org}")


def container(docs: list[dict[str, Any]], org: str) -> dict[str, Any]:
    (main,) = deployment(docs, org)["spec"]["template"]["spec"]["containers"]
    return main


def pod_environment(docs: list[dict[str, Any]], org: str) -> dict[str, str]:
    """The variables the node's container sees: its ConfigMaps (envFrom), then its own env."""
    main = container(docs, org)
    maps = {m["metadata"]["name"]: m for m in kind_of(docs, "ConfigMap")}
    environ: dict[str, str] = {}
    for source in main.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in maps, f"envFrom names ConfigMap {name}, which the overlay does not render"
        environ.update(maps[name]["data"])
    for variable in main.get("env", []):
        environ[variable["name"]] = variable["value"]
    return environ


def node_config(docs: list[dict[str, Any]], overlay: str, org: str) -> Any:
    return load_node_config(NODES[org], pod_environment(docs, org), f"k8s/overlays/{overlay} node {org}")


def service_address(docs: list[dict[str, Any]], org: str) -> str:
    service = named(docs, "Service", f"fedsuite-{org}")
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    return f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{port['port']}"


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        present, inside = key in labels, labels.get(key) in expression.get("values", [])
        if not {"In": inside, "NotIn": not inside, "Exists": present, "DoesNotExist": not present}[operator]:
            return False
    return True


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Deployment name -> its pods' labels."""
    return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in kind_of(docs, "Deployment")}


# -- objects --------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_overlay_objects(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    expected = {("Namespace", NAMESPACES[overlay]), ("NetworkPolicy", "default-deny")}
    for org in OVERLAYS[overlay]:
        for kind in ("ServiceAccount", "Service", "Deployment", "PodDisruptionBudget", "ServiceMonitor"):
            expected.add((kind, f"fedsuite-{org}"))
        expected |= {("ConfigMap", f"fedsuite-config-{org}"), ("PersistentVolumeClaim", f"fedsuite-state-{org}"),
                     ("NetworkPolicy", f"fedsuite-grpc-{org}"), ("NetworkPolicy", f"fedsuite-metrics-and-dns-{org}")}
        if NODES[org] == "coordinator":
            expected.add(("NetworkPolicy", f"fedsuite-admin-{org}"))
        if NODES[org] == "party":
            expected.add(("PersistentVolumeClaim", f"fedsuite-data-{org}"))
    if overlay in NODES:
        expected |= {("Service", "fedsuite-public"), ("NetworkPolicy", "fedsuite-organisations")}
    if overlay == "operator":
        expected |= {("PrometheusRule", "fedsuite-alerts"), ("ConfigMap", "fedsuite-grafana-dashboard")}
    found = {(d["kind"], unhashed(d["metadata"]["name"]) if d["kind"] == "ConfigMap" else d["metadata"]["name"])
             for d in docs}
    assert found == expected
    assert not kind_of(docs, "Secret"), "TLS material is never rendered from the repository"
    (namespace,) = kind_of(docs, "Namespace")
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACES[overlay], f"{doc['kind']} outside the namespace"


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_deployments_run_the_service_as_the_image_expects(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, probe_command: list[str]
) -> None:
    docs = rendered[overlay]
    for org in OVERLAYS[overlay]:
        spec = deployment(docs, org)["spec"]
        pod = spec["template"]["spec"]
        assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", "one node, never two pods at once"
        main = container(docs, org)
        assert main["image"] == f"fedsuite:{version()}"
        args = parse_fedsuite_args(main["args"])
        assert args.command == NODES[org] and not args.insecure, "containers always run with mTLS"
        assert pod["serviceAccountName"] == f"fedsuite-{org}" and pod["automountServiceAccountToken"] is False
        assert 5 <= pod["terminationGracePeriodSeconds"] <= 120, "room for the SIGTERM clean shutdown"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main[probe]["exec"]["command"] == probe_command, f"{org}: {probe} must run the image's probe"
            assert main[probe]["timeoutSeconds"] > PROBE_DEADLINE_S, f"{org}: {probe} timeout below its deadline"
            assert main[probe]["periodSeconds"] >= 1 and main[probe]["failureThreshold"] >= 1
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(main["resources"][kind]), f"resources.{kind} needs cpu and memory"
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_services_budgets_and_monitors_select_their_own_node(rendered: dict[str, list[dict[str, Any]]],
                                                             overlay: str) -> None:
    docs = rendered[overlay]
    pods = pod_labels(docs)
    services = {s["metadata"]["name"]: s for s in kind_of(docs, "Service")}
    for org in OVERLAYS[overlay]:
        own = f"fedsuite-{org}"
        service = services[own]
        assert [p for p, labels in pods.items() if service["spec"]["selector"].items() <= labels.items()] == [own]
        ports = {p["name"] for p in container(docs, org)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, "a Service port targets no container port"
        budget = named(docs, "PodDisruptionBudget", own)["spec"]
        assert [p for p, labels in pods.items() if matches(budget["selector"], labels)] == [own]
        assert budget["minAvailable"] == 1 and budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        monitor = named(docs, "ServiceMonitor", own)["spec"]
        assert [s for s, svc in services.items() if matches(monitor["selector"], svc["metadata"].get("labels", {}))] == [own]
        (endpoint,) = monitor["endpoints"]
        (metrics,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        assert metrics["targetPort"] == "metrics" and endpoint["path"] == "/metrics"
    if overlay in NODES:
        public = services["fedsuite-public"]["spec"]
        assert public["type"] == "LoadBalancer" and public["externalTrafficPolicy"] == "Local", (
            "the ipBlock policies need the callers' source addresses")
        assert [p["name"] for p in public["ports"]] == ["grpc"], "metrics never leave the cluster"
        assert [p for p, labels in pods.items() if public["selector"].items() <= labels.items()] == [f"fedsuite-{overlay}"]


# -- settings -------------------------------------------------------------------------------------
def mounts(docs: list[dict[str, Any]], org: str) -> dict[str, dict[str, Any]]:
    """mountPath -> {volume, readOnly}, checking every mount names a volume and every claim exists."""
    volumes = {v["name"]: v for v in deployment(docs, org)["spec"]["template"]["spec"]["volumes"]}
    claims = {c["metadata"]["name"] for c in kind_of(docs, "PersistentVolumeClaim")}
    out = {}
    for mount in container(docs, org)["volumeMounts"]:
        volume = volumes.get(mount["name"])
        assert volume is not None, f"volumeMount {mount['name']} names no volume"
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims, f"volume {mount['name']}: no such PVC"
        out[mount["mountPath"]] = {"volume": volume, "readOnly": bool(mount.get("readOnly"))}
    return out


def under(path: str, mount_paths: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The mount ``path`` lies on, with ``path`` relative to it as "file"."""
    for mount_path, mount in mount_paths.items():
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            return {**mount, "file": path.removeprefix(mount_path.rstrip("/") + "/")}
    return None


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_settings_load_and_point_at_mounted_files(rendered: dict[str, list[dict[str, Any]]], overlay: str,
                                                  stages: list[Stage]) -> None:
    docs = rendered[overlay]
    workdir = stages[-1].last("WORKDIR")
    assert workdir is not None
    for org in OVERLAYS[overlay]:
        config = node_config(docs, overlay, org)
        kind = NODES[org]
        assert config.node_id == NODE_IDS[org]
        assert config.listen == f"0.0.0.0:{GRPC_PORT}" and config.metrics_listen == f"0.0.0.0:{METRICS_PORT}"
        paths = mounts(docs, org)
        assert config.tls is not None, "mTLS always in containers"
        for name in ("ca", "cert", "key"):
            found = under(getattr(config.tls, name), paths)
            assert found is not None and found["readOnly"], f"{org}: tls.{name} is on no read-only volume"
            secret = found["volume"].get("secret")
            assert secret is not None and secret["secretName"] == f"fedsuite-tls-{org}", "each node its own Secret"
            assert found["file"] in {i["path"] for i in secret["items"]}
        for writable in ("/tmp", workdir.value):
            found = under(writable, paths)
            assert found is not None and not found["readOnly"], f"{writable} must be writable (read-only root)"
        kept = [config.audit_path] if kind == "arbiter" else [config.state_dir]
        if kind == "party":
            assert config.datasets, "a party serves at least one dataset"
            assert config.role == {"bank": "guest", "telecom": "host"}[org]
            kept += [f for d in config.datasets.values() for f in (d.path, d.eval_path) if f is not None]
        for file in kept:
            found = under(file, paths)
            assert found is not None and "persistentVolumeClaim" in found["volume"], f"{org}: {file} not on a PVC"


def test_all_in_one_nodes_reach_each_other_by_service_name(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["all-in-one"]
    coordinator = node_config(docs, "all-in-one", "operator")
    assert coordinator.arbiter == service_address(docs, "neutral")
    for party in ("bank", "telecom"):
        config = node_config(docs, "all-in-one", party)
        assert config.coordinator == service_address(docs, "operator")
        assert config.advertise == service_address(docs, party)


def test_organisations_dial_each_others_public_names(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Across clusters every address is a placeholder name the peers agree on, on the public port."""
    public = {org: f"fedsuite.{org}.example:{GRPC_PORT}" for org in NODES}
    assert node_config(rendered["operator"], "operator", "operator").arbiter == public["neutral"]
    for party in ("bank", "telecom"):
        config = node_config(rendered[party], party, party)
        assert (config.coordinator, config.advertise) == (public["operator"], public[party])


@pytest.mark.parametrize("together", [True, False], ids=["all-in-one", "one-overlay-each"])
def test_each_node_expects_the_certificate_names_its_peers_carry(rendered: dict[str, list[dict[str, Any]]],
                                                                 together: bool) -> None:
    """A party checks that the coordinator's certificate names coordinator_id, the coordinator the arbiter's."""
    overlay = {org: "all-in-one" if together else org for org in NODES}
    config = {org: node_config(rendered[overlay[org]], overlay[org], org) for org in NODES}
    assert config["operator"].arbiter_id == config["neutral"].node_id
    for party in ("bank", "telecom"):
        assert config[party].coordinator_id == config["operator"].node_id


# -- Pod Security "restricted" --------------------------------------------------------------------
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every object that makes pods."""
    for doc in docs:
        if doc["kind"] not in POD_KINDS:
            continue
        spec = doc["spec"]
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        yield f"{doc['kind']} {doc['metadata']['name']}", spec if doc["kind"] == "Pod" else spec["template"]["spec"]


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the Pod Security "restricted" profile (which includes "baseline") refuses in ``pod``."""
    problems = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{field} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds - RESTRICTED_VOLUMES)} not allowed")
    pod_context = pod.get("securityContext", {})
    for sysctl in pod_context.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']} is not a safe one")
    if pod_context.get("runAsUser") == 0:
        problems.append("the pod runs as uid 0")
    containers = [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]
    if not containers:
        problems.append("no containers")
    for box in containers:
        name, context = box["name"], box.get("securityContext", {})
        if any(p.get("hostPort") for p in box.get("ports", [])):
            problems.append(f"{name}: hostPort")
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount {context['procMount']}")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if context.get("runAsUser") == 0:
            problems.append(f"{name}: runs as uid 0")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost, not {seccomp}")
        selinux = context.get("seLinuxOptions", pod_context.get("seLinuxOptions", {}))
        if selinux.get("type", "") not in ("", "container_t", "container_init_t", "container_kvm_t") or \
                selinux.get("user") or selinux.get("role"):
            problems.append(f"{name}: seLinuxOptions not allowed")
        windows = context.get("windowsOptions", pod_context.get("windowsOptions", {}))
        if windows.get("hostProcess"):
            problems.append(f"{name}: windowsOptions.hostProcess")
        apparmor = context.get("appArmorProfile", pod_context.get("appArmorProfile", {})).get("type")
        if apparmor == "Unconfined":
            problems.append(f"{name}: appArmorProfile Unconfined")
    return problems


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_pod_meets_the_restricted_profile(rendered: dict[str, list[dict[str, Any]]], overlay: str,
                                                image_uid: int) -> None:
    specs = list(pod_specs(rendered[overlay]))
    assert len(specs) == len(OVERLAYS[overlay])
    for where, pod in specs:
        assert restricted_violations(pod) == [], f"k8s/overlays/{overlay} {where}"
        context = pod["securityContext"]
        assert context["runAsUser"] == image_uid == context["fsGroup"], "the image's uid; volumes group-owned by it"
        for box in pod["containers"]:
            assert box["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("change, refused", [
    (lambda pod: pod.update(hostNetwork=True), "hostNetwork"),
    (lambda pod: pod.update(hostPID=True), "hostPID"),
    (lambda pod: pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    (lambda pod: pod["containers"][0]["ports"][0].update(hostPort=50051), "hostPort"),
    (lambda pod: pod["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True), "Escalation"),
    (lambda pod: pod["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "drop ALL"),
    (lambda pod: pod["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "adds"),
    (lambda pod: [pod["securityContext"].pop("runAsNonRoot"), pod["containers"][0]["securityContext"].pop(
        "runAsNonRoot")], "runAsNonRoot"),
    (lambda pod: pod["securityContext"].pop("seccompProfile"), "seccompProfile"),
    (lambda pod: pod["containers"][0]["securityContext"].update(privileged=True), "privileged"),
    (lambda pod: pod["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "sysctl"),
])
def test_the_restricted_check_refuses_what_the_profile_refuses(rendered: dict[str, list[dict[str, Any]]],
                                                                change: Any, refused: str) -> None:
    (_, pod), *_ = pod_specs(rendered["bank"])
    broken = yaml.safe_load(yaml.safe_dump(pod))
    change(broken)
    assert any(refused in problem for problem in restricted_violations(broken))


# -- NetworkPolicies ------------------------------------------------------------------------------
class Cluster:
    """NetworkPolicy semantics over rendered objects: which pod may open a TCP connection to which."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        (namespace,) = kind_of(docs, "Namespace")
        self.namespaces = {namespace["metadata"]["name"]: dict(namespace["metadata"]["labels"]),
                           "monitoring": {"kubernetes.io/metadata.name": "monitoring"},
                           "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
                           "elsewhere": {"kubernetes.io/metadata.name": "elsewhere"}}
        for name, labels in self.namespaces.items():
            labels.setdefault("kubernetes.io/metadata.name", name)
        self.policies = kind_of(docs, "NetworkPolicy")
        self.namespace = namespace["metadata"]["name"]

    def _selected(self, pod: dict[str, Any], direction: str) -> list[dict[str, Any]]:
        return [p for p in self.policies if p["metadata"]["namespace"] == pod["namespace"]
                and direction in p["spec"]["policyTypes"] and matches(p["spec"]["podSelector"], pod["labels"])]

    def _peer(self, peer: dict[str, Any], pod: dict[str, Any], policy_namespace: str) -> bool:
        if "ipBlock" in peer:
            if "ip" not in pod:
                return False
            block = peer["ipBlock"]
            ip = ipaddress.ip_address(pod["ip"])
            return ip in ipaddress.ip_network(block["cidr"]) and not any(
                ip in ipaddress.ip_network(c) for c in block.get("except", []))
        if "ip" in pod:
            return False
        if "namespaceSelector" in peer:
            if not matches(peer["namespaceSelector"], self.namespaces[pod["namespace"]]):
                return False
        elif pod["namespace"] != policy_namespace:
            return False
        return matches(peer.get("podSelector", {}), pod["labels"])

    @staticmethod
    def _port(rule: dict[str, Any], port: int, target: dict[str, Any]) -> bool:
        if "ports" not in rule:
            return True
        for allowed in rule["ports"]:
            number = allowed.get("port")
            if isinstance(number, str):
                number = target.get("ports", {}).get(number)
            if allowed.get("protocol", "TCP") == "TCP" and number in (None, port):
                return True
        return False

    def allows(self, source: dict[str, Any], target: dict[str, Any], port: int) -> bool:
        """Egress of the source (if it is a pod here) and ingress of the target both allow it."""
        if "ip" not in source:
            egress = self._selected(source, "Egress")
            if egress and not any(self._peer(peer, target, p["metadata"]["namespace"]) and self._port(rule, port, target)
                                  for p in egress for rule in p["spec"].get("egress", []) for peer in rule.get("to", [])):
                return False
        if "ip" in target:
            return True
        ingress = self._selected(target, "Ingress")
        return not ingress or any(self._peer(peer, source, p["metadata"]["namespace"]) and self._port(rule, port, target)
                                  for p in ingress for rule in p["spec"].get("ingress", []) for peer in rule["from"])


def node_pod(docs: list[dict[str, Any]], org: str) -> dict[str, Any]:
    ports = {p["name"]: p["containerPort"] for p in container(docs, org)["ports"]}
    labels = deployment(docs, org)["spec"]["template"]["metadata"]["labels"]
    return {"namespace": deployment(docs, org)["metadata"]["namespace"], "labels": labels, "ports": ports}


def test_in_one_namespace_grpc_flows_as_the_services_authorise_it(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["all-in-one"]
    cluster = Cluster(docs)
    pods = {org: node_pod(docs, org) for org in NODES}
    others = {  # pods that are not nodes, with the role their certificate would carry
        "admin": {"namespace": cluster.namespace, "labels": {"app.kubernetes.io/component": "admin"}},
        "stranger": {"namespace": cluster.namespace, "labels": {"app": "something-else"}},
        "prometheus": {"namespace": "monitoring", "labels": {"app.kubernetes.io/name": "prometheus"}},
        "outsider-party": {"namespace": "elsewhere", "labels": {"app.kubernetes.io/component": "party"}},
    }
    roles = {**NODES, "admin": "admin", "stranger": None, "prometheus": None, "outsider-party": None}
    for source_name, source in {**pods, **others}.items():
        for target_name, target in pods.items():
            if source_name == target_name:
                continue
            expected = roles[source_name] in callers(NODES[target_name])
            assert cluster.allows(source, target, GRPC_PORT) == expected, (
                f"{source_name} -> {target_name} gRPC should be {'allowed' if expected else 'denied'}")
            assert cluster.allows(source, target, METRICS_PORT) == (source_name == "prometheus"), (
                f"{source_name} -> {target_name} metrics: only the monitoring namespace")
    dns = {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}, "ports": {}}
    for org, pod in pods.items():
        assert cluster.allows(pod, dns, 53), f"{org} cannot resolve names"
        assert not cluster.allows(pod, {"ip": "8.8.8.8"}, 443), f"{org} may reach the internet"


@pytest.mark.parametrize("org", list(NODES))
def test_across_clusters_grpc_flows_by_the_placeholder_addresses(rendered: dict[str, list[dict[str, Any]]],
                                                                 org: str) -> None:
    docs = rendered[org]
    cluster = Cluster(docs)
    pod = node_pod(docs, org)
    role = NODES[org]
    for peer, (egress, balancer) in PLACEHOLDERS.items():
        if peer == org:
            continue
        from_peer = {"ip": str(ipaddress.ip_network(egress)[0])}
        to_peer = {"ip": str(ipaddress.ip_network(balancer)[0])}
        assert cluster.allows(from_peer, pod, GRPC_PORT) == (NODES[peer] in callers(role)), f"{peer} -> {org}"
        assert cluster.allows(pod, to_peer, GRPC_PORT) == (role in callers(NODES[peer])), f"{org} -> {peer}"
        assert not cluster.allows(from_peer, pod, METRICS_PORT), f"{peer} reads {org}'s metrics"
    admins = {"ip": str(ipaddress.ip_network(ADMINS_CIDR)[1])}
    assert cluster.allows(admins, pod, GRPC_PORT) == ("admin" in callers(role))
    assert not cluster.allows({"ip": "192.0.2.200"}, pod, GRPC_PORT), "an unknown address gets in"


# -- schemas --------------------------------------------------------------------------------------
def strict(schema: Any) -> Any:
    """The schema with unknown fields refused, as the API server's strict field validation does."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema and \
            not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> a validator of the vendored CRD's served version's schema."""
    validators = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for served in crd["spec"]["versions"]:
            schema = strict(served["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}
            api_version = f"{crd['spec']['group']}/{served['name']}"
            validators[(api_version, crd["spec"]["names"]["kind"])] = jsonschema.Draft7Validator(schema)
    return validators


def validate(doc: dict[str, Any], crd_validators: dict[tuple[str, str], Any]) -> list[str]:
    """Problems with ``doc``: a built-in kind by kubernetes-validate (strict), a custom one by its CRD."""
    key = (doc["apiVersion"], doc["kind"])
    group = doc["apiVersion"].rpartition("/")[0]
    if key in crd_validators or ("." in group and not group.endswith(".k8s.io")):
        assert key in crd_validators, f"{key}: no CRD vendored in tests/data/crds"
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validators[key].iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as err:
        return [err.message]
    return []


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_objects_match_the_kubernetes_and_crd_schemas(rendered: dict[str, list[dict[str, Any]]], overlay: str,
                                                      crd_validators: dict[tuple[str, str], Any]) -> None:
    for doc in rendered[overlay]:
        problems = validate(doc, crd_validators)
        assert problems == [], f"k8s/overlays/{overlay}: {doc['kind']} {doc['metadata']['name']}: {problems}"


def test_crd_schemas_refuse_unknown_fields_and_wrong_types(rendered: dict[str, list[dict[str, Any]]],
                                                           crd_validators: dict[tuple[str, str], Any]) -> None:
    monitor = yaml.safe_load(yaml.safe_dump(named(rendered["bank"], "ServiceMonitor", "fedsuite-bank")))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    assert any("intervall" in p for p in validate(monitor, crd_validators))
    rule = yaml.safe_load(yaml.safe_dump(named(rendered["operator"], "PrometheusRule", "fedsuite-alerts")))
    rule["spec"]["groups"][0]["rules"][0]["for"] = 5
    assert validate(rule, crd_validators), "a number where the CRD wants a duration"
    deployment_doc = yaml.safe_load(yaml.safe_dump(deployment(rendered["bank"], "bank")))
    deployment_doc["spec"]["template"]["spec"]["hostnetwork"] = True
    assert validate(deployment_doc, crd_validators), "kubernetes-validate --strict refuses unknown fields"


def test_vendored_crds_name_their_source() -> None:
    readme = (CRDS / "README.md").read_text()
    for path in CRDS.glob("*.yaml"):
        assert path.name in readme, f"tests/data/crds/README.md does not say where {path.name} comes from"
    assert re.search(r"\b[0-9a-f]{40}\b", readme), "name the commit the files were taken at"


# -- cert-manager (optional component) ----------------------------------------------------------------
def test_cert_manager_issues_the_node_its_certificate(with_cert_manager: list[dict[str, Any]],
                                                      crd_validators: dict[tuple[str, str], Any]) -> None:
    (certificate,) = kind_of(with_cert_manager, "Certificate")
    assert validate(certificate, crd_validators) == []
    spec = certificate["spec"]
    config = load_node_config("party", pod_environment(with_cert_manager, "bank"), "bank with cert-manager")
    assert certificate["metadata"]["namespace"] == NAMESPACES["bank"]
    assert spec["commonName"] == config.node_id == spec["dnsNames"][0], "peers check the node id"
    assert "localhost" in spec["dnsNames"], "the health probe checks localhost"
    assert spec["subject"]["organizationalUnits"] == ["party"] and "party" in ROLES
    (tls,) = [v for v in deployment(with_cert_manager, "bank")["spec"]["template"]["spec"]["volumes"]
              if v["name"] == "tls"]
    assert spec["secretName"] == tls["secret"]["secretName"]
    assert {"server auth", "client auth"} <= set(spec["usages"]), "every node is a TLS server and client"
    assert spec["privateKey"]["algorithm"] == "ECDSA"


# -- k8s/monitoring (MONITORING's, included by the operator's overlay) ----------------------------------
def test_monitoring_objects_render_and_validate(kubectl: str, crd_validators: dict[tuple[str, str], Any]) -> None:
    docs = kustomize(kubectl, K8S / "monitoring")
    assert {d["kind"] for d in docs} == {"PrometheusRule", "ConfigMap"}
    for doc in docs:
        assert validate(doc, crd_validators) == [], f"k8s/monitoring: {doc['kind']}"


def test_no_overlay_outside_the_readme() -> None:
    readme = (K8S / "README.md").read_text()
    overlays = {p.name for p in (K8S / "overlays").iterdir() if p.is_dir()}
    assert overlays == set(OVERLAYS)
    for overlay in overlays:
        assert f"kubectl apply -k k8s/overlays/{overlay}" in readme, f"k8s/README.md: how to deploy {overlay}"


# -- all-in-one run as local processes ----------------------------------------------------------------
class PodsAsProcesses:
    """Runs the rendered all-in-one nodes as local processes, with what their pods would see: each
    volume's mountPath a directory (the Secret's items written into it), each Service name and
    0.0.0.0 port a 127.0.0.1 port, the image's working directory the state volume."""

    def __init__(self, docs: list[dict[str, Any]], workdir: Path, image_files: dict[str, Path]) -> None:
        self.docs, self.workdir, self.image_files = docs, workdir, image_files
        self.ports = {(org, port): free_port() for org in NODES for port in (GRPC_PORT, METRICS_PORT)}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def volume_dir(self, org: str, mount_path: str) -> Path:
        return self.workdir / org / mount_path.strip("/").replace("/", "_")

    def map(self, org: str, value: str) -> str:
        for mount_path in mounts(self.docs, org):
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(self.volume_dir(org, mount_path)) + value[len(mount_path):]
        if value in self.image_files:
            return str(self.image_files[value])
        host, _, port = value.rpartition(":")
        owner = org if host == "0.0.0.0" else next((o for o in NODES if host == service_address(
            self.docs, o).rpartition(":")[0]), None)
        if owner is not None and port.isdigit() and (owner, int(port)) in self.ports:
            return f"127.0.0.1:{self.ports[(owner, int(port))]}"
        return value

    def prepare(self, org: str, pki: Path, data: dict[str, Path]) -> None:
        """The node's volumes: its Secret's three files, its data files, empty state and /tmp."""
        for mount_path, mount in mounts(self.docs, org).items():
            directory = self.volume_dir(org, mount_path)
            directory.mkdir(parents=True, exist_ok=True)
            if "secret" in mount["volume"]:
                node = NODE_IDS[org]
                sources = {"ca.crt": pki / "ca.pem", "tls.crt": pki / f"{node}.pem", "tls.key": pki / f"{node}.key"}
                for item in mount["volume"]["secret"]["items"]:
                    shutil.copy(sources[item["key"]], directory / item["path"])
        for target, source in data.items():
            shutil.copy(source, self.map(org, target))

    def environment(self, org: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDSUITE_")}
        env.update({k: self.map(org, v) for k, v in pod_environment(self.docs, org).items()})
        return env

    def command(self, org: str, argv: list[str]) -> list[str]:
        argv = [self.map(org, a) for a in argv]
        return [sys.executable, *argv[1:]] if argv[0] == "python" else [sys.executable, "-m", "fedsuite.cli", *argv]

    def start(self, org: str, workdir: str) -> None:
        log = open(self.workdir / f"{org}.log", "wb")  # noqa: SIM115  (the process keeps it)
        self.processes[org] = subprocess.Popen(self.command(org, container(self.docs, org)["args"]),
                                               env=self.environment(org), cwd=self.map(org, workdir),
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, org: str) -> str:
        return (self.workdir / f"{org}.log").read_text(errors="replace")[-3000:]

    # SIGTERM to every node (as the kubelet sends), then their exit statuses: the compose runner's.
    stop = deploy_files.ComposeAsProcesses.down


def test_all_in_one_settings_make_a_working_federation(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path, breast_dir: Path, stages: list[Stage],
    image_files: dict[str, Path], probe_command: list[str],
) -> None:
    """The four nodes, started with the rendered settings and volumes, pass the pods' probe, the
    parties register with the coordinator at the addresses they advertise and a job runs to the end."""
    from fedcore.proto import coordinator_pb2 as pb
    from fedcore.tls import TlsFiles, init_pki

    from fedsuite.client import CoordinatorAdmin
    from fedsuite.jobfile import load_job_spec

    pki = tmp_path / "pki"
    init_pki(pki, ["coordinator", "arbiter", "bank:party", "telecom:party", "admin"])
    pods = PodsAsProcesses(rendered["all-in-one"], tmp_path / "pods", image_files)
    workdir = stages[-1].last("WORKDIR")
    assert workdir is not None
    shares = {"bank": "party-a", "telecom": "party-b"}
    try:
        for org in ("neutral", "operator", "bank", "telecom"):
            data = {}
            if NODES[org] == "party":
                dataset = node_config(rendered["all-in-one"], "all-in-one", org).datasets["breast"]
                data = {dataset.path: breast_dir / f"{shares[org]}-train.csv",
                        dataset.eval_path: breast_dir / f"{shares[org]}-eval.csv"}
            pods.prepare(org, pki, data)
            pods.start(org, workdir.value)
        for org in NODES:
            deadline, done = time.monotonic() + 30, None
            while time.monotonic() < deadline:
                assert pods.processes[org].poll() is None, f"{org} exited:\n{pods.log(org)}"
                done = subprocess.run(pods.command(org, probe_command), env=pods.environment(org),
                                      capture_output=True, text=True, timeout=15)
                if done.returncode == 0:
                    break
                time.sleep(0.5)
            assert done is not None and done.returncode == 0, f"{org}: the pods' probe fails: {done and done.stderr}"
        coordinator = f"127.0.0.1:{pods.ports[('operator', GRPC_PORT)]}"
        expected = {NODE_IDS[p]: f"127.0.0.1:{pods.ports[(p, GRPC_PORT)]}" for p in ("bank", "telecom")}
        with CoordinatorAdmin(coordinator, TlsFiles.in_dir(pki, "admin"), timeout_s=5) as admin:
            deadline, online = time.monotonic() + 20, {}
            while time.monotonic() < deadline and online != expected:
                online = {p.party_id: p.address for p in admin.parties() if p.online}
                time.sleep(0.2)
            assert online == expected, f"registered parties {online}:\n{pods.log('bank')}"
            spec = load_job_spec(ROOT / "docker" / "jobs" / "breast-fedavg.yaml")
            spec.horizontal.rounds, spec.horizontal.min_parties = 2, len(expected)
            job = admin.wait(admin.submit(spec), timeout_s=90)
            assert job.state == pb.JOB_STATE_SUCCEEDED, f"{job.reason}\n{pods.log('operator')}"
    finally:
        codes = pods.stop()
    assert codes == {org: 0 for org in ("neutral", "operator", "bank", "telecom")}, f"SIGTERM: {codes}"
