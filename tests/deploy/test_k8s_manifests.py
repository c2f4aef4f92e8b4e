"""deploy/k8s: every manifest validates strictly against Kubernetes 1.29, and the properties the
deployment relies on hold (probes, security, graceful shutdown, the shared read-only model store).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import bundle
from service.settings import Settings
from tests.support import ROOT

K8S = ROOT / "deploy" / "k8s"
REPOSITORY = K8S / "repository"  # labels and traffic of the model repository; not in the base
KUBERNETES_VERSION = "1.29.0"


def kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("kubernetes-validate")
    command = str(tool) if tool.exists() else shutil.which("kubernetes-validate")
    assert command, "kubernetes-validate is not installed (it is in the dev extra)"
    return subprocess.run(
        [command, "--strict", "-k", KUBERNETES_VERSION, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(directory: Path = K8S) -> dict[str, Any]:
    (doc,) = load(directory / "kustomization.yaml")
    return doc


def resources(directory: Path = K8S) -> dict[str, dict[str, Any]]:
    """A kustomization's resources by kind (one of each kind here)."""
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization(directory)["resources"]:
        for doc in load(directory / name):
            assert doc["kind"] not in found, f"two {doc['kind']} resources"
            found[doc["kind"]] = doc
    return found


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def only_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec["containers"]
    return container


def mount_at(container: dict[str, Any], pod_spec: dict[str, Any], path: str) -> tuple[dict, dict]:
    """The volumeMount at ``path`` and the pod volume it refers to."""
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == path]
    (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
    return mount, volume


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return resources()


def test_kustomization_lists_every_core_manifest() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert {doc["kind"] for doc in resources().values()} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "Job",
    }


def test_every_manifest_validates_strictly() -> None:
    files = [K8S / name for name in kustomization()["resources"]]
    result = kubernetes_validate(*files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(files), result.stdout + result.stderr


def test_strict_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    text = (K8S / "deployment.yaml").read_text().replace("readinessProbe:", "readynessProbe:")
    (tmp_path / "deployment.yaml").write_text(text)
    assert kubernetes_validate(tmp_path / "deployment.yaml").returncode != 0


def test_kserve_example_is_an_inference_service_whose_pod_parts_validate(tmp_path: Path) -> None:
    # No schema for the KServe CRD here: validate its PodSpec parts as a core Pod instead.
    (isvc,) = load(K8S / "kserve" / "inferenceservice.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = isvc["spec"]["predictor"]
    container = only_container(predictor)
    assert container["name"] == "kserve-container"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert mount_at(container, predictor, "/tmp")[1]["emptyDir"] is not None
    pod_fields = ("containers", "volumes", "securityContext")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kserve-predictor"},
        "spec": {key: predictor[key] for key in pod_fields},
    }
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    result = kubernetes_validate(tmp_path / "pod.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(env_of(container)) <= env_names()


def env_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def test_deployment_probes_resources_and_replicas(base: dict[str, dict[str, Any]]) -> None:
    deployment = base["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    container = only_container(deployment["spec"]["template"]["spec"])
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {port["name"] for port in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in port_names
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}


def test_deployment_env_names_are_service_settings(base: dict[str, dict[str, Any]]) -> None:
    container = only_container(base["Deployment"]["spec"]["template"]["spec"])
    unknown = set(env_of(container)) - env_names()
    assert not unknown, f"not settings of the service: {unknown}"
    Settings(**{k.lower(): v for k, v in env_of(container).items()})  # values parse


@pytest.fixture(scope="module")
def repository() -> dict[str, dict[str, Any]]:
    return resources(REPOSITORY)


def test_pods_run_locked_down(
    base: dict[str, dict[str, Any]], repository: dict[str, dict[str, Any]]
) -> None:
    pods = {"Deployment": base["Deployment"], "Job": base["Job"], "serving Job": repository["Job"]}
    for kind, resource in pods.items():
        pod = resource["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        container = only_container(pod)
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, kind
        assert security["allowPrivilegeEscalation"] is False, kind
        assert security["capabilities"]["drop"] == ["ALL"], kind
        # The root filesystem is read-only: temporary files go to an emptyDir at /tmp.
        assert "emptyDir" in mount_at(container, pod, "/tmp")[1], kind


def test_pod_user_matches_the_image_user(
    base: dict[str, dict[str, Any]], repository: dict[str, dict[str, Any]]
) -> None:
    users = re.findall(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users and set(users) == {"10001"}
    for resource in (base["Deployment"], base["Job"], repository["Job"]):
        assert resource["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


def test_grace_period_outlasts_prestop_and_server_shutdown(base: dict[str, dict[str, Any]]) -> None:
    pod = base["Deployment"]["spec"]["template"]["spec"]
    container = only_container(pod)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = float(command[1])
    env = env_of(container)
    shutdown = float(
        env.get(
            "SHUTDOWN_TIMEOUT_SECONDS", Settings.model_fields["shutdown_timeout_seconds"].default
        )
    )
    assert pod["terminationGracePeriodSeconds"] > pause + shutdown


def test_serving_pods_read_the_shared_volume_and_poll_it(base: dict[str, dict[str, Any]]) -> None:
    claim = base["PersistentVolumeClaim"]["metadata"]["name"]
    pod = base["Deployment"]["spec"]["template"]["spec"]
    container = only_container(pod)
    env = env_of(container)
    mount, volume = mount_at(container, pod, env["ARTIFACTS_DIR"])
    assert mount["readOnly"] is True
    assert volume["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
    assert float(env["POLL_SECONDS"]) > 0
    assert "MODEL_VERSION" not in env  # a pinned version would never hot-reload


def test_retraining_job_publishes_to_the_same_volume(base: dict[str, dict[str, Any]]) -> None:
    claim = base["PersistentVolumeClaim"]["metadata"]["name"]
    serving = only_container(base["Deployment"]["spec"]["template"]["spec"])
    pod = base["Job"]["spec"]["template"]["spec"]
    job = only_container(pod)
    assert job["image"].startswith("keras-serve-train")
    assert job["args"][:3] == ["python", "-m", "training"]
    artifacts = env_of(job)["ARTIFACTS_DIR"]
    assert artifacts == env_of(serving)["ARTIFACTS_DIR"]
    mount, volume = mount_at(job, pod, artifacts)
    assert not mount.get("readOnly", False)
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    assert pod["restartPolicy"] == "Never"


def test_service_hpa_and_pdb_target_the_serving_pods(base: dict[str, dict[str, Any]]) -> None:
    deployment = base["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = base["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    container = only_container(deployment["spec"]["template"]["spec"])
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    hpa = base["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    pdb = base["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["minAvailable"] < hpa["minReplicas"]  # a node drain can always proceed


def test_grpc_port_is_exposed_and_routed(base: dict[str, dict[str, Any]]) -> None:
    """The pod declares the gRPC port the server listens on (GRPC_PORT), and the Service routes
    it by name, marked as gRPC for meshes and gateways."""
    container = only_container(base["Deployment"]["spec"]["template"]["spec"])
    ports = {port["name"]: port for port in container["ports"]}
    assert ports["grpc"] == {"name": "grpc", "containerPort": 8081, "protocol": "TCP"}
    assert int(env_of(container)["GRPC_PORT"]) == ports["grpc"]["containerPort"]
    assert ports["http"]["containerPort"] == int(env_of(container)["PORT"])
    routed = {port["name"]: port for port in base["Service"]["spec"]["ports"]}
    assert routed["grpc"]["targetPort"] == "grpc"
    assert routed["grpc"]["appProtocol"] == "grpc"
    assert routed["grpc"]["protocol"] == "TCP"
    assert routed["http"]["targetPort"] == "http"
    assert len({port["port"] for port in routed.values()}) == len(routed)


def test_the_commented_grpc_probe_alternative_validates(
    base: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """deployment.yaml shows a grpc: readiness probe in a comment; as written there, it is a
    valid probe on the gRPC port."""
    text = (K8S / "deployment.yaml").read_text()
    block = re.search(r"^( +)#   readinessProbe:\n((?:\1#     .*\n)+)", text, re.MULTILINE)
    assert block, "the commented grpc probe is gone"
    indent = block.group(1)
    probe_text = "".join(line[len(indent) + 3 :] + "\n" for line in block.group(0).splitlines())
    probe = yaml.safe_load(probe_text)["readinessProbe"]
    container = only_container(base["Deployment"]["spec"]["template"]["spec"])
    grpc_port = {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"]
    assert probe["grpc"] == {"port": grpc_port, "service": ""}
    deployment = yaml.safe_load(yaml.safe_dump(base["Deployment"]))
    only_container(deployment["spec"]["template"]["spec"])["readinessProbe"] = probe
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    result = kubernetes_validate(tmp_path / "deployment.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


# -- the model repository: several models, labels and traffic in serving.json ------------------


def serving_documents(repository: dict[str, dict[str, Any]]) -> dict[str, bundle.ServingConfig]:
    """The ConfigMap's serving.json documents by model name (each key is ``<model>.json``)."""
    documents = {}
    for key, text in repository["ConfigMap"]["data"].items():
        name = key.removesuffix(".json")
        assert key.endswith(".json") and bundle.MODEL_NAME_PATTERN.fullmatch(name), key
        documents[name] = bundle.ServingConfig.model_validate_json(text)
    return documents


def serving_job_script(repository: dict[str, dict[str, Any]]) -> str:
    container = only_container(repository["Job"]["spec"]["template"]["spec"])
    assert container["command"] == ["python", "-c"]
    (script,) = container["args"]
    return script


def run_serving_job(
    repository: dict[str, dict[str, Any]], artifacts: Path, source: Path
) -> subprocess.CompletedProcess[str]:
    """The Job's script, as the pod runs it, on a local volume and ConfigMap directory."""
    env = {**os.environ, "ARTIFACTS_DIR": str(artifacts), "SERVING_DIR": str(source)}
    return subprocess.run(
        [sys.executable, "-c", serving_job_script(repository)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_repository_example_lists_its_manifests_and_validates_strictly(
    repository: dict[str, dict[str, Any]],
) -> None:
    listed = kustomization(REPOSITORY)["resources"]
    assert set(listed) == {p.name for p in REPOSITORY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(repository) == {"ConfigMap", "Job"}
    result = kubernetes_validate(*(REPOSITORY / name for name in listed))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(repository), result.stdout + result.stderr
    assert {image["name"] for image in kustomization(REPOSITORY)["images"]} == {"keras-serve"}


def test_deployment_serves_a_model_repository_with_a_default_model(
    base: dict[str, dict[str, Any]], repository: dict[str, dict[str, Any]]
) -> None:
    """The pods serve every model the example labels, and /predict answers for one of them."""
    env = env_of(only_container(base["Deployment"]["spec"]["template"]["spec"]))
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    models = set(serving_documents(repository))
    assert len(models) >= 2
    served = settings.served_names
    assert served is None or models <= set(served)
    assert settings.default_model in models
    assert settings.poll_seconds > 0  # replicas follow serving.json by polling


def test_serving_documents_set_stable_and_a_canary(
    repository: dict[str, dict[str, Any]],
) -> None:
    documents = serving_documents(repository)
    assert all("stable" in config.labels for config in documents.values())
    canaries = [c for c in documents.values() if "canary" in c.labels and c.canary_percent > 0]
    assert canaries, "no model of the example has a canary with a share of the traffic"
    for config in canaries:
        assert config.labels["canary"] != config.labels["stable"]


def test_serving_job_writes_to_the_volume_the_pods_read(
    base: dict[str, dict[str, Any]], repository: dict[str, dict[str, Any]]
) -> None:
    claim = base["PersistentVolumeClaim"]["metadata"]["name"]
    serving = only_container(base["Deployment"]["spec"]["template"]["spec"])
    pod = repository["Job"]["spec"]["template"]["spec"]
    job = only_container(pod)
    assert job["image"] == "keras-serve"  # the serve image holds the bundle package
    env = env_of(job)
    assert env["ARTIFACTS_DIR"] == env_of(serving)["ARTIFACTS_DIR"]
    mount, volume = mount_at(job, pod, env["ARTIFACTS_DIR"])
    assert not mount.get("readOnly", False)
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    mount, volume = mount_at(job, pod, env["SERVING_DIR"])
    assert mount["readOnly"] is True
    assert volume["configMap"]["name"] == repository["ConfigMap"]["metadata"]["name"]
    assert pod["restartPolicy"] == "Never"


def configmap_directory(repository: dict[str, dict[str, Any]], directory: Path) -> Path:
    """The ConfigMap as a pod sees it: each key a symlink into ..data."""
    data = directory / "..2026_01_01"
    data.mkdir(parents=True)
    (directory / "..data").symlink_to(data.name)
    for key, text in repository["ConfigMap"]["data"].items():
        (data / key).write_text(text)
        (directory / key).symlink_to(f"..data/{key}")
    return directory


def publish_versions(artifacts: Path, documents: dict[str, bundle.ServingConfig]) -> None:
    """Empty version directories for every version the documents name (the Job checks that
    they are published, not what they hold)."""
    for name, config in documents.items():
        for version in {*config.labels.values(), config.shadow_version} - {None}:
            (artifacts / name / str(version)).mkdir(parents=True, exist_ok=True)


def test_serving_job_writes_each_document_as_the_service_reads_it(
    repository: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    documents = serving_documents(repository)
    artifacts = tmp_path / "artifacts"
    publish_versions(artifacts, documents)
    source = configmap_directory(repository, tmp_path / "serving")
    result = run_serving_job(repository, artifacts, source)
    assert result.returncode == 0, result.stderr
    for name, config in documents.items():
        assert bundle.read_serving(artifacts / name) == config
        assert f"{name}: " in result.stdout
    leftovers = [p.name for p in artifacts.glob("*/*") if not p.name.isdigit()]
    assert sorted(leftovers) == sorted([bundle.SERVING] * len(documents))


def test_serving_job_writes_nothing_when_a_version_is_missing(
    repository: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    documents = serving_documents(repository)
    artifacts = tmp_path / "artifacts"
    publish_versions(artifacts, documents)
    name, config = next((n, c) for n, c in documents.items() if "canary" in c.labels)
    canary = config.labels["canary"]
    (artifacts / name / str(canary)).rmdir()
    source = configmap_directory(repository, tmp_path / "serving")
    result = run_serving_job(repository, artifacts, source)
    assert result.returncode != 0
    assert f"{name}: versions [{canary}] are not published" in result.stderr
    assert not list(artifacts.glob(f"*/{bundle.SERVING}"))


def test_serving_job_refuses_an_invalid_document(
    repository: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    documents = serving_documents(repository)
    artifacts = tmp_path / "artifacts"
    publish_versions(artifacts, documents)
    source = tmp_path / "serving"
    source.mkdir()
    name = next(iter(documents))
    (source / f"{name}.json").write_text('{"labels": {"Stable": 1}}')
    result = run_serving_job(repository, artifacts, source)
    assert result.returncode != 0
    assert "labels: Value error, label 'Stable' is not a label name" in result.stderr
    assert not list(artifacts.glob(f"*/{bundle.SERVING}"))
