"""Models: architectures as data (``configs/*.json``) and the ``create_model`` factory."""

from __future__ import annotations

from cir_module.models.config import BackboneSpec, CIRConfig, FusionSpec, PyramidSpec
from cir_module.models.factory import create_model, get_model_config, list_models, load_model
from cir_module.models.fusion import ComposedFusionHead
from cir_module.models.model import CIRModel
from cir_module.models.pyramid import PyramidImageEncoder, pyramid_grids

__all__ = [
    "BackboneSpec",
    "CIRConfig",
    "CIRModel",
    "ComposedFusionHead",
    "FusionSpec",
    "PyramidImageEncoder",
    "PyramidSpec",
    "create_model",
    "get_model_config",
    "list_models",
    "load_model",
    "pyramid_grids",
]
