"""The Kubernetes manifests in examples/k8s cannot run here (no cluster). They are
validated against Kubernetes' own schemas, and their kt-pipeline commands are parsed by
the real CLI parser: one chief behind a Service, workers that dial it, one volume."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kt_pipeline.cli import _parser

MANIFESTS = Path(__file__).parents[1] / "examples" / "k8s"
KUBERNETES = "1.31.0"


def _documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(MANIFESTS.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document
    ]


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _documents() if d["kind"] == kind]


def _container(document: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = document["spec"]["template"]["spec"]["containers"]
    return containers[0]


@pytest.mark.parametrize(
    "document", _documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_each_manifest_is_valid_kubernetes(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_validator_rejects_what_kubernetes_would() -> None:
    (job,) = _by_kind("Job")
    broken = copy.deepcopy(job)
    _container(broken)["argz"] = _container(broken).pop("args")  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)
    broken = copy.deepcopy(job)
    broken["spec"]["completions"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_chief_the_workers_and_tensorboard_fit_together() -> None:
    deployments = {d["metadata"]["name"]: d for d in _by_kind("Deployment")}
    chief_deployment = deployments["kt-chief"]
    assert chief_deployment["spec"]["replicas"] == 1
    chief = _parser().parse_args(_container(chief_deployment)["args"])
    assert chief.role == "chief"
    assert chief.oracle_bind.startswith("0.0.0.0:")  # the workers are other pods
    port = chief.oracle_bind.rpartition(":")[2]

    services = {s["metadata"]["name"]: s for s in _by_kind("Service")}
    labels = chief_deployment["spec"]["template"]["metadata"]["labels"]
    service = next(s for s in services.values() if s["spec"]["selector"] == labels)
    assert int(service["spec"]["ports"][0]["port"]) == int(port)

    (job,) = _by_kind("Job")
    assert job["spec"]["completionMode"] == "Indexed"
    worker = _parser().parse_args(_container(job)["args"])
    assert worker.role == "worker" and "$(JOB_COMPLETION_INDEX)" in worker.worker_id
    assert worker.oracle == chief.oracle == f"{service['metadata']['name']}:{port}"
    assert (worker.experiment_dir, worker.tuner, worker.max_trials) == (
        chief.experiment_dir,
        chief.tuner,
        chief.max_trials,
    )
    assert _container(job)["resources"]["limits"]["nvidia.com/gpu"] == 1
    secrets = [
        next(
            e["valueFrom"]["secretKeyRef"]
            for e in _container(d)["env"]
            if e["name"] == "KT_PIPELINE_ORACLE_TOKEN"
        )
        for d in (chief_deployment, job)
    ]
    assert secrets[0] == secrets[1]  # chief and workers share one secret, never an arg

    (policy,) = _by_kind("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == labels
    (rule,) = policy["spec"]["ingress"]
    worker_labels = job["spec"]["template"]["metadata"]["labels"]
    assert rule["from"] == [{"podSelector": {"matchLabels": worker_labels}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": int(port)}]

    (claim,) = _by_kind("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on several nodes write
    for document in [*deployments.values(), job]:
        volumes = document["spec"]["template"]["spec"]["volumes"]
        assert [v["persistentVolumeClaim"]["claimName"] for v in volumes] == [
            claim["metadata"]["name"]
        ]
    board = _container(deployments["kt-tensorboard"])
    assert board["args"][:2] == ["--logdir", f"{chief.experiment_dir}/tensorboard"]
