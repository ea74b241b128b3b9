"""The Dagster UI in a real browser: ``dagster dev`` (or the webserver alone) as a child
process, and headless Chromium driven by Playwright, without pytest.

The UI test (``integration/test_ui.py``) and the partitions-page benchmark
(``benchmarks/ui_partitions.py``) share these. The browser is Debian's ``chromium`` package
(``infra/services.sh`` installs it); Playwright only drives it, so ``playwright install`` is
never needed.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("DARWIN_NOTIFY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Wide enough that the asset graph draws every node at full size, with its whole name.
VIEWPORT = {"width": 2800, "height": 1400}


class UIError(RuntimeError):
    """The UI's server did not come up, or the browser could not be started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals() -> None:
    # A background job of a non-interactive shell (CI, `make test &`) inherits SIGINT and
    # SIGTERM ignored; `dagster dev` then ignores them too and cannot be stopped but by KILL.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


class DagsterServer:
    """``dagster dev`` (webserver, daemon and code server) or ``dagster-webserver`` alone, on a
    free port of 127.0.0.1, in a process group of its own so that it stops as a whole.

    ``target`` names the code location (``-m module``); by default the repository's
    ``workspace.yaml``.
    """

    def __init__(
        self,
        dagster_home: Path,
        log_path: Path,
        env: Mapping[str, str],
        daemon: bool = True,
        target: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dagster_home = dagster_home
        self.log_path = log_path
        self.daemon = daemon
        bin_dir = Path(sys.executable).parent
        command = "dagster" if daemon else "dagster-webserver"
        self.argv = [str(bin_dir / command)] + (["dev"] if daemon else [])
        self.argv += target or ["-w", str(REPO_ROOT / "workspace.yaml")]
        self.argv += ["-h", "127.0.0.1", "-p"]
        self.argv.append(str(self.port))
        path = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        self.env = {**env, "DAGSTER_HOME": str(dagster_home), "PYTHONPATH": path}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> "DagsterServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_default_signals,
            )
        self.wait_loaded(timeout)
        return self

    def wait_loaded(self, timeout: float) -> None:
        """Until the webserver answers and the code location is loaded without error."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise UIError(f"{self.argv[0]} exited with {self.proc.returncode}; {self.tail()}")
            try:
                data = self.graphql(
                    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
                    " locationOrLoadError { __typename ... on PythonError { message } } } } } }"
                )
                entries = data["workspaceOrError"]["locationEntries"]
                loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
                if loaded and all(
                    e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in loaded
                ):
                    return
                errors = [e["locationOrLoadError"].get("message") for e in loaded]
                last = f"locations {entries}" if not any(errors) else f"load error: {errors}"
            except (OSError, KeyError, TypeError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.5)
        raise UIError(
            f"the Dagster UI at {self.url} was not ready in {timeout}s ({last}); {self.tail()}"
        )

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> Any:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise ValueError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log at {self.log_path})"
        return f"last lines of {self.log_path}:\n" + "\n".join(text)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM to the whole group (webserver, daemon, code servers, run workers), then
        KILL to whatever is left after ``timeout``."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)
        if _group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self.proc = None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's) driven by Playwright."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise UIError(f"no browser at {CHROMIUM}: install Debian's chromium (infra/services.sh up)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class UIPage:
    """One browser tab on the Dagster UI, with the waits and DOM readings the tests need.

    Every step that shows something saves a numbered screenshot in ``shots``.
    """

    def __init__(
        self,
        browser: Any,
        base_url: str,
        shots: Path,
        timeout_ms: float = 90_000,
        on_shot: Callable[[Path], None] | None = None,
    ) -> None:
        self.base_url = base_url
        self.shots = shots
        self.shots.mkdir(parents=True, exist_ok=True)
        self.on_shot = on_shot
        self.saved: list[Path] = []
        # Every text read from a page, so a test can search all it was shown.
        self.shown: list[str] = []
        self.page = browser.new_page(viewport=VIEWPORT)
        self.page.set_default_timeout(timeout_ms)
        # The first visit shows "Join the Dagster community"; it would cover what we click.
        self.page.add_locator_handler(
            self.page.get_by_role("button", name="Skip", exact=True),
            lambda skip: skip.click(),
        )

    def goto(self, path: str, ready: Callable[[], Any], attempts: int = 3) -> None:
        """Open ``path`` and wait for ``ready`` (a locator's ``wait_for``); reload on a failed
        navigation or a page that did not become ready."""
        from playwright.sync_api import Error as PlaywrightError

        for attempt in range(1, attempts + 1):
            try:
                self.page.goto(self.base_url + path, wait_until="domcontentloaded")
                ready()
                return
            except PlaywrightError:
                if attempt == attempts:
                    self.shot(f"failed-{re.sub(r'[^a-z0-9]+', '-', path.lower()).strip('-')}")
                    raise
                time.sleep(2 * attempt)

    def choose(self, opener: Any, item: Any, attempts: int = 3) -> None:
        """Open a menu with the locator ``opener`` and click its entry ``item``. The community
        dialog may appear while the menu is open, and dismissing it closes the menu: then the
        menu is opened again."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        for attempt in range(1, attempts + 1):
            opener.click()
            try:
                item.click(timeout=15_000)
                return
            except PlaywrightTimeout:
                if attempt == attempts:
                    raise
                self.page.keyboard.press("Escape")

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A step of a scenario: a screenshot of the page as it was when the step failed."""
        try:
            yield
        except BaseException:
            try:
                self.shot(f"failed-{name}")
            except Exception:  # noqa: BLE001 - the step's own error is the one to report
                pass
            raise

    def shot(self, name: str) -> Path:
        path = self.shots / f"{len(self.saved) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        self.saved.append(path)
        if self.on_shot is not None:
            self.on_shot(path)
        return path

    def text(self, selector: str = "body") -> str:
        text = str(self.page.locator(selector).first.inner_text())
        self.shown.append(text)
        return text

    def markdown(self, key: str, shot: str | None = None) -> str:
        """The text of the markdown metadata entry ``key``: a short one is shown in its row,
        a long one in a dialog, opened from the row's "[Show Markdown]" and closed again
        after reading."""
        row = self.page.locator("tr").filter(has=self.page.get_by_text(key, exact=True)).last
        button = row.get_by_text("[Show Markdown]")
        if not button.count():
            text = str(row.locator(":scope > td").nth(1).inner_text())
            self.shown.append(text)
            return text
        button.click()
        dialog = self.page.get_by_role("dialog").filter(has_text=key)
        dialog.get_by_role("button", name="Close").wait_for()
        text = str(dialog.inner_text())
        self.shown.append(text)
        if shot:
            self.shot(shot)
        dialog.get_by_role("button", name="Close").click()
        dialog.wait_for(state="hidden")
        return text

    # -- DOM readings ------------------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        """The metadata table shown (key -> value text), without nested tables' rows."""
        return dict(
            self.page.evaluate(
                """() => {
                  const out = [];
                  for (const row of document.querySelectorAll('tr')) {
                    if (row.closest('td') || row.children.length < 2) continue;
                    const [key, value] = row.children;
                    if (key.tagName !== 'TD') continue;
                    out.push([key.innerText.trim(), value.innerText.trim()]);
                  }
                  return out;
                }"""
            )
        )

    def table_with_header(self, first_header: str) -> list[dict[str, str]]:
        """The rows of the (nested) table whose first column header is ``first_header``."""
        return list(
            self.page.evaluate(
                """(first) => {
                  for (const table of document.querySelectorAll('table')) {
                    const heads = [...table.querySelectorAll(':scope > thead th')]
                      .map(th => th.innerText.trim());
                    if (heads[0] !== first) continue;
                    return [...table.querySelectorAll(':scope > tbody > tr')].map(tr =>
                      Object.fromEntries([...tr.children].map((td, i) =>
                        [heads[i], td.innerText.trim()])));
                  }
                  return [];
                }""",
                first_header,
            )
        )

    def asset_node_names(self) -> list[str]:
        return sorted(
            t.strip() for t in self.page.locator("[class*=assetName]").all_text_contents()
        )

    def check_states(self, names: list[str]) -> dict[str, str]:
        """The state each named asset check shows in the asset's check list."""
        return dict(
            self.page.evaluate(
                """(names) => names.map(name => {
                  const label = document.querySelector(`[title="${name}"]`);
                  const row = label && label.parentElement;
                  const state = row ? row.innerText.replaceAll(name, '').trim() : '';
                  return [name, state];
                })""",
                names,
            )
        )


def partitions_selected(text: str) -> int | None:
    """The count of the partitions page's "3,653 Partitions Selected"."""
    match = re.search(r"([\d,]+) Partitions? Selected", text)
    return int(match.group(1).replace(",", "")) if match else None
