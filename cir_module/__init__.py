"""weaviate-cir: composed image retrieval inside stock Weaviate.

Public API: build composed queries for Weaviate's ``nearText`` / ``rerank`` (``compose_query``,
read back with ``read_composed_query``), and create and load models (``create_model``,
``load_model``). The service is :func:`cir_module.service.create_app`.

``import cir_module`` loads neither torch nor transformers: ``CIRModel``, ``create_model`` and
``load_model`` are imported on first use (they need the ``torch`` extra), so a client that only
builds queries stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cir_module.errors import InputError
from cir_module.lazy import lazy_exports
from cir_module.models.config import CIRConfig, list_models
from cir_module.query import (
    ComposedQuery,
    compose_query,
    parse_composed_query,
    read_composed_query,
)

if TYPE_CHECKING:
    from cir_module.models import CIRModel, create_model, load_model

__version__ = "0.1.0"

__all__ = [
    "CIRConfig",
    "CIRModel",
    "ComposedQuery",
    "InputError",
    "__version__",
    "compose_query",
    "create_model",
    "list_models",
    "load_model",
    "parse_composed_query",
    "read_composed_query",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CIRModel": "cir_module.models.model",
        "create_model": "cir_module.models.factory",
        "load_model": "cir_module.models.factory",
    },
)
