"""``IndexOptions``: the one options value of every index computation.

The client and the CLI build it, the codec carries it in ``layerscope.v1.IndexOptions``,
and every analysis path (ComputeIndices, layer analysis, ranking, certification) receives
it. It is validated once, here, where it is built; checks that need the data (an order
below the number of samples, an index of the task) are the engine's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

ORDERED_SI = ("high_order_si", "soft_order_si", "anti_si")
ORDERED_SMI = (
    "high_order_smi_linear", "high_order_smi_exp", "soft_order_smi_linear",
    "soft_order_smi_exp", "anti_smi_linear", "anti_smi_exp",
)
CLASSIFICATION_INDICES = ("si", *ORDERED_SI, "center_si", "margin_order", "single_feature_si",
                          "feature_ranking")
REGRESSION_INDICES = ("smi_linear", "smi_exp", *ORDERED_SMI, "single_feature_smi_linear",
                      "single_feature_smi_exp", "feature_ranking")
INDEX_NAMES = frozenset(CLASSIFICATION_INDICES + REGRESSION_INDICES)

# The defaults, once: every path that computes indices starts from these.
DEFAULT_CLASSIFICATION = ("si", *ORDERED_SI, "center_si")
DEFAULT_REGRESSION = ("smi_linear", "smi_exp", *ORDERED_SMI)
DEFAULT_ORDERS = (1, 5)
DEFAULT_GAMMA = 1.0
DEFAULT_MARGIN_CAP = 64
DEFAULT_MEMORY_BUDGET_MB = 256.0
PRECISIONS = ("exact", "fast")
CRITERIA = ("si", "smi_linear", "smi_exp")
PROBE_MODELS = ("ridge", "logistic")
MAX_ORDER = 1 << 30  # int32 on the wire; the engine bounds orders by the data


class OptionError(ValueError):
    """An option with a value outside its domain."""


def _ints(name: str, values: Iterable[Any] | int | None, low: int) -> tuple[int, ...] | None:
    if values is None:
        return None
    if isinstance(values, (int, str)) and not isinstance(values, bool):
        values = [values]
    out = []
    for v in values:  # type: ignore[union-attr]
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise OptionError(f"{name} must be integers >= {low}; got {v!r}")
        i = int(v.__index__())
        if not low <= i <= MAX_ORDER:
            raise OptionError(f"{name} must be integers in {low}..{MAX_ORDER}; got {i}")
        out.append(i)
    return tuple(out)


def _positive(name: str, value: Any, *, integer: bool = False) -> None:
    ok = (isinstance(value, int) and not isinstance(value, bool)) if integer else (
        isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value))
    if not ok or value <= 0:
        kind = "an integer >= 1" if integer else "a finite number > 0"
        raise OptionError(f"{name} must be {kind}; got {value!r}")


@dataclass(frozen=True)
class IndexOptions:
    """What to compute and how; ``None`` means the documented default.

    indices: canonical names of METRICS.md (default: the SI family and center_si, or the
        SmI family). orders: orders r of the ordered families (default 1 and 5, those below
        m). gamma: sharpness of the exp variants of SmI. normalize: standardise each feature
        with the training mean and std. margin_cap: cap K of margin_order. max_features,
        patience, candidates, criterion: forward feature selection. precision: "exact" or
        "fast". memory_budget_mb: the engine's working memory beyond the inputs.
        per_sample: also return per-sample values. probe_model: the layer analysis's
        linear probe, "ridge" (default) or "logistic".
    """

    indices: tuple[str, ...] | None = None
    orders: tuple[int, ...] | None = None
    gamma: float = DEFAULT_GAMMA
    normalize: bool = False
    margin_cap: int = DEFAULT_MARGIN_CAP
    max_features: int | None = None
    patience: int | None = None
    candidates: tuple[int, ...] | None = None
    criterion: str | None = None
    precision: str = "exact"
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
    per_sample: bool = False
    probe_model: str | None = None
    _explicit: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.indices is not None:
            names = (self.indices,) if isinstance(self.indices, str) else tuple(self.indices)
            unknown = [n for n in names if n not in INDEX_NAMES]
            if unknown:
                raise OptionError(f"indices: unknown name(s) {unknown}; known: "
                                  f"{sorted(INDEX_NAMES)}")
            if not names:
                raise OptionError("indices is empty; leave it unset for the default set")
            set_(self, "indices", names)
        orders = _ints("orders", self.orders, 1)
        if orders is not None and not orders:
            raise OptionError("orders is empty; leave it unset for the default orders")
        set_(self, "orders", orders)
        set_(self, "candidates", _ints("candidates", self.candidates, 0))
        _positive("gamma", self.gamma)
        set_(self, "gamma", float(self.gamma))
        _positive("margin_cap", self.margin_cap, integer=True)
        _positive("memory_budget_mb", self.memory_budget_mb)
        set_(self, "memory_budget_mb", float(self.memory_budget_mb))
        for name in ("max_features", "patience"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name), integer=True)
        if self.precision not in PRECISIONS:
            raise OptionError(f"precision must be one of {list(PRECISIONS)}; got "
                              f"{self.precision!r}")
        if self.criterion is not None and self.criterion not in CRITERIA:
            raise OptionError(f"criterion must be one of {list(CRITERIA)}; got "
                              f"{self.criterion!r}")
        if self.probe_model is not None and self.probe_model not in PROBE_MODELS:
            raise OptionError(f"probe_model must be one of {list(PROBE_MODELS)}; got "
                              f"{self.probe_model!r}")
        for name in ("normalize", "per_sample"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be true or false; got {getattr(self, name)!r}")

    @classmethod
    def build(cls, **kw: Any) -> IndexOptions:
        """Options from keyword arguments, ``None`` meaning "the default"; unknown names are
        refused. ``explicit`` remembers which were given (some paths refuse options that
        would not change their result)."""
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise OptionError(f"unknown option(s) {unknown}; known: {sorted(known)}")
        given = {k: v for k, v in kw.items() if v is not None}
        return cls(**given, _explicit=frozenset(given))

    @property
    def explicit(self) -> frozenset[str]:
        """The options the caller set, whatever their value."""
        return self._explicit

    def with_(self, **kw: Any) -> IndexOptions:
        return replace(self, **kw, _explicit=self._explicit | frozenset(kw))

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the engine's ``compute_indices`` (per_sample is the
        caller's to apply; probe_model the layer analysis's)."""
        d = self.to_dict()
        d.pop("per_sample")
        d.pop("probe_model")
        return d

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_explicit")
        for k in ("indices", "orders", "candidates"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d


__all__ = [
    "CLASSIFICATION_INDICES", "CRITERIA", "DEFAULT_CLASSIFICATION", "DEFAULT_GAMMA",
    "DEFAULT_MARGIN_CAP", "DEFAULT_MEMORY_BUDGET_MB", "DEFAULT_ORDERS", "DEFAULT_REGRESSION",
    "INDEX_NAMES", "IndexOptions", "ORDERED_SI", "ORDERED_SMI", "OptionError", "PRECISIONS",
    "PROBE_MODELS",
    "REGRESSION_INDICES",
]
