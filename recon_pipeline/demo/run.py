"""``recon-pipeline demo``: the embedded default end to end, and a summary an operator can read.

A fresh SQLite trading database is seeded with ``trading_db.json`` (the DB as the trading system
left it), the loopback exchange serves ``scenario.json`` (the truth), the latest closed window is
reconciled for every profile through the real Dagster job, each PENDING batch is applied, and the
findings, corrections and health are printed. The Dagster instance lives in ``<home>/dagster_home``
so ``make ui`` shows the same runs and materializations afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

DEMO_DIR = Path(__file__).resolve().parent
SCENARIO = DEMO_DIR / "scenario.json"
TRADING_DB = DEMO_DIR / "trading_db.json"
REPO_ROOT = DEMO_DIR.parents[1]
SNAPSHOT_ASSETS = ("db_trade_history", "db_orders", "db_positions", "exchange_fills", "exchange_orders",
                   "exchange_positions", "exchange_markets")


def _prepare_home(home: Path) -> tuple[str, Path]:
    home.mkdir(parents=True, exist_ok=True)
    db_file = home / "trading.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster_home").resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists() and (REPO_ROOT / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    url = f"sqlite:///{db_file.resolve()}"
    os.environ["RECON_DATABASE_URL"] = url
    return url, dagster_home


def _snapshot_sizes(instance, run_id: str) -> dict[str, int]:
    from dagster import DagsterEventType

    sizes = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        mat = record.dagster_event.step_materialization_data.materialization
        name = mat.asset_key.path[-1]
        if name in SNAPSHOT_ASSETS and "dagster/row_count" in mat.metadata:
            sizes[name] = int(mat.metadata["dagster/row_count"].value)
    return sizes


def _table(engine, sql: str) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql))
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _print_counts(title: str, frame: pd.DataFrame, by: list[str]) -> None:
    print(f"  {title}:")
    if frame.empty:
        print("    (none)")
        return
    for key, count in frame.groupby(by).size().items():
        label = " / ".join(key) if isinstance(key, tuple) else key
        print(f"    {label:<44} {count}")


def run_demo(home: str | Path = ".recon") -> int:
    from recon_pipeline.db.engine import make_engine
    from recon_pipeline.db.migrate import upgrade
    from recon_pipeline.db.seed import seed_file
    from recon_pipeline.exchange.emulator import EmulatorServer
    from recon_pipeline.exchange.scenario import load_scenario
    from recon_pipeline.runner import get_instance, reconcile_partition
    from recon_pipeline.settings import account_env_prefix

    url, dagster_home = _prepare_home(Path(home))
    engine = make_engine(url)
    upgrade(engine)
    seeded = seed_file(engine, TRADING_DB)
    scenario = load_scenario(SCENARIO)
    print(f"demo: trading DB {url} seeded ({', '.join(f'{t} {n}' for t, n in seeded.items())})")

    with EmulatorServer(scenario) as server:
        for name, account in scenario.accounts.items():
            prefix = account_env_prefix(name)
            os.environ[prefix + "API_KEY"] = account.api_key
            os.environ[prefix + "SECRET"] = account.secret
            os.environ[prefix + "URL"] = server.url
        clock = pd.Timestamp(scenario.clock_ms, unit="ms", tz="UTC")
        window = clock.floor("h") - pd.Timedelta(hours=1)
        print(f"demo: exchange emulator at {server.url}, exchange clock {clock.isoformat()}")
        print(f"demo: reconciling window {window.isoformat()} .. {(window + pd.Timedelta(hours=1)).isoformat()}\n")
        instance = get_instance()
        profiles = _table(engine, "SELECT profile_id, account, market_type, sub_tag FROM profiles ORDER BY profile_id")
        failures = 0
        for prof in profiles.itertuples(index=False):
            outcome = reconcile_partition(window, prof.profile_id, apply=True, instance=instance, db_url=url)
            print(f"profile {prof.profile_id} (account {prof.account}, {prof.market_type}, sub_tag {prof.sub_tag})")
            if not outcome.success:
                failures += 1
                print(f"  FAILED: {outcome.error}\n")
                continue
            sizes = _snapshot_sizes(instance, outcome.run_id)
            print("  snapshot rows: " + ", ".join(f"{k}={sizes.get(k, 0)}" for k in SNAPSHOT_ASSETS))
            findings = _table(engine, "SELECT profile_id, kind, COALESCE(reason, '') AS reason FROM recon_findings")
            findings = findings[findings["profile_id"] == prof.profile_id].copy()
            findings["label"] = findings["kind"] + findings["reason"].map(lambda r: f" ({r})" if r else "")
            _print_counts("findings", findings, ["label"])
            corr = _table(engine, "SELECT profile_id, action, status FROM recon_corrections")
            _print_counts("corrections", corr[corr["profile_id"] == prof.profile_id], ["action", "status"])
            health = json.loads(outcome.run_row.get("health") or "{}")
            print(f"  batch: {outcome.batch.get('batch_id')} -> {outcome.batch.get('status')}")
            print("  health: " + ", ".join(f"{k}={v}" for k, v in health.items() if k.startswith("reconciliation")))
            print()
    print(f"demo: done. Browse it: `make ui` (DAGSTER_HOME={dagster_home}), then open http://127.0.0.1:3000")
    engine.dispose()
    return 1 if failures else 0
