"""docs/serving.md's settings table is the one the settings object prints."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_serving_page_lists_every_setting_as_the_settings_object_describes_it():
    spec = importlib.util.spec_from_file_location(
        "settings_table", ROOT / "scripts/settings_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.settings_table()
    assert table.count("\n| `CIR_") >= 25
    assert table in (ROOT / "docs" / "serving.md").read_text()
