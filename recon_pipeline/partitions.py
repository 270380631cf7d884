"""Hour x profile: the unit of reconciliation is one closed hourly window of one trading profile.

Profiles are a dynamic dimension: the ``profiles`` table is the source of truth, and
``sync_profile_partitions`` (run by a sensor, by the CLI and by the demo) adds a profile that appears
there, so onboarding a profile needs no code change or redeploy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd
from dagster import (
    DynamicPartitionsDefinition,
    HourlyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

WINDOW_DIM = "window"
PROFILE_DIM = "profile"
HOUR_FORMAT = "%Y-%m-%d-%H:%M"
WINDOW_LENGTH = pd.Timedelta(hours=1)

# How far back a backfill may reach; override for older history.
PARTITIONS_START = os.environ.get("RECON_PARTITIONS_START", "2025-01-01-00:00")

hourly_windows = HourlyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC", fmt=HOUR_FORMAT)
profile_partitions = DynamicPartitionsDefinition(name="profile")
window_x_profile = MultiPartitionsDefinition({WINDOW_DIM: hourly_windows, PROFILE_DIM: profile_partitions})


@dataclass(frozen=True)
class Window:
    """One partition: ``[start, start + 1h)`` of one profile."""

    start: pd.Timestamp
    profile_id: str

    @property
    def end(self) -> pd.Timestamp:
        return self.start + WINDOW_LENGTH

    @property
    def key(self) -> MultiPartitionKey:
        return partition_key(self.start, self.profile_id)

    def is_live(self, now: pd.Timestamp) -> bool:
        """The scheduled run: the window ended less than one window length before the snapshot."""
        return self.end <= now < self.end + WINDOW_LENGTH or self.start <= now < self.end


def parse_window(value: str) -> pd.Timestamp:
    """``2026-11-30T09:00:00Z`` or a partition key ``2026-11-30-09:00`` -> the hour, UTC."""
    text = value.strip()
    try:
        stamp = pd.Timestamp(pd.to_datetime(text, format=HOUR_FORMAT, utc=True))
    except ValueError:
        try:
            stamp = pd.Timestamp(text)
        except ValueError as exc:
            raise ValueError(f"window {value!r} is not an ISO hour like 2026-11-30T09:00:00Z") from exc
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if stamp != stamp.floor("h"):
        raise ValueError(f"window {value!r} does not start on the hour")
    return stamp


def partition_key(window_start: pd.Timestamp, profile_id: str) -> MultiPartitionKey:
    return MultiPartitionKey({WINDOW_DIM: window_start.strftime(HOUR_FORMAT), PROFILE_DIM: profile_id})


def window_of(partition_key_value) -> Window:
    """The Window of a run's multi-partition key (a MultiPartitionKey or its ``a|b`` string)."""
    if isinstance(partition_key_value, MultiPartitionKey):
        dims = partition_key_value.keys_by_dimension
    else:
        dims = dict(zip(sorted([PROFILE_DIM, WINDOW_DIM]), str(partition_key_value).split("|"), strict=True))
    return Window(start=parse_window(dims[WINDOW_DIM]), profile_id=dims[PROFILE_DIM])


def sync_profile_partitions(instance, profile_ids) -> list[str]:
    """Register profiles from the ``profiles`` table as partitions; returns the ones added."""
    known = set(instance.get_dynamic_partitions(profile_partitions.name))
    new = sorted(set(profile_ids) - known)
    if new:
        instance.add_dynamic_partitions(profile_partitions.name, new)
    return new
