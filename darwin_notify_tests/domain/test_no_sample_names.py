"""No product module names a table or column of the sample darwin.Cloud: they come from the
source model. The sample's own generator (``sample/``) and the test doubles (``testing/``) may.
"""

import ast
import re
import sqlite3
from pathlib import Path

import darwin_notify_assets
from darwin_notify_assets.storage.sqlfiles import sql_path

PACKAGE = Path(darwin_notify_assets.__file__).resolve().parent
EXEMPT = ("sample", "testing")
# The same word, another meaning: an email's RFC 5322 header.
ALLOWED = {("delivery/senders.py", "Subject")}


def sample_names() -> set[str]:
    """Every table and column of the sample schema, from its SQLite DDL."""
    db = sqlite3.connect(":memory:")
    db.executescript(sql_path("sqlite", "darwin_schema.sql").read_text(encoding="utf-8"))
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
