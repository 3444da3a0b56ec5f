"""docker-compose.yml cannot be run here (no Docker engine): check that it agrees with the
service's settings and with the pinned Weaviate release."""

from __future__ import annotations

from pathlib import Path

import yaml

from cir_module.settings import ServiceSettings
from integration.weaviate_server import WEAVIATE_VERSION

COMPOSE = yaml.safe_load((Path(__file__).parents[1] / "docker-compose.yml").read_text())


def test_weaviate_image_is_the_pinned_release_with_both_modules():
    weaviate = COMPOSE["services"]["weaviate"]
    assert weaviate["image"].endswith(f":{WEAVIATE_VERSION}")
    env = weaviate["environment"]
    assert set(env["ENABLE_MODULES"].split(",")) == {"multi2vec-clip", "reranker-transformers"}


def test_inference_urls_point_at_the_service_port():
    env = COMPOSE["services"]["weaviate"]["environment"]
    service_env = COMPOSE["services"]["cir"]["environment"]
    expected = f"http://cir:{service_env['CIR_PORT']}"
    assert env["CLIP_INFERENCE_API"] == expected
    assert env["RERANKER_INFERENCE_API"] == expected
    assert service_env["CIR_HOST"] == "0.0.0.0"


def test_service_variables_are_real_settings():
    fields = {f"CIR_{name.upper()}" for name in ServiceSettings.model_fields}
    service = COMPOSE["services"]["cir"]
    assert set(service["environment"]) <= fields
    settings = ServiceSettings(
        **{k.removeprefix("CIR_").lower(): v for k, v in service["environment"].items()}
    )
    assert settings.port == 8080
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert COMPOSE["services"]["weaviate"]["depends_on"]["cir"]["condition"] == "service_healthy"
