"""dagster.yaml: one reconciliation run per profile at a time (DESIGN section 6).

The queued run coordinator is loaded from the repository's own dagster.yaml, as `make ui` and the
daemon load it, and its tag concurrency limit is checked against the tags Dagster puts on a
multi-partitioned run (`dagster/partition/profile`).
"""

from pathlib import Path

import yaml
from dagster import DagsterInstance

from recon_pipeline.partitions import PROFILE_DIM

ROOT = Path(__file__).resolve().parents[1]


def test_one_run_per_profile_value(tmp_path):
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        limits = coordinator.get_run_queue_config().tag_concurrency_limits
    per_profile = [lim for lim in limits if lim["key"] == f"dagster/partition/{PROFILE_DIM}"]
    assert per_profile == [{"key": "dagster/partition/profile", "limit": 1,
                            "value": {"applyLimitPerUniqueValue": True}}]


def test_demo_and_ui_instance_hide_onboarding_and_quiet_console():
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert config["telemetry"]["enabled"] is False
    assert config["nux"]["enabled"] is False
    assert config["python_logs"]["python_log_level"] == "INFO"
