"""Least-privilege grants for darwin-notify's logins, generated from the source model.

``darwin-notify grants --dialect mssql|postgresql`` prints them: ``SELECT`` on every table the
model reads (source tables, recipients, relation and join tables, ledgers, the tombstone, the
schedules and templates) and on nothing else; on SQL Server the Change Data Capture objects
of the tables whose deletions come from it, ``EXECUTE`` on the stored procedures merge-field
queries call, the server permission the replica watermark needs, explicit ``DENY`` of every
write, and the store's own login. Every script is re-runnable. Logins (with their passwords)
are created by the DBA beforehand; the scripts stop with a message when one is missing.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from darwin_notify_assets.domain.model import SourceModel
from darwin_notify_assets.errors import ConfigurationError, MergeFieldError
from darwin_notify_assets.storage import merge_fields as merge_sql

GRANT_DIALECTS = ("mssql", "postgresql")
# A login or role name is formatted into the script: plain names only.
_PRINCIPAL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class Principals:
    """Who the grants are for: the replica's login, the role that holds its grants (SQL
    Server), and the store's login."""

    reader: str = "darwin_notify_reader"
    readers_role: str = "darwin_notify_readers"
    store: str = "darwin_notify_store"

    def checked(self) -> "Principals":
        for what, name in (
            ("reader", self.reader),
            ("readers role", self.readers_role),
            ("store", self.store),
        ):
            if not _PRINCIPAL.match(name):
                raise ConfigurationError(
                    f"{what} name {name!r} must be letters, digits and _ (at most 128), "
                    "not starting with a digit"
                )
        if len({self.reader, self.readers_role, self.store}) < 3:
            raise ConfigurationError("the reader, its role and the store need three names")
        return self


def _split(table: str) -> tuple[str | None, str]:
    schema, _, name = table.rpartition(".")
    return (schema or None), name


def _bracket(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def _nstring(text: str) -> str:
    return "N'" + text.replace("'", "''") + "'"


def _dquote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class MergeFieldQueries:
    """The merge-field queries of a folder, as grants see them."""

    # Stored procedures they call (``EXEC name ?``).
    procedures: tuple[str, ...] = ()
    # Queries (by name) that read tables of their own choosing, which the model does not name.
    selects: tuple[str, ...] = ()
    # What is wrong with each query that cannot be read (it gets no grant).
    problems: tuple[str, ...] = ()

    def notes(self) -> list[str]:
        out = [f"-- (no grant: {p})" for p in self.problems]
        if self.selects:
            several = len(self.selects) > 1
            out.append(
                f"-- Merge-field quer{'ies' if several else 'y'} {', '.join(self.selects)} "
                f"read{'' if several else 's'} tables of its own choosing:"
            )
            out.append("-- grant SELECT on any of those the list above does not name.")
        return out


def merge_field_queries(directory: Path | None, dialect: str) -> MergeFieldQueries:
    """What the merge-field queries of ``directory`` need besides the model's tables."""
    procs: list[str] = []
    selects: list[str] = []
    problems: list[str] = []
    if directory is None or not directory.is_dir():
        return MergeFieldQueries()
    for path in sorted(directory.glob("*.sql")):
        try:
            body = merge_sql.query_text(directory, dialect, path.stem)
        except MergeFieldError as exc:
            problems.append(str(exc))
            continue
        words = body.split()
        if words and words[0].upper() in ("EXEC", "EXECUTE") and len(words) > 1:
            procs.append(words[1].rstrip(";"))
        else:
            selects.append(path.stem)
    return MergeFieldQueries(tuple(sorted(set(procs))), tuple(selects), tuple(problems))


def _procedure_parts(name: str) -> tuple[str, str]:
    parts = [p.strip('[]"') for p in name.split(".")]
    if len(parts) == 1:
        return "dbo", parts[0]
    return parts[-2], parts[-1]


def grant_script(
    model: SourceModel,
    dialect: str,
    principals: Principals | None = None,
    merge_fields_dir: Path | None = None,
    model_source: str = "",
) -> str:
    """The grants for ``model`` in ``dialect`` (``mssql`` or ``postgresql``), as a script."""
    principals = (principals or Principals()).checked()
    if dialect == "mssql":
        return _mssql(model, principals, merge_fields_dir, model_source)
    if dialect == "postgresql":
        return _postgresql(model, principals, merge_fields_dir, model_source)
    raise ConfigurationError(
        f"no grants for dialect {dialect!r}; expected one of {', '.join(GRANT_DIALECTS)}"
    )


def _header(dialect_name: str, command: str, model_source: str, logins: str) -> list[str]:
    return [
        f"-- Least privilege for darwin-notify on {dialect_name}, generated by",
        f"--     {command}",
        f"-- from the source model {model_source or '(the sample darwin.Cloud)'}.",
        "-- Regenerate and rerun it when the model changes; it is re-runnable.",
        f"-- {logins}",
    ]


def _part(title: Sequence[str]) -> list[str]:
    rule = "-- " + "=" * 89
    return ["", rule, *(f"-- {line}" for line in title), rule]


def _login_guard(number: int, login: str, where: str) -> list[str]:
    return [
        f"IF SUSER_ID({_nstring(login)}) IS NULL",
        "BEGIN",
        f"    THROW {50000 + number}, "
        + _nstring(f"Create the login {login} {where} first (docs/sqlserver.md, Logins).")
        + ", 1;",
        "END;",
        "GO",
    ]


def _mssql(model: SourceModel, who: Principals, merge_dir: Path | None, source: str) -> str:
    reader, role, store = (_bracket(n) for n in (who.reader, who.readers_role, who.store))
    tables = model.tables_read()
    schemas = sorted({_split(t)[0] or "dbo" for t in tables})
    queries = merge_field_queries(merge_dir, "mssql")
    procs = queries.procedures
    proc_schemas = {_procedure_parts(p)[0] for p in procs}
    out = _header(
        "SQL Server",
        "darwin-notify grants --dialect mssql",
        source,
        'The logins are created by the DBA first (docs/sqlserver.md, "Logins"): no password\n'
        "-- sits in a file.",
    )
    out += [
        "-- Three parts, each run where its header says, with `sqlcmd -b` (stop at the first",
        "-- error).",
    ]
    out += _part(
        [
            "Part 1. On EVERY instance that hosts a replica of darwin.Cloud's database (the",
            "primary and each secondary), connected to master. Server permissions do not",
            "travel with a database.",
        ]
    )
    out += _login_guard(1, who.reader, "on this instance")
    out += [
        "-- The replica watermark reads sys.dm_hadr_database_replica_states: VIEW SERVER STATE",
        "-- up to SQL Server 2019, the narrower VIEW SERVER PERFORMANCE STATE from 2022 on",
        "-- (named inside EXEC so that a 2019 server, which does not know it, compiles this",
        "-- batch).",
        "IF CAST(SERVERPROPERTY(N'ProductMajorVersion') AS int) >= 16",
        f"    EXEC (N'GRANT VIEW SERVER PERFORMANCE STATE TO {reader};');",
        "ELSE",
        f"    GRANT VIEW SERVER STATE TO {reader};",
        "GO",
    ]
    out += _part(
        [
            "Part 2. On the PRIMARY replica, connected to darwin.Cloud's database. Users, roles",
            "and grants live in the database and reach every secondary with it.",
        ]
    )
    out += [
        "IF NOT EXISTS (SELECT 1 FROM sys.database_principals "
        f"WHERE name = {_nstring(who.readers_role)} AND type = 'R')",
        f"    CREATE ROLE {role};",
        "GO",
        f"-- SELECT on exactly the {len(tables)} tables the source model reads, and on no other.",
    ]
    for t in tables:
        schema, name = _split(t)
        out.append(
            f"GRANT SELECT ON OBJECT::{_bracket(schema or 'dbo')}.{_bracket(name)} TO {role};"
        )
    out.append("GO")
    cdc = model.cdc_tables
    if cdc:
        out += [
            "-- Change Data Capture, for the tables whose deletions it records: the capture",
            "-- instances' catalog and each one's all-changes function. sys.fn_cdc_map_time_to_lsn,",
            "-- sys.fn_cdc_map_lsn_to_time and sys.fn_cdc_get_max_lsn need only public;",
            "-- sys.fn_cdc_get_min_lsn answers for a capture instance given SELECT on its",
            "-- captured columns (above) and membership in its gating role (below).",
            f"GRANT SELECT ON OBJECT::[cdc].[change_tables] TO {role};",
            f"GRANT SELECT ON OBJECT::[cdc].[captured_columns] TO {role};",
        ]
        for table, capture in sorted(cdc.items()):
            out.append(
                f"GRANT SELECT ON OBJECT::[cdc].{_bracket('fn_cdc_get_all_changes_' + capture)} "
                f"TO {role};  -- {table}"
            )
        out.append("GO")
    out += queries.notes()
    if procs:
        out.append("-- The stored procedures merge-field queries call, run on the secondary.")
        for p in procs:
            schema, name = _procedure_parts(p)
            out.append(f"GRANT EXECUTE ON OBJECT::{_bracket(schema)}.{_bracket(name)} TO {role};")
        out.append("GO")
    out.append(
        "-- Whatever another role may grant later, this one cannot write or change the schema"
        + (" (EXECUTE stays open where a merge-field procedure is)." if procs else ".")
    )
    for schema in schemas:
        denied = (
            "INSERT, UPDATE, DELETE, ALTER, "
            + ("" if schema in proc_schemas else "EXECUTE, ")
            + "REFERENCES"
        )
        out.append(f"DENY {denied} ON SCHEMA::{_bracket(schema)} TO {role};")
    out += [
        "DENY CREATE TABLE, CREATE VIEW, CREATE PROCEDURE, CREATE FUNCTION, CREATE SCHEMA "
        f"TO {role};",
        "GO",
    ]
    out += _login_guard(2, who.reader, "on the primary")
    out += [
        f"IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = {_nstring(who.reader)})",
        f"    CREATE USER {reader} FOR LOGIN {reader} WITH DEFAULT_SCHEMA = dbo;",
        "GO",
        "IF NOT EXISTS (",
        "    SELECT 1",
        "    FROM sys.database_role_members AS rm",
        "    JOIN sys.database_principals AS r ON r.principal_id = rm.role_principal_id",
        "    JOIN sys.database_principals AS m ON m.principal_id = rm.member_principal_id",
        f"    WHERE r.name = {_nstring(who.readers_role)} AND m.name = {_nstring(who.reader)}",
        ")",
        f"    ALTER ROLE {role} ADD MEMBER {reader};",
        "GO",
    ]
    for table, capture in sorted(cdc.items()):
        out += [
            f"-- The gating role of capture instance {capture} ({table}), if it has one.",
            "DECLARE @gating sysname, @sql nvarchar(max);",
            "SELECT @gating = role_name FROM cdc.change_tables "
            f"WHERE capture_instance = {_nstring(capture)};",
            f"IF @gating IS NOT NULL AND IS_ROLEMEMBER(@gating, {_nstring(who.reader)}) = 0",
            "BEGIN",
            "    SET @sql = N'ALTER ROLE ' + QUOTENAME(@gating) + "
            + _nstring(f" ADD MEMBER {reader};")
            + ";",
            "    EXEC sys.sp_executesql @sql;",
            "END;",
            "GO",
        ]
    out += _part(
        [
            "Part 3. On the notification store's own server, connected to the store's database.",
            "Nothing of darwin.Cloud is granted here, and the store's login has no user in",
            "darwin.Cloud.",
        ]
    )
    out += _login_guard(3, who.store, "on the store's server")
    out += [
        f"IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = {_nstring(who.store)})",
        f"    CREATE USER {store} FOR LOGIN {store} WITH DEFAULT_SCHEMA = dbo;",
        "GO",
        "-- darwin-notify creates and checks its own tables and indexes when it starts",
        "-- (store_schema.sql, re-runnable), in dbo only, and then reads and writes their rows.",
        f"GRANT CREATE TABLE TO {store};",
        f"GRANT ALTER, SELECT, INSERT, UPDATE, DELETE, REFERENCES ON SCHEMA::dbo TO {store};",
        "GO",
    ]
    return "\n".join(out) + "\n"


def _postgresql(model: SourceModel, who: Principals, merge_dir: Path | None, source: str) -> str:
    if model.cdc_tables:
        table = sorted(model.cdc_tables)[0]
        raise ConfigurationError(
            f"tables.{table}.deletions reads SQL Server Change Data Capture, which PostgreSQL "
            "has not: no PostgreSQL grants for this model"
        )
    reader, store = _dquote(who.reader), _dquote(who.store)
    tables = model.tables_read()
    schemas = sorted({s for s in (_split(t)[0] for t in tables) if s is not None})
    queries = merge_field_queries(merge_dir, "postgresql")
    out = _header(
        "PostgreSQL",
        "darwin-notify grants --dialect postgresql",
        source,
        f"The login roles ({who.reader}, {who.store}) are created by the DBA first\n"
        "-- (CREATE ROLE ... LOGIN): no password sits in a file.",
    )
    out += [
        "-- Two parts, each run where its header says, with `psql -v ON_ERROR_STOP=1`. GRANT",
        "-- repeats harmlessly. A hot standby refuses every write whatever the grants; these",
        "-- keep the reader to the model's tables on the primary too.",
    ]
    out += _part(
        [
            "Part 1. On the PRIMARY, connected to darwin.Cloud's database; grants replicate to",
            "every standby. Unqualified tables are found by the search_path of this session",
            "(normally public, whose USAGE every role has).",
        ]
    )
    out.append(
        "-- The watermark reads pg_stat_wal_receiver, whose status only this role's members see."
    )
    out.append(f"GRANT pg_read_all_stats TO {reader};")
    for schema in schemas:
        out.append(f"GRANT USAGE ON SCHEMA {_dquote(schema)} TO {reader};")
    out.append(
        f"-- SELECT on exactly the {len(tables)} tables the source model reads, and on no other."
    )
    for t in tables:
        owner, name = _split(t)
        qualified = f"{_dquote(owner)}.{_dquote(name)}" if owner else _dquote(name)
        out.append(f"GRANT SELECT ON TABLE {qualified} TO {reader};")
    out += queries.notes()
    out += _part(
        [
            "Part 2. On the notification store's own server, connected to the store's database.",
            "darwin-notify creates and checks its own tables there when it starts",
            "(store_schema.sql, re-runnable), in public, and owns them.",
        ]
    )
    out.append(f"GRANT USAGE, CREATE ON SCHEMA public TO {store};")
    return "\n".join(out) + "\n"
