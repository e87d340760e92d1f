"""The HTML report of analyze, rank and certify (``--report``, ``layerscope report``), opened
in a real headless Chromium without network: the tables and figures are checked from the
rendered page, the browser logs nothing, and a screenshot is kept as an artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import rank as H
from helpers.browser import Browser, artifact_dir, find_browser
from helpers.server import embedded_server_fixture

from layerscope.client.cli import main

pytestmark = pytest.mark.timeout(300)

HOSTILE = '<script>alert("x")</script>&amp;act'
INFO_COLS = [0, 1]
FOUND = find_browser()

embedded_server = embedded_server_fixture("html-report-data")
needs_browser = pytest.mark.skipif(isinstance(FOUND, str), reason=str(FOUND))


def _rename(model: Any, old: str, new: str) -> Any:
    for node in model.graph.node:
        node.input[:] = [new if t == old else t for t in node.input]
        node.output[:] = [new if t == old else t for t in node.output]
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("html-report-files")
    x, y = H.informative_data(120)
    xt, yt = H.informative_data(60, seed=5)
    info = H.selection_mlp(6, INFO_COLS, n_classes=3, seed=1)
    paths = {k: root / v for k, v in [("info", "info.onnx"), ("hostile", "hostile.onnx"),
                                      ("noise", "noise.onnx"), ("train", "train.npz"),
                                      ("test", "test.npz"), ("queries", "q.npz")]}
    paths["info"].write_bytes(info.SerializeToString())
    paths["hostile"].write_bytes(_rename(H.selection_mlp(6, INFO_COLS, n_classes=3, seed=1),
                                         "act", HOSTILE).SerializeToString())
    paths["noise"].write_bytes(H.selection_mlp(6, [2, 3, 4], n_classes=3, seed=2)
                               .SerializeToString())
    np.savez(paths["train"], x=x, labels=y)
    np.savez(paths["test"], x=xt, labels=yt)
    np.savez(paths["queries"], x=xt[:9])
    return {"p": {k: str(v) for k, v in paths.items()}, "root": root, "x": x, "y": y,
            "xt": xt, "yt": yt}


@pytest.fixture(scope="module")
def browser():
    if isinstance(FOUND, str):
        pytest.skip(FOUND)
    with Browser(*FOUND) as b:
        yield b


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def shot(browser: Browser, name: str, tmp_path: Path) -> Path:
    path = browser.screenshot(artifact_dir(tmp_path) / name)
    print(f"screenshot: {path}")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def points(browser: Browser) -> list[dict[str, Any]]:
    """Every plotted point of the rendered page with its rendered size."""
    return browser.run(
        "return [...document.querySelectorAll('circle.point')].map(c => ({"
        "series: c.dataset.series, x: c.dataset.x, value: Number(c.dataset.value), "
        "chart: c.closest('svg').getAttribute('aria-label'), "
        "w: c.getBoundingClientRect().width}))")


def cells(browser: Browser, table: str, col: int) -> list[str]:
    return browser.run(
        f"return [...document.querySelectorAll('table.{table} tbody tr')].map("
        f"r => r.cells[{col}].textContent)")


@needs_browser
def test_analyze_report_shows_every_layer_and_plot_and_loads_cleanly(files, browser, capsys,
                                                                     tmp_path):
    p = files["p"]
    page = tmp_path / "analyze.html"
    res = cli(["analyze", p["hostile"], "--data", p["train"], "--test", p["test"], "--layers",
               "all", "--probe", "--report", str(page), "--json"], capsys)
    assert res["report"] == str(page)
    browser.open(page)
    names = [la["name"] for la in res["layers"]]
    assert HOSTILE in names
    # the layer table: one row per layer, the names shown as text (escaped, never run)
    assert cells(browser, "layers", 1) == names
    assert browser.run("return document.querySelectorAll('script').length") == 0
    # the figures: one point per layer, train and test, for each index and the probe
    orders = res["options"]["orders"]
    indices = [k for k in res["layers"][0] if k in ("si", "high_order_si", "soft_order_si",
                                                     "anti_si", "center_si")]
    charts = sum(len(orders) if isinstance(res["layers"][0][k], dict) else 1 for k in indices)
    pts = points(browser)
    assert len(pts) == (charts + 1) * 2 * len(names)
    assert all(pt["w"] > 0 for pt in pts), "every point is drawn"
    # the SI of the renamed hidden layer, against the brute-force reference
    hid = H.hidden_of(files["x"], INFO_COLS)
    hid_t = H.hidden_of(files["xt"], INFO_COLS)
    si = {(pt["series"], pt["x"]): pt["value"] for pt in pts if pt["chart"] == "si"}
    assert si[("train", HOSTILE)] == pytest.approx(H.si(hid, files["y"]), abs=1e-12)
    cross = H.nearest(hid, hid_t)
    assert si[("test", HOSTILE)] == pytest.approx(
        float(np.mean(files["y"][cross] == files["yt"])), abs=1e-12)
    probe = [pt for pt in pts if pt["chart"].startswith("linear probe")]
    assert sorted(pt["value"] for pt in probe) == pytest.approx(sorted(
        la["probe"][f"{s}_accuracy"] for la in res["layers"] for s in ("train", "test")))
    device = browser.run("return document.querySelector('dd.device').textContent")
    assert device == (res.get("device") or res["options"].get("device") or "not recorded")
    assert browser.log() == [], "no console, script or network message"
    shot(browser, "report-analyze.png", tmp_path)


@needs_browser
def test_rank_report_lists_models_best_first_with_baselines(files, browser, capsys, tmp_path):
    p = files["p"]
    page = tmp_path / "rank.html"
    res = cli(["rank", p["noise"], p["info"], "--data", p["train"], "--baselines", "--report",
               str(page), "--json"], capsys)
    browser.open(page)
    assert cells(browser, "ranking", 1) == res["ranking"] == [p["info"], p["noise"]]
    bars = browser.run(
        "return [...document.querySelectorAll('rect.bar')].map(r => ({x: r.dataset.x, "
        "value: Number(r.dataset.value), "
        "chart: r.closest('svg').getAttribute('aria-label')}))")
    rows = {m["model"]: m for m in res["models"]}
    for bar in bars:
        key = bar["chart"].removeprefix("baseline: ")
        m = rows[bar["x"]]
        want = m["baselines"][key] if bar["chart"].startswith("baseline") else m["selected"]
        assert bar["value"] == want
    assert {b["chart"] for b in bars} >= {"baseline: logme", "baseline: leep"}
    assert browser.log() == []
    shot(browser, "report-rank.png", tmp_path)


@needs_browser
def test_certify_report_lists_every_query(files, browser, capsys, tmp_path):
    p = files["p"]
    page = tmp_path / "certify.html"
    res = cli(["certify", p["info"], "--reference", p["train"], "--queries", p["queries"],
               "--uncertainty", "0.2", "--report", str(page), "--json"], capsys)
    browser.open(page)
    hid = H.hidden_of(files["x"], INFO_COLS)
    nn = H.nearest(hid, H.hidden_of(files["xt"][:9], INFO_COLS))
    assert cells(browser, "queries", 2) == [str(v) for v in files["y"][nn]]
    text = browser.run("return document.body.textContent")
    guaranteed = sum(r["guarantee"] > 0 for r in res["results"])
    assert f"{guaranteed} of 9 queries guaranteed" in text
    assert browser.log() == []
    shot(browser, "report-certify.png", tmp_path)


def test_report_command_writes_the_page_of_a_saved_result(files, capsys, tmp_path):
    p = files["p"]
    res = cli(["analyze", p["info"], "--data", p["train"], "--json"], capsys)
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps(res))
    page = tmp_path / "out" / "page.html"
    assert main(["report", str(saved), "--out", str(page)]) == 0
    assert f"report written to {page}" in capsys.readouterr().out
    html = page.read_text()
    for la in res["layers"]:
        assert f'<td class="name">{la["name"]}</td>' in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


@pytest.mark.parametrize(("content", "needle"), [
    (b'{"task": "classification"}', "expected the --json result of analyze, rank or certify"),
    (b"not json", "not JSON"),
    (b"\xff\xfe\x00", "not a UTF-8 text file"),
])
def test_report_command_refuses_a_file_that_is_not_a_result(tmp_path, capsys, content, needle):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    page = tmp_path / "page.html"
    assert main(["report", str(bad), "--out", str(page)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and needle in err
    assert not page.exists()
