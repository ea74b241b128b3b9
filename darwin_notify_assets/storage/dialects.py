"""What differs per database, in one object per dialect.

Statements themselves live in ``sql/<dialect>/`` by name; a dialect object knows how its
database takes them: parameter limits, how the rows of a bulk statement are bound (a
multi-row ``VALUES`` list, or for PostgreSQL one array parameter per column), timestamps,
identifier quoting, the ODBC connection string, and how a session shows it cannot write.

Bulk statements in the SQL files follow one rule: their rows' parameters come first, then
any trailing ones. Where a dialect binds rows as ``VALUES``, the statement holds the marker
``{values}`` at the place of the rows; PostgreSQL statements take ``unnest(?::type[], ...)``,
one array per column, and carry no marker; a SQL Server statement without the marker takes
its rows as one parameter, a JSON array of arrays read with ``OPENJSON(?) WITH (...)``.
"""

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from darwin_notify_assets.errors import ConfigurationError

if TYPE_CHECKING:
    from darwin_notify_assets.storage.db import Database, DatabaseUrl

VALUES_MARK = "{values}"

# SQLite keeps timestamps as text of one fixed width, so they compare in time order.
SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

# Rows per statement when PostgreSQL rows travel as one array parameter per column.
PG_ARRAY_ROWS = 5000

# Rows per statement when SQL Server rows travel as one JSON parameter.
MSSQL_JSON_ROWS = 5000

# Debian registers the driver with CommLog=1, which logs every connection under /tmp.
_PG_ODBC_OPTIONS = "Protocol=7.4-1;BoolsAsChar=0;UseDeclareFetch=1;Fetch=5000;CommLog=0;Debug=0"

# Database permissions that let a SQL Server login change data or schema.
MSSQL_WRITE_PERMISSIONS = frozenset({"INSERT", "UPDATE", "DELETE", "ALTER", "CONTROL"})


def placeholders(n: int) -> str:
    return ", ".join(["?"] * n)


def odbc_value(value: str) -> str:
    """A connection-string value in braces, as ODBC reads it (a ``}`` is doubled)."""
    return "{" + value.replace("}", "}}") + "}"


class Dialect:
    """The multi-row ``VALUES`` dialects' behaviour; subclasses say what differs."""

    name: ClassVar[str]
    #: Bound parameters per statement, kept under the driver's limit.
    max_params: ClassVar[int]
    #: Rows per multi-row ``VALUES`` list.
    max_rows: ClassVar[int] = 1000

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- values and names ---------------------------------------------------------------------
    def ts(self, value: datetime | None) -> Any:
        """A timestamp parameter: naive UTC."""
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def quote(self, identifier: str) -> str:
        """Quote an identifier that was already checked against the catalog."""
        return '"' + identifier.replace('"', '""') + '"'

    def quote_table(self, name: str) -> str:
        """Quote a table's name, schema-qualified (``crm.Listing``) or not."""
        return ".".join(self.quote(part) for part in name.split(".", 1))

    # -- batching -----------------------------------------------------------------------------
    def in_batches(self, ids: Sequence[Any], extra_params: int = 0) -> Iterator[Sequence[Any]]:
        """Chunks of ``ids`` small enough for an ``IN (?, ...)`` list."""
        size = max(1, min(2000, self.max_params - extra_params - 10))
        for start in range(0, len(ids), size):
            yield ids[start : start + size]

    def rows_by_keys(
        self, columns: Sequence[str], table: str, key: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> Iterator[tuple[str, list[Any]]]:
        """``(statement, parameters)`` reading ``table``'s rows whose composite ``key`` is one
        of ``keys`` (distinct), one statement per chunk: a join of the table to a ``VALUES``
        list of the keys, which both SQLite and PostgreSQL answer by seeking the key's index
        for each (SQLite scans the table for a row-value ``IN`` instead).

        ``columns``, ``table`` and ``key`` are quoted already; ``keys`` are bound.
        """
        cols = ", ".join(f"t.{c}" for c in columns)
        on = " AND ".join(f"t.{k} = v.column{n}" for n, k in enumerate(key, 1))
        row = "(" + placeholders(len(key)) + ")"
        per = max(1, min(self.max_rows, (self.max_params - 10) // len(key)))
        for start in range(0, len(keys), per):
            chunk = keys[start : start + per]
            values = ", ".join([row] * len(chunk))
            sql = f"SELECT {cols} FROM (VALUES {values}) AS v JOIN {table} AS t ON {on}"
            yield sql, [v for k in chunk for v in k]

    def bulk_statements(
        self, sql: str, rows: Sequence[Sequence[Any]], trailing: Sequence[Any] = ()
    ) -> Iterator[tuple[str, list[Any], int]]:
        """``(statement, parameters, rows)`` per chunk of ``rows``: ``{values}`` becomes the
        chunk's ``(?, ...)`` rows and the parameters are the rows' values, then ``trailing``."""
        if VALUES_MARK not in sql:
            raise ValueError(f"a bulk statement for {self.name} needs {VALUES_MARK}: {sql[:80]}")
        outside = sql.count("?")
        if outside != len(trailing):
            raise ValueError(
                f"statement has {outside} parameters besides its rows, given {len(trailing)}"
            )
        width = len(rows[0])
        per = max(1, min(self.max_rows, (self.max_params - len(trailing)) // width))
        row = "(" + placeholders(width) + ")"
        full = sql.replace(VALUES_MARK, ", ".join([row] * per))
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            text = (
                full
                if len(chunk) == per
                else sql.replace(VALUES_MARK, ", ".join([row] * len(chunk)))
            )
            params = [v for r in chunk for v in r]
            params.extend(trailing)
            yield text, params, len(chunk)

    def insert_statement(self, db: "Database", table: str, columns: Sequence[str]) -> str:
        """A plain bulk insert into ``table`` (identifiers as written in SQL)."""
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {VALUES_MARK}"

    # -- results ------------------------------------------------------------------------------
    def result(self, cur: Any) -> tuple[list[str], list[Any]]:
        """The column names and rows a statement returned (none: psqlODBC reports no result
        for an ``UPDATE ... RETURNING`` that changed no row)."""
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()

    def finish(self, cur: Any) -> None:
        """Consume what a statement left on its cursor (so that its errors surface)."""

    # -- connections --------------------------------------------------------------------------
    def connection_string(self, url: "DatabaseUrl", password: str | None, read_only: bool) -> str:
        raise ConfigurationError(f"{self.name} is not opened through ODBC")

    def session_statements(self) -> tuple[str, ...]:
        """Statements run once on a new connection."""
        return ()

    def read_only_problem(self, rows: Sequence[Sequence[Any]]) -> str | None:
        """Why a session whose ``write_access`` query returned ``rows`` could write, or None
        when it cannot."""
        raise NotImplementedError


class SQLite(Dialect):
    name = "sqlite"
    max_params = 30000

    def ts(self, value: datetime | None) -> Any:
        """SQLite stores a timestamp as fixed-width ISO text."""
        value = super().ts(value)
        return value.strftime(SQLITE_TS_FORMAT) if value is not None else None

    def quote_table(self, name: str) -> str:
        """SQLite has no schemas: a qualified name is one table whose name holds the dot."""
        return self.quote(name)

    def read_only_problem(self, rows: Sequence[Sequence[Any]]) -> str | None:
        if rows and int(rows[0][0] or 0) == 1:
            return None
        return "accepts writes (PRAGMA query_only is off)"


class PostgreSQL(Dialect):
    name = "postgresql"
    # psqlODBC lost synchronization above ~7,200 bound parameters.
    max_params = 6000

    def __init__(self) -> None:
        self._column_types: dict[str, dict[str, str]] = {}

    def bulk_statements(
        self, sql: str, rows: Sequence[Sequence[Any]], trailing: Sequence[Any] = ()
    ) -> Iterator[tuple[str, list[Any], int]]:
        """One array parameter per column, ``PG_ARRAY_ROWS`` rows per statement.

        Through psqlODBC this takes about half the time of multi-row ``VALUES`` (every bound
        parameter is a round of driver and parser work) and has no parameter limit.
        """
        if VALUES_MARK in sql:
            raise ValueError(f"PostgreSQL bulk statements take arrays, not {VALUES_MARK}")
        width = len(rows[0])
        if sql.count("?") != width + len(trailing):
            raise ValueError(
                f"statement has {sql.count('?')} parameters; rows of {width} columns and "
                f"{len(trailing)} trailing parameters need {width + len(trailing)}"
            )
        for start in range(0, len(rows), PG_ARRAY_ROWS):
            chunk = rows[start : start + PG_ARRAY_ROWS]
            params: list[Any] = [pg_array([r[i] for r in chunk]) for i in range(width)]
            params.extend(trailing)
            yield sql, params, len(chunk)

    def insert_statement(self, db: "Database", table: str, columns: Sequence[str]) -> str:
        types = self.column_types(db, table)
        names = [_pg_name(c) for c in columns]
        missing = [c for c, name in zip(columns, names, strict=True) if name not in types]
        if missing:
            raise ConfigurationError(f"table {table} has no column(s) {', '.join(missing)}")
        casts = ", ".join(f"?::{types[name]}[]" for name in names)
        return f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({casts})"

    def column_types(self, db: "Database", table: str) -> dict[str, str]:
        """Each column's type as SQL spells it (``character varying(64)``), by column name;
        ``table`` as it is written in SQL (quoted or not)."""
        if table not in self._column_types:
            rows = db.query(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = CAST(? AS regclass) AND a.attnum > 0 AND NOT a.attisdropped",
                [table],
            )
            self._column_types[table] = {name: kind for name, kind in rows}
        return self._column_types[table]

    def connection_string(self, url: "DatabaseUrl", password: str | None, read_only: bool) -> str:
        opts = dict(url.options)
        parts = [
            "DRIVER=" + odbc_value(opts.get("driver", "PostgreSQL Unicode")),
            f"SERVER={url.host}",
            f"PORT={url.port or 5432}",
            f"DATABASE={url.database}",
            f"UID={url.user}",
            _PG_ODBC_OPTIONS,
        ]
        if password:
            parts.append("PWD=" + odbc_value(password))
        # Results stream through cursors (UseDeclareFetch), and the planner would plan a
        # cursor for its first 10% of rows, preferring sequential scans over index ranges.
        settings = ["SET cursor_tuple_fraction TO 1"]
        if read_only:
            # psqlODBC ignores pyodbc's readonly flag; a session default is what holds.
            settings.append("SET default_transaction_read_only TO on")
        parts.append("ConnSettings=" + odbc_value(";".join(settings)))
        return ";".join(parts)

    def session_statements(self) -> tuple[str, ...]:
        # Timestamps are bound and returned as naive UTC.
        return ("SET TIME ZONE 'UTC'",)

    def read_only_problem(self, rows: Sequence[Sequence[Any]]) -> str | None:
        if rows and str(rows[0][0]).lower() == "on":
            return None
        return "accepted a read-write session (transaction_read_only is off)"


class SqlServer(Dialect):
    name = "mssql"
    # SQL Server takes 2,100 parameters per request.
    max_params = 2000

    def quote(self, identifier: str) -> str:
        return "[" + identifier.replace("]", "]]") + "]"

    def bulk_statements(
        self, sql: str, rows: Sequence[Sequence[Any]], trailing: Sequence[Any] = ()
    ) -> Iterator[tuple[str, list[Any], int]]:
        """Multi-row ``VALUES`` where the statement has ``{values}``; otherwise the rows as
        one JSON array of arrays, its first parameter, ``MSSQL_JSON_ROWS`` rows per statement.

        One parameter instead of one per value: no 2,100-parameter chunks, and no NULL
        parameter for pyodbc to ask the driver to describe (ODBC Driver 18 answers that with
        a ``sp_describe_undeclared_parameters`` round trip for each).
        """
        if VALUES_MARK in sql:
            yield from super().bulk_statements(sql, rows, trailing)
            return
        if sql.count("?") != 1 + len(trailing):
            raise ValueError(
                f"a JSON bulk statement takes its rows and {len(trailing)} trailing parameters; "
                f"it has {sql.count('?')}: {sql[:80]}"
            )
        for start in range(0, len(rows), MSSQL_JSON_ROWS):
            chunk = rows[start : start + MSSQL_JSON_ROWS]
            yield sql, [json_rows(chunk), *trailing], len(chunk)

    def rows_by_keys(
        self, columns: Sequence[str], table: str, key: Sequence[str], keys: Sequence[Sequence[Any]]
    ) -> Iterator[tuple[str, list[Any]]]:
        """T-SQL has no row-value ``IN``: the keys travel as one JSON array of arrays, joined
        through ``OPENJSON ... WITH``; each part is read as text and converted to the key
        column's own type by the comparison, so the key's index is sought."""
        cols = ", ".join(f"t.{c}" for c in columns)
        parts = ", ".join(
            f"{self.quote(f'key_{n}')} nvarchar(4000) '$[{n}]'" for n in range(len(key))
        )
        on = " AND ".join(f"t.{k} = j.{self.quote(f'key_{n}')}" for n, k in enumerate(key))
        sql = f"SELECT {cols} FROM {table} AS t JOIN OPENJSON(?) WITH ({parts}) AS j ON {on}"
        for start in range(0, len(keys), MSSQL_JSON_ROWS):
            yield sql, [json_rows(keys[start : start + MSSQL_JSON_ROWS])]

    def result(self, cur: Any) -> tuple[list[str], list[Any]]:
        """A T-SQL batch reports each statement's row count as a result of its own: the rows
        are in the first result that has columns; the rest are read to surface errors."""
        while cur.description is None:
            if not cur.nextset():
                return [], []
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        self.finish(cur)
        return names, rows

    def finish(self, cur: Any) -> None:
        while cur.nextset():
            pass

    def session_statements(self) -> tuple[str, ...]:
        # A runtime error ends the batch and rolls its transaction back, rather than letting
        # the rest of a multi-statement batch run on.
        return ("SET XACT_ABORT ON",)

    def ts(self, value: datetime | None) -> Any:
        """A timestamp parameter as ISO 8601 text with seven fractional digits, naive UTC.

        Bound as a ``datetime`` it lost its fractional seconds on the way through pyodbc and
        ODBC Driver 18 to Babelfish; SQL Server reads this text as ``datetime2(7)`` exactly and
        whatever the session's language or DATEFORMAT (the ``T`` form is never ambiguous).
        """
        value = super().ts(value)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0" if value is not None else None

    def connection_string(self, url: "DatabaseUrl", password: str | None, read_only: bool) -> str:
        opts = {k.lower(): v for k, v in url.options}
        encrypt = _mssql_option(opts, "Encrypt", "yes", MSSQL_ENCRYPT)
        trust = _mssql_option(opts, "TrustServerCertificate", "no", MSSQL_YES_NO)
        parts = [
            "DRIVER=" + odbc_value(opts.get("driver", "ODBC Driver 18 for SQL Server")),
            f"SERVER={url.host},{url.port or 1433}",
            f"DATABASE={url.database}",
            f"UID={url.user}",
            f"Encrypt={encrypt}",
            f"TrustServerCertificate={trust}",
        ]
        if "hostnameincertificate" in opts:
            parts.append("HostNameInCertificate=" + odbc_value(opts["hostnameincertificate"]))
        if password:
            parts.append("PWD=" + odbc_value(password))
        if read_only:
            # An availability group listener routes this to a readable secondary, where the
            # database itself refuses writes; a server without one ignores it.
            parts.append("ApplicationIntent=ReadOnly")
        return ";".join(parts)

    def read_only_problem(self, rows: Sequence[Sequence[Any]]) -> str | None:
        found = mssql_write_permissions(rows)
        if not found:
            return None
        return (
            f"lets this login write ({', '.join(found)}); give the replica's login SELECT on "
            "the watched tables only"
        )


# The values ODBC Driver 18 takes for Encrypt (strict: TDS 8.0, TLS before the login
# packet) and TrustServerCertificate.
MSSQL_ENCRYPT = frozenset({"yes", "no", "strict", "mandatory", "optional"})
MSSQL_YES_NO = frozenset({"yes", "no"})


def _mssql_option(opts: Mapping[str, str], name: str, default: str, allowed: frozenset[str]) -> str:
    value = opts.get(name.lower(), default).strip().lower()
    if value not in allowed:
        raise ConfigurationError(
            f"the SQL Server URL's {name} must be one of {', '.join(sorted(allowed))}, "
            f"not {value!r}"
        )
    return value


def mssql_write_permissions(rows: Sequence[Sequence[Any]]) -> list[str]:
    """The write permissions among a SQL Server session's ``write_access`` rows.

    ``rows`` are ``(permission_name, granted)``: first ``CREATE TABLE`` from
    ``HAS_PERMS_BY_NAME`` (1, 0, or NULL when it cannot tell), then every database permission
    ``fn_my_permissions`` lists (granted 1). A session that cannot be shown to be unable to
    write counts as able to.
    """
    if not rows:
        return ["(no permission rows: cannot tell)"]
    found = []
    for permission, granted in rows:
        name = str(permission).strip().upper()
        if name == "CREATE TABLE":
            if granted is None:
                found.append("CREATE TABLE (cannot tell)")
            elif int(granted):
                found.append(name)
        elif name in MSSQL_WRITE_PERMISSIONS and granted is not None and int(granted):
            found.append(name)
    return sorted(set(found))


DIALECT_CLASSES: Mapping[str, type[Dialect]] = {
    cls.name: cls for cls in (SQLite, PostgreSQL, SqlServer)
}


def dialect_for(name: str) -> Dialect:
    try:
        return DIALECT_CLASSES[name]()
    except KeyError:
        raise ConfigurationError(
            f"unknown SQL dialect {name!r}; expected one of {sorted(DIALECT_CLASSES)}"
        ) from None


def _pg_name(identifier: str) -> str:
    """A column's name in the catalog, from the identifier as written in SQL."""
    if identifier.startswith('"') and identifier.endswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier.lower()


def json_rows(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as a JSON array of arrays, for ``OPENJSON``: decimals as text (exact), timestamps
    as the ISO text ``SqlServer.ts`` binds; anything else JSON cannot hold is refused."""
    return json.dumps([list(r) for r in rows], ensure_ascii=False, default=_json_value)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return SqlServer().ts(value)
    raise TypeError(f"a {type(value).__name__} value cannot travel in a JSON bulk statement")


def pg_array(values: Sequence[Any]) -> str:
    """A PostgreSQL array literal of ``values`` (its element type comes from the cast)."""
    out: list[str] = []
    append = out.append
    for v in values:
        kind = type(v)
        if kind is str:  # the common cases first: this runs for every value of every row
            append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif v is None:
            append("NULL")
        elif kind is int:
            append(str(v))
        else:
            append(_pg_element(v))
    return "{" + ",".join(out) + "}"


def _pg_element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return f'"{value.isoformat(sep=" ")}"'
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("binary values are not sent as array elements")
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
