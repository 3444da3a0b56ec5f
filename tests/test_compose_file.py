"""docker-compose.yml and the Dockerfiles agree with the service's settings, the pinned
Weaviate release, the network and auth boundaries, and the docs (docs/operations.md for
Weaviate's and compose's variables, docs/serving.md's settings table for the service's). They
are run for real by ``make compose-smoke`` (podman; root, minutes), which is not part of the
suite: here the files it depends on are checked as text."""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cir_module.settings import ServiceSettings
from integration.weaviate_server import WEAVIATE_VERSION

ROOT = Path(__file__).parents[1]


class ComposeLoader(yaml.SafeLoader):
    """YAML with compose's ``!reset`` tag (an override that removes a key)."""


ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def load(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)


COMPOSE = load("docker-compose.yml")
CPU = load("docker-compose.cpu.yml")
WEAVIATE = COMPOSE["services"]["weaviate"]
CIR = COMPOSE["services"]["cir"]


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    """The settings the service reads from this environment, as in the container."""
    for name in ServiceSettings.model_fields:
        monkeypatch.delenv(f"CIR_{name.upper()}", raising=False)
    for key, value in env.items():
        # Compose substitutes ${VAR:-default}; with VAR unset the default is what arrives.
        value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
        if value:
            monkeypatch.setenv(key, value)
    return ServiceSettings()


def test_weaviate_image_is_the_pinned_release_with_both_modules():
    assert WEAVIATE["image"].endswith(f":{WEAVIATE_VERSION}")
    env = WEAVIATE["environment"]
    assert set(env["ENABLE_MODULES"].split(",")) == {"multi2vec-clip", "reranker-transformers"}


def test_inference_urls_point_at_the_service_port():
    env = WEAVIATE["environment"]
    expected = f"http://cir:{CIR['environment']['CIR_PORT']}"
    assert env["CLIP_INFERENCE_API"] == env["RERANKER_INFERENCE_API"] == expected
    assert CIR["environment"]["CIR_HOST"] == "0.0.0.0"


def test_weaviate_requires_an_api_key():
    env = WEAVIATE["environment"]
    assert env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] == "false"
    assert env["AUTHENTICATION_APIKEY_ENABLED"] == "true"
    # No default key: compose refuses to start until the operator sets one.
    assert env["AUTHENTICATION_APIKEY_ALLOWED_KEYS"].startswith("${WEAVIATE_API_KEY:?")


def test_service_is_reachable_only_on_the_internal_network():
    assert "ports" not in CIR and CIR["networks"] == ["inference"]
    assert set(WEAVIATE["networks"]) == {"public", "inference"}
    inference = COMPOSE["networks"]["inference"]
    assert inference["internal"] is True
    subnet = ipaddress.ip_network(inference["ipam"]["config"][0]["subnet"])
    trusted = json.loads(CIR["environment"]["CIR_TRUSTED_CLIENTS"])
    assert [ipaddress.ip_network(t) for t in trusted] == [subnet]


def test_service_variables_are_real_settings_and_valid(monkeypatch):
    fields = {f"CIR_{name.upper()}" for name in ServiceSettings.model_fields}
    cpu = {**CIR["environment"], **CPU["services"]["cir"]["environment"]}
    for env in (CIR["environment"], cpu):
        assert set(env) <= fields
        settings = settings_from(env, monkeypatch)
        assert settings.port == 8080 and settings.trusted_clients == ["172.28.0.0/24"]
    assert settings.onnx_variant == "int8" and settings.device == "cpu"


def test_the_gpu_service_serves_the_onnx_export_on_tensorrt_and_cuda(monkeypatch):
    """The GPU compose file serves the export's fp16 variant on onnxruntime-gpu, TensorRT
    first (fp16 engines, their cache in a volume), then CUDA; the reranker on the GPU; the
    GPU image installs onnxruntime-gpu. The CPU override serves int8 on the CPU provider."""
    settings = settings_from(CIR["environment"], monkeypatch)
    assert settings.onnx_export == "/models/current-onnx" and settings.onnx_variant == "fp16"
    assert settings.onnx_providers[:2] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert settings.trt_fp16 and settings.device == "cuda"
    assert any(v.endswith(f":{settings.trt_cache_dir}") for v in CIR["volumes"])
    installed, _ = installed_closure(IMAGE_EXTRAS["Dockerfile"])
    assert "onnxruntime-gpu" in installed and "onnxruntime" not in installed
    cpu = settings_from(
        {**CIR["environment"], **CPU["services"]["cir"]["environment"]}, monkeypatch
    )
    assert cpu.onnx_providers == ["CPUExecutionProvider"] and cpu.onnx_variant == "int8"


def test_gpu_reservation_health_checks_and_volumes():
    devices = CIR["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert CPU["services"]["cir"]["deploy"] is None  # the CPU override drops the reservation
    assert WEAVIATE["depends_on"]["cir"]["condition"] == "service_healthy"
    assert "/.well-known/ready" in " ".join(CIR["healthcheck"]["test"])
    assert "/v1/.well-known/ready" in " ".join(WEAVIATE["healthcheck"]["test"])
    named = set(COMPOSE["volumes"])
    assert "weaviate_data:/var/lib/weaviate" in WEAVIATE["volumes"]
    assert {v.split(":")[0] for v in CIR["volumes"]} - named == {"./models"}
    assert any(v.endswith(":ro") for v in CIR["volumes"])  # models are read-only


# The extras each image installs: the GPU image serves checkpoints (torch, and minilm for the
# shipped one) and exports; the CPU image serves an export only, without torch.
IMAGE_EXTRAS = {"Dockerfile": {"gpu", "torch", "minilm"}, "Dockerfile.cpu": {"cpu"}}


def image_extras(dockerfile: str) -> set[str]:
    """The extras of the project's ``pip install ".[...]"`` in ``dockerfile``."""
    (extras,) = re.findall(r'pip install "\.\[([\w,-]+)\]"', (ROOT / dockerfile).read_text())
    return set(extras.split(","))


@pytest.mark.parametrize("dockerfile", sorted(IMAGE_EXTRAS))
def test_dockerfiles_run_as_non_root_with_a_health_check(dockerfile):
    text = (ROOT / dockerfile).read_text()
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert "HEALTHCHECK" in text and "/.well-known/ready" in text
    assert image_extras(dockerfile) == IMAGE_EXTRAS[dockerfile]


def installed_closure(extras: set[str]) -> tuple[set[str], set[str]]:
    """The distributions ``pip install ".[extras]"`` brings in, resolved through the metadata
    of the packages installed here (pyproject.toml for the project itself), and those among
    them that are not installed here (whose own requirements are therefore unknown)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    todo += [Requirement(f"{project['name']}[{e}]") for e in extras]
    seen: set[tuple[str, frozenset[str]]] = set()
    unknown: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        if name == project["name"]:
            todo += [
                Requirement(r) for e in req.extras for r in project["optional-dependencies"][e]
            ]
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            unknown.add(name)
            continue
        for line in requires:
            dep = Requirement(line)
            if dep.marker is None or any(
                dep.marker.evaluate({"extra": e}) for e in {"", *req.extras}
            ):
                todo.append(dep)
    return {name for name, _ in seen}, unknown


def test_cpu_image_installs_no_torch_and_serves_an_export():
    installed, unknown = installed_closure(IMAGE_EXTRAS["Dockerfile.cpu"])
    assert not unknown and {"onnxruntime", "transformers"} <= installed
    assert "torch" not in installed, "the CPU image would install torch"
    assert "torch" in installed_closure(IMAGE_EXTRAS["Dockerfile"])[0]
    # Without torch the image can only serve an export: that is its default.
    env = dict(re.findall(r"(CIR_\w+)=(\S+)", (ROOT / "Dockerfile.cpu").read_text()))
    assert env["CIR_ONNX_EXPORT"] == CPU["services"]["cir"]["environment"]["CIR_ONNX_EXPORT"]


OPERATIONS = ROOT / "docs" / "operations.md"
SERVING = ROOT / "docs" / "serving.md"


def undocumented(names: set[str]) -> list[str]:
    """Of ``names``, those the docs do not name in backticks: a ``CIR_*`` variable must be a
    field of the service's settings and appear in docs/serving.md (whose settings table
    tests/test_settings_table.py checks against those fields); any other variable must appear
    in docs/operations.md."""
    settings = {f"CIR_{field.upper()}" for field in ServiceSettings.model_fields}
    serving, operations = SERVING.read_text(), OPERATIONS.read_text()
    missing = []
    for name in sorted(names):
        if name.startswith("CIR_"):
            if name not in settings or f"`{name}`" not in serving:
                missing.append(name)
        elif f"`{name}`" not in operations:
            missing.append(name)
    return missing


def test_every_variable_in_the_compose_files_is_documented():
    names = set(CIR["environment"]) | set(WEAVIATE["environment"])
    names |= set(CPU["services"]["cir"]["environment"])
    names |= set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    missing = undocumented(names)
    assert not missing, f"the docs do not document {missing}"


SMOKE = (ROOT / "scripts" / "compose_smoke.sh").read_text()


def base_image_arg(dockerfile: str) -> tuple[str, str]:
    """The ``ARG`` that names ``dockerfile``'s base image and its default: the base is
    replaceable (the compose smoke run has no registry) but defaults to the official one."""
    text = (ROOT / dockerfile).read_text()
    (arg,) = re.findall(r"^FROM \$\{(\w+)\}", text, re.M)
    (default,) = re.findall(rf"^ARG {arg}=(\S+)", text, re.M)
    return arg, default


def test_dockerfiles_default_to_the_official_base_images():
    assert base_image_arg("Dockerfile.cpu") == ("PYTHON_IMAGE", "python:3.11-slim")
    arg, default = base_image_arg("containers/Dockerfile.weaviate")
    assert default.startswith("debian:")
    # The smoke run passes its stand-in through exactly these ARGs.
    assert '--build-arg "PYTHON_IMAGE=$BASE_IMAGE"' in SMOKE
    assert f'--build-arg "{arg}=$BASE_IMAGE"' in SMOKE


def test_weaviate_stand_in_runs_the_compose_command_and_has_a_health_check():
    text = (ROOT / "containers" / "Dockerfile.weaviate").read_text()
    assert 'ENTRYPOINT ["/bin/weaviate"]' in text
    (cmd,) = re.findall(r"^CMD (\[.*\])", text, re.M)
    assert json.loads(cmd) == WEAVIATE["command"]
    assert "HEALTHCHECK" in text and "/v1/.well-known/ready" in text
    assert WEAVIATE["healthcheck"]["test"][1] == "wget" and "wget" in text


def test_smoke_builds_keep_the_health_checks():
    """podman's default image format (OCI) drops HEALTHCHECK: every build is --format docker."""
    builds = re.findall(r"podman build[^\n]*", SMOKE)
    assert len(builds) == 2 and all("--format docker" in b for b in builds)
