"""The operator docs name every flag and every runbook health field the code has."""

from pathlib import Path

import pytest

from recon_pipeline.observability.health import PER_RUN_FIELDS
from recon_pipeline.settings import FLAGS, ReconSettings

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("flag", FLAGS, ids=lambda f: f.env)
def test_every_flag_is_in_the_operator_runbook_with_its_default(flag):
    text = (DOCS / "operations.md").read_text()
    row = next((line for line in text.splitlines() if line.startswith(f"| `{flag.env}` |")), None)
    assert row is not None, f"{flag.env} missing from docs/operations.md"
    default = ReconSettings().as_env()[flag.env]
    assert f"`{default}`" in row or f"`{default.removesuffix('.0')}`" in row, row


@pytest.mark.parametrize("field", PER_RUN_FIELDS + ("reconciliationLoopHealthy", "reconciliationLastRun"))
def test_every_health_field_is_documented(field):
    assert field in (DOCS / "observability.md").read_text()
