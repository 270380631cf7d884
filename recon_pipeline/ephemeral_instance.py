"""The ephemeral Dagster instance of the CLI, the demo and ``recon-pipeline backfill``, tuned for
many in-process runs.

Without ``DAGSTER_HOME`` a run goes to an ephemeral instance: every event lands in an in-memory SQLite
event log that nobody can read once the process exits. A week-long backfill makes 168 runs of ~114
events each in one process, and Dagster's bookkeeping per run costs about as much as a third of a
window's own work (docs/performance.md). Each function here removes one measured part of it without
changing what a run computes, what Dagster reads back during the run, or what the run's result holds.
A persistent instance (``DAGSTER_HOME``, the UI's) is never touched: every function returns it as it is.
"""

from __future__ import annotations

from contextlib import contextmanager

import sqlalchemy as sa


def ephemeral_instance(python_log_level: str = "WARNING"):
    """An ephemeral instance whose console shows ``python_log_level`` and up, with every tuning below."""
    from dagster import DagsterInstance

    instance = DagsterInstance.ephemeral(settings={"python_logs": {"python_log_level": python_log_level}})
    return latest_materializations_from_entries(upsert_asset_entries(store_only_what_is_read_back(
        one_event_log_connection(remember_dynamic_partitions(instance)))))


def _in_memory_storage(instance):
    """The instance's event log when it is Dagster's in-memory one (exactly that class), else None."""
    from dagster._core.storage.event_log.in_memory import InMemoryEventLogStorage

    storage = getattr(instance, "_event_storage", None)
    if not instance.is_ephemeral or type(storage) is not InMemoryEventLogStorage:
        return None
    return storage


def one_event_log_connection(instance):
    """Let an ephemeral instance's in-memory event log use the one connection it already holds.

    Dagster's in-memory event log opens a new SQLite connection (and sets two pragmas) for every
    event it stores and every query, all under one lock: about 8 % of a window in a week-long
    backfill (docs/performance.md). The storage already keeps a connection open for its whole life
    (the in-memory database lives as long as one is open); serving every call from it, under the
    same lock, keeps each call in its own transaction as before. Dagster's schema questions
    (``has_table``, ``has_asset_key_col``) are answered from the schema listed once.
    """
    storage = _in_memory_storage(instance)
    if storage is None:
        return instance
    held = storage._held_conn
    with held.begin():
        held.execute(sa.text("PRAGMA foreign_keys=ON;")).close()

    @contextmanager
    def connect():
        with storage._db_lock, held.begin():
            yield held

    # Dagster's migration checks: asked before storing every asset event and check evaluation and in
    # every asset-record query (does this table, this asset_keys column exist?), each by inspecting
    # the schema. An in-memory log's tables are all created with it and never altered: list them once.
    with held.begin():
        inspector = sa.inspect(held)
        tables = frozenset(inspector.get_table_names())
        asset_key_columns = frozenset(c["name"] for c in inspector.get_columns("asset_keys"))

    def has_table(table_name: str) -> bool:
        return table_name in tables

    def has_asset_key_col(column_name: str) -> bool:
        return column_name in asset_key_columns

    storage._connect = connect
    storage.run_connection = lambda run_id=None: connect()
    storage.index_connection = connect
    storage.has_table = has_table
    storage.has_asset_key_col = has_asset_key_col
    storage._has_asset_key_col_on_connection = lambda conn, column_name: column_name in asset_key_columns
    return instance


def remember_dynamic_partitions(instance):
    """Answer ``has_dynamic_partition`` from memory on an ephemeral instance.

    Dagster asks it for every input and output of every step (the profile dimension is dynamic), and
    each question is a query on a fresh connection to the in-memory event log: about 5 % of a window
    in a week-long backfill (docs/performance.md). Nothing but this process can add or delete a
    partition of an ephemeral instance, and both go through the instance, so the memory is dropped on
    each of them.
    """
    if not instance.is_ephemeral:
        return instance
    known: dict[tuple[str, str], bool] = {}
    has, add, delete = instance.has_dynamic_partition, instance.add_dynamic_partitions, \
        instance.delete_dynamic_partition

    def has_dynamic_partition(partitions_def_name: str, partition_key: str) -> bool:
        key = (partitions_def_name, partition_key)
        if key not in known:
            known[key] = has(partitions_def_name, partition_key)
        return known[key]

    def add_dynamic_partitions(partitions_def_name: str, partition_keys) -> None:
        known.clear()
        add(partitions_def_name, partition_keys)

    def delete_dynamic_partition(partitions_def_name: str, partition_key: str) -> None:
        known.clear()
        delete(partitions_def_name, partition_key)

    instance.has_dynamic_partition = has_dynamic_partition
    instance.add_dynamic_partitions = add_dynamic_partitions
    instance.delete_dynamic_partition = delete_dynamic_partition
    return instance


# Events that only narrate a run: Dagster never reads them back from the instance while the run
# executes (the in-process executor tracks outputs and step state in memory, and the run's result
# collects every event from the execution itself, not from storage); on an ephemeral instance no one
# can read them afterwards either. Failures (STEP_FAILURE, RESOURCE_INIT_FAILURE, HOOK_ERRORED) are
# not among them.
NARRATION_EVENTS = frozenset({
    "STEP_OUTPUT", "STEP_INPUT", "HANDLED_OUTPUT", "LOADED_INPUT", "LOGS_CAPTURED", "HOOK_SKIPPED", "HOOK_COMPLETED",
    "RESOURCE_INIT_STARTED", "RESOURCE_INIT_SUCCESS",
})


def store_only_what_is_read_back(instance):
    """Keep an ephemeral instance from storing the events that only narrate a run.

    About half of a run's ~114 events are step outputs, handled outputs and resource and hook
    notices; storing one costs its serialisation and an insert, ~0.6 ms, so ~30 ms of a later
    backfill window (docs/performance.md). Through Dagster's own switch, ``should_store_event``, so
    such an event is neither stored nor handed to the instance's subscribers (it still reaches the
    run's result, ``ExecuteInProcessResult.all_events``, and the console). Materializations, planned
    events, check evaluations, and step and run lifecycle events are stored as before: Dagster reads
    them back (data-version provenance, run status, asset-check and asset records).
    """
    if not instance.is_ephemeral:
        return instance
    store = instance.should_store_event

    def should_store_event(event) -> bool:
        dagster_event = event.dagster_event
        if dagster_event is not None and dagster_event.event_type_value in NARRATION_EVENTS:
            return False
        return store(event)

    instance.should_store_event = should_store_event
    return instance


def upsert_asset_entries(instance):
    """Update an in-memory event log's asset entry in place, inserting it only when it is new.

    For each materialization and planned event (40 a run) Dagster's SQL event log inserts the asset's
    entry, which fails with an IntegrityError for every asset seen before, and updates it in the
    handler: ~30 ms of a later backfill window in exception handling (docs/performance.md). Here the
    entry is updated first and inserted when no row matched, with the same values (Dagster's own
    ``_get_asset_entry_values``); every call holds the storage's one lock and connection
    (:func:`one_event_log_connection`), so nothing can come between the two statements.
    """
    storage = _in_memory_storage(instance)
    if storage is None:
        return instance
    from dagster._core.storage.event_log.schema import AssetKeyTable

    if not storage.has_asset_key_index_cols():  # never on a log this Dagster created; stay exact if so
        return instance

    def store_asset_event(conn, event, event_id: int) -> None:
        if not (event.dagster_event and event.dagster_event.asset_key):
            return
        values = storage._get_asset_entry_values(event, event_id, True)
        if not values:
            return
        key = event.dagster_event.asset_key.to_string()
        updated = conn.execute(AssetKeyTable.update().values(**values).where(AssetKeyTable.c.asset_key == key))
        if updated.rowcount == 0:
            conn.execute(AssetKeyTable.insert().values(asset_key=key, **values))

    storage._store_asset_event = store_asset_event
    return instance


def latest_materializations_from_entries(instance):
    """Read an asset's latest materialization from its asset entry without a second, empty query.

    Dagster's SQL event log keeps each asset's latest materialization record on the asset's entry
    (``asset_keys.last_materialization``) and answers from there; only for an entry without a usable
    one (an old format, or a materialization older than the asset's wipe) does it look the event up in
    the event log. It builds and runs that look-up even when no entry needs it, and Dagster asks for
    the asset records of each upstream key of every output it records (data-version provenance): ~10 ms
    of a later backfill window (docs/performance.md). Here the entries that need the look-up, if any,
    go to Dagster's own method; the others are answered exactly as it answers them.
    """
    storage = _in_memory_storage(instance)
    if storage is None:
        return instance
    from typing import NamedTuple

    from dagster import AssetKey
    from dagster._core.assets import AssetDetails
    from dagster._core.event_api import EventLogRecord
    from dagster._serdes import deserialize_value

    looked_up = storage._get_latest_materialization_records

    def latest_materialization_records(raw_asset_rows):
        results, rest = {}, []
        for row in raw_asset_rows:
            asset_key = AssetKey.from_db_string(row["asset_key"])
            if not asset_key:
                continue
            details = AssetDetails.from_db_string(row["asset_details"])
            wiped = details.last_wipe_timestamp if details else None
            record = deserialize_value(row["last_materialization"], NamedTuple) if row["last_materialization"] else None
            if isinstance(record, EventLogRecord) and (wiped is None or record.event_log_entry.timestamp > wiped):
                results[asset_key] = record
            else:
                rest.append(row)
        if rest:
            results.update(looked_up(rest))
        return results

    storage._get_latest_materialization_records = latest_materialization_records
    return instance
