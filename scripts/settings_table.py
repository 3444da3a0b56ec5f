"""Print the settings table of docs/serving.md from the one settings object (keeps them in step).

python scripts/settings_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cir_module.settings import ServiceSettings


def settings_table() -> str:
    """One row per ``CIR_*`` variable: name, default, meaning."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in ServiceSettings.model_fields.items():
        if field.default_factory is not None:
            default = "see meaning" if name == "checkpoint" else repr(field.default_factory())
        else:
            default = repr(field.default)
        default = default.replace(str(Path.home()), "~").replace("|", "\\|")
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `CIR_{name.upper()}` | `{default}` | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
