"""XGBoost and LightGBM models exported, uploaded to a real server and analysed there,
with their per-tree outputs as a layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import rank as H
from sklearn.datasets import load_digits

from layerscope.client.client import Client


@pytest.mark.parametrize("framework", ["xgboost", "lightgbm"])
def test_tree_models_are_analysed_through_a_real_server(framework: str, tmp_path: Path):
    x, y = load_digits(return_X_y=True)
    x, y = (x[:500] / 16.0).astype(np.float32), y[:500].astype(np.int64)
    if framework == "xgboost":
        xgb = pytest.importorskip("xgboost")
        model = xgb.XGBClassifier(n_estimators=10, max_depth=3, random_state=0).fit(x, y)
    else:
        lgb = pytest.importorskip("lightgbm")
        model = lgb.LGBMClassifier(n_estimators=10, max_depth=3, learning_rate=0.5,
                                   random_state=0, verbose=-1).fit(x, y)
    with Client.local(tmp_path / "data") as client:
        stored = client.upload_model(model, sample_inputs=x[:20])
        assert "tree_outputs" in {la.name for la in stored.layers}
        res = client.analyze_layers(stored, {"input": x}, labels=y, layers="tree_outputs")
    rows = {r["name"]: r for r in res.layers}
    assert rows["input"]["si"] == pytest.approx(H.si(x, y), abs=0)
    assert rows["tree_outputs"]["dims"] == 10 * 10  # 10 rounds x 10 classes
    assert 0.0 <= rows["tree_outputs"]["si"] <= 1.0
    assert rows["probabilities"]["si"] > rows["input"]["si"]
