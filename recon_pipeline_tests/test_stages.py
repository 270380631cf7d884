"""A run is one step: its error must still say which stage failed (recon_pipeline.assets.stages)."""

from __future__ import annotations

import traceback

import pytest

from recon_pipeline.assets.stages import exception_text, failure_text, stage, stage_of


def _raised(*stages: str) -> BaseException:
    def nest(names):
        if not names:
            raise ConnectionError("server closed the connection unexpectedly")
        with stage(names[0]):
            nest(names[1:])
    with pytest.raises(ConnectionError) as info:
        nest(list(stages))
    return info.value


def _serialised(exc: BaseException) -> str:
    """What Dagster stores as the error message (dagster_shared.error: format_exception_only)."""
    return "".join(traceback.TracebackException.from_exception(exc).format_exception_only())


@pytest.mark.parametrize("stages, expected", [
    ((), None),
    (("db_snapshot",), "db_snapshot"),
    (("reports", "db_snapshot"), "db_snapshot"),  # the innermost stage names the failure
])
def test_the_innermost_stage_is_noted_once(stages, expected):
    exc = _raised(*stages)
    assert stage_of(exc) == expected
    assert len(getattr(exc, "__notes__", [])) == (1 if stages else 0)


@pytest.mark.parametrize("stages, expected", [
    ((), "reconcile_window: ConnectionError: server closed the connection unexpectedly"),
    (("exchange_snapshot",), "exchange_snapshot: ConnectionError: server closed the connection unexpectedly"),
])
def test_failure_text_of_the_serialised_error_names_the_stage(stages, expected):
    exc = _raised(*stages)
    assert failure_text("reconcile_window", _serialised(exc)) == expected
    assert exception_text("reconcile_window", exc) == expected


def test_a_multiline_message_keeps_its_lines_without_the_note():
    with pytest.raises(ValueError) as info, stage("snapshot_structure"):
        raise ValueError("first line\nsecond line")
    assert failure_text("step", _serialised(info.value)) == "snapshot_structure: ValueError: first line\nsecond line"
