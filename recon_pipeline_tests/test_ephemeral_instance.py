"""The CLI's ephemeral Dagster instance, tuned for many in-process runs, reads back what a plain one does."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from recon_pipeline.ephemeral_instance import (
    NARRATION_EVENTS,
    ephemeral_instance,
    latest_materializations_from_entries,
    one_event_log_connection,
    remember_dynamic_partitions,
    store_only_what_is_read_back,
    upsert_asset_entries,
)


def test_dynamic_partition_answers_are_remembered_and_forgotten_on_every_change(monkeypatch):
    instance = DagsterInstance.ephemeral()
    asked = []
    real = instance.has_dynamic_partition
    monkeypatch.setattr(instance, "has_dynamic_partition", lambda d, k: asked.append(k) or real(d, k))
    remember_dynamic_partitions(instance)

    assert not instance.has_dynamic_partition("profile", "alpha")
    instance.add_dynamic_partitions("profile", ["alpha", "beta"])
    assert instance.has_dynamic_partition("profile", "alpha")       # not the stale "no"
    assert instance.has_dynamic_partition("profile", "alpha")
    assert instance.has_dynamic_partition("profile", "beta")
    assert asked == ["alpha", "alpha", "beta"]                       # the repeat came from memory
    instance.delete_dynamic_partition("profile", "alpha")
    assert not instance.has_dynamic_partition("profile", "alpha")
    assert instance.get_dynamic_partitions("profile") == ["beta"]


def test_a_persistent_instance_is_left_alone(tmp_path):
    instance = DagsterInstance.local_temp(str(tmp_path))
    assert remember_dynamic_partitions(instance) is instance
    assert "has_dynamic_partition" not in vars(instance)


def _two_runs(instance) -> int:
    """Store two materializations of an asset and read them back; the connections the event log opened."""
    import sqlalchemy as sa
    from dagster import AssetKey, AssetMaterialization

    opened = []
    sa.event.listen(instance._event_storage._engine, "connect", lambda *a: opened.append(1))
    for n in range(2):
        instance.report_runless_asset_event(AssetMaterialization("thing", metadata={"n": n}))
        assert instance.get_latest_materialization_event(AssetKey("thing")) is not None
    records = instance.fetch_materializations(AssetKey("thing"), limit=10).records
    assert [r.asset_materialization.metadata["n"].value for r in records] == [1, 0]   # stored, read back
    return len(opened)


def test_the_ephemeral_event_log_serves_every_call_from_its_one_connection():
    plain = DagsterInstance.ephemeral()
    assert _two_runs(plain) >= 6                            # Dagster's own: one per event or query
    instance = one_event_log_connection(DagsterInstance.ephemeral())
    storage = instance._event_storage
    assert _two_runs(instance) == 0                         # not even has_table's own
    with storage._connect() as conn:               # each call is its own transaction, as before
        assert conn.in_transaction()
    assert not storage._held_conn.in_transaction()
    plain_storage = plain._event_storage
    for table in ("event_logs", "asset_keys", "asset_event_tags", "asset_check_executions", "dynamic_partitions",
                  "no_such_table"):
        assert storage.has_table(table) == plain_storage.has_table(table), table
    for column in ("last_materialization_timestamp", "cached_status_data", "wipe_timestamp", "no_such_column"):
        assert storage.has_asset_key_col(column) == plain_storage.has_asset_key_col(column), column


def test_a_persistent_event_log_is_left_alone(tmp_path):
    instance = DagsterInstance.local_temp(str(tmp_path))
    before = instance._event_storage._connect
    assert one_event_log_connection(instance) is instance
    assert instance._event_storage._connect == before


# --- a small partitioned job with a check, run on a plain and on the tuned ephemeral instance ---------

from dagster import (  # noqa: E402
    AssetCheckResult,
    Definitions,
    Output,
    StaticPartitionsDefinition,
    asset,
    asset_check,
    define_asset_job,
    mem_io_manager,
)

PARTS = StaticPartitionsDefinition(["a", "b"])


@asset(partitions_def=PARTS)
def upstream(context):
    return Output(context.partition_key * 2, metadata={"rows": 2})


@asset(partitions_def=PARTS)
def downstream(upstream: str) -> str:
    return upstream.upper()


@asset_check(asset=downstream, blocking=True)
def downstream_is_upper(downstream: str) -> AssetCheckResult:
    return AssetCheckResult(passed=downstream.isupper())


# Resolved once, at import: resolving Definitions inside a test reads Dagster's process-global load
# context, which may still point at an instance an earlier test dropped.
JOB = Definitions(assets=[upstream, downstream], asset_checks=[downstream_is_upper],
                  resources={"io_manager": mem_io_manager},   # as the runner's on an ephemeral instance
                  jobs=[define_asset_job("both", selection=[upstream, downstream], partitions_def=PARTS)],
                  ).resolve_job_def("both")


def _runs(instance) -> list:
    return [JOB.execute_in_process(partition_key=key, instance=instance) for key in ("a", "b", "a")]


def _read_back(instance, results) -> dict:
    """What Dagster (and our code: sensors, the demo) reads back from an instance after the runs."""
    from dagster import AssetCheckKey, AssetKey, DagsterEventType

    keys = [AssetKey("upstream"), AssetKey("downstream")]
    records = {r.asset_entry.asset_key: r.asset_entry for r in instance.get_asset_records(keys)}
    run_ids = [r.run_id for r in results]
    out = {"asset_keys": sorted(k.to_string() for k in instance.get_asset_keys())}
    for key in keys:
        entry = records[key]
        mats = instance.fetch_materializations(key, limit=10).records
        out[key.to_user_string()] = {
            "last_materialization_run": run_ids.index(entry.last_materialization_record.run_id),
            "last_run": run_ids.index(entry.last_run_id),
            "materialized_partitions": sorted(instance.get_materialized_partitions(key)),
            "materializations": [(run_ids.index(m.run_id), m.partition_key) for m in mats],
            "data_version": entry.last_materialization.tags.get("dagster/data_version") is not None,
        }
    check = AssetCheckKey(AssetKey("downstream"), "downstream_is_upper")
    out["check"] = [(run_ids.index(e.run_id), e.status.value)
                    for e in instance.event_log_storage.get_asset_check_execution_history(check, limit=10)]
    out["run_status"] = [instance.get_run_by_id(r).status.value for r in run_ids]
    out["materialization_logs"] = [len(instance.all_logs(r, of_type=DagsterEventType.ASSET_MATERIALIZATION))
                                   for r in run_ids]
    return out


def test_the_tuned_instance_reads_back_what_a_plain_one_does():
    plain = DagsterInstance.ephemeral()
    tuned = ephemeral_instance()
    plain_results = _runs(plain)
    tuned_results = _runs(tuned)
    assert all(r.success for r in plain_results + tuned_results)
    assert _read_back(tuned, tuned_results) == _read_back(plain, plain_results)
    # the run's result still holds every event, narration included
    assert [e.event_type_value for e in tuned_results[0].all_events] == \
        [e.event_type_value for e in plain_results[0].all_events]


def test_narration_is_not_stored_everything_else_is():
    plain, tuned = DagsterInstance.ephemeral(), store_only_what_is_read_back(DagsterInstance.ephemeral())
    plain_result, tuned_result = _runs(plain)[0], _runs(tuned)[0]

    def stored(instance, result):
        return [r.event_log_entry.dagster_event.event_type_value
                for r in instance.get_records_for_run(result.run_id, limit=1000).records
                if r.event_log_entry.dagster_event is not None]

    plain_types, tuned_types = stored(plain, plain_result), stored(tuned, tuned_result)
    assert {"STEP_OUTPUT", "HANDLED_OUTPUT"} <= set(plain_types)       # what Dagster stores by itself
    assert not set(tuned_types) & NARRATION_EVENTS
    assert tuned_types == [t for t in plain_types if t not in NARRATION_EVENTS]


def test_asset_entries_are_updated_in_place_without_integrity_errors():
    import sqlalchemy as sa

    instance = upsert_asset_entries(one_event_log_connection(DagsterInstance.ephemeral()))
    failed = []
    sa.event.listen(instance._event_storage._engine, "handle_error", lambda ctx: failed.append(ctx.original_exception))
    results = _runs(instance)
    assert all(r.success for r in results)
    assert failed == []                                   # Dagster's own insert fails for every asset seen before
    with instance._event_storage._connect() as conn:
        rows = conn.execute(sa.text("SELECT asset_key FROM asset_keys ORDER BY asset_key")).fetchall()
    assert [r[0] for r in rows] == ['["downstream"]', '["upstream"]']    # one entry per asset, as before


def test_every_tuning_leaves_a_persistent_instance_alone(tmp_path):
    instance = DagsterInstance.local_temp(str(tmp_path))
    storage = instance._event_storage
    for tune in (store_only_what_is_read_back, upsert_asset_entries, latest_materializations_from_entries):
        assert tune(instance) is instance
    assert "should_store_event" not in vars(instance)
    assert "_store_asset_event" not in vars(storage)
    assert "_get_latest_materialization_records" not in vars(storage)



def _entries_after_runs(wipe: bool):
    from dagster import AssetKey

    instance = DagsterInstance.ephemeral()
    dagster_own = instance._event_storage._get_latest_materialization_records
    latest_materializations_from_entries(instance)
    assert all(r.success for r in _runs(instance))
    if wipe:  # an observation after the wipe lists the entry again, with its record from before the wipe
        from dagster import AssetObservation

        instance.wipe_assets([AssetKey("upstream")])
        instance.report_runless_asset_event(AssetObservation(asset_key="upstream"))
    return instance, dagster_own, [dict(r) for r in instance._event_storage._fetch_asset_rows()]


@pytest.mark.parametrize("wipe", [False, True], ids=["as stored", "one asset wiped"])
@pytest.mark.parametrize("entries", ["all", "without stored records", "recorded before a wipe", "mixed", "none"])
def test_latest_materializations_equal_dagsters_own_answer(wipe, entries):
    from dagster._core.assets import AssetDetails
    from dagster._serdes import serialize_value

    instance, dagster_own, rows = _entries_after_runs(wipe)
    legacy = [{**r, "last_materialization": None} for r in rows]   # entries of an older format
    # an entry whose stored record predates the asset's wipe (Dagster must look the asset up instead)
    stale = [{**r, "asset_details": serialize_value(AssetDetails(last_wipe_timestamp=4_102_444_800.0))}
             for r in rows]
    case = {"all": rows, "without stored records": legacy, "recorded before a wipe": stale,
            "mixed": [*rows[:1], *stale[1:]], "none": []}[entries]
    assert len(rows) == 2
    tuned = instance._event_storage._get_latest_materialization_records
    assert tuned is not dagster_own
    assert tuned(case) == dagster_own(case)


def test_entries_holding_their_record_need_no_look_up():
    from dagster import AssetKey

    instance = DagsterInstance.ephemeral()
    storage = instance._event_storage
    dagster_own = storage._get_latest_materialization_records
    looked_up: list[int] = []
    storage._get_latest_materialization_records = lambda rows: (looked_up.append(len(rows)), dagster_own(rows))[1]
    latest_materializations_from_entries(instance)
    assert all(r.success for r in _runs(instance))
    looked_up.clear()
    records = instance.get_asset_records([AssetKey("upstream"), AssetKey("downstream")])
    assert sorted(r.asset_entry.last_materialization_record.event_log_entry.dagster_event.asset_key.to_user_string()
                  for r in records) == ["downstream", "upstream"]
    assert looked_up == []                                     # Dagster's method would have queried
    from dagster import AssetObservation

    instance.wipe_assets([AssetKey("upstream")])
    instance.report_runless_asset_event(AssetObservation(asset_key="upstream"))
    records = instance.get_asset_records([AssetKey("upstream"), AssetKey("downstream")])
    assert looked_up == [1]                          # only the wiped asset's entry is looked up
    assert {r.asset_entry.asset_key.to_user_string(): r.asset_entry.last_materialization_record is None
            for r in records} == {"upstream": True, "downstream": False}
