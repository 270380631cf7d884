"""Postgres ``COPY`` fast paths for bulk reads and writes (the portable statements stay for SQLite).

Both directions run on the DB-API connection underneath the SQLAlchemy ``Connection``, so they are
part of the caller's transaction: a rollback undoes a ``COPY ... FROM`` like any INSERT.

* :func:`copy_in` streams rows into a table with ``COPY ... FROM STDIN (FORMAT csv)``. The values
  travel in the data stream, never in SQL text. They are encoded the way psycopg2 adapts the same
  Python values for a bound INSERT (``repr`` of floats, ISO text of datetimes, NULL for ``None``),
  so the stored values are the ones the portable ``executemany`` path stores.
* :func:`copy_out_frame` reads ``COPY (SELECT ...) TO STDOUT (FORMAT csv, HEADER)`` into memory and
  parses it with pyarrow's CSV reader into the schema's types. ``COPY`` cannot take bind parameters,
  and no user value may be formatted into SQL text (not even quoted by the driver: statements must
  stay free of data). So the SELECT's parameters are first bound, with an ordinary parameterised
  ``SELECT set_config(...)``, into transaction-local custom settings (``recon_param.<name>``); the
  SELECT inside ``COPY`` reads them back with ``current_setting`` and casts them to their type. The
  setting names are fixed identifiers chosen by this code; the values only ever travel as bound
  parameters. (A temporary table holding the parameters would do the same at the cost of DDL per
  read.) A ``None`` parameter becomes ``CAST(NULL AS type)``, exactly what binding ``None`` does.

Writes of fewer than ``RECON_COPY_MIN_ROWS`` rows (default 100) keep the portable statements.

Driver errors are re-raised as the SQLAlchemy exceptions the portable path would raise (a dead
connection is invalidated so the pool discards it).
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recon_pipeline import schemas

PARAM_PREFIX = "recon_param."
DEFAULT_COPY_MIN_ROWS = 100
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_PG_TYPES = {"text", "timestamptz", "numeric", "integer", "bigint", "boolean", "float8"}


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def can_bind_params(conn: Connection) -> bool:
    """Postgres, inside a real transaction: transaction-local settings then last until the COPY has run
    (under driver-level autocommit they would be gone before it, so such reads stay portable)."""
    return is_postgres(conn) and not conn.connection.dbapi_connection.autocommit


def copy_min_rows() -> int:
    """Writes of fewer rows keep the bound-parameter statements (``RECON_COPY_MIN_ROWS``, default 100)."""
    value = os.environ.get("RECON_COPY_MIN_ROWS", "").strip()
    if not value:
        return DEFAULT_COPY_MIN_ROWS
    try:
        return max(1, int(value))
    except ValueError:
        from recon_pipeline.settings import SettingsError

        raise SettingsError(f"RECON_COPY_MIN_ROWS={value!r} is not an integer; accepted: an integer >= 1") from None


def use_copy(conn: Connection, n_rows: int) -> bool:
    """Whether a bulk write of ``n_rows`` rows goes through COPY: Postgres, and at least copy_min_rows().

    Below the threshold COPY buys nothing measurable (a handful of round trips), and those writes stay
    visible as bound parameters to statement-level instrumentation (the SQL-injection test captures
    statements and parameters; a COPY's rows travel in its data stream instead).
    """
    return is_postgres(conn) and n_rows >= copy_min_rows()


def _ident(name: str) -> str:
    """Table and column names come from this package's constants; refuse anything else."""
    if not _NAME.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name


def _dbapi_cursor(conn: Connection):
    if not conn.in_transaction():
        conn.begin()  # what the next conn.execute would do (autobegin): COPY joins the transaction
    return conn.connection.dbapi_connection.cursor()


def _raise_as_sqlalchemy(conn: Connection, statement: str, exc: Exception):
    import psycopg2

    dbapi_conn = conn.connection.dbapi_connection
    invalidated = bool(getattr(dbapi_conn, "closed", 0))
    if invalidated:
        conn.invalidate(exc)
    raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg2.Error,
                                     connection_invalidated=invalidated) from exc


def _run_copy(conn: Connection, statement: str, buf) -> None:
    import psycopg2

    cur = _dbapi_cursor(conn)
    try:
        cur.copy_expert(statement, buf)
    except psycopg2.Error as exc:
        _raise_as_sqlalchemy(conn, statement, exc)
    finally:
        if not cur.closed:
            cur.close()


# --- COPY FROM STDIN ----------------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _field(value) -> str:
    """One CSV field: unquoted empty is NULL, every string is quoted (so '' stays an empty string)."""
    if value is None:
        return ""
    kind = type(value)
    if kind is str:
        return '"' + value.replace('"', '""') + '"'
    if kind is float:
        if math.isfinite(value):
            return repr(value)
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, str):
        return _quote(str(value))
    if isinstance(value, float):
        return _field(float(value))
    if isinstance(value, int):
        return str(int(value))
    return _quote(str(value))


def _column_fields(values: Sequence) -> list[str]:
    return ['"' + v.replace('"', '""') + '"' if type(v) is str else _field(v) for v in values]


def csv_text_columns(data: Sequence[Sequence]) -> str:
    """The CSV of rows given column by column (all columns the same length)."""
    encoded = [_column_fields(values) for values in data]
    if not encoded or not encoded[0]:
        return ""
    return "\n".join(map(",".join, zip(*encoded, strict=True))) + "\n"


def csv_text(rows: Iterable[Sequence]) -> str:
    return "".join(",".join(map(_field, row)) + "\n" for row in rows)


def copy_in(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """``COPY table (columns) FROM STDIN``: rows are sequences in ``columns`` order (Postgres only)."""
    cols = ", ".join(_ident(c) for c in columns)
    statement = f"COPY {_ident(table)} ({cols}) FROM STDIN WITH (FORMAT csv)"
    _run_copy(conn, statement, io.StringIO(csv_text(rows)))


def copy_in_columns(conn: Connection, table: str, columns: Sequence[str], data: Sequence[Sequence]) -> None:
    """``COPY table (columns) FROM STDIN`` with the rows given column by column (Postgres only)."""
    cols = ", ".join(_ident(c) for c in columns)
    statement = f"COPY {_ident(table)} ({cols}) FROM STDIN WITH (FORMAT csv)"
    _run_copy(conn, statement, io.StringIO(csv_text_columns(data)))


def copy_in_dicts(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Mapping]) -> None:
    copy_in(conn, table, columns, ([row[c] for c in columns] for row in rows))


# --- COPY (SELECT) TO STDOUT --------------------------------------------------------------------


def param(name: str, pg_type: str) -> str:
    """The SQL expression that reads bound parameter ``name`` inside a COPY (see :func:`copy_out_frame`)."""
    if pg_type not in _PG_TYPES:
        raise ValueError(f"unsupported parameter type {pg_type!r}")
    return f"CAST(current_setting('{PARAM_PREFIX}{_ident(name)}') AS {pg_type})"


def _param_text(value) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _field(value)
    return str(value)


def bind_params(conn: Connection, params: Mapping[str, object]) -> None:
    """Bind each non-null parameter into a transaction-local setting, in one parameterised statement."""
    names = [n for n, v in params.items() if v is not None]
    if not names:
        return
    calls = ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(names)))
    bound = {}
    for i, name in enumerate(names):
        bound[f"n{i}"] = PARAM_PREFIX + _ident(name)
        bound[f"v{i}"] = _param_text(params[name])
    conn.execute(sa.text(f"SELECT {calls}"), bound)


def select_with_params(sql: str, params: Mapping[str, object], types: Mapping[str, str]) -> str:
    """``sql`` with every ``:name`` replaced by :func:`param` (or a typed NULL when the value is None)."""
    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in types:
            raise KeyError(f"no type for parameter {name!r}")
        if params.get(name) is None:
            return f"CAST(NULL AS {types[name]})"
        return param(name, types[name])
    return re.sub(r"(?<![:\w]):([a-z_][a-z0-9_]*)", sub, sql)


_ARROW_TYPES = {schemas.F64: "float64", schemas.STR: "string", schemas.TS: "timestamp_ns_utc",
                schemas.I64: "int64", schemas.BOOL: "bool"}


def _arrow_type(dtype: str):
    import pyarrow as pa

    kind = _ARROW_TYPES[dtype]
    if kind == "timestamp_ns_utc":
        return pa.timestamp("ns", tz="UTC")
    return getattr(pa, kind)()


def copy_out_frame(conn: Connection, sql: str, params: Mapping[str, object], types: Mapping[str, str],
                   schema: schemas.Schema, name: str) -> pd.DataFrame:
    """Run ``sql`` (named ``:params``, Postgres types in ``types``) through COPY and conform the frame."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    bind_params(conn, params)
    statement = f"COPY ({select_with_params(sql, params, types)}) TO STDOUT WITH (FORMAT csv, HEADER)"
    buf = io.BytesIO()
    _run_copy(conn, statement, buf)
    data = pa.py_buffer(buf.getbuffer())  # no copy of the CSV bytes
    table = pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(use_threads=True),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={col: _arrow_type(dtype) for col, dtype in schema.items()},
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
            true_values=["t", "true"], false_values=["f", "false"]))
    del data, buf
    if table.num_rows == 0:
        return schemas.empty(schema)
    missing = [col for col in schema if col not in table.column_names]
    if missing:  # conform names the missing columns
        return schemas.conform(table.to_pandas(), schema, name=name)
    frame = table.select(list(schema)).to_pandas(split_blocks=True, self_destruct=True)
    del table
    if all(frame[col].dtype == dtype for col, dtype in schema.items()):
        return frame  # already what conform would return (it would only re-cast each column to itself)
    return schemas.conform(frame, schema, name=name)
