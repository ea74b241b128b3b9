"""No product module names a table or column of the sample darwin.Cloud: they come from the
source model. The sample's own generator (``sample/``) and the test doubles (``testing/``) may.
"""

import ast
import re
import shutil
import sqlite3
from pathlib import Path

import darwin_notify_assets
from darwin_notify_assets.storage.sqlfiles import sample_schema, sql_root

PACKAGE = Path(darwin_notify_assets.__file__).resolve().parent
EXEMPT = ("sample", "testing")
# The same word, another meaning: an email's RFC 5322 header.
ALLOWED = {("delivery/senders.py", "Subject")}


def sample_tables() -> list[str]:
    """Every table of the sample schema, from its SQLite DDL."""
    db = sqlite3.connect(":memory:")
    db.executescript(sample_schema("sqlite").read_text(encoding="utf-8"))
    return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def sample_names() -> set[str]:
    """Every table and column of the sample schema, from its SQLite DDL."""
    db = sqlite3.connect(":memory:")
    db.executescript(sample_schema("sqlite").read_text(encoding="utf-8"))
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    names = set(tables)
    for table in tables:
        names |= {r[1] for r in db.execute(f'PRAGMA table_info("{table}")')}
    return names


def _literals(tree: ast.AST):
    """String constants that are not docstrings, with their line numbers."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield node.lineno, node.value


def sample_names_in_product_code() -> list[str]:
    names = sample_names()
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names))) + r")\b")
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in EXEMPT:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, text in _literals(tree):
            # A literal that is a sample name, or SQL/f-string text that contains one quoted
            # or as an identifier, e.g. "People" or 'SELECT "AgentID" FROM ...'.
            if (str(rel), text) in ALLOWED:
                continue
            if text in names or any(
                re.search(rf'["\[`]{re.escape(m)}["\]`]', text) for m in pattern.findall(text)
            ):
                hits.append(f"{rel}:{line}: {text!r}")
    return hits


def test_the_sample_schema_s_names_are_known():
    names = sample_names()
    assert {"Agent", "People", "AgentID", "PeopleID", "EmailOptIn", "NotificationSchedule"} <= names


def test_no_product_module_names_a_sample_table_or_column():
    assert sample_names_in_product_code() == []


def sample_tables_in_sql(root: Path) -> list[str]:
    """Lines of the ``.sql`` files under ``root`` (statements and comments) that name a sample
    table."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sample_tables())) + r")\b")
    hits = []
    for path in sorted(root.rglob("*.sql")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(root).as_posix()}:{n}: {line.strip()}")
    return hits


def test_no_product_sql_file_names_a_sample_table():
    assert any(sql_root().rglob("*.sql"))
    assert sample_tables_in_sql(sql_root()) == []


def test_the_sql_check_finds_a_sample_table(tmp_path):
    # The same check over a copy of sql/ with the sample's DDL put back: it must object.
    copy = tmp_path / "sql"
    shutil.copytree(sql_root(), copy)
    shutil.copy(sample_schema("mssql"), copy / "mssql" / "darwin_schema.sql")
    assert any(h.startswith("mssql/darwin_schema.sql:") for h in sample_tables_in_sql(copy))
