"""The one place that knows where the `sql/` folder lives and how its files are read.

Each dialect has a folder (`sql/sqlite`, `sql/postgresql`, `sql/mssql`) holding the same file
names. A file is either a script (DDL, run whole) or a set of named queries, each introduced by
a line ``-- name: query_name``.
"""

import functools
import re
from pathlib import Path

DIALECTS = ("sqlite", "postgresql", "mssql")

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def sql_root() -> Path:
    """The folder holding one sub-folder per dialect (repository checkout or installed wheel)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "sql", package / "_sql"):
        if (candidate / "sqlite").is_dir():
            return candidate
    raise FileNotFoundError(f"sql/ folder not found next to {package}")


def sql_path(dialect: str, filename: str) -> Path:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {DIALECTS}")
    path = sql_root() / dialect / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def sample_merge_fields(dialect: str) -> Path:
    """The sample's merge-field queries of a dialect (``DARWIN_NOTIFY_MERGE_FIELDS_DIR``
    selects a deployment's own folder instead)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {DIALECTS}")
    return Path(__file__).resolve().parents[1] / "sample" / "merge_fields" / dialect


def sample_schema(dialect: str) -> Path:
    """The sample darwin.Cloud's DDL of a dialect, which the seed and the demo create (the
    product reads a customer's own schema, described by the source model)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {DIALECTS}")
    return Path(__file__).resolve().parents[1] / "sample" / "schema" / dialect / "darwin_schema.sql"


@functools.cache
def read_sample_schema(dialect: str) -> str:
    """The whole text of the sample darwin.Cloud's DDL of a dialect."""
    return sample_schema(dialect).read_text(encoding="utf-8")


@functools.cache
def read_script(dialect: str, filename: str) -> str:
    """The whole text of a script file."""
    return sql_path(dialect, filename).read_text(encoding="utf-8")


@functools.cache
def read_queries(dialect: str, filename: str) -> dict[str, str]:
    """Named queries of a file: ``{name: sql}``."""
    text = read_script(dialect, filename)
    names = list(_NAME.finditer(text))
    queries: dict[str, str] = {}
    for i, match in enumerate(names):
        end = names[i + 1].start() if i + 1 < len(names) else len(text)
        # Comment lines stay in the file: a driver that looks at a statement's first word
        # (psqlODBC, to choose a cursor for a SELECT) must see the statement.
        lines = [
            ln for ln in text[match.end() : end].splitlines() if not ln.strip().startswith("--")
        ]
        body = "\n".join(lines).strip()
        queries[match.group(1)] = body.rstrip(";").strip() if dialect != "mssql" else body
    return queries


def split_script(dialect: str, text: str) -> list[str]:
    """Split a script into statements the DB-API can execute one at a time.

    T-SQL scripts are split on lines that are exactly ``GO`` (a client batch separator);
    the others on a semicolon at the end of a line, which our scripts never use inside a
    statement.
    """
    if dialect == "mssql":
        parts = re.split(r"^\s*GO\s*$", text, flags=re.MULTILINE | re.IGNORECASE)
    else:
        parts = re.split(r";\s*$", text, flags=re.MULTILINE)
    statements = []
    for part in parts:
        lines = [ln for ln in part.splitlines() if not ln.strip().startswith("--")]
        stmt = "\n".join(lines).strip()
        if stmt:
            statements.append(stmt)
    return statements
