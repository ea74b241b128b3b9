"""Microsoft's ODBC Driver 18, installed by the project's own files, loads under the name the
project's SQL Server connection string asks for.

Each case runs in a fresh Python process: unixODBC reads its configuration folder once per
process, and registering the driver changes the process's environment.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from darwin_notify_assets.storage import odbc_driver
from darwin_notify_assets.storage.odbc_driver import DRIVER_NAME

ROOT = Path(__file__).resolve().parents[2]

# A closed port: the driver must get as far as TCP, and give up within the login timeout.
URL = "mssql://user@127.0.0.1:1/db?driver=ODBC+Driver+18+for+SQL+Server"

CONNECT = """
import json, time, pyodbc
from darwin_notify_assets.storage.db import DatabaseUrl
from darwin_notify_assets.storage.dialects import dialect_for
text = dialect_for("mssql").connection_string(DatabaseUrl.parse({url!r}), None, True)
started = time.monotonic()
try:
    pyodbc.connect(text, timeout=2)
    outcome = {{"sqlstate": "connected", "message": ""}}
except pyodbc.Error as exc:
    outcome = {{"sqlstate": exc.args[0], "message": str(exc.args[-1])}}
outcome["seconds"] = time.monotonic() - started
outcome["drivers"] = pyodbc.drivers()
print(json.dumps(outcome))
"""


def _python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("ODBCSYSINI", "ODBCINSTINI", "ODBCINI")
    }
    environ.pop("DARWIN_NOTIFY_ODBC_BASE_INI", None)
    environ.update(PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "cache"), **env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=tmp_path,
    )


def _outcome(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_reached_microsofts_driver(outcome: dict) -> None:
    # IM002 (no such data source or driver) or unixODBC's "Can't open lib" (01000) would mean
    # the name did not resolve to a loadable driver.
    assert outcome["sqlstate"] in ("08001", "HYT00"), outcome
    assert "[Microsoft][ODBC Driver 18 for SQL Server]" in outcome["message"], outcome
    assert outcome["seconds"] < 10, outcome


def test_the_project_connection_string_reaches_microsofts_driver(tmp_path) -> None:
    code = (
        "from darwin_notify_assets.storage.odbc_driver import register_sql_server_driver\n"
        "register_sql_server_driver(required=True)\n" + CONNECT.format(url=URL)
    )
    outcome = _outcome(_python(code, tmp_path))
    _assert_reached_microsofts_driver(outcome)
    assert DRIVER_NAME in outcome["drivers"]


def test_without_registration_the_name_does_not_resolve(tmp_path) -> None:
    """The negative control of the test above: the same connect, with a driver list that
    lacks the name, fails in unixODBC before any driver runs."""
    (tmp_path / "odbcinst.ini").write_text("[Example Driver]\nDriver=libexample.so\n")
    outcome = _outcome(_python(CONNECT.format(url=URL), tmp_path, ODBCSYSINI=str(tmp_path)))
    assert outcome["sqlstate"] in ("IM002", "01000"), outcome
    assert "[Microsoft]" not in outcome["message"]


def test_the_packaged_driver_is_added_to_the_systems_list(tmp_path) -> None:
    library = odbc_driver.packaged_library()
    assert library is not None and library.name.startswith("libmsodbcsql-18")
    base = tmp_path / "etc"
    base.mkdir()
    (base / "odbcinst.ini").write_text("[Example Driver]\nDriver=libexample.so\n")
    (base / "odbc.ini").write_text("")
    folder = tmp_path / "ours"
    folder.mkdir()
    ini = odbc_driver.write_odbcinst(folder, base / "odbcinst.ini", library)
    assert odbc_driver.registered_drivers(ini) == ["Example Driver", DRIVER_NAME]
    assert (folder / "odbc.ini").resolve() == (base / "odbc.ini").resolve()
    # Written again unchanged, the file is left alone.
    before = ini.stat().st_mtime_ns
    odbc_driver.write_odbcinst(folder, base / "odbcinst.ini", library)
    assert ini.stat().st_mtime_ns == before
    outcome = _outcome(_python(CONNECT.format(url=URL), tmp_path, ODBCSYSINI=str(folder)))
    assert outcome["drivers"] == ["Example Driver", DRIVER_NAME]
    _assert_reached_microsofts_driver(outcome)


def test_registration_keeps_the_systems_drivers_and_reaches_child_processes(tmp_path) -> None:
    base = tmp_path / "etc"
    base.mkdir()
    (base / "odbcinst.ini").write_text("[Example Driver]\nDriver=libexample.so\n")
    code = """
    import json, os, subprocess, sys
    from darwin_notify_assets.storage.odbc_driver import register_sql_server_driver
    reg = register_sql_server_driver(required=True)
    child = subprocess.run(
        [sys.executable, "-c", "import pyodbc; print(pyodbc.drivers())"],
        capture_output=True, text=True, check=True,
    )
    print(json.dumps({"system": reg.system, "ini": str(reg.odbcinst_ini),
                      "sysini": os.environ["ODBCSYSINI"], "child": child.stdout.strip()}))
    """
    outcome = _outcome(_python(code, tmp_path, ODBCSYSINI=str(base)))
    assert outcome["system"] is False
    assert outcome["ini"].startswith(str(tmp_path / "cache" / "darwin-notify" / "odbc"))
    assert Path(outcome["sysini"]) == Path(outcome["ini"]).parent
    assert outcome["child"] == str(["Example Driver", DRIVER_NAME])


def test_a_system_wide_registration_is_left_alone(tmp_path) -> None:
    library = odbc_driver.packaged_library()
    (tmp_path / "odbcinst.ini").write_text(f"[{DRIVER_NAME}]\nDriver={library}\n")
    code = """
    import json, os
    from darwin_notify_assets.storage.odbc_driver import register_sql_server_driver
    reg = register_sql_server_driver(required=True)
    print(json.dumps({"system": reg.system, "sysini": os.environ["ODBCSYSINI"]}))
    """
    outcome = _outcome(_python(code, tmp_path, ODBCSYSINI=str(tmp_path)))
    assert outcome == {"system": True, "sysini": str(tmp_path)}


def test_registering_after_the_first_odbc_call_is_refused_by_name(tmp_path) -> None:
    (tmp_path / "odbcinst.ini").write_text("[Example Driver]\nDriver=libexample.so\n")
    code = """
    import pyodbc
    from darwin_notify_assets.errors import ConfigurationError
    from darwin_notify_assets.storage.odbc_driver import register_sql_server_driver
    pyodbc.drivers()
    try:
        register_sql_server_driver(required=True)
    except ConfigurationError as exc:
        print(exc)
    """
    proc = _python(code, tmp_path, ODBCSYSINI=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "before the process's first ODBC call" in proc.stdout


def test_a_driver_list_that_cannot_be_read_is_a_configuration_error(tmp_path) -> None:
    broken = tmp_path / "odbcinst.ini"
    broken.write_text("Driver=no section header\n")
    with pytest.raises(odbc_driver.ConfigurationError, match="cannot read the ODBC driver list"):
        odbc_driver.registered_drivers(broken)
    assert odbc_driver.registered_drivers(tmp_path / "missing.ini") == []
