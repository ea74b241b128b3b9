"""A syntax check of T-SQL for CI, where no SQL Server runs: sqlfluff's ``tsql`` dialect, plus
rules for the places where that parser accepts what SQL Server refuses.

The rules, each found by a known-bad statement that sqlfluff 4.5 parses:
- T-SQL reads a statement that is only a name and arguments as a call of a procedure without
  ``EXEC`` (allowed as a batch's first statement). sqlfluff accepts it anywhere, so a
  misspelled or foreign keyword (``RETURNING id``, ``LIMIT 1``, ``SELEC a``) parses as a call.
  darwin-notify always writes ``EXEC``, so a call without it is refused.
- ``::`` is no cast in T-SQL (only ``CLASS::name`` in permission statements and CLR
  ``type::method`` calls, which darwin-notify never makes); sqlfluff parses ``1::int`` as one.
- ``TOP`` takes a parenthesised expression: required by SQL Server in ``INSERT``, ``UPDATE``,
  ``DELETE`` and ``MERGE``, and written so everywhere here; sqlfluff accepts ``UPDATE TOP 5``.
- ``INSERT ... VALUE (...)`` (MySQL) is accepted by sqlfluff's ANSI roots, not by SQL Server.

Statements are checked as the driver sends them: ``?`` becomes ``@P1, @P2, ...`` (sqlfluff's
T-SQL has no ``?``; Microsoft's driver sends ``?`` parameters as ``@P<n>`` through
``sp_prepexec``), and the SQL files' ``{values}`` and ``{list}`` markers become what the
Python layer puts there.
"""

import functools
import re
import textwrap
from pathlib import Path

from sqlfluff.core import FluffConfig, Linter

from darwin_notify_assets.storage.sqlfiles import split_script

# What the callers put in place of a marker (see storage/store.py and storage/dialects.py).
MARKERS = {
    "values": "(?, ?, ?), (?, ?, ?)",
    "list": "?, ?, ?",
    "changes_function": "[cdc].[fn_cdc_get_all_changes_dbo_Listing]",
    "key_columns": "c.[ListingID] AS record_id",
}
_MARKER = re.compile(r"\{(\w+)\}")
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
# ``CLASS::name`` in GRANT, DENY, REVOKE and ALTER AUTHORIZATION, where ``::`` is T-SQL.
SECURABLE_CLASSES = frozenset(
    {
        "OBJECT",
        "SCHEMA",
        "DATABASE",
        "TYPE",
        "USER",
        "ROLE",
        "LOGIN",
        "ASSEMBLY",
        "CERTIFICATE",
        "ENDPOINT",
        "SERVER",
        "COLLECTION",
        "CONTRACT",
        "SERVICE",
        "QUEUE",
        "KEY",
        "CATALOG",
        "AVAILABILITY",
        "GROUP",
        "FULLTEXT",
        "STOPLIST",
        "PROPERTY",
        "LIST",
        "SEARCH",
    }
)


@functools.cache
def _linter() -> Linter:
    return Linter(config=FluffConfig(overrides={"dialect": "tsql"}))


def fill_markers(sql: str) -> str:
    """``sql`` with its ``{marker}`` placeholders filled in; an unknown marker is an error
    (so that a new one gets a sample here rather than going unchecked)."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in MARKERS:
            raise ValueError(f"no sample for the marker {{{name}}}; add one to tsql.MARKERS")
        return MARKERS[name]

    return _MARKER.sub(fill, sql)


def bind_parameters(sql: str) -> str:
    """Each ``?`` outside strings, quoted names and comments as ``@P1``, ``@P2``, ...; and a
    ``[name]`` holding a doubled ``]`` with ``_`` in its place, which sqlfluff cannot lex."""
    out: list[str] = []
    n = 0
    i = 0
    length = len(sql)
    while i < length:
        ch = sql[i]
        two = sql[i : i + 2]
        if two == "--":
            end = sql.find("\n", i)
            end = length if end < 0 else end
        elif two == "/*":
            # T-SQL block comments nest.
            depth, end = 1, i + 2
            while end < length and depth:
                if sql.startswith("/*", end):
                    depth, end = depth + 1, end + 2
                elif sql.startswith("*/", end):
                    depth, end = depth - 1, end + 2
                else:
                    end += 1
        elif ch in "'\"[":
            close = "]" if ch == "[" else ch
            end = i + 1
            while end < length:
                if sql[end] == close:
                    if sql[end + 1 : end + 2] == close:  # a doubled quote stays inside
                        end += 2
                        continue
                    end += 1
                    break
                end += 1
        elif ch == "?":
            n += 1
            out.append(f"@P{n}")
            i += 1
            continue
        else:
            end = i + 1
        piece = sql[i:end]
        if ch == "[" and "]]" in piece:
            # sqlfluff does not lex a doubled ] inside [...]; SQL Server reads it as one ].
            piece = "[" + piece[1:-1].replace("]]", "_") + "]"
        out.append(piece)
        i = end
    return "".join(out)


def problems(sql: str) -> list[str]:
    """Why SQL Server would refuse ``sql`` (one batch) as T-SQL syntax; empty when it parses."""
    parsed = _linter().parse_string(bind_parameters(fill_markers(sql)))
    found = [v.desc() for v in parsed.violations]
    if found:
        return found
    tree = parsed.tree
    code = [s for s in tree.raw_segments if s.is_code]
    for i, seg in enumerate(code):
        if seg.raw == "::" and (i == 0 or code[i - 1].raw.upper() not in SECURABLE_CLASSES):
            found.append("'::' is not a cast in T-SQL (use CAST or CONVERT)")
    for seg in tree.recursive_crawl("execute_script_statement"):
        first = next((s for s in seg.segments if s.is_code), None)
        if first is None or first.raw.upper() not in ("EXEC", "EXECUTE"):
            found.append(f"{seg.raw[:60]!r} reads as a procedure call without EXEC")
    for seg in tree.recursive_crawl("values_clause"):
        first = next((s for s in seg.segments if s.is_code), None)
        if first is not None and first.raw.upper() == "VALUE":
            found.append("VALUE is not T-SQL (VALUES)")
    for i, seg in enumerate(code):
        if seg.raw.upper() == "TOP" and seg.is_type("keyword"):
            nxt = code[i + 1].raw if i + 1 < len(code) else ""
            if nxt != "(":
                found.append(f"TOP without parentheses (TOP {nxt} ...)")
    return found


def statements(path: Path) -> list[tuple[str, str]]:
    """``(label, batch)`` for every batch of a T-SQL file: one per ``-- name:`` query in a
    query file, one per ``GO``-separated batch in a script."""
    text = path.read_text(encoding="utf-8")
    names = list(_NAME.finditer(text))
    if names:
        out = []
        for i, match in enumerate(names):
            end = names[i + 1].start() if i + 1 < len(names) else len(text)
            out.append((f"{path.name}:{match.group(1)}", text[match.end() : end].strip()))
        return out
    return [(f"{path.name}:batch {i + 1}", b) for i, b in enumerate(split_script("mssql", text))]


def markdown_blocks(path: Path, language: str = "sql") -> list[tuple[str, str]]:
    """``(label, batch)`` for every fenced ``sql`` block of a Markdown file, split on ``GO``."""
    text = path.read_text(encoding="utf-8")
    out = []
    fence = re.compile(rf"^([ \t]*)```{language}\n(.*?)^\1```", re.M | re.S)
    for n, match in enumerate(fence.finditer(text), 1):
        block = textwrap.dedent(match.group(2))
        for i, batch in enumerate(split_script("mssql", block), 1):
            out.append((f"{path.name}:block {n}.{i}", batch))
    return out
