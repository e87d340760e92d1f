"""What every exporter shares: the parity check, the runtime's limits, atomic writes.

An exporter turns a framework's model into ONNX bytes, then :func:`finish` checks that the
ONNX model computes what the source model does on the sample inputs (onnxruntime on the
CPU against the framework's own outputs), lowers the IR version to what the installed
onnxruntime loads, and writes the file atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ..local import write_atomic

DEFAULT_TOLERANCE = 1e-4
MAX_OPSET = 17  # supported by every converter used here and by onnxruntime >= 1.14


class MissingExtra(ImportError):
    """A framework's extra is not installed; the message names the extra."""


class ParityError(ValueError):
    """The ONNX model does not compute what the source model does."""


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise MissingExtra naming ``layerscope[extra]``."""
    import importlib  # noqa: PLC0415

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"exporting this model needs {module.split('.')[0]}: "
            f"pip install 'layerscope[{extra}]' ({exc})"
        ) from None


@dataclass
class OutputParity:
    """The largest differences between the source model and the ONNX model on one output."""

    name: str
    max_abs: float
    max_rel: float
    shape: list[int]


@dataclass
class ExportReport:
    """What an export wrote and how closely the ONNX model matches the source."""

    path: str
    framework: str
    inputs: list[str]
    outputs: list[str]
    opset: int
    ir_version: int
    tolerance: float
    parity: list[OutputParity] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def max_abs(self) -> float:
        return max((p.max_abs for p in self.parity), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "framework": self.framework, "inputs": self.inputs,
            "outputs": self.outputs, "opset": self.opset, "ir_version": self.ir_version,
            "tolerance": self.tolerance, "notes": list(self.notes),
            "parity": [p.__dict__ for p in self.parity],
        }


def _onnxruntime() -> Any:
    """The onnxruntime module, or MissingExtra naming the extras that bring it."""
    try:
        import onnxruntime  # noqa: PLC0415
    except ImportError as exc:
        raise MissingExtra(
            "the parity check runs the model on onnxruntime, which is not installed: "
            f"pip install 'layerscope[server]' (or 'layerscope[gpu]' on a CUDA machine) ({exc})"
        ) from None
    return onnxruntime


def run_onnx(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` on onnxruntime's CPU provider; return every output by name."""
    ort = _onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds)), strict=True))


def compare(
    expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], tolerance: float
) -> list[OutputParity]:
    """Per output: the largest absolute and relative difference; ParityError above
    ``tolerance`` (absolute, or relative to the output's largest magnitude)."""
    report = []
    for name, want in expected.items():
        if name not in got:
            raise ParityError(f"the ONNX model has no output {name!r} (outputs: {list(got)})")
        a = np.asarray(want, dtype=np.float64)
        b = np.asarray(got[name], dtype=np.float64)
        if a.shape != b.shape:
            if a.size == b.size:
                b = b.reshape(a.shape)
            else:
                raise ParityError(f"output {name!r}: the source gives shape {list(a.shape)}, "
                                  f"the ONNX model {list(b.shape)}")
        diff = np.abs(a - b)
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(a).max()) if a.size else 0.0
        max_rel = max_abs / scale if scale > 0 else max_abs
        report.append(OutputParity(name, max_abs, max_rel, list(a.shape)))
        if max_abs > tolerance and max_rel > tolerance:
            raise ParityError(
                f"output {name!r}: the ONNX model differs from the source model by up to "
                f"{max_abs:.3g} (relative {max_rel:.3g}), above the tolerance {tolerance:g}; "
                "check the converter's known limits in docs/exporters.md, or raise tolerance"
            )
    return report


def finish(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    framework: str,
    feeds: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    tolerance: float = DEFAULT_TOLERANCE,
    notes: Sequence[str] = (),
) -> ExportReport:
    """Check parity, fit the IR version to onnxruntime, write ``path`` atomically."""
    from ..server.graph.expose import max_ir_version  # noqa: PLC0415

    _onnxruntime()
    model.ir_version = min(model.ir_version, max_ir_version())
    onnx.checker.check_model(model)
    parity = compare(expected, run_onnx(model, feeds), tolerance)
    out = write_atomic(path, lambda f: f.write(model.SerializeToString()))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    return ExportReport(
        path=str(out), framework=framework, inputs=[i.name for i in model.graph.input
                                                    if i.name not in {t.name for t in
                                                                      model.graph.initializer}],
        outputs=[o.name for o in model.graph.output], opset=int(opset),
        ir_version=int(model.ir_version), tolerance=tolerance, parity=parity,
        notes=list(notes),
    )
