"""The README stays true to the code: every setting in its Configuration table (environment
variable and flag), every metric of /metrics in its Metrics table."""

from __future__ import annotations

import re
from pathlib import Path

from nsm_forwarder.actors.metrics import METRICS
from nsm_forwarder.config.describe import env_var, flag_name
from nsm_forwarder.config.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n#", start + len(title))
    return README[start : end if end != -1 else None]


def test_readme_configuration_table_has_every_setting() -> None:
    table = _section("## Configuration")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", table, re.M)}
    for name in Settings.model_fields:
        assert name in rows, f"README Configuration: no row for setting {name}"
        assert f"`{env_var(name)}`" in rows[name], name
        assert f"`{flag_name(name)}`" in rows[name], name
    assert set(rows) == set(Settings.model_fields)


def test_readme_metrics_table_has_every_metric() -> None:
    table = _section("### Metrics")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", table, re.M)}
    for name, kind, labels, _ in METRICS:
        assert name in rows, f"README Metrics: no row for {name}"
        cells = [c.strip() for c in rows[name].split("|")]
        assert cells[2] == kind, name
        assert cells[3] == ", ".join(f"`{label}`" for label in labels), name
    assert set(rows) == {m[0] for m in METRICS}
