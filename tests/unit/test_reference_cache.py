"""Loaded certification references are kept within a share of the memory budget: least
recently used dropped first, and certification still answers from any of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from layerscope.server.analysis.memory import MemoryBudget
from layerscope.server.analysis.references import CACHE_SHARE, References, loaded_cost
from layerscope.server.analysis.requests import CertifyRequest
from layerscope.server.store import Store

MIB = 1 << 20


def _store_reference(store: Store, i: int, m: int, d: int) -> tuple[str, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    x = rng.standard_normal((m, d)).astype(np.float32)
    y = (np.arange(m) % 3).astype(np.int64)
    ref_id = f"{i:064x}"
    specs = [{"name": "features", "dtype": "float32", "shape": [m, d]},
             {"name": "labels", "dtype": "int64", "shape": [m]}]
    info = {"id": ref_id, "model_id": "m", "dataset_id": "d", "layer": "h", "layer_rule": "",
            "reduction": "flatten", "task": "classification", "n_samples": m, "features": d,
            "summary": {}}
    store.add_reference(x.tobytes() + y.tobytes(), {"id": ref_id, "model_id": "m",
                                                     "dataset_id": "d", "specs": specs,
                                                     "info": info})
    return ref_id, x, y


def test_loaded_references_stay_within_their_share_of_the_budget(tmp_path: Path) -> None:
    m, d = 2000, 12
    store = Store(tmp_path / "data")
    try:
        refs = References(store, budget=MemoryBudget(4.0))  # 1 MiB for loaded references
        limit = int(CACHE_SHARE * 4 * MIB)
        each = loaded_cost(np.zeros((m, d), np.float32))
        fits = limit // each
        assert 1 <= fits < 5, (limit, each)
        stored = [_store_reference(store, i, m, d) for i in range(5)]
        for ref_id, x, _ in stored:
            q = x[:7] + 0.01
            res = refs.certify(CertifyRequest(ref_id, features=q, order=1))
            # the nearest reference point of each query, by the naive float64 reference
            want = [int(np.argmin(((x.astype(np.float64) - p) ** 2).sum(axis=1))) for p in q]
            np.testing.assert_array_equal(res.values["nn_index"], want)
            assert refs.cached_bytes() <= limit
        # the most recent ones are kept; the first was dropped, and is kept once used again
        assert refs.cached_bytes() == fits * each
        last = refs.load(stored[-1][0])[1]
        assert refs.load(stored[-1][0])[1] is last
        first = refs.load(stored[0][0])[1]
        assert refs.load(stored[0][0])[1] is first
        assert refs.cached_bytes() <= limit
    finally:
        store.close()


def test_a_reference_larger_than_the_share_is_loaded_for_each_call(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    try:
        refs = References(store, budget=MemoryBudget(1.0))  # 256 KiB for loaded references
        ref_id, x, _ = _store_reference(store, 9, 4000, 16)  # ~780 KiB when loaded
        assert loaded_cost(x) > refs.cache_limit
        a, b = refs.load(ref_id)[1], refs.load(ref_id)[1]
        assert a is not b and refs.cached_bytes() == 0
    finally:
        store.close()
