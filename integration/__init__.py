"""The integration layer: real Weaviate and service processes, and the jobs that run through
them. The library and the service never import it; ``cir_module.cli`` (and the tests and
benchmarks) do.

| module | what it holds |
| --- | --- |
| ``processes`` | a child process with a log file; free ports; waiting until it is ready |
| ``weaviate_server`` | the pinned Weaviate, built once with ``go install``, run on 127.0.0.1 |
| ``service_process`` | ``cir serve`` as a child process |
| ``stack`` | both, started in order: the embedded default (``local_stack``, ``connect``) |
| ``up`` | ``cir up``: that stack kept running until Ctrl-C or SIGTERM |
| ``schema`` | a collection whose ``blob`` image our service vectorises |
| ``ingest`` | batch ingestion checked through ``failed_objects``, safe to re-run |
| ``folder_ingest`` | ``cir ingest``: a folder of image files, UUIDs from content, resumable |
| ``search`` | ``cir search``: one composed query, the reference left out |
| ``contact_sheet`` | a reference and its results as one PNG or one HTML page |
| ``ui_app``, ``ui_page`` | ``cir ui``: the search page (FastAPI) and its HTML |
| ``browser`` | a headless Chromium (selenium): the page's test and its screenshot |
| ``demo`` | ``cir demo``: a sample gallery and composed queries from the v4 client; with
  ``--ui``, the search page on that gallery |
| ``evaluate`` | ``cir eval --weaviate``: recall of composed ``nearText`` queries, and the
  reranking ablation through Weaviate's ``rerank`` |
| ``enrich``, ``enrich_ray`` | ``cir enrich``: captions written back, in-process or on Ray Data |

The names below are imported on first use, so that ``integration.processes`` (say) can be
imported without the Weaviate client or Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cir_module.lazy import lazy_exports

if TYPE_CHECKING:
    from integration.demo import run_demo
    from integration.enrich import enrich_collection
    from integration.enrich_ray import enrich_collection_ray
    from integration.evaluate import evaluate_through_weaviate, weaviate_rerank_run
    from integration.folder_ingest import ingest_folder
    from integration.ingest import ingest_objects
    from integration.processes import ProcessFailed
    from integration.schema import create_image_collection
    from integration.search import composed_search
    from integration.service_process import ServiceProcess
    from integration.stack import LocalStack, connect, connect_to_url, local_stack
    from integration.up import stand_up
    from integration.weaviate_server import WEAVIATE_VERSION, WeaviateServer, install_weaviate

__all__ = [
    "WEAVIATE_VERSION",
    "LocalStack",
    "ProcessFailed",
    "ServiceProcess",
    "WeaviateServer",
    "composed_search",
    "connect",
    "connect_to_url",
    "create_image_collection",
    "enrich_collection",
    "enrich_collection_ray",
    "evaluate_through_weaviate",
    "ingest_folder",
    "ingest_objects",
    "install_weaviate",
    "local_stack",
    "run_demo",
    "stand_up",
    "weaviate_rerank_run",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "run_demo": "integration.demo",
        "enrich_collection": "integration.enrich",
        "enrich_collection_ray": "integration.enrich_ray",
        "evaluate_through_weaviate": "integration.evaluate",
        "ingest_folder": "integration.folder_ingest",
        "ingest_objects": "integration.ingest",
        "ProcessFailed": "integration.processes",
        "weaviate_rerank_run": "integration.evaluate",
        "create_image_collection": "integration.schema",
        "composed_search": "integration.search",
        "stand_up": "integration.up",
        "ServiceProcess": "integration.service_process",
        **dict.fromkeys(
            ("LocalStack", "connect", "connect_to_url", "local_stack"), "integration.stack"
        ),
        **dict.fromkeys(
            ("WEAVIATE_VERSION", "WeaviateServer", "install_weaviate"),
            "integration.weaviate_server",
        ),
    },
)
