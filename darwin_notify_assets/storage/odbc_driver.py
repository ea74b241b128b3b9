"""Microsoft ODBC Driver 18 for SQL Server, from the project's own dependencies.

The PyPI package ``mssql-python-odbc`` (the ``mssql`` extra) carries the driver's shared
library for Linux. unixODBC finds a driver by its name in ``odbcinst.ini``. When the name is
not registered system-wide, this module writes an ``odbcinst.ini`` of its own (the system's
entries plus this driver) and points ``ODBCSYSINI`` at its folder.

unixODBC reads ``ODBCSYSINI`` once per process, on its first call (a connection or a driver
listing), and keeps that folder for the life of the process; so
:func:`register_sql_server_driver` must run before the process's first ODBC call, whatever
database that call is for. It decides from the system's ``odbcinst.ini`` itself, without an
ODBC call, and checks through ``pyodbc.drivers()`` afterwards.
"""

import configparser
import ctypes
import hashlib
import logging
import os
import platform
import sys
import tempfile
import threading
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from darwin_notify_assets.errors import ConfigurationError

log = logging.getLogger(__name__)

DRIVER_NAME = "ODBC Driver 18 for SQL Server"
PACKAGE = "mssql_python_odbc"
# Debian's packages for the libraries the driver links (ldd): Kerberos, and unixODBC, whose
# libodbcinst needs libltdl.
SYSTEM_PACKAGES = ("unixodbc", "libgssapi-krb5-2", "libkrb5-3", "libltdl7")

# Where the system's odbcinst.ini was before this module pointed ODBCSYSINI elsewhere; kept in
# the environment so that child processes, which inherit ODBCSYSINI, still find it.
_BASE_ENV = "DARWIN_NOTIFY_ODBC_BASE_INI"
_LOCK = threading.Lock()
_registered: "DriverRegistration | None" = None

# Which of the package's Linux builds fits the distribution (os-release ID and ID_LIKE).
_FAMILIES = (
    ("debian_ubuntu", {"debian", "ubuntu"}),
    ("rhel", {"rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn"}),
    ("suse", {"suse", "sles", "opensuse", "opensuse-leap", "opensuse-tumbleweed"}),
    ("alpine", {"alpine"}),
)


@dataclass(frozen=True)
class DriverRegistration:
    """Where unixODBC finds the driver: registered system-wide, or by this module."""

    name: str
    #: The shared library this module registered; None when the system had the driver.
    library: Path | None
    #: The ``odbcinst.ini`` this module wrote; None when the system had the driver.
    odbcinst_ini: Path | None

    @property
    def system(self) -> bool:
        return self.library is None


def system_odbcinst_ini() -> Path:
    """The ``odbcinst.ini`` unixODBC reads when this module has not redirected it.

    unixODBC joins ``ODBCSYSINI`` (default ``/etc``) and ``ODBCINSTINI`` (default
    ``odbcinst.ini``).
    """
    inherited = os.environ.get(_BASE_ENV)
    if inherited:
        return Path(inherited)
    folder = os.environ.get("ODBCSYSINI") or "/etc"
    return Path(folder) / (os.environ.get("ODBCINSTINI") or "odbcinst.ini")


def registered_drivers(ini: Path) -> list[str]:
    """The driver names (sections) of an ``odbcinst.ini``; none if it is missing."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(ini.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return []
    except configparser.Error as exc:
        raise ConfigurationError(f"cannot read the ODBC driver list {ini}: {exc}") from None
    return [s for s in parser.sections() if s.upper() != "ODBC"]


def _distribution_family() -> str | None:
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return None
    ids: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in ("ID", "ID_LIKE"):
            ids.update(value.strip().strip('"').lower().split())
    for family, names in _FAMILIES:
        if ids & names:
            return family
    return None


def packaged_library() -> Path | None:
    """The driver library inside ``mssql-python-odbc`` for this machine, or None when the
    package is not installed or has no build for this system."""
    if not sys.platform.startswith("linux"):
        return None
    spec = find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    family = _distribution_family()
    if family is None:
        return None
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    for location in spec.submodule_search_locations:
        lib_dir = Path(location) / "libs" / "linux" / family / arch / "lib"
        found = sorted(lib_dir.glob("libmsodbcsql-18*.so*"))
        if found:
            return found[-1]
    return None


def _ini_folder(library: Path) -> Path:
    """A folder of the project's for this library's ``odbcinst.ini`` (one per installation,
    so that two virtual environments never point at each other's files)."""
    key = hashlib.sha256(str(library).encode()).hexdigest()[:16]
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    for root in (Path(cache), Path(tempfile.gettempdir()) / f"darwin-notify-{os.getuid()}"):
        folder = root / "darwin-notify" / "odbc" / key
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise ConfigurationError(
        f"no writable folder for the ODBC driver list (tried {cache} and {tempfile.gettempdir()})"
    )


def odbcinst_text(base: Path, library: Path) -> str:
    """The system's ``odbcinst.ini`` with this driver's section added."""
    try:
        text = base.read_text(encoding="utf-8", errors="replace").rstrip()
    except FileNotFoundError:
        text = ""
    section = (
        f"[{DRIVER_NAME}]\n"
        f"Description=Microsoft ODBC Driver 18 for SQL Server (PyPI {PACKAGE.replace('_', '-')})\n"
        f"Driver={library}\n"
        "UsageCount=1\n"
    )
    return f"{text}\n\n{section}" if text else section


def write_odbcinst(folder: Path, base: Path, library: Path) -> Path:
    """Write ``folder/odbcinst.ini`` (atomically, only when its text changes) and carry the
    system's data sources (``odbc.ini``, read from the same folder) over by a link."""
    target = folder / "odbcinst.ini"
    text = odbcinst_text(base, library)
    try:
        current = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if current != text:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".odbcinst-", suffix=".ini")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    sources = base.parent / "odbc.ini"
    link = folder / "odbc.ini"
    if sources.exists() and not link.exists() and sources.resolve() != link.resolve():
        try:
            link.symlink_to(sources)
        except FileExistsError:
            pass
    return target


def _load_check(library: Path) -> None:
    """Load the library once, so that a missing system library is named here rather than as
    unixODBC's "file not found"."""
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot load {library.name}: {exc}; install the system libraries it needs "
            f"(Debian/Ubuntu: {' '.join(SYSTEM_PACKAGES)})"
        ) from None


def register_sql_server_driver(required: bool = False) -> DriverRegistration | None:
    """Make "ODBC Driver 18 for SQL Server" known to unixODBC in this process.

    Call it before the process's first ODBC call (any database's). Nothing changes when the
    system already registers the driver. Otherwise, if ``mssql-python-odbc`` is installed, its
    library is registered in an ``odbcinst.ini`` of the project's and ``ODBCSYSINI`` points at
    it. Returns where the driver is registered, or None when it is nowhere to be had and not
    ``required``.

    Raises:
        ConfigurationError: ``required`` and the driver cannot be had, the library cannot be
            loaded, or unixODBC had already read its configuration in this process.
    """
    global _registered
    with _LOCK:
        if _registered is not None:
            return _registered
        base = system_odbcinst_ini()
        names = {n.casefold() for n in registered_drivers(base)}
        ours = os.environ.get(_BASE_ENV) is not None
        if DRIVER_NAME.casefold() in names and not ours:
            _registered = DriverRegistration(DRIVER_NAME, None, None)
            return _registered
        library = packaged_library()
        if library is None:
            if not required:
                return None
            raise ConfigurationError(
                f'"{DRIVER_NAME}" is not registered with unixODBC ({base}) and the package '
                f"mssql-python-odbc has no driver for this system; install it with "
                f"pip install 'darwin-notify[mssql]' (Linux) or Microsoft's msodbcsql18 package"
            )
        try:
            import pyodbc
        except ImportError as exc:  # libodbc.so.2 missing: unixODBC is not installed
            raise ConfigurationError(
                f"cannot load pyodbc ({exc}); install unixODBC ({' '.join(SYSTEM_PACKAGES)})"
            ) from exc
        _load_check(library)
        folder = _ini_folder(library)
        ini = write_odbcinst(folder, base, library)
        os.environ[_BASE_ENV] = str(base)
        os.environ["ODBCSYSINI"] = str(folder)
        if os.environ.get("ODBCINSTINI"):
            os.environ["ODBCINSTINI"] = ini.name
        if DRIVER_NAME not in pyodbc.drivers():
            raise ConfigurationError(
                f'"{DRIVER_NAME}" was registered in {ini}, but unixODBC in this process had '
                "already read its configuration elsewhere; register the driver before the "
                "process's first ODBC call"
            )
        log.info("registered %s from %s in %s", DRIVER_NAME, library, ini)
        _registered = DriverRegistration(DRIVER_NAME, library, ini)
        return _registered
