"""Open a local HTML file in a real headless Chromium and report what a user would see.

:func:`open_page` starts Debian's Chromium (``/usr/bin/chromium``, installed by ``make tools``
through ``hack/install-chromium.sh``) with a fresh profile and drives it over the Chrome DevTools
Protocol:

1. the browser listens on a free loopback port (``--remote-debugging-port=0``); the port and the
   browser's websocket path are read from ``DevToolsActivePort`` in the profile folder;
2. a new tab is opened and attached to (one websocket, flat sessions); the tab's console
   (``Runtime.consoleAPICalled``, ``Runtime.exceptionThrown``, ``Log.entryAdded``) and network
   (``Network.requestWillBeSent``) are recorded, and so are those of the workers and frames it
   starts (auto-attach). Only these targets are listened to, so the browser's own background
   traffic is never counted as the page's;
3. every request the page makes beyond the file itself is recorded and failed on the spot
   (``Fetch`` interception), so nothing leaves the machine and no test needs a network;
4. after the document's load event (``Page.lifecycleEvent``), it waits until
   ``document.readyState`` is ``complete`` and the DOM has not changed for half a second (at
   most a few seconds for a page that never settles), then takes the DOM (``DOM.getOuterHTML``)
   and a PNG of the viewport (``Page.captureScreenshot``).

The browser's whole process group is killed at the end, whatever happened. A missing Chromium
fails with a message saying to run ``make tools``; it is never a skip.

:func:`png_distinct_colors` and :func:`png_is_blank` decode that PNG with the standard library
(8-bit RGB or RGBA, not interlaced: what Chromium writes), so a test can tell a rendered page
from an empty one.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import Any

import websocket

CHROMIUM = pathlib.Path("/usr/bin/chromium")

# After the load event: the DOM must stay unchanged this long before it is taken ...
QUIET_SECONDS = 0.5
# ... but a page that keeps changing (an animation) is taken after this long anyway.
SETTLE_MAX_SECONDS = 5.0

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--metrics-recording-only",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

# Not network requests: the page's own inline content.
LOCAL_SCHEMES = ("data:", "blob:", "about:", "javascript:")

# Installed in the page after its load event: the time of the DOM's last change.
WATCH_MUTATIONS = """
(() => {
  window.__openPageLastMutation = performance.now();
  new MutationObserver(() => { window.__openPageLastMutation = performance.now(); })
    .observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
})()
"""
QUIET_FOR = (
    "document.readyState === 'complete' ? performance.now() - window.__openPageLastMutation : -1"
)


class BrowserError(AssertionError):
    """Chromium could not be started, or did not answer as expected."""


@dataclasses.dataclass(frozen=True)
class Page:
    """What the page showed once loaded and settled."""

    dom: str
    """The document's markup after its scripts ran (like ``chromium --dump-dom``)."""
    screenshot: pathlib.Path
    """A PNG of the viewport."""
    console_errors: list[str]
    """``console.error``/``console.assert`` messages, uncaught exceptions (including unhandled
    promise rejections) and the browser's own error messages about the page."""
    requests: list[str]
    """The URL of every request the page tried beyond the file itself, in order (all of them
    were failed). Empty for a self-contained page."""


def open_page(
    html: pathlib.Path,
    *,
    width: int = 1400,
    height: int = 1000,
    timeout: float = 60,
    screenshot: pathlib.Path | None = None,
) -> Page:
    """Load ``html`` in headless Chromium with a ``width`` x ``height`` viewport.

    The screenshot is written to ``screenshot``, by default next to ``html`` as
    ``<name>.png``. ``timeout`` bounds the whole call, start to shutdown.
    """
    if not CHROMIUM.exists():
        raise BrowserError(f"{CHROMIUM} is missing: run `make tools` (hack/install-chromium.sh)")
    html = html.resolve()
    if not html.is_file():
        raise FileNotFoundError(html)
    target = screenshot if screenshot is not None else html.with_suffix(".png")
    deadline = time.monotonic() + timeout
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="open-page-"))
    profile = workdir / "profile"
    log_path = workdir / "chromium.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    str(CHROMIUM),
                    *FLAGS,
                    f"--user-data-dir={profile}",
                    f"--window-size={width},{height}",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            url = _browser_url(proc, profile, deadline)
            session = _Session(url, deadline)
            try:
                return _load(session, html, target, width, height)
            finally:
                session.close()
        except (BrowserError, OSError, websocket.WebSocketException) as error:
            raise BrowserError(
                f"opening {html} in chromium failed: {error}\n"
                f"--- chromium output ---\n{_tail(log_path)}"
            ) from error
    finally:
        if proc is not None:
            _kill_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _browser_url(proc: subprocess.Popen[bytes], profile: pathlib.Path, deadline: float) -> str:
    """The browser's DevTools websocket, once Chromium has written where it listens."""
    active = profile / "DevToolsActivePort"
    while True:
        with contextlib.suppress(FileNotFoundError):
            lines = active.read_text().splitlines()
            if len(lines) >= 2 and lines[0].strip().isdigit():
                return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        if proc.poll() is not None:
            raise BrowserError(f"chromium exited with status {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise BrowserError(f"chromium did not write {active.name} in time")
        time.sleep(0.05)


class _Session:
    """One websocket to the browser; commands go to the browser or to a flat session."""

    def __init__(self, url: str, deadline: float) -> None:
        self.deadline = deadline
        self.ws = websocket.create_connection(
            url, timeout=_left(deadline), suppress_origin=True, enable_multithread=False
        )
        self.next_id = 0
        self.handlers: list[Callable[[dict[str, Any]], None]] = []

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.post("Browser.close")
        with contextlib.suppress(Exception):
            self.ws.close()

    def post(self, method: str, params: dict[str, Any] | None = None, sid: str = "") -> int:
        """Send a command without waiting for its answer."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if sid:
            message["sessionId"] = sid
        self.ws.send(json.dumps(message))
        return self.next_id

    def call(self, method: str, params: dict[str, Any] | None = None, sid: str = "") -> Any:
        """Send a command and return its result, handling events that arrive meanwhile."""
        wanted = self.post(method, params, sid)
        while True:
            message = self._receive(f"the answer to {method}")
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method} failed: {message['error']}")
                return message.get("result", {})

    def wait_for(self, what: str, done: Callable[[], bool]) -> None:
        """Handle events until ``done()``."""
        while not done():
            self._receive(what)

    def _receive(self, what: str) -> dict[str, Any]:
        left = _left(self.deadline)
        if left <= 0:
            raise BrowserError(f"timed out waiting for {what}")
        self.ws.settimeout(left)
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            raise BrowserError(f"timed out waiting for {what}") from None
        message: dict[str, Any] = json.loads(raw)
        if "method" in message:
            for handler in self.handlers:
                handler(message)
        return message


@dataclasses.dataclass
class _Recorder:
    """The console and network of the page's targets (its tab, and the workers it starts)."""

    session: _Session
    page_url: str
    sessions: set[str]
    main: str
    loaded: set[str] = dataclasses.field(default_factory=set)
    console_errors: list[str] = dataclasses.field(default_factory=list)
    requests: list[str] = dataclasses.field(default_factory=list)
    seen: set[tuple[str, str]] = dataclasses.field(default_factory=set)

    def __call__(self, event: dict[str, Any]) -> None:
        sid = event.get("sessionId", "")
        if sid not in self.sessions:
            return
        method = event["method"]
        params: dict[str, Any] = event.get("params", {})
        if method == "Target.attachedToTarget":
            self.attach(params["sessionId"], params.get("waitingForDebugger", False))
        elif method == "Target.detachedFromTarget":
            self.sessions.discard(params.get("sessionId", ""))
        elif method == "Page.lifecycleEvent" and sid == self.main and params["name"] == "load":
            self.loaded.add(params["loaderId"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert"}:
            self.console_errors.append(_console_text(params))
        elif method == "Runtime.exceptionThrown":
            self.console_errors.append(_exception_text(params["exceptionDetails"]))
        elif method == "Log.entryAdded":
            entry = params["entry"]
            # Failed loads are reported in ``requests``; console API calls above.
            if entry.get("level") == "error" and entry.get("source") not in {
                "network",
                "console-api",
            }:
                self.console_errors.append(str(entry.get("text", "")))
        elif method == "Network.requestWillBeSent":
            self.request(params["requestId"], params["request"]["url"])
        elif method == "Fetch.requestPaused":
            url = params["request"]["url"]
            if url == self.page_url:
                self.session.post("Fetch.continueRequest", {"requestId": params["requestId"]}, sid)
            else:
                # Workers may have no Network domain: record here too (deduplicated).
                self.request(params.get("networkId", params["requestId"]), url)
                self.session.post(
                    "Fetch.failRequest",
                    {"requestId": params["requestId"], "errorReason": "BlockedByClient"},
                    sid,
                )

    def request(self, request_id: str, url: str) -> None:
        if url == self.page_url or url.startswith(LOCAL_SCHEMES):
            return
        if (request_id, url) in self.seen:
            return
        self.seen.add((request_id, url))
        self.requests.append(url)

    def attach(self, sid: str, waiting: bool) -> None:
        """Listen to a target (the tab, or a worker or frame it started) before it runs."""
        self.sessions.add(sid)
        post = self.session.post
        for method, params in (
            ("Runtime.enable", {}),
            ("Log.enable", {}),
            ("Network.enable", {}),
            ("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]}),
            (
                "Target.setAutoAttach",
                {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
            ),
        ):
            post(method, params, sid)
        if waiting:
            post("Runtime.runIfWaitingForDebugger", {}, sid)


def _load(
    session: _Session, html: pathlib.Path, screenshot: pathlib.Path, width: int, height: int
) -> Page:
    target_id = session.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    main = session.call("Target.attachToTarget", {"targetId": target_id, "flatten": True})[
        "sessionId"
    ]
    page_url = html.as_uri()
    recorder = _Recorder(session=session, page_url=page_url, sessions={main}, main=main)
    session.handlers.append(recorder)
    recorder.attach(main, waiting=False)
    session.call("Page.enable", {}, main)
    session.call("Page.setLifecycleEventsEnabled", {"enabled": True}, main)
    session.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        main,
    )
    navigated = session.call("Page.navigate", {"url": page_url}, main)
    if navigated.get("errorText"):
        raise BrowserError(f"could not open {page_url}: {navigated['errorText']}")
    # The load event of this document, not of the about:blank the tab opened with.
    loader = navigated["loaderId"]
    session.wait_for(f"the load event of {page_url}", lambda: loader in recorder.loaded)
    _settle(session, main)
    document = session.call("DOM.getDocument", {"depth": 0}, main)
    dom = session.call("DOM.getOuterHTML", {"nodeId": document["root"]["nodeId"]}, main)
    shot = session.call("Page.captureScreenshot", {"format": "png"}, main)
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    return Page(
        dom=str(dom["outerHTML"]),
        screenshot=screenshot,
        console_errors=list(recorder.console_errors),
        requests=list(recorder.requests),
    )


def _settle(session: _Session, main: str) -> None:
    """Wait until the document is complete and its DOM has been quiet for QUIET_SECONDS."""
    _evaluate(session, main, WATCH_MUTATIONS)
    give_up = time.monotonic() + SETTLE_MAX_SECONDS
    while time.monotonic() < give_up:
        quiet_ms = _evaluate(session, main, QUIET_FOR)
        if isinstance(quiet_ms, int | float) and quiet_ms >= QUIET_SECONDS * 1000:
            return
        wait = QUIET_SECONDS - max(float(quiet_ms), 0) / 1000 if quiet_ms is not None else 0.1
        time.sleep(min(max(wait, 0.05), QUIET_SECONDS))


def _evaluate(session: _Session, sid: str, expression: str) -> Any:
    result = session.call(
        "Runtime.evaluate", {"expression": expression, "returnByValue": True}, sid
    )
    if "exceptionDetails" in result:
        raise BrowserError(f"evaluating in the page failed: {result['exceptionDetails']}")
    return result.get("result", {}).get("value")


def _console_text(params: dict[str, Any]) -> str:
    parts = []
    for arg in params.get("args", []):
        if "value" in arg:
            value = arg["value"]
            parts.append(value if isinstance(value, str) else json.dumps(value))
        else:
            parts.append(_describe(arg))
    text = " ".join(parts)
    return f"Assertion failed: {text}" if params.get("type") == "assert" else text


def _describe(arg: dict[str, Any]) -> str:
    """A console argument that is not a plain value: ``{a: 1}``, ``Array(2)``, ``NaN``..."""
    if "unserializableValue" in arg:
        return str(arg["unserializableValue"])
    preview = arg.get("preview")
    if preview and preview.get("type") == "object" and preview.get("subtype") is None:
        fields = ", ".join(f"{p['name']}: {p.get('value', '')}" for p in preview["properties"])
        return "{" + fields + ("..." if preview.get("overflow") else "") + "}"
    return str(arg.get("description", arg.get("type", "")))


def _exception_text(details: dict[str, Any]) -> str:
    """Like the console shows it: ``Uncaught Error: boom`` with the stack below."""
    text = str(details.get("text", "Uncaught"))
    exception = details.get("exception", {})
    description = exception.get("description")
    if description is None and "value" in exception:
        description = json.dumps(exception["value"])
    return f"{text} {description}" if description else text


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill Chromium and every process it started (they share its process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    # The helpers (zygote, renderer, GPU and network services) die a moment later.
    give_up = time.monotonic() + 5
    while time.monotonic() < give_up and _group_alive(proc.pid):
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies waiting to be reaped do not count)."""
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state, ppid, pgrp.
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


def _tail(path: pathlib.Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


# --- PNG, decoded with the standard library -------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BYTES_PER_PIXEL = {2: 3, 6: 4}  # colour type -> bytes per pixel at 8 bits (RGB, RGBA)


def png_pixels(path: pathlib.Path) -> tuple[int, int, int, bytes]:
    """``(width, height, bytes_per_pixel, pixels)`` of an 8-bit RGB or RGBA PNG.

    ``pixels`` holds the rows top to bottom without filter bytes.
    """
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path} is not a PNG")
    offset = len(PNG_SIGNATURE)
    header: tuple[int, ...] | None = None
    compressed = bytearray()
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path} has no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in BYTES_PER_PIXEL or interlace != 0:
        raise ValueError(
            f"{path}: only 8-bit RGB/RGBA, non-interlaced PNGs are supported "
            f"(bit depth {depth}, colour type {colour}, interlace {interlace})"
        )
    bpp = BYTES_PER_PIXEL[colour]
    raw = zlib.decompress(bytes(compressed))
    stride = width * bpp
    if len(raw) != height * (stride + 1):
        raise ValueError(f"{path}: {len(raw)} bytes of image data for {width}x{height}")
    lanes = _Lanes(stride)
    out = bytearray(height * stride)
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        row = _unfilter(raw[start], raw[start + 1 : start + 1 + stride], previous, bpp, lanes)
        out[y * stride : (y + 1) * stride] = row
        previous = row
    return width, height, bpp, bytes(out)


class _Lanes:
    """Bytewise addition modulo 256 of whole scanlines at once, on Python integers (SWAR)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.high = int.from_bytes(b"\x80" * size, "big")
        self.low = int.from_bytes(b"\x7f" * size, "big")
        self.zero = bytes(size)

    def add(self, x: int, y: int) -> int:
        return ((x & self.low) + (y & self.low)) ^ ((x ^ y) & self.high)


def _unfilter(kind: int, data: bytes, up: bytes, bpp: int, lanes: _Lanes) -> bytes:
    """Undo one scanline's filter (PNG specification, section 9); ``up`` is the row above."""
    if kind == 0:  # None
        return data
    if kind == 2:  # Up
        if data == lanes.zero:
            return up
        if up == lanes.zero:
            return data
        total = lanes.add(int.from_bytes(data, "big"), int.from_bytes(up, "big"))
        return total.to_bytes(lanes.size, "big")
    if kind == 1:  # Sub: a running sum of each pixel's bytes along the row
        total = int.from_bytes(data, "big")
        shift = bpp
        while shift < lanes.size:
            total = lanes.add(total, total >> (8 * shift))
            shift *= 2
        return total.to_bytes(lanes.size, "big")
    row = bytearray(data)
    n = len(row)
    if kind == 3:  # Average
        for i in range(n):
            left = row[i - bpp] if i >= bpp else 0
            row[i] = (row[i] + ((left + up[i]) >> 1)) & 0xFF
    elif kind == 4:  # Paeth
        for i in range(n):
            if i >= bpp:
                a, c = row[i - bpp], up[i - bpp]
            else:
                a = c = 0
            b = up[i]
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            if pa <= pb and pa <= pc:
                predictor = a
            elif pb <= pc:
                predictor = b
            else:
                predictor = c
            row[i] = (row[i] + predictor) & 0xFF
    else:
        raise ValueError(f"unknown PNG filter type {kind}")
    return bytes(row)


def png_distinct_colors(path: pathlib.Path) -> int:
    """How many different pixel values (RGB or RGBA) the PNG holds."""
    _, _, bpp, pixels = png_pixels(path)
    if bpp == 3:  # widen to four bytes a pixel, so each pixel reads as one 32-bit integer
        wide = bytearray(len(pixels) // 3 * 4)
        for channel in range(3):
            wide[channel::4] = pixels[channel::3]
        pixels = bytes(wide)
    return len(set(memoryview(pixels).cast("I")))


def png_is_blank(path: pathlib.Path) -> bool:
    """True when every pixel of the PNG has the same colour (an empty page)."""
    _, _, bpp, pixels = png_pixels(path)
    if not pixels:
        return True
    first = pixels[:bpp]
    return pixels == first * (len(pixels) // bpp)
