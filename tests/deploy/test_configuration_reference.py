"""The README's configuration reference lists every setting of service/settings.py with its default."""

from __future__ import annotations

import re

import pytest

from tests.deploy.overlays import REPO

ROW = re.compile(r"^\| `LOWBIT_([A-Z0-9_]+)` \| `([^`]*)` \|", re.M)


def _reference_rows() -> dict[str, str]:
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Configuration reference")
    end = readme.find("\n## ", start + 1)
    section = readme[start : end if end != -1 else len(readme)]
    return {name.lower(): default for name, default in ROW.findall(section)}


def test_every_setting_is_documented_with_its_default() -> None:
    settings = pytest.importorskip("service.settings")
    rows = _reference_rows()
    fields = settings.Settings.model_fields
    assert sorted(rows) == sorted(fields), "README's configuration reference and Settings disagree"
    for name, field in fields.items():
        assert rows[name] == str(field.default), f"LOWBIT_{name.upper()}: README says {rows[name]!r}"
