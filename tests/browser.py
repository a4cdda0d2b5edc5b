"""Headless Chromium (Debian's `chromium`, installed by `make browser`) driven over the DevTools protocol.

`load_page(url)` opens a page, waits for its load event, and returns what a person would
notice: console errors, uncaught exceptions, failed loads (Log and Runtime domains), and the
natural size of every <img>. The DevTools connection is on 127.0.0.1 only, on a port
Chromium picks itself (read back from DevToolsActivePort), so parallel runs never collide.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import websocket

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # runs as root in CI; no sandbox is possible there
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # nothing may leave the machine
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
# Runs after the load event: give late errors a moment, then report the images.
_INSPECT_PAGE = """
new Promise(resolve => setTimeout(resolve, 300)).then(() => JSON.stringify({
  title: document.title,
  images: Array.from(document.images).map(img => ({
    alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight})),
}))
"""


@dataclasses.dataclass
class PageCheck:
    title: str
    images: list[dict]
    errors: list[str]
    screenshot: bytes


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def load_page(url: str, *, timeout_s: float = 60.0) -> PageCheck:
    """Loads `url` in a fresh headless Chromium profile and inspects it."""
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("chromium is not installed: `make browser` (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="fmnist-chromium-") as profile:
        with open(os.path.join(profile, "chromium.log"), "wb") as log:
            # Its own process group: Chromium's helpers (renderer, GPU, crashpad) can be
            # stopped and awaited together with it.
            process = subprocess.Popen(
                [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                port = _devtools_port(profile, process, timeout_s)
                return _inspect(port, url, timeout_s)
            finally:
                # The profile folder is removed on the way out; every process of the group
                # must be gone first, or a helper still writing `Default/` makes the removal fail.
                _stop_process_group(process)


def _stop_process_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to Chromium and its helpers, then waits until none is left (SIGKILL after `grace_s`)."""
    group = process.pid  # start_new_session: the group id is the leader's pid
    for signal_number, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(group, signal_number)
        except ProcessLookupError:
            pass  # the group is already empty
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if process.poll() is not None and not _live_members(group):
                return
            time.sleep(0.05)
    raise RuntimeError(f"chromium process group {group} survived SIGKILL: {_live_members(group)}")


def _live_members(group: int) -> list[int]:
    """Pids of the processes in a process group that have not exited (zombies count as gone)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:
            continue  # exited while we looked
        # Fields after the command name (which may hold spaces): state, ppid, pgrp, ...
        state, _, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == group and state != "Z":
            members.append(int(entry))
    return members


def _devtools_port(profile: str, process: subprocess.Popen, timeout_s: float) -> int:
    marker = os.path.join(profile, "DevToolsActivePort")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}; see its log in {profile}")
        if os.path.exists(marker):
            with open(marker) as file:
                first = file.readline().strip()
            if first:
                return int(first)
        time.sleep(0.1)
    raise TimeoutError(f"chromium did not open its DevTools port within {timeout_s}s")


def _inspect(port: int, url: str, timeout_s: float) -> PageCheck:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout_s) as response:
        targets = json.load(response)
    page = next(target for target in targets if target["type"] == "page")
    connection = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout_s, suppress_origin=True)
    session = _Session(connection)
    try:
        for domain in ("Runtime", "Log", "Page"):
            session.call(f"{domain}.enable")
        session.call("Page.navigate", url=url)
        session.wait_for("Page.loadEventFired", timeout_s)
        result = session.call("Runtime.evaluate", expression=_INSPECT_PAGE, awaitPromise=True, returnByValue=True)
        facts = json.loads(result["result"]["value"])
        shot = session.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return PageCheck(facts["title"], facts["images"], session.errors, base64.b64decode(shot["data"]))
    finally:
        connection.close()


class _Session:
    """One DevTools page session: numbered calls, with every event checked for errors on the way."""

    def __init__(self, connection: websocket.WebSocket) -> None:
        self._connection = connection
        self._ids = itertools.count(1)
        self.errors: list[str] = []
        self._seen: set[str] = set()

    def call(self, method: str, **params) -> dict:
        call_id = next(self._ids)
        self._connection.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def wait_for(self, event: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while event not in self._seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {timeout_s}s")
            self._receive()

    def _receive(self) -> dict:
        message = json.loads(self._connection.recv())
        method = message.get("method")
        if method:
            self._seen.add(method)
            params = message["params"]
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                self.errors.append(f"exception: {details.get('exception', {}).get('description') or details['text']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"])
                self.errors.append(f"console.{params['type']}: {text}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                self.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())
        return message
