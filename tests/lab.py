"""JupyterLab in headless Chromium, driven by Playwright, for end-to-end tests.

``Lab`` runs a real ``jupyter lab`` server (a free port, a token, every Jupyter, IPython
and XDG folder in a temporary directory, so the home folder is left alone) with the
environment its kernels inherit. ``open_browser`` launches Debian's Chromium (never a
browser downloaded by ``playwright install``). ``Notebook`` is one notebook open in a
page: run a cell by index, read a cell's output, save, reload.

Every wait is bounded. The recipe and its pitfalls are in shared/TESTING.md, section 5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import nbformat

T = TypeVar("T")

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


def find_chromium() -> str | None:
    """Debian's Chromium (``scripts/ensure_chromium.sh`` installs it), or None."""
    env = os.environ.get("NBSTREAM_CHROMIUM")
    for path in (env, *CHROMIUM_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    return None


def missing_requirements() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed (pip install -e '.[dev]')"
    if find_chromium() is None:
        return (
            "Chromium not found at /usr/bin/chromium: run scripts/ensure_chromium.sh "
            "(as root) to install Debian's chromium"
        )
    return None


def wait_until(
    predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll ``predicate`` until it returns something truthy; raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(interval)


def write_notebook(path: Path, cells: list[str]) -> None:
    """A notebook of code cells for the venv's ``python3`` kernel."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nbformat.write(nb, path)


class Lab:
    """A ``jupyter lab`` server in its own temporary world.

    ``env`` is added to the server's environment, which every kernel it starts inherits.
    """

    def __init__(self, tmp: Path, env: dict[str, str], token: str = "nbstream-e2e"):
        self.tmp = tmp
        self.root = tmp / "root"
        self.token = token
        self.url = ""
        dirs = {
            "JUPYTER_CONFIG_DIR": tmp / "jupyter-config",
            "JUPYTER_DATA_DIR": tmp / "jupyter-data",
            "JUPYTER_RUNTIME_DIR": tmp / "jupyter-runtime",
            "IPYTHONDIR": tmp / "ipython",
            "XDG_CONFIG_HOME": tmp / "xdg-config",
            "XDG_CACHE_HOME": tmp / "xdg-cache",
            "XDG_DATA_HOME": tmp / "xdg-data",
            "XDG_RUNTIME_DIR": tmp / "xdg-runtime",
        }
        for d in (self.root, *dirs.values()):
            d.mkdir(parents=True, exist_ok=True)
        (tmp / "xdg-runtime").chmod(0o700)
        # no "official Jupyter news?" prompt over the notebook in screenshots
        settings = dirs["JUPYTER_CONFIG_DIR"] / "lab" / "user-settings" / "@jupyterlab"
        for ext, name, value in (
            ("apputils-extension", "notification", {"fetchNews": "false"}),
            # every output shown (the default shows 50, then a "show more" button)
            (
                "notebook-extension",
                "tracker",
                {"windowingMode": "none", "maxNumberOutputs": 1000},
            ),
        ):
            (settings / ext).mkdir(parents=True, exist_ok=True)
            (settings / ext / f"{name}.jupyterlab-settings").write_text(
                json.dumps(value)
            )
        self.runtime_dir = dirs["JUPYTER_RUNTIME_DIR"]
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("NBSTREAM_", "OPENAI_", "ANTHROPIC_", "JUPYTER"))
            },
            **{k: str(v) for k, v in dirs.items()},
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            **env,
        }
        self.log_path = tmp / "jupyterlab.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- life cycle -------------------------------------------------------------------
    def start(self, timeout: float = 60) -> Lab:
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            "--port=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.extension_manager=readonly",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            # the default 1,000 msg/s would be fine; never let it cut a stream short
            "--ServerApp.iopub_msg_rate_limit=1e9",
            "--ServerApp.iopub_data_rate_limit=1e12",
        ]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT
            )
        info = self.runtime_dir / f"jpserver-{self.proc.pid}.json"

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited early:\n{self.log_tail()}")
            if not info.exists():
                return False
            try:
                data = json.loads(info.read_text())
            except ValueError:
                return False
            self.url = data["url"]
            try:
                self.api("GET", "api/status")
            except OSError:
                return False
            return True

        try:
            wait_until(ready, timeout, "jupyter lab to answer", 0.1)
        except TimeoutError:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.proc is None:
            return
        with suppress(OSError):
            self.shutdown_kernels()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    # -- REST -------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"token {self.token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def shutdown_kernels(self) -> None:
        """Kernels outlive page reloads: end every session and kernel."""
        for s in self.api("GET", "api/sessions", timeout=5):
            with suppress(OSError):
                self.api("DELETE", f"api/sessions/{s['id']}", timeout=10)
        for k in self.api("GET", "api/kernels", timeout=5):
            with suppress(OSError):
                self.api("DELETE", f"api/kernels/{k['id']}", timeout=10)

    def notebook_url(self, name: str) -> str:
        # ?reset: do not restore tabs of an earlier page
        return f"{self.url}lab/tree/{name}?reset&token={self.token}"


@contextmanager
def open_browser(
    tmp: Path,
) -> Iterator[Any]:
    """Playwright's Chromium, from Debian's package; yields the Browser."""
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        raise RuntimeError(missing_requirements() or "no chromium")
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp / "xdg-config"),
        "XDG_CACHE_HOME": str(tmp / "xdg-cache"),
    }
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=exe, args=CHROMIUM_ARGS, env=env, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


class Notebook:
    """One notebook open in a JupyterLab page."""

    def __init__(self, page: Any, lab: Lab, name: str) -> None:
        self.page = page
        self.lab = lab
        self.name = name

    @property
    def panel(self) -> Any:
        return self.page.locator(".jp-NotebookPanel:visible")

    def cell(self, i: int) -> Any:
        return self.panel.locator(".jp-Notebook .jp-Cell").nth(i)

    def output(self, i: int) -> Any:
        return self.cell(i).locator(".jp-OutputArea")

    def open(self, timeout: float = 60) -> Notebook:
        self.page.goto(self.lab.notebook_url(self.name), timeout=timeout * 1000)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        self.cell(0).locator(".jp-InputArea-editor").wait_for(timeout=timeout * 1000)
        self.wait_kernel_idle(timeout)

    def kernel_status(self) -> str:
        from playwright.sync_api import Error as PlaywrightError

        ind = self.panel.locator(".jp-Notebook-ExecutionIndicator")
        try:
            return str(ind.first.get_attribute("data-status", timeout=1000) or "")
        except PlaywrightError:  # not there yet (the page is still loading)
            return ""

    def wait_kernel_idle(self, timeout: float = 60) -> None:
        wait_until(
            lambda: self.kernel_status() == "idle",
            timeout,
            "the kernel to be idle",
            0.1,
        )

    def prompt(self, i: int) -> str:
        return str(self.cell(i).locator(".jp-InputPrompt").inner_text(timeout=5000))

    def run(self, i: int, *, wait: bool = True, timeout: float = 30) -> None:
        """Run cell ``i`` (click its editor, Control+Enter); by default wait until it
        has finished. A keypress can be lost right after the kernel starts: press again
        only while the prompt has not changed (a queued or running cell reads ``[*]:``
        at once)."""
        before = self.prompt(i).strip()
        deadline = time.monotonic() + timeout
        while True:
            self.cell(i).locator(".jp-InputArea-editor").click()
            self.page.keyboard.press("Control+Enter")
            try:
                wait_until(
                    lambda: self.prompt(i).strip() != before, 3, "the cell to start"
                )
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        if wait:
            self.wait_cell_done(i, max(1.0, deadline - time.monotonic()))

    def wait_cell_done(self, i: int, timeout: float = 30) -> None:
        def done() -> bool:
            p = self.prompt(i).strip()
            return p.startswith("[") and p not in ("[ ]:", "[*]:")

        wait_until(done, timeout, f"cell {i} to finish", 0.1)

    def output_text(self, i: int) -> str:
        return str(self.output(i).inner_text(timeout=5000))

    def save(self, timeout: float = 10) -> None:
        """Save the notebook (Control+S) and wait until its tab is no longer dirty."""
        self.panel.locator(".jp-Notebook").first.focus()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+s")
        tab = self.page.locator(".lm-TabBar-tab.lm-mod-closable.jp-mod-current")
        wait_until(
            lambda: "jp-mod-dirty" not in (tab.first.get_attribute("class") or ""),
            timeout,
            "the notebook to be saved",
            0.1,
        )

    def hide_sidebar(self) -> None:
        """Collapse the left sidebar (the file browser): more room for screenshots."""
        current = self.page.locator(
            ".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current"
        )
        if current.count():
            current.first.click()

    def screenshot(self, name: str, target: Any | None = None) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        (target or self.page).screenshot(path=str(path))
        return path
