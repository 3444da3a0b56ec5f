"""Models: architectures as data (``configs/*.json``) and the ``create_model`` factory.

| module | what it holds |
| --- | --- |
| ``config`` | :class:`CIRConfig` and its parts; the registered architectures (``configs/``) |
| ``factory`` | ``create_model`` / ``load_model``: configs and checkpoints to models |
| ``model`` | :class:`CIRModel`: pyramid image encoder, text encoder, fusion head; checkpoints |
| ``backbone`` | the backbone families (``clip``, ``siglip``, ``dual``) behind one interface |
| ``lvlm`` | :class:`LVLMRetriever`: the ``lvlm`` family, a vision-language model as every
  encoder (CIR-LVLM: task prompt, soft-prompt pool, pooling; the pyramid in its vision input) |
| ``cued_text`` | the ``lvlm`` family's text rows (text, then its kind's cue), without torch |
| ``pyramid``, ``fusion`` | the multi-scale image encoder and the composed-query heads |
| ``preprocess``, ``tokenizer`` | numpy image preprocessing; the offline word-level tokenizer |
| ``onnx_model`` | :class:`OnnxCIRModel` (and its ``lvlm`` form): a ``cir export`` folder on
  onnxruntime, without torch |

The names below that need torch are imported on first use, so that ``onnx_model`` (and the
service serving an export) can be imported where torch is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cir_module.lazy import lazy_exports
from cir_module.models.config import (
    BackboneSpec,
    CIRConfig,
    FusionSpec,
    LVLMSpec,
    PyramidSpec,
    get_model_config,
    list_models,
)

if TYPE_CHECKING:
    from cir_module.models.factory import create_model, load_model
    from cir_module.models.fusion import ComposedFusionHead
    from cir_module.models.lvlm import LVLMRetriever
    from cir_module.models.model import CIRModel
    from cir_module.models.pyramid import PyramidImageEncoder, pyramid_grids

__all__ = [
    "BackboneSpec",
    "CIRConfig",
    "CIRModel",
    "ComposedFusionHead",
    "FusionSpec",
    "LVLMRetriever",
    "LVLMSpec",
    "PyramidImageEncoder",
    "PyramidSpec",
    "create_model",
    "get_model_config",
    "list_models",
    "load_model",
    "pyramid_grids",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CIRModel": "cir_module.models.model",
        "ComposedFusionHead": "cir_module.models.fusion",
        "LVLMRetriever": "cir_module.models.lvlm",
        "PyramidImageEncoder": "cir_module.models.pyramid",
        "create_model": "cir_module.models.factory",
        "load_model": "cir_module.models.factory",
        "pyramid_grids": "cir_module.models.pyramid",
    },
)
