"""The CLI's ephemeral Dagster instance answers dynamic-partition questions from memory, and stays right."""

from __future__ import annotations

from dagster import DagsterInstance

from recon_pipeline.runner import remember_dynamic_partitions


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
    from recon_pipeline.runner import one_event_log_connection

    plain = DagsterInstance.ephemeral()
    assert _two_runs(plain) >= 6                            # Dagster's own: one per event or query
    instance = one_event_log_connection(DagsterInstance.ephemeral())
    storage = instance._event_storage
    assert _two_runs(instance) <= 1                         # has_table's own at most, nothing else
    with storage._connect() as conn:               # each call is its own transaction, as before
        assert conn.in_transaction()
    assert not storage._held_conn.in_transaction()


def test_a_persistent_event_log_is_left_alone(tmp_path):
    from recon_pipeline.runner import one_event_log_connection

    instance = DagsterInstance.local_temp(str(tmp_path))
    before = instance._event_storage._connect
    assert one_event_log_connection(instance) is instance
    assert instance._event_storage._connect == before
