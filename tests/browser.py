"""A real browser on real Jupyter front ends, for tests/test_browser.py (issue 20).

Debian's Chromium, headless, driven through its ChromeDriver by Selenium, opens notebooks served on 127.0.0.1 by

- the classic Notebook 6.5.7 of ``.venv-colab`` with Colab's ipywidgets 7.7.1 (the closest stand-in for Colab's own
  front end, which renders ipywidgets 7 the same way), or
- JupyterLab 4 of the main environment with ipywidgets 8 (Binder's and a laptop's front end),

runs every cell the way a learner's "Run all" does, and reads what the page shows: error outputs, widgets that did
not render, the slice viewer's image before and after a slider move.

Chromium gets the flags this machine needs (no sandbox as root, no background connections: the network is closed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1400,1100", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic", "--hide-scrollbars")

# what a front end shows instead of a widget it cannot draw
WIDGET_FAILURES = ("Error displaying widget", "Could not create a model", "Failed to display Jupyter Widget")
RAW_REPRS = ("HBox(children=", "VBox(children=", "SliceViewer(", "PlanExplorer(", "IntSlider(value")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyter_server(kind: str, venv: Path, root: Path, log: Path):
    """A Jupyter server of ``kind`` ("classic" or "lab") from ``venv``, serving ``root``; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JUPYTER_PATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # its kernel is this environment's Python
    common = ["--no-browser", f"--port={port}", "--ip=127.0.0.1", "--allow-root"]
    if kind == "classic":
        command = [str(venv / "bin" / "jupyter"), "notebook", *common, "--NotebookApp.token=",
                   "--NotebookApp.password=", f"--notebook-dir={root}"]
    else:
        settings = root.parent / "lab-settings"  # every cell kept in the page (no windowing), no news pop-up
        (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True, exist_ok=True)
        (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
            json.dumps({"windowingMode": "none"}))
        (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
        (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
        command = [str(venv / "bin" / "jupyter"), "lab", *common, "--ServerApp.token=", "--ServerApp.password=",
                   f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True"]
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {kind} server did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def chromium():
    """A headless Debian Chromium under Selenium (its ChromeDriver given, so Selenium downloads nothing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def wait_for(condition, *, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class NotebookPage:
    """One notebook open in a front end: run all cells, read outputs and widgets from the page."""

    # JavaScript per front end: is the kernel ready, run every cell, are all code cells done, error outputs
    SCRIPTS = {
        "classic": {
            "ready": "return !!(window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel"
                     " && Jupyter.notebook.kernel.is_connected() && Jupyter.notebook.kernel_selector)",
            "run_all": "Jupyter.notebook.execute_all_cells()",
            "done": "return !Jupyter.notebook.kernel_busy && Jupyter.notebook.get_cells()"
                    ".filter(c => c.cell_type === 'code').every(c => typeof c.input_prompt_number === 'number')",
            "errors": "return Jupyter.notebook.get_cells().filter(c => c.cell_type === 'code')"
                      ".flatMap(c => c.output_area.outputs).filter(o => o.output_type === 'error')"
                      ".map(o => o.ename + ': ' + o.evalue)",
        },
        "lab": {
            "ready": "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                     "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                     " && w.sessionContext.session.kernel.status === 'idle')",
            "run_all": "window.jupyterapp.commands.execute('notebook:run-all-cells')",
            # the session or its kernel may be missing for a moment (while the kernel reconnects): not done yet
            "done": "const w = window.jupyterapp.shell.currentWidget; const cells = w.content.model.cells;"
                    "const s = w.sessionContext && w.sessionContext.session; const k = s && s.kernel;"
                    "if (!k || k.status !== 'idle') return false;"
                    "for (let i = 0; i < cells.length; i++) { const c = cells.get(i);"
                    " if (c.type === 'code' && c.executionCount == null) return false; } return true",
            "errors": "const cells = window.jupyterapp.shell.currentWidget.content.model.cells; const found = [];"
                      "for (let i = 0; i < cells.length; i++) { const c = cells.get(i);"
                      " if (c.type !== 'code') continue;"
                      " for (let j = 0; j < c.outputs.length; j++) { const o = c.outputs.get(j).toJSON();"
                      "  if (o.output_type === 'error') found.push(o.ename + ': ' + o.evalue); } } return found",
        },
    }

    def __init__(self, driver, kind: str, url: str, notebook: str) -> None:
        self.driver, self.kind = driver, kind
        self.scripts = self.SCRIPTS[kind]
        driver.get(f"{url}/notebooks/{notebook}" if kind == "classic" else f"{url}/lab/tree/{notebook}")
        wait_for(lambda: driver.execute_script(self.scripts["ready"]), timeout=120, what="the kernel")

    def run_all(self, *, timeout: float = 600) -> None:
        """What a learner's "Run all" does; returns when every code cell has run."""
        time.sleep(1)  # let the front end finish rendering the notebook before the cells are queued
        self.driver.execute_script(self.scripts["run_all"])
        wait_for(lambda: self.driver.execute_script(self.scripts["done"]), timeout=timeout, what="every cell to run",
                 every=1.0)
        time.sleep(2)  # the last widget views and images are drawn after the kernel goes idle

    def errors(self) -> list[str]:
        return self.driver.execute_script(self.scripts["errors"])

    def output_texts(self) -> list[str]:
        from selenium.webdriver.common.by import By

        selector = ".output_area" if self.kind == "classic" else ".jp-OutputArea-child"
        return [element.text for element in self.driver.find_elements(By.CSS_SELECTOR, selector)]

    def widget_failures(self) -> list[str]:
        """Texts where a widget should be: error boxes and plain reprs of widget objects."""
        return [text[:200] for text in self.output_texts()
                if any(f in text for f in WIDGET_FAILURES) or any(text.lstrip().startswith(r) for r in RAW_REPRS)]

    def find(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def cell_with(self, code: str):
        """The code cell whose source contains ``code`` (its element: input and outputs)."""
        from selenium.webdriver.common.by import By

        cell, source = (".cell.code_cell", ".input_area") if self.kind == "classic" else (".jp-CodeCell",
                                                                                         ".jp-InputArea-editor")
        for element in self.driver.find_elements(By.CSS_SELECTOR, cell):
            if code in element.find_element(By.CSS_SELECTOR, source).text:
                return element
        raise AssertionError(f"no code cell contains {code!r}")

    def console_errors(self) -> list[str]:
        """Severe browser-console messages, but for the resources of the closed network (badges, fonts)."""
        return [entry["message"] for entry in self.driver.get_log("browser")
                if entry["level"] == "SEVERE" and "ERR_NAME_NOT_RESOLVED" not in entry["message"]
                and "ERR_CONNECTION_REFUSED" not in entry["message"]]
