"""The browser harness: a real headless Chromium opens local pages and reports what it saw.

Needs Debian's Chromium (``make tools`` installs it); no network: every request a page makes
beyond its own file is failed before it leaves the machine.
"""

from __future__ import annotations

import pathlib
import random
import re
import struct
import zlib

import pytest

from tests.support import browser

# A quick check at a small size; the harness's defaults (1400 x 1000) are for real reports.
SIZE = {"width": 640, "height": 480}

CHART = """<!doctype html>
<html><head><meta charset="utf-8"><title>chart</title>
<style>body { margin: 0; font-family: sans-serif; background: #fff; }</style></head>
<body>
<h1>GPU memory</h1>
<svg id="chart" width="600" height="300" viewBox="0 0 600 300"></svg>
<script>
const svg = document.getElementById("chart");
const colours = ["#1f77b4", "#ff7f0e", "#2ca02c"];
colours.forEach((colour, k) => {
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  const points = Array.from({length: 12}, (_, i) => `${i * 50},${250 - k * 70 - (i % 3) * 20}`);
  path.setAttribute("d", "M" + points.join(" L"));
  path.setAttribute("class", "series");
  path.setAttribute("stroke", colour);
  path.setAttribute("stroke-width", "4");
  path.setAttribute("fill", "none");
  svg.appendChild(path);
});
</script>
</body></html>
"""


def _write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_self_contained_chart_renders_without_errors_or_requests(
    tmp_path: pathlib.Path,
) -> None:
    page = browser.open_page(_write(tmp_path, "chart.html", CHART), **SIZE)

    assert len(re.findall(r'<path[^>]*class="series"', page.dom)) == 3
    assert page.console_errors == []
    assert page.requests == []
    assert page.screenshot == tmp_path / "chart.png"
    assert page.screenshot.read_bytes().startswith(b"\x89PNG")
    assert not browser.png_is_blank(page.screenshot)
    # White, black text and the three series' colours, with anti-aliasing in between.
    assert browser.png_distinct_colors(page.screenshot) > 4


def test_console_errors_and_uncaught_exceptions_are_reported(tmp_path: pathlib.Path) -> None:
    html = _write(
        tmp_path,
        "errors.html",
        """<!doctype html><html><body><p>errors</p>
<script>console.log("not an error"); console.error("boom");</script>
<script>throw new Error("kaput");</script>
</body></html>""",
    )
    page = browser.open_page(html, **SIZE)

    assert page.console_errors[0] == "boom"
    assert page.console_errors[1].startswith("Uncaught Error: kaput")
    assert len(page.console_errors) == 2
    assert page.requests == []


def test_requests_beyond_the_file_are_reported_and_never_leave_the_machine(
    tmp_path: pathlib.Path,
) -> None:
    html = _write(
        tmp_path,
        "remote.html",
        """<!doctype html><html><body>
<img src="https://example.com/x.png" alt="remote">
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="inline">
<script>fetch("http://127.0.0.1:9/x").catch(() => {});</script>
</body></html>""",
    )
    page = browser.open_page(html, **SIZE)

    assert sorted(page.requests) == ["http://127.0.0.1:9/x", "https://example.com/x.png"]
    assert page.console_errors == []


def test_a_blank_page_gives_a_blank_screenshot(tmp_path: pathlib.Path) -> None:
    html = _write(tmp_path, "blank.html", '<!doctype html><html><body style="background:#fff">')
    page = browser.open_page(html, **SIZE)

    assert browser.png_is_blank(page.screenshot)
    assert browser.png_distinct_colors(page.screenshot) == 1
    assert page.console_errors == []
    assert page.requests == []


def test_a_missing_file_is_an_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        browser.open_page(tmp_path / "nowhere.html")


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _encode_png(width: int, height: int, bpp: int, pixels: bytes, filters: list[int]) -> bytes:
    """A PNG whose rows use ``filters`` in turn (a plain reference encoder)."""
    stride = width * bpp
    raw = bytearray()
    previous = bytes(stride)
    for y in range(height):
        row = pixels[y * stride : (y + 1) * stride]
        kind = filters[y % len(filters)]
        raw.append(kind)
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            predictor = (0, a, b, (a + b) >> 1, _paeth(a, b, c))[kind]
            raw.append((row[i] - predictor) & 0xFF)
        previous = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    colour = {3: 2, 4: 6}[bpp]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("bpp", [3, 4])
@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4], [4, 2, 3, 1]])
def test_the_png_decoder_undoes_every_filter(
    tmp_path: pathlib.Path, bpp: int, filters: list[int]
) -> None:
    rng = random.Random(bpp * 100 + len(filters))
    width, height = 37, 11
    pixels = bytes(rng.randrange(256) for _ in range(width * height * bpp))
    path = tmp_path / "random.png"
    path.write_bytes(_encode_png(width, height, bpp, pixels, filters))

    assert browser.png_pixels(path) == (width, height, bpp, pixels)
    assert not browser.png_is_blank(path)

    flat = bytes([10, 20, 30, 255][:bpp]) * (width * height)
    path.write_bytes(_encode_png(width, height, bpp, flat, filters))
    assert browser.png_is_blank(path)
    assert browser.png_distinct_colors(path) == 1
