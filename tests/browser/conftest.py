"""Fixtures for the end-to-end widget test: JupyterLab on a loopback port with a token, and headless Chromium.

- ``lab``: one JupyterLab server for the session, started from this project's environment on
  127.0.0.1 with a random free port and a random token, serving a temporary folder that holds
  copies of the notebooks (the real files are never opened, so nothing in the repository changes).
  The kernels it launches inherit single-threaded, offline, smoke-scale settings.
- ``browser``: Debian's Chromium (``$CHROMIUM`` or /usr/bin/chromium) driven by Playwright, with its
  own background downloads and network services turned off. If it cannot start, the test fails with
  a message that says how to install it (``tools/install_browser.sh``); it never skips.
- ``page``: a fresh page per test that records console errors, page errors and any request that
  tries to leave 127.0.0.1 (those are blocked).

Both servers are stopped in the fixtures' finalizers, also when a test fails: the server's whole
process tree (kernels included) and the browser's, each process by its id.
Screenshots go to ``$WIDGET_SCREENSHOTS`` or tests/browser/screenshots/ (git-ignored), left for inspection.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("WIDGET_SCREENSHOTS") or Path(__file__).parent / "screenshots")
HOST = "127.0.0.1"
INSTALL_HINT = ("Install it with `tools/install_browser.sh` (Debian's `chromium` package; `make test` runs it), "
                "or point $CHROMIUM at a Chromium binary.")
# Chromium flags: headless as root, and none of the browser's own downloads or background network
# services (component updates, sync, safe-browsing lists, field trials), which cannot reach anything here.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--no-first-run",
    "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
    "--metrics-recording-only", "--no-pings", "--no-proxy-server",
]
# Lab settings for a clean, quiet, deterministic test session (a temporary settings folder).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}
KERNEL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WORKSHOP_SCALE": "smoke", "HF_HUB_OFFLINE": "1",
              "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def stop_process_tree(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop ``proc``, its process group and every process it started (each by its id), politely first."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)  # started with start_new_session: the group id is its pid
            except ProcessLookupError:
                pass
        for p in tree:  # kernels run in their own sessions; stop them by id too
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=grace)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        if not alive and proc.poll() is not None:
            return


class Lab:
    """A running JupyterLab: its URL pieces, root folder and a few REST calls."""

    def __init__(self, proc: subprocess.Popen, port: int, token: str, root: Path, log: Path):
        self.proc, self.port, self.token, self.root, self.log = proc, port, token, root, log
        self.base = f"http://{HOST}:{port}"

    def url(self, path: str, workspace: str | None = None) -> str:
        """The Lab URL that opens ``path`` (relative to the root), in its own workspace."""
        ws = f"/workspaces/{workspace}" if workspace else ""
        return f"{self.base}/lab{ws}/tree/{path}?token={self.token}"

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.base}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut down every kernel (frees the CPU and memory between tests)."""
        try:
            for k in self.api("kernels"):
                self.api(f"kernels/{k['id']}", method="DELETE")
        except (urllib.error.URLError, OSError):
            pass

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """The folder that keeps the screenshots of each widget state (emptied at the start of a session)."""
    if SCREENSHOTS.exists():
        for f in SCREENSHOTS.glob("*.png"):
            f.unlink()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Lab:
    """JupyterLab from this environment on 127.0.0.1:<free port> with a token, serving copies of the notebooks."""
    jupyter = Path(sys.executable).parent / "jupyter"
    if not jupyter.exists():
        pytest.fail(f"JupyterLab is not installed next to {sys.executable} (run `make setup`).", pytrace=False)
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        shutil.copy2(nb, root / nb.name)
    settings = tmp / "settings"
    for name, values in LAB_SETTINGS.items():
        f = settings / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    for d in ("config", "runtime", "workspaces", "data"):
        (tmp / d).mkdir()
    env = {**os.environ, **KERNEL_ENV, "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"), "JUPYTER_DATA_DIR": str(tmp / "data")}
    shared = ROOT.parent / "shared" / "data"
    if not env.get("WORKSHOP_DATA_DIR") and shared.exists():
        env["WORKSHOP_DATA_DIR"] = str(shared)
    port, token = free_port(), secrets.token_hex(24)
    cmd = [str(jupyter), "lab", "--no-browser", f"--ip={HOST}", f"--port={port}", "--port-retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True",
           "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = tmp / "jupyterlab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=root, start_new_session=True)
    server = Lab(proc, port, token, root, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode} before answering:\n{server.log_tail()}",
                            pytrace=False)
            try:
                with urllib.request.urlopen(f"{server.base}/lab?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer on {server.base} within 120 s:\n{server.log_tail()}",
                            pytrace=False)
            time.sleep(0.5)
        yield server
    finally:
        server.shutdown_kernels()
        stop_process_tree(proc)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium via Playwright; fails (never skips) with a clear message when it cannot start."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"The browser test needs the Python package playwright ({exc}); `make setup` installs it "
                    "(never run `playwright install`: this test uses Debian's chromium).", pytrace=False)
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}. {INSTALL_HINT}", pytrace=False)
    import psutil

    before = {p.pid for p in psutil.Process().children()}
    pw = sync_playwright().start()
    drivers = [p for p in psutil.Process().children() if p.pid not in before]  # Playwright's driver

    def driver_tree():
        tree = []
        for d in drivers:
            try:
                tree += [d, *d.children(recursive=True)]  # the driver and the Chromium it launched
            except psutil.NoSuchProcess:
                pass
        return tree

    try:
        try:
            b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        except Exception as exc:  # noqa: BLE001 - any launch problem is the same failure for the learner
            pytest.fail(f"Chromium ({CHROMIUM}) could not start: {exc}\n{INSTALL_HINT}", pytrace=False)
        try:
            yield b
        finally:
            try:
                b.close()
            except Exception:  # noqa: BLE001
                pass
    finally:
        started = driver_tree()
        try:
            pw.stop()
        except Exception:  # noqa: BLE001
            pass
        _, alive = psutil.wait_procs(started, timeout=5)
        for p in alive:  # anything Playwright or Chromium left behind, by id
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


@contextlib.contextmanager
def new_page(browser, lab: Lab):
    """A fresh page that records console errors, page errors and blocked non-loopback requests."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=False,
                                  service_workers="block")
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.console_errors, page.page_errors, page.outside = [], [], []

    def route(r):
        host = r.request.url.split("/")[2].split(":")[0] if "://" in r.request.url else HOST
        if r.request.url.startswith(("data:", "blob:")) or host in (HOST, "localhost"):
            r.continue_()
        else:
            page.outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.page_errors.append(str(e)))
    try:
        yield page
    finally:
        try:
            context.close()
        except Exception:  # noqa: BLE001
            pass
        lab.shutdown_kernels()


@pytest.fixture(scope="session")
def page_factory(browser, lab):
    """``with page_factory() as page:`` a fresh page (for fixtures that keep one page for several tests)."""
    return lambda: new_page(browser, lab)


@pytest.fixture
def page(browser, lab):
    """A fresh browser page for one test (closed afterwards, with the kernels it started)."""
    with new_page(browser, lab) as p:
        yield p
