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
