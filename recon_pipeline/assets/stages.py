"""Which part of a run failed: the run is one Dagster step, its error names the stage inside it.

A (window, profile) runs as one step (``recon_pipeline.assets.window``), so Dagster's step key no
longer says whether the database read, the exchange fetch, a rule or the batch failed. Each stage
adds a note to the exception passing through it; the note travels with Dagster's serialised error
(``traceback.format_exception_only`` prints notes), and :func:`failure_text` turns it back into the
``"<stage>: <error>"`` text the CLI, ``recon_runs.error`` and ``/internal/health`` show.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

NOTE = "recon stage: "


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Name ``name`` in any exception raised inside (the innermost stage wins)."""
    try:
        yield
    except Exception as exc:
        if stage_of(exc) is None:
            exc.add_note(NOTE + name)
        raise


def stage_of(exc: BaseException) -> str | None:
    for note in getattr(exc, "__notes__", ()):
        if note.startswith(NOTE):
            return note[len(NOTE):]
    return None


def failure_text(step: str, message: str) -> str:
    """``"<stage>: <message>"`` from a serialised error message carrying a stage note, else
    ``"<step>: <message>"``."""
    lines = message.strip().splitlines()
    stages = [line[len(NOTE):].strip() for line in lines if line.startswith(NOTE)]
    rest = "\n".join(line for line in lines if not line.startswith(NOTE)).strip()
    return f"{stages[0] if stages else step}: {rest}"


def exception_text(step: str, exc: BaseException) -> str:
    """:func:`failure_text` of a live exception (a failure hook sees the exception, not its message)."""
    return f"{stage_of(exc) or step}: {type(exc).__name__}: {exc}"
