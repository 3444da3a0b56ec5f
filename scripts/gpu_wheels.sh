#!/usr/bin/env bash
# The wheels scripts/gpu_check.sh installs on the lent GPU machine, downloaded here into .whl/
# (git-ignored; carried to the machine beside the working tree).
#
# That machine has Python 3.12 with torch, numpy, pillow, safetensors, httpx, h11, click and
# onnxruntime, but no network, and its transformers (5.x), tokenizers (0.23) and
# huggingface_hub (1.x) are newer than the project's pins accept (transformers 4.57 checks
# tokenizers <= 0.23.0 and huggingface-hub < 1.0 when it is imported); the service's web stack
# (fastapi, starlette, pydantic and pydantic-settings, uvicorn, python-multipart) is absent.
# So: the cp312 manylinux x86_64 wheel (or the pure-Python one) of each package below, at the
# version this machine's project venv runs (its pyproject pins, and what pip resolved for the
# rest), one version of each, no dependencies pulled in. Then every requirement between the
# carried wheels is checked, and the requirements left to the machine are listed.
#
# Usage: scripts/gpu_wheels.sh   (needs PyPI; PYTHON: the pip that downloads, default python3;
#                                 VENV_PYTHON: the venv that gives the versions)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
VENV_PY=${VENV_PYTHON:-$ROOT/.venv/bin/python}
DEST=.whl
# The total must leave room for the working tree in the 64 MiB a device call carries.
MAX_MB=30  # MiB
NAMES=(
    transformers tokenizers huggingface-hub
    fastapi starlette annotated-types opentelemetry-api
    pydantic pydantic-core pydantic-settings python-dotenv typing-inspection
    uvicorn python-multipart prometheus-client
    # Newer than the machine may have: pydantic needs typing-extensions >= 4.14.1 and
    # starlette anyio >= 4; both are small, so carried rather than hoped for.
    typing-extensions anyio
)

mapfile -t PINS < <("$VENV_PY" - "${NAMES[@]}" <<'EOF'
import sys
from importlib.metadata import version

for name in sys.argv[1:]:
    print(f"{name}=={version(name)}")
EOF
)

# Into a fresh folder, then swapped in: a failed download keeps the old set, and a version
# bump never leaves two wheels of one package.
TMP=$(mktemp -d "$ROOT/.whl-new.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
for pin in "${PINS[@]}"; do
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$TMP" "$pin"
done
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT

"$VENV_PY" - "$DEST" <<'EOF'
"""Each carried requirement met by the carried version; the rest listed for the machine."""
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Markers as the GPU machine evaluates them (Python 3.12 on x86_64 Linux, no extras).
MACHINE = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
metadata = {}
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata[wheel] = Parser().parsestr(zf.read(name).decode())
carried = {canonicalize_name(m["Name"]): m["Version"] for m in metadata.values()}
broken, machine = [], set()
for wheel, meta in metadata.items():
    print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate(MACHINE):
            continue
        have = carried.get(canonicalize_name(req.name))
        if have is None:
            machine.add(f"{req.name}{req.specifier}")
        elif not req.specifier.contains(have, prereleases=True):
            broken.append(f"{meta['Name']} needs {req}, carried {have}")
total = sum(w.stat().st_size for w in metadata) / 2**20
print(f"{total:7.2f} MiB  total, {len(metadata)} wheels")
print("left to the machine:", ", ".join(sorted(machine)))
for line in broken:
    print("UNMET:", line)
sys.exit(1 if broken else 0)
EOF

total_mb=$(du -sm "$DEST" | cut -f1)
if [ "$total_mb" -ge "$MAX_MB" ]; then
    echo "$DEST holds $total_mb MiB, over the $MAX_MB MiB meant for it" >&2
    exit 1
fi
