"""deploy/kubernetes/ is valid Kubernetes and agrees with the server it deploys: flags, ports,
probes, user, store, and the Job that trains into that store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from movie_embeddings_server.cli import build_parser
from movie_embeddings_server.cli.train import cmd_train_in_store

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    """Each manifest by kind; the GPU variant of the training Job as "GpuJob"."""
    found = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found["GpuJob" if path.name == "train-job-gpu.yaml" else doc["kind"]] = doc
    assert set(found) == {"Deployment", "Service", "PersistentVolumeClaim", "Job", "GpuJob"}
    return found


@pytest.mark.parametrize("path", sorted(MANIFESTS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    """Kubernetes' own OpenAPI schemas (shipped with kubernetes-validate, read offline), strict:
    a misspelt or misplaced field fails here, not at `kubectl apply`."""
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_schema_check_catches_a_misplaced_field(objects: dict[str, dict[str, Any]]) -> None:
    job = yaml.safe_load(yaml.safe_dump(objects["Job"]))
    job["spec"]["template"]["spec"]["containers"][0]["arg"] = ["train"]
    with pytest.raises(kubernetes_validate.ValidationError, match="'arg' was unexpected"):
        kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)


@pytest.fixture(scope="module")
def pod(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return objects["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def serve_args(container: dict[str, Any]) -> Any:
    args = build_parser().parse_args(container["args"])  # exits (fails) on an unknown flag
    assert args.command == "serve"
    return args


def _port(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def test_the_server_listens_where_the_pod_says(container, serve_args) -> None:  # type: ignore[no-untyped-def]
    assert serve_args.host == "0.0.0.0"
    assert serve_args.port == _port(container, "grpc") == 50051
    assert serve_args.metrics_port == _port(container, "metrics")
    assert serve_args.poll_seconds > 0  # replicas load each other's versions


def test_probes_are_native_grpc_health_checks_on_the_server_port(container, serve_args) -> None:  # type: ignore[no-untyped-def]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": serve_args.port}, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # a first Train


def test_the_store_is_the_shared_claim_mounted_at_the_data_dir(
    objects, pod, container, serve_args
) -> None:  # type: ignore[no-untyped-def]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == serve_args.data_dir == "/data"
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    claim = objects["PersistentVolumeClaim"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_pods_run_as_the_images_non_root_user(pod, container) -> None:  # type: ignore[no-untyped-def]
    security = pod["spec"]["securityContext"]
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user, "the Dockerfile names its user by number"
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == tuple(map(int, user.groups()))
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["image"].startswith("movie-embeddings:")


def test_replicas_resources_and_a_grace_longer_than_the_servers(
    objects, pod, container, serve_args
) -> None:  # type: ignore[no-untyped-def]
    assert objects["Deployment"]["spec"]["replicas"] >= 2
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    assert pod["spec"]["terminationGracePeriodSeconds"] > serve_args.grace_seconds


def test_the_service_is_headless_and_selects_the_pods(objects, pod, container) -> None:  # type: ignore[no-untyped-def]
    service = objects["Service"]["spec"]
    assert service["clusterIP"] == "None"  # DNS lists every pod: clients balance round-robin
    labels = pod["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = service["ports"]
    assert port["targetPort"] == "grpc" and port["port"] == _port(container, "grpc")


def test_the_job_trains_into_the_store_the_replicas_serve(objects, pod, serve_args) -> None:  # type: ignore[no-untyped-def]
    job = objects["Job"]["spec"]["template"]
    (container,) = job["spec"]["containers"]
    args = build_parser().parse_args(container["args"])  # exits (fails) on an unknown flag
    assert (args.command, args.handler, args.connect) == ("train", cmd_train_in_store, False)
    (mount,) = container["volumeMounts"]
    assert str(args.store) == mount["mountPath"] == serve_args.data_dir
    (volume,) = [v for v in job["spec"]["volumes"] if v["name"] == mount["name"]]
    (served,) = [v for v in pod["spec"]["volumes"] if v["name"] == "store"]
    assert volume["persistentVolumeClaim"] == served["persistentVolumeClaim"]
    assert job["spec"]["securityContext"] == pod["spec"]["securityContext"]
    assert container["image"] == pod["spec"]["containers"][0]["image"]
    assert job["spec"]["restartPolicy"] == "Never"  # a failed training is not rerun in place
    # The Service must never send queries to the training pod.
    selector = objects["Service"]["spec"]["selector"]
    assert not selector.items() <= job["metadata"]["labels"].items()


def test_the_gpu_job_is_the_cpu_job_on_a_gpu_node(objects: dict[str, dict[str, Any]]) -> None:
    cpu, gpu = objects["Job"], objects["GpuJob"]
    (on_cpu,) = cpu["spec"]["template"]["spec"]["containers"]
    (on_gpu,) = gpu["spec"]["template"]["spec"]["containers"]
    assert on_gpu["args"] == on_cpu["args"]  # one code path
    assert on_gpu["volumeMounts"] == on_cpu["volumeMounts"]
    assert on_gpu["image"] == on_cpu["image"] + "-gpu"
    assert on_gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in on_cpu["resources"]["limits"]
    tolerated = gpu["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerated
    assert gpu["metadata"]["name"] != cpu["metadata"]["name"]
    assert gpu["spec"]["template"]["metadata"] == cpu["spec"]["template"]["metadata"]
