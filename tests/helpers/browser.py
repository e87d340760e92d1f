"""A real headless Chromium driven through chromedriver's WebDriver protocol (plain HTTP on
loopback, so no client library is needed), with every host name resolving nowhere: a page
that reaches for the network logs a failed load.

``find_browser()`` says why there is none (the tests skip with that reason); ``Browser`` opens
one page at a time and answers DOM queries, the browser log and screenshots.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or the reason no browser can be driven here."""
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    driver = shutil.which("chromedriver")
    if browser is None:
        return (f"no Chromium on PATH (looked for {', '.join(BROWSERS)}); install it: "
                "apt-get install chromium chromium-driver")
    if driver is None:
        return "chromedriver is not on PATH; install it: apt-get install chromium-driver"
    return browser, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One headless Chromium session (a context manager)."""

    def __init__(self, browser: str, driver: str, width: int = 1280, height: int = 1800) -> None:
        self.port = _free_port()
        self.profile = tempfile.mkdtemp(prefix="layerscope-chromium-")
        self.proc = subprocess.Popen(
            [driver, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status").get("ready"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromedriver did not become ready within 30 s")
            time.sleep(0.05)
        options = {"binary": browser, "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}", "--host-resolver-rules=MAP * ~NOTFOUND"]}
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options,
            "goog:loggingPrefs": {"browser": "ALL"}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"WebDriver {method} {path}: {exc.read()[:400]!r}") from None

    def _session(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, path: Path) -> None:
        """Load a local file and wait for it to finish loading."""
        self._session("POST", "/url", {"url": Path(path).resolve().as_uri()})

    def run(self, script: str, *args: Any) -> Any:
        """The value of a JavaScript function body run in the page (WebDriver's own
        evaluation, which the page's Content-Security-Policy does not restrict)."""
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def log(self) -> list[dict[str, Any]]:
        """The browser's console, JavaScript and network messages since the last call."""
        return list(self._session("POST", "/se/log", {"type": "browser"}))

    def screenshot(self, path: Path) -> Path:
        png = base64.b64decode(self._session("GET", "/screenshot"))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(png)
        return Path(path)

    def close(self) -> None:
        if getattr(self, "session", None):
            try:
                self._session("DELETE", "")
            except (OSError, RuntimeError):
                pass
            self.session = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def artifact_dir(default: Path) -> Path:
    """Where test artifacts go: ``$LAYERSCOPE_ARTIFACTS`` when set, else ``default``."""
    root = Path(os.environ.get("LAYERSCOPE_ARTIFACTS") or default)
    root.mkdir(parents=True, exist_ok=True)
    return root
