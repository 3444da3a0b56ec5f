"""weaviate-cir: composed image retrieval inside stock Weaviate.

Public API: build composed queries for Weaviate's ``nearText`` / ``rerank`` (``compose_query``),
create and load models (``create_model``, ``load_model``), and the service (``create_app``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from cir_module.errors import InputError
from cir_module.models import CIRConfig, CIRModel, create_model, list_models, load_model
from cir_module.query import (
    ComposedQuery,
    compose_query,
    parse_composed_query,
    read_composed_query,
)

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
