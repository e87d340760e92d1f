"""Which index options each analysis path takes, and why it refuses the others.

Every option either changes the result of a path that takes it or is refused there
(INVALID_ARGUMENT naming the option and the path); an option that cannot change the result
of one request (``gamma`` with no exp variant computed, ``margin_cap`` without
``margin_order``, selection options without ``feature_ranking``) is refused too. The same
checks run on the server and in the Python API of each analysis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from ...protos.options import (
    DEFAULT_CLASSIFICATION,
    DEFAULT_REGRESSION,
    ORDERED_SI,
    ORDERED_SMI,
    IndexOptions,
)

OPTION_NAMES = tuple(f.name for f in fields(IndexOptions) if not f.name.startswith("_"))
COMPUTE_INDICES, LAYER_ANALYSIS, RANKING, CERTIFICATION = (
    "ComputeIndices", "layer analysis", "ranking", "certification")
# The options each path takes; each changes that path's result (docs/api.md, "Options on
# each path"). The engine itself (ComputeIndices) takes them all.
ACCEPTED: dict[str, frozenset[str]] = {
    COMPUTE_INDICES: frozenset(OPTION_NAMES) - {"probe_model"},
    LAYER_ANALYSIS: frozenset({"indices", "orders", "gamma", "normalize", "precision",
                               "memory_budget_mb", "probe_model"}),
    RANKING: frozenset({"gamma", "normalize", "max_features", "patience", "candidates",
                        "criterion", "precision", "memory_budget_mb"}),
    CERTIFICATION: frozenset({"orders"}),
}
_NO_SELECTION = "feature_ranking is not computed per layer (StartRanking selects features)"
_REFUSED: dict[tuple[str, str], str] = {
    (LAYER_ANALYSIS, "margin_cap"): "margin_order is per sample and a layer row holds "
                                    "dataset values",
    (LAYER_ANALYSIS, "max_features"): _NO_SELECTION,
    (LAYER_ANALYSIS, "patience"): _NO_SELECTION,
    (LAYER_ANALYSIS, "candidates"): _NO_SELECTION,
    (LAYER_ANALYSIS, "criterion"): _NO_SELECTION,
    (LAYER_ANALYSIS, "per_sample"): "a layer row holds dataset values",
    (RANKING, "indices"): "a ranking computes its criterion, its tie-breakers and "
                          "feature_ranking",
    (RANKING, "orders"): "the tie-breaker's order is the request's `order`",
    (RANKING, "margin_cap"): "a ranking does not compute margin_order",
    (RANKING, "per_sample"): "a ranking reports one row per model",
    (CERTIFICATION, "indices"): "a reference's confidence is si, or high_order_si[r] with "
                                "orders=[r]",
    (CERTIFICATION, "gamma"): "a regression reference uses smi_linear and alpha",
    (CERTIFICATION, "normalize"): "queries are certified in the layer's own feature space",
    (CERTIFICATION, "precision"): "certification is exact by definition (METRICS.md "
                                  "section 3)",
    (CERTIFICATION, "memory_budget_mb"): "a reference's searches use the server's working "
                                         "memory",
    (CERTIFICATION, "per_sample"): "Certify answers per query",
    (COMPUTE_INDICES, "probe_model"): "probes are fitted per layer by the layer analysis",
    (RANKING, "probe_model"): "a ranking fits no probe",
    (CERTIFICATION, "probe_model"): "a reference fits no probe",
}
# Indices with a dataset value, the only ones a layer row can hold.
LAYER_INDICES = frozenset(("si", *ORDERED_SI, "center_si", "smi_linear", "smi_exp",
                           *ORDERED_SMI))
_SELECTION = ("max_features", "patience", "candidates", "criterion")
# Ranking methods (docs/ranking-and-certification.md says why "folded" is the default).
METHODS = ("soft_order", "folded", "seed")
# Classification; regression ranks with "seed", its only method. benchmarks/transfer.py:
# soft_order_si[r] of all features tracked probe accuracy best (RESULTS.md).
DEFAULT_METHOD = "soft_order"
FOLDS = 5
MAX_FOLDS = 100


def _refusal_reason(path: str, name: str) -> str:
    return _REFUSED.get((path, name), "it does not change this path's result")


def check_options(path: str, options: IndexOptions, task: str,
                  computed: Iterable[str] | None = None) -> None:
    """Refuse an option the path does not take, or one that cannot change the result.

    ``computed`` are the indices the request computes (default: ``options.indices`` or
    the task's default set).
    """
    for name in OPTION_NAMES:
        if name in options.explicit and name not in ACCEPTED[path]:
            raise ValueError(f"option {name!r} does not apply to {path}: "
                             f"{_refusal_reason(path, name)}")
    if path == LAYER_ANALYSIS and options.indices is not None:
        other = [n for n in options.indices if n not in LAYER_INDICES]
        if other:
            raise ValueError(f"option 'indices': {other} do not apply to {path}: a layer row "
                             f"holds dataset values ({', '.join(sorted(LAYER_INDICES))})")
    names = set(computed if computed is not None else options.indices or (
        DEFAULT_CLASSIFICATION if task == "classification" else DEFAULT_REGRESSION))
    given = options.explicit
    exp = any(n.endswith("_exp") for n in names) or (
        "feature_ranking" in names and options.criterion == "smi_exp")
    if "gamma" in given and (task != "regression" or not exp):
        raise ValueError(f"option 'gamma' has no effect on this {path} request: it sharpens "
                         "the exp variants of SmI (regression), and none is computed")
    if "margin_cap" in given and "margin_order" not in names:
        raise ValueError(f"option 'margin_cap' has no effect on this {path} request: it caps "
                         "margin_order, which is not among the indices")
    for name in _SELECTION:
        if name in given and "feature_ranking" not in names:
            raise ValueError(f"option {name!r} has no effect on this {path} request: it is "
                             "an option of feature_ranking, which is not among the indices")


def check_probe(options: IndexOptions, probe: bool, task: str) -> str:
    """The layer analysis's probe model; refuses ``probe_model`` without ``probe`` and the
    logistic probe on regression targets."""
    if options.probe_model is not None and not probe:
        raise ValueError("option 'probe_model' has no effect without probe: ask for the probe "
                         "too (--probe)")
    model = options.probe_model or "ridge"
    if probe and model == "logistic" and task != "classification":
        raise ValueError("probe_model 'logistic' is for classification; use 'ridge' for "
                         "regression targets")
    return model


def with_options(options: IndexOptions | None, kw: Mapping[str, Any]) -> IndexOptions:
    """``options`` with the keyword options set on top (the Python API's keywords)."""
    given = {k: v for k, v in kw.items() if v is not None}
    if options is None:
        return IndexOptions.build(**given)
    if given:
        IndexOptions.build(**given)  # unknown names and bad values, named
        return options.with_(**given)
    return options


def ranking_indices(task: str, options: IndexOptions) -> tuple[str, ...]:
    """The indices a ranking computes: its criterion, the tie-breakers, feature_ranking."""
    if task == "classification":
        return ("si", "soft_order_si", "center_si", "feature_ranking")
    criterion = options.criterion or "smi_linear"
    return tuple(dict.fromkeys((criterion, "soft_order_smi_linear", "feature_ranking")))


def reference_order(options: IndexOptions) -> int:
    """The confidence order r of a reference (si for r = 1)."""
    return options.orders[0] if options.orders else 1


def check_method(method: str | None, task: str) -> str:
    """The ranking method: ``method``, or the task's default; refuse an unknown one."""
    if method is None or method == "":
        return DEFAULT_METHOD if task == "classification" else "seed"
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method != "seed" and task != "classification":
        raise ValueError(f"method {method!r} ranks classification targets; use method 'seed' "
                         "for regression")
    return method


def check_folds(folds: int) -> None:
    """Refuse a fold count outside 2..MAX_FOLDS."""
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= MAX_FOLDS:
        raise ValueError(f"folds must be an integer in 2..{MAX_FOLDS}; got {folds!r}")
