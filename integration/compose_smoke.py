"""The query step of ``make compose-smoke`` (scripts/compose_smoke.sh): the demo's composed
queries against the Weaviate of the compose stack, which vectorises and reranks through the
service container. Exits 1 unless every query returns results.

    python -m integration.compose_smoke --url http://127.0.0.1:18380 --grpc-port 18381 \\
        --api-key "$WEAVIATE_API_KEY"
"""

from __future__ import annotations

import argparse
import sys

from integration.demo import demo_queries
from integration.stack import connect_to_url

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the queries; 0 when each returned results."""
    parser = argparse.ArgumentParser(prog="python -m integration.compose_smoke")
    parser.add_argument("--url", required=True, help="Weaviate's REST address")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--api-key", required=True, help="one of the stack's WEAVIATE_API_KEY")
    # A small gallery: the point is the path through the containers, not retrieval quality.
    parser.add_argument("--gallery-size", type=int, default=30)
    parser.add_argument("--queries", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args(argv)
    with connect_to_url(args.url, args.grpc_port, api_key=args.api_key) as client:
        print(f"Weaviate {client.get_meta()['version']} at {args.url} (compose stack)")
        rankings = demo_queries(
            client, gallery_size=args.gallery_size, num_queries=args.queries, top_k=args.top_k
        )
    return 0 if rankings and all(rankings) else 1


if __name__ == "__main__":
    sys.exit(main())
