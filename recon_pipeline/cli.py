"""``recon-pipeline``: the operator's command line (DESIGN section 9), beside the ordinary ``dagster`` CLI.

Sub-commands are thin: each parses its arguments, turns bad input into one clear line on stderr
and a non-zero exit, and calls into the package. ``reconcile`` and ``demo`` run the very same
Dagster job the schedule runs, in process.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _cmd_db_upgrade(args) -> int:
    from recon_pipeline.db.engine import make_engine, redacted
    from recon_pipeline.db.migrate import upgrade
    from recon_pipeline.settings import database_url

    url = args.url or database_url()
    engine = make_engine(url)
    applied = upgrade(engine)
    engine.dispose()
    target = redacted(url)
    print(f"{target}: applied {', '.join(applied)}" if applied else f"{target}: already up to date")
    return 0


def _cmd_emulator(args) -> int:
    from recon_pipeline.exchange.emulator import serve_forever

    serve_forever(args.scenario, port=args.port, clock=args.clock)
    return 0


def _cmd_reconcile(args) -> int:
    from recon_pipeline.runner import reconcile_partition

    outcome = reconcile_partition(args.window, args.profile, dry_run=args.dry_run, apply=args.apply)
    print(outcome.summary())
    if not outcome.success:
        print(f"reconcile failed: {outcome.error}", file=sys.stderr)
        return 1
    return 0


def _cmd_backfill(args) -> int:
    from recon_pipeline.runner import backfill

    failed = 0
    for outcome in backfill(args.start, args.end, args.profile or None, dry_run=args.dry_run, apply=args.apply):
        print(outcome.summary(), flush=True)
        if not outcome.success:
            failed += 1
            print(f"  failed: {outcome.error}", file=sys.stderr, flush=True)
    if failed:
        print(f"backfill: {failed} partition(s) failed", file=sys.stderr)
        return 1
    return 0


def _cmd_demo(args) -> int:
    from recon_pipeline.demo.run import run_demo

    return run_demo(home=args.home)


def _cmd_health(args) -> int:
    import json

    from recon_pipeline.settings import database_url

    url = args.url or database_url()
    if args.serve:
        from recon_pipeline.observability.server import serve_forever

        serve_forever(url, host=args.host, port=args.port)
        return 0
    from recon_pipeline.db.engine import make_engine, redacted
    from recon_pipeline.observability.server import safe_error
    from recon_pipeline.observability.status import health_report, max_age_from_env

    max_age = max_age_from_env()
    engine = make_engine(url)
    try:
        report = health_report(engine, max_age_seconds=max_age)
    except Exception as exc:  # noqa: BLE001 - one clear line, never the password
        err = safe_error(exc, engine)
        print(f"recon-pipeline health: {redacted(url)}: {err['type']}: {err['detail']}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recon-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="Embedded default end to end: SQLite + emulator + demo scenario.")
    demo.add_argument("--home", default=os.environ.get("RECON_HOME", ".recon"),
                      help="Folder for the demo's SQLite file and Dagster instance (default .recon).")
    demo.set_defaults(func=_cmd_demo)

    db = sub.add_parser("db", help="Trading and pipeline tables.")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="Create or migrate the tables; idempotent.")
    up.add_argument("--url", default=None, help="SQLAlchemy URL (default RECON_DATABASE_URL, else SQLite).")
    up.set_defaults(func=_cmd_db_upgrade)

    emu = sub.add_parser("emulator", help="Serve a scenario file as a Binance-compatible exchange.")
    emu.add_argument("--scenario", required=True, help="Scenario JSON (DESIGN section 9).")
    emu.add_argument("--port", type=int, default=8700)
    emu.add_argument("--clock", default=None, help="ISO-8601 time that overrides the file's clock.")
    emu.set_defaults(func=_cmd_emulator)

    rec = sub.add_parser("reconcile", help="Reconcile one (window, profile) partition in process.")
    rec.add_argument("--window", required=True, help="ISO hour, e.g. 2026-11-30T09:00:00Z.")
    rec.add_argument("--profile", required=True, help="profile_id from the profiles table.")
    rec.add_argument("--dry-run", action="store_true", help="Store the whole batch as DRY_RUN.")
    rec.add_argument("--apply", action="store_true", help="Apply the stored batch after the run.")
    rec.set_defaults(func=_cmd_reconcile)

    bf = sub.add_parser("backfill", help="Reconcile a range of hourly windows, per profile in time order, in process.")
    bf.add_argument("--from", dest="start", required=True, help="First window, ISO hour (inclusive).")
    bf.add_argument("--to", dest="end", required=True, help="Last window, ISO hour (inclusive).")
    bf.add_argument("--profile", action="append", help="profile_id (repeatable; default: every profile).")
    bf.add_argument("--dry-run", action="store_true", help="Store every batch as DRY_RUN.")
    bf.add_argument("--apply", action="store_true", help="Apply each batch right after its window, in order.")
    bf.set_defaults(func=_cmd_backfill)

    hl = sub.add_parser("health", help="Print /internal/health once, or serve it and /metrics (--serve).")
    hl.add_argument("--serve", action="store_true", help="Serve /internal/health and /metrics until interrupted.")
    hl.add_argument("--port", type=int, default=8787)
    hl.add_argument("--host", default="127.0.0.1")
    hl.add_argument("--url", default=None, help="SQLAlchemy URL (default RECON_DATABASE_URL, else SQLite).")
    hl.set_defaults(func=_cmd_health)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from recon_pipeline.apply.lock import LockBusy
    from recon_pipeline.exchange.scenario import ScenarioError
    from recon_pipeline.settings import SettingsError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"recon-pipeline: configuration error: {exc}", file=sys.stderr)
        return 2
    except (ScenarioError, LookupError, ValueError, LockBusy) as exc:
        print(f"recon-pipeline {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
