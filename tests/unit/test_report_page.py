"""The HTML report's page, read back with the standard library's HTML parser: user-provided
names are text, never markup; values and the device are shown as the result holds them."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest

from layerscope.client.html_report import NOT_RECORDED, render_report, write_report

EVIL = '<script>alert(1)</script><img src=x onerror="alert(2)">'


class Page(HTMLParser):
    """Start tags with their attributes, and the text of each ``td``/``dd``."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, Any]]] = []
        self.cells: list[str] = []
        self._open: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("td", "dd"):
            self._open = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "dd") and self._open is not None:
            self.cells.append("".join(self._open))
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.append(data)


def analysis(**extra: Any) -> dict[str, Any]:
    layers = [
        {"name": "x", "op_type": "input", "reduction": "flatten", "dims": 4, "si": 0.5,
         "high_order_si": {"1": 0.5, "5": 0.25}, "cross": {"si": 0.4,
                                                          "high_order_si": {"1": 0.4}}},
        {"name": EVIL, "op_type": "Relu", "reduction": "flatten", "dims": 3, "si": 0.875,
         "high_order_si": {"1": 0.875, "5": 0.75}, "cross": {"si": 0.8125,
                                                            "high_order_si": {"1": 0.8125}},
         "notes": [EVIL]},
    ]
    return {"layers": layers, "task": "classification", "model_path": f"/m/{EVIL}.onnx",
            "plateau": {"index": "si", "position": 1, "layer": EVIL, "value": 0.875,
                        "tolerance": 0.01},
            "options": {"orders": [1, 5], "layers": [EVIL]}, "warnings": [EVIL], **extra}


def test_names_from_the_model_and_the_user_are_text_not_markup():
    page = Page(render_report(analysis()))
    assert [t for t, _ in page.tags if t in ("script", "img", "iframe")] == []
    assert not any(k.startswith("on") for _, attrs in page.tags for k in attrs)
    assert EVIL in page.cells, "the layer name is shown as text in its cell"


def test_the_table_shows_each_value_and_a_dash_where_there_is_none():
    page = Page(render_report(analysis()))
    row = page.cells[page.cells.index(EVIL) - 1: page.cells.index(EVIL) + 10]
    # #, name, op, reduction, dims, si train/test, high_order_si[1] train/test, [5] train/test
    assert row == ["1", EVIL, "Relu", "flatten", "3", "0.8750", "0.8125", "0.8750", "0.8125",
                   "0.7500", "-"]


def test_each_point_of_the_plots_carries_its_value():
    page = Page(render_report(analysis()))
    pts = [a for t, a in page.tags if t == "circle" and a.get("class") == "point"]
    # si, high_order_si[1] train+test for 2 layers; high_order_si[5] train only
    assert len(pts) == 4 + 4 + 2
    si = {(a["data-series"], a["data-x"]): float(a["data-value"]) for a in pts[:4]}
    assert si == {("train", "x"): 0.5, ("train", EVIL): 0.875, ("test", "x"): 0.4,
                  ("test", EVIL): 0.8125}


@pytest.mark.parametrize(("extra", "device", "providers"), [
    ({}, NOT_RECORDED, NOT_RECORDED),
    ({"device": "gpu", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
     "gpu", "CUDAExecutionProvider, CPUExecutionProvider"),
])
def test_the_device_is_shown_when_recorded_and_said_missing_otherwise(extra, device, providers):
    html = render_report(analysis(**extra))
    assert f'<dd class="device">{device}</dd>' in html
    assert f'<dd class="providers">{providers}</dd>' in html


def test_a_result_of_another_command_is_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "r.html"
    with pytest.raises(ValueError, match="analyze, rank or certify"):
        write_report({"task": "classification", "si": 0.5}, path)
    assert list(tmp_path.iterdir()) == []
