"""Snapshot stage: both sides of one (window, profile), each a complete typed dataframe or a failed run.

The database is read first (its OPEN slices decide how far back exchange fills are needed, its open
orders which ids to look up), then the exchange, for the profile's whole account: parity nets
across every profile sharing the account, while corrections are only proposed for the running one.
A failed or malformed exchange response raises here, so no later stage ever sees a partial
snapshot (an empty position list read as "flat" would close real positions).

The frames are then validated (``recon_pipeline.validation.snapshots``): a blocking ``structure``
asset check per frame (columns, dtypes, keys; one Great Expectations run for all seven; a failure
raises and fails the run before any rule, so no batch is stored), then the row rules: bad rows are
excluded from the frames yielded and reported as BAD_ROW findings in ``db_bad_rows`` /
``exchange_bad_rows`` (with the parity taint that keeps ``position_parity`` conservative on their
instruments). Every frame's metadata shows rows in / rows excluded.

The stage is a generator of Dagster events run inside the one step of a window
(``recon_pipeline.assets.window``); it returns the frames to the next stage.
"""


from dataclasses import dataclass

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetOut,
    MetadataValue,
    Output,
)

from recon_pipeline import schemas
from recon_pipeline.assets.metadata import asset_keys, column_schema, frame_metadata, markdown_table
from recon_pipeline.assets.stages import stage
from recon_pipeline.db import copy as pgcopy
from recon_pipeline.db import read
from recon_pipeline.partitions import Window
from recon_pipeline.resources import ExchangeClients, TradingDatabase
from recon_pipeline.settings import ReconSettings
from recon_pipeline.validation.snapshots import FRAME_SPECS

SNAPSHOTS = "snapshots"


STRUCTURE_CHECK = "structure"
DB_FRAMES = ("db_trade_history", "db_orders", "db_positions")
EXCHANGE_FRAMES = ("exchange_fills", "exchange_orders", "exchange_positions", "exchange_markets")
BAD_ROW_PREVIEW = ["reason", "symbol", "trade_id", "order_id", "exchange_order_id", "fill_ids", "detail"]


def _structure_specs(frames: tuple[str, ...]) -> list[AssetCheckSpec]:
    return [AssetCheckSpec(STRUCTURE_CHECK, asset=name, blocking=True, description=(
        f"{name}: columns and dtypes exactly the schema's, key non-null and unique (Great Expectations). "
        "A failure fails the run: such a snapshot cannot be trusted.")) for name in frames]


def _validate_structure(context: AssetExecutionContext, frames: dict[str, pd.DataFrame]):
    """Yield one blocking check result per frame; raise SnapshotStructureError when any failed."""
    from recon_pipeline.validation.snapshots import SnapshotStructureError, check_structures

    results = check_structures(frames)
    for name, df in frames.items():
        res = results[name]
        yield AssetCheckResult(
            asset_key=name, check_name=STRUCTURE_CHECK, passed=res.success, severity=AssetCheckSeverity.ERROR,
            metadata={"rows": MetadataValue.int(len(df)),
                      "expectations": MetadataValue.int(len(res.outcomes)),
                      "result": MetadataValue.text(res.describe()[:2000]),
                      "failures": MetadataValue.json(res.as_dict()["failures"])})
    if not all(r.success for r in results.values()):
        error = SnapshotStructureError(list(results.values()))
        context.log.error(str(error))
        raise error


def _row_metadata(name: str, bad_rows) -> dict:
    """Rows in / rows excluded of one snapshot frame (the rest is what the rules see)."""
    meta = {
        "rows_in": MetadataValue.int(int(bad_rows.rows_in.get(name, 0))),
        "rows_excluded": MetadataValue.int(int(bad_rows.rows_excluded.get(name, 0))),
        "excluded_by_reason": MetadataValue.json(bad_rows.excluded_by_reason.get(name, {})),
    }
    if name in bad_rows.duplicates_dropped:
        meta["identical_duplicates_dropped"] = MetadataValue.int(int(bad_rows.duplicates_dropped[name]))
    return meta


# the columns of each snapshot frame's preview in the UI (None: all); its schema is FRAME_SPECS'
PREVIEW_COLUMNS = {
    "db_trade_history": ["trade_id", "profile_id", "symbol", "side", "status", "entry_qty", "exit_qty"],
    "db_orders": ["order_id", "profile_id", "symbol", "role", "status", "qty", "filled_qty"],
    "db_positions": None,
    "exchange_fills": ["fill_id", "exchange_order_id", "symbol", "side", "qty", "price", "ts"],
    "exchange_orders": ["exchange_order_id", "client_order_id", "symbol", "side", "status", "qty", "filled_qty"],
    "exchange_positions": None,
    "exchange_markets": ["symbol", "market_type", "amount_precision", "contract_size", "mark_price"],
}


def _frame_outputs(context: AssetExecutionContext, side: str, frames: dict[str, pd.DataFrame], bad_rows):
    """The checked frames of one side as outputs, each with its schema, preview and rows in / excluded."""
    if len(bad_rows.findings):
        context.log.warning(f"{side} snapshot: {len(bad_rows.findings)} bad rows excluded: {bad_rows.by_reason()}")
    for name, df in frames.items():
        yield Output(df, name, metadata={**frame_metadata(df, preview_columns=PREVIEW_COLUMNS[name]),
                                         **_row_metadata(name, bad_rows)})


def _bad_rows_output(bad_rows, output_name: str) -> Output:
    findings = bad_rows.findings
    return Output(bad_rows, output_name, metadata={
        "dagster/row_count": MetadataValue.int(len(findings)),
        "rows_in": MetadataValue.json({k: int(v) for k, v in bad_rows.rows_in.items()}),
        "rows_excluded": MetadataValue.json({k: int(v) for k, v in bad_rows.rows_excluded.items()}),
        "identical_duplicates_dropped": MetadataValue.json({k: int(v) for k, v in bad_rows.duplicates_dropped.items()}),
        "by_reason": MetadataValue.json(bad_rows.by_reason()),
        "parity_no_go_instruments": MetadataValue.text(
            ", ".join(sorted(f"{a}:{i}" for a, i in bad_rows.taint.no_go)) or "(none)"),
        "parity_not_evaluated_instruments": MetadataValue.text(
            ", ".join(sorted(f"{a}:{i}" for a, i in bad_rows.taint.not_evaluated)) or "(none)"),
        "preview": MetadataValue.md(markdown_table(findings, BAD_ROW_PREVIEW, 25)),
    })


@dataclass(frozen=True)
class ProfileState:
    """The running profile and the pipeline state the rules need besides the trading rows."""

    profile: dict
    profiles: pd.DataFrame      # every profile on the account (PROFILES)
    pauses: pd.DataFrame        # TRADING_PAUSES of the account's profiles
    ledger: pd.DataFrame        # CAPITAL_LEDGER
    streaks: pd.DataFrame       # PARITY_STREAKS
    run_history: pd.DataFrame   # RUN_HISTORY of the running profile, before this window


@dataclass(frozen=True)
class SnapshotClock:
    """Exchange time, never the local clock: settle interval, live window and pauses are measured on it."""

    now: pd.Timestamp           # exchange server time at the snapshot
    as_of: pd.Timestamp         # window end (historical) or now (live)
    live: bool
    fills_since: pd.Timestamp   # oldest OPEN slice entry - grace, and at least the window start
    window_start: pd.Timestamp
    window_end: pd.Timestamp


class UnknownProfileError(LookupError):
    pass


def load_profile(conn, profile_id: str) -> tuple[dict, pd.DataFrame]:
    """The profile and every profile on its account (parity nets across them), from one read."""
    every = read.read_profiles(conn)
    match = every[every["profile_id"] == profile_id]
    if match.empty:
        raise UnknownProfileError(f"profile {profile_id!r} is not in the profiles table")
    profile = match.iloc[0].to_dict()
    return profile, every[every["account"] == profile["account"]].reset_index(drop=True)


def _frame_out(name: str, description: str) -> AssetOut:
    """A snapshot frame's output: its columns, dtypes and descriptions are definition metadata."""
    return AssetOut(group_name=SNAPSHOTS, description=description,
                    metadata={"dagster/column_schema": column_schema(FRAME_SPECS[name].schema)})


DB_OUTS = {
    "db_trade_history": _frame_out("db_trade_history", description=(
        "trade_history lifecycle slices of the profile's account: every OPEN slice (all profiles "
        "on the account, for parity netting) and the slices touched in the window.")),
    "db_orders": _frame_out("db_orders", description=(
        "orders of the account's profiles: open ones and those updated in the window.")),
    "db_positions": _frame_out("db_positions", description=(
        "positions rows of the account's profiles (what the dashboard reads).")),
    "db_profile_state": AssetOut(group_name=SNAPSHOTS, description=(
        "The profile, its account's profiles, trading pauses, capital ledger, parity streaks and "
        "earlier evaluations: the state the watchdog and the ledger rules read.")),
    "db_bad_rows": AssetOut(group_name=SNAPSHOTS, description=(
        "DB snapshot rows excluded for a bad value (BAD_ROW findings with a reason code): the rest of "
        "the window is still reconciled, and parity stays conservative on their instruments.")),
}
EXCHANGE_OUTS = {
    "exchange_fills": _frame_out("exchange_fills", description=(
        "Every fill of the account from the oldest OPEN slice's entry minus grace (at least the "
        "window start) up to the as-of time, per symbol, paged without loss, deduplicated by id.")),
    "exchange_orders": _frame_out("exchange_orders", description=(
        "Exchange orders touched in that span, every open order, and each DB open order missing "
        "from the open list looked up by id.")),
    "exchange_positions": _frame_out("exchange_positions", description=(
        "Swap positions (signed base qty per position side) and spot balances (per asset).")),
    "exchange_markets": _frame_out("exchange_markets", description=(
        "Markets of the account's exchange: precision, contract size and mark price.")),
    "snapshot_clock": AssetOut(group_name=SNAPSHOTS, description=(
        "Exchange server time of the snapshot, the as-of time and whether this is the live run.")),
    "exchange_bad_rows": AssetOut(group_name=SNAPSHOTS, description=(
        "Exchange snapshot rows excluded for a bad value (BAD_ROW findings with a reason code). Every "
        "OPEN slice on their instruments is no-go for parity (quarantined, never closed at mark); a bad "
        "position row makes its instrument 'not evaluated'.")),
}
# what each snapshot asset is read from (its lineage in the UI): the exchange side is fetched for
# the DB's OPEN slices and open orders
SNAPSHOT_DEPS = {**{name: set() for name in DB_OUTS},
                 **{name: asset_keys("db_trade_history", "db_orders", "db_profile_state") for name in EXCHANGE_OUTS}}
STRUCTURE_CHECKS = _structure_specs(DB_FRAMES + EXCHANGE_FRAMES)


@dataclass(frozen=True)
class DbRead:
    """The trading database as read, before any check."""

    slices: pd.DataFrame
    orders: pd.DataFrame
    positions: pd.DataFrame
    state: ProfileState

    @property
    def account(self) -> str:
        return self.state.profile["account"]

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"db_trade_history": self.slices, "db_orders": self.orders, "db_positions": self.positions}


def read_db(trading_db: TradingDatabase, window: Window, settings: ReconSettings) -> DbRead:
    """The window's DB frames. On Postgres the slices are read on a second connection while this one
    reads the rest: both reads are mostly waiting for the server (a window of the week bench: 78 ms
    in a row, 27 ms of it in this process). Each statement reads committed data as of its own start
    (READ COMMITTED), on one connection or two alike."""
    from concurrent.futures import ThreadPoolExecutor

    with trading_db.connect() as conn:
        profile, profiles = load_profile(conn, window.profile_id)
        account = profile["account"]
        ids = profiles["profile_id"].tolist()

        def read_slices(c) -> pd.DataFrame:
            return read.read_trade_history(c, account, window.start, window.end, settings.backfill_grace_minutes)

        def on_own_connection() -> pd.DataFrame:
            with trading_db.connect() as other:
                return read_slices(other)

        with ThreadPoolExecutor(max_workers=1) as alongside:
            pending = alongside.submit(on_own_connection) if pgcopy.is_postgres(conn) else None
            slices = read_slices(conn) if pending is None else None  # SQLite: one connection, in order
            orders = read.read_orders(conn, account, window.start, window.end)
            positions = read.read_positions(conn, ids)
            state = ProfileState(
                profile=profile, profiles=profiles, pauses=read.read_pauses(conn, ids),
                ledger=read.read_ledger(conn, ids), streaks=read.read_streaks(conn, ids),
                run_history=read.read_run_history(conn, window.profile_id, window.start),
            )
            if pending is not None:
                slices = pending.result()
    return DbRead(slices, orders, positions, state)



def snapshot_clock(window: Window, now: pd.Timestamp, slices: pd.DataFrame, grace_minutes: float) -> SnapshotClock:
    live = window.is_live(now)
    as_of = now if live else min(window.end, now)
    open_entries = slices.loc[slices["status"] == "OPEN", "entry_time"].dropna()
    since = window.start
    if not open_entries.empty:
        since = min(since, open_entries.min() - pd.Timedelta(minutes=grace_minutes))
    return SnapshotClock(now=now, as_of=as_of, live=live, fills_since=since,
                         window_start=window.start, window_end=window.end)


def symbols_to_fetch(slices: pd.DataFrame, orders: pd.DataFrame, markets: pd.DataFrame,
                     positions: pd.DataFrame, open_orders: pd.DataFrame | None = None) -> list[str]:
    """Symbols whose fills the window needs: fetch_my_trades needs one per call.

    Every symbol the DB knows for the account, every swap symbol with a position, every symbol with
    an open order on the exchange. Symbols the exchange does not list are left out here and surface
    as UNKNOWN_SYMBOL in the rules.
    """
    wanted = set(slices["symbol"].dropna().unique()) | set(orders["symbol"].dropna().unique())
    swap = positions[positions["market_type"] == "swap"]
    wanted |= set(swap.loc[swap["qty"] != 0, "instrument"].dropna().unique())
    if open_orders is not None:
        wanted |= set(open_orders["symbol"].dropna().unique())
    return sorted(wanted & set(markets["symbol"]))


def _fetch_account(clients, account: str, window: Window, market_types: set[str], db_trade_history: pd.DataFrame,
                   db_orders: pd.DataFrame, grace_minutes: float, client_options: dict | None = None):
    """Every exchange frame of the account, in the order that loses nothing (see the module docstring).

    ``clients`` are the account's pool (``ExchangeClients.clients``): the first takes the clock,
    markets and positions; the fills and orders of the symbols are fetched over all of them, per
    symbol fills first (``fetch.fetch_activity``). In a ``recon-pipeline backfill`` the part of the
    window's history that can no longer change may have been read ahead (``exchange.read_ahead``),
    and the next window's is read ahead while this one is reconciled.
    """
    from recon_pipeline.exchange import fetch, read_ahead

    ahead = read_ahead.active()
    spans = ahead.take(account, fetch.epoch_ms(window.start), fetch.epoch_ms(window.end)) if ahead is not None else {}
    if ahead is not None:  # two fetching processes share one budget
        read_ahead.share_rate_limit(clients, ahead.budget_share)

    client = clients[0]
    now = fetch.fetch_server_time(client)
    clock = snapshot_clock(window, now, db_trade_history, grace_minutes)
    markets = fetch.fetch_markets_frame(client, account)
    swap_symbols = sorted(markets.loc[markets["market_type"] == "swap", "symbol"])
    positions = fetch.fetch_positions_frame(client, account, market_types, swap_symbols)
    symbols = symbols_to_fetch(db_trade_history, db_orders, markets, positions)
    listed = set(markets["symbol"])
    open_db = db_orders[db_orders["status"].isin(["NEW", "OPEN", "PARTIALLY_FILLED"])
                        & db_orders["exchange_order_id"].notna()]
    lookup = {sym: grp["exchange_order_id"].tolist() for sym, grp in open_db.groupby("symbol") if sym in listed}
    # Fills first: Binance lists orders by creation time, so an order created before the span but
    # filled inside it is only found through its fills (fetch_orders looks those ids up).
    # a historical window's history has ended on the exchange's clock: the next window may reuse it
    settled: dict | None = {} if ahead is not None and not clock.live and clock.as_of <= now else None
    fills, orders = fetch.fetch_activity(clients, account, symbols, clock.fills_since, clock.as_of, lookup_ids=lookup,
                                         read_ahead=spans, settled=settled)
    if settled is not None:
        ahead.keep(account, settled)
    extra = sorted((set(orders["symbol"]) & listed) - set(symbols))
    if extra:  # open orders on symbols the DB does not know: their fills are account activity too
        extra_fills, extra_orders = fetch.fetch_activity(clients, account, extra, clock.fills_since, clock.as_of)
        fills = schemas.conform(pd.concat([fills, extra_fills], ignore_index=True), schemas.EXCHANGE_FILLS)
        orders = schemas.conform(pd.concat([orders, extra_orders], ignore_index=True)
                                 .drop_duplicates(["symbol", "exchange_order_id"], keep="last"),
                                 schemas.EXCHANGE_ORDERS)
        symbols = sorted(set(symbols) | set(extra))
    if ahead is not None and client_options is not None:
        nxt = fetch.epoch_ms(window.end)
        ahead.schedule(account, window.profile_id, symbols, nxt, nxt + (nxt - fetch.epoch_ms(window.start)),
                       fetch.epoch_ms(now), client_options, len(clients))
    return now, clock, markets, positions, fills, orders, symbols


class ExchangeWindowError(RuntimeError):
    """An exchange snapshot failed; the message names the window and profile as well as the endpoint."""



@dataclass(frozen=True)
class ExchangeRead:
    """The exchange as fetched, before any check."""

    clock: SnapshotClock
    fills: pd.DataFrame
    orders: pd.DataFrame
    positions: pd.DataFrame
    markets: pd.DataFrame
    symbols: list[str]

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"exchange_fills": self.fills, "exchange_orders": self.orders,
                "exchange_positions": self.positions, "exchange_markets": self.markets}


def fetch_exchange(context: AssetExecutionContext, window: Window, state: ProfileState, db_trade_history: pd.DataFrame,
                   db_orders: pd.DataFrame, exchange: ExchangeClients, settings: ReconSettings) -> ExchangeRead:
    from recon_pipeline.exchange import fetch

    account = state.profile["account"]
    try:
        now, clock, markets, positions, fills, orders, symbols = _fetch_account(
            exchange.clients(account), account, window, set(state.profiles["market_type"]), db_trade_history,
            db_orders, settings.backfill_grace_minutes, client_options=exchange.options())
    except fetch.ExchangeSnapshotError as exc:
        raise ExchangeWindowError(
            f"window [{window.start.isoformat()}, {window.end.isoformat()}) profile={window.profile_id}: {exc}"
        ) from exc
    context.log.info(
        f"exchange snapshot account={account} now={now.isoformat()} live={clock.live} "
        f"symbols={len(symbols)} fills={len(fills)} orders={len(orders)} positions={len(positions)}")
    return ExchangeRead(clock, fills, orders, positions, markets, symbols)


@dataclass(frozen=True)
class Snapshot:
    """Both sides of the window as the rules see them: bad rows excluded, and reported."""

    db_trade_history: pd.DataFrame
    db_orders: pd.DataFrame
    db_positions: pd.DataFrame
    db_profile_state: ProfileState
    db_bad_rows: object          # validation.snapshots.BadRows
    exchange_fills: pd.DataFrame
    exchange_orders: pd.DataFrame
    exchange_positions: pd.DataFrame
    exchange_markets: pd.DataFrame
    snapshot_clock: SnapshotClock
    exchange_bad_rows: object


def take_snapshot(context: AssetExecutionContext, window: Window, settings: ReconSettings,
                  trading_db: TradingDatabase, exchange: ExchangeClients):
    """Yield the snapshot assets' check results and outputs; return the :class:`Snapshot`.

    The exchange is fetched for the DB frames after their row rules (a bad DB row must not widen
    the fetch), and the structure of all seven frames is then checked in one suite run. Should a
    structurally broken DB frame make the row rules or the fetch raise first, its structure check
    runs there and then, so the run fails with the structure report rather than the error it caused.
    """
    from recon_pipeline.validation.snapshots import validate_db_snapshot, validate_exchange_snapshot

    with stage("db_snapshot"):
        db = read_db(trading_db, window, settings)
    try:
        with stage("db_snapshot"):
            db_checked = validate_db_snapshot(db.slices, db.orders, db.positions, account=db.account,
                                              window_start=window.start, profile_id=window.profile_id)
        with stage("exchange_snapshot"):
            ex = fetch_exchange(context, window, db.state, db_checked.slices, db_checked.orders, exchange, settings)
    except Exception:
        with stage("snapshot_structure"):
            yield from _validate_structure(context, db.frames())
        raise
    with stage("snapshot_structure"):
        yield from _validate_structure(context, {**db.frames(), **ex.frames()})

    bad = db_checked.bad_rows
    yield from _frame_outputs(context, "db", {"db_trade_history": db_checked.slices, "db_orders": db_checked.orders,
                                              "db_positions": db_checked.positions}, bad)
    yield _bad_rows_output(bad, "db_bad_rows")
    state = db.state
    yield Output(state, "db_profile_state", metadata={
        "account": db.account, "profiles_on_account": len(state.profiles),
        "open_pauses": int(state.pauses["resumed_at"].isna().sum()),
        "earlier_evaluations": len(state.run_history),
    })

    with stage("exchange_snapshot"):
        clock = ex.clock
        ex_checked = validate_exchange_snapshot(
            ex.fills, ex.orders, ex.positions, ex.markets, account=db.account, now=clock.now,
            fills_since=clock.fills_since, as_of=clock.as_of, window_start=window.start, profile_id=window.profile_id)
    ex_bad = ex_checked.bad_rows
    yield from _frame_outputs(context, "exchange", {
        "exchange_fills": ex_checked.fills, "exchange_orders": ex_checked.orders,
        "exchange_positions": ex_checked.positions, "exchange_markets": ex_checked.markets}, ex_bad)
    yield Output(clock, "snapshot_clock", metadata={
        "now": clock.now.isoformat(), "as_of": clock.as_of.isoformat(), "live": clock.live,
        "fills_since": clock.fills_since.isoformat(), "symbols": ", ".join(ex.symbols) or "(none)",
    })
    yield _bad_rows_output(ex_bad, "exchange_bad_rows")
    return Snapshot(db_checked.slices, db_checked.orders, db_checked.positions, state, bad,
                    ex_checked.fills, ex_checked.orders, ex_checked.positions, ex_checked.markets, clock, ex_bad)
