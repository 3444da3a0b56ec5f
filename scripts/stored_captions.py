"""Write a collection's stored captions as JSON ``{image name: caption}`` (the form
``cir rar faithfulness`` reads), and say which captioner wrote them.

    python scripts/stored_captions.py --collection HardVlm --port 8095 --grpc-port 50065 \
        --out runs/rar-vlm/weaviate-HardVlm.json

The image name is the stem of the object's ``path`` (``cir ingest`` stores it).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import weaviate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--grpc-port", type=int, default=50051)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    client = weaviate.connect_to_local(port=args.port, grpc_port=args.grpc_port)
    try:
        captions, captioners = {}, Counter()
        props = ["path", "caption", "captioner"]
        for obj in client.collections.get(args.collection).iterator(return_properties=props):
            captions[Path(obj.properties["path"]).stem] = obj.properties.get("caption") or ""
            captioners[obj.properties.get("captioner")] += 1
    finally:
        client.close()
    written = {name: c for name, c in captions.items() if c}
    Path(args.out).write_text(json.dumps(written, indent=0))
    print(
        f"{args.collection}: {len(captions)} objects, {len(captions) - len(written)} without "
        f"a caption, captioners {dict(captioners)}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
