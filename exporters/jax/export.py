"""``export_jax``: trace the function on a symbolic batch size, write its jaxpr as ONNX,
clean the graph up, check parity and write the file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ..base import DEFAULT_TOLERANCE, MAX_OPSET, ExportReport, finish, require
from ..inputs import as_input_list, input_names_of
from .cleanup import prune, rename, sink_transposes
from .convert import Converter
from .graph import Const, Graph, Value, const_of, is_static, same
from .sources import callable_of, name_outputs, path_name

MIN_OPSET = 13  # Squeeze/Unsqueeze/ReduceSum/Split take their axes as inputs from 13 on


def _value_info(name: str, aval: Any, batch: Any) -> onnx.ValueInfoProto:
    dims: list[int | str | None] = []
    for d in aval.shape:
        if is_static(d):
            dims.append(int(d))
        else:
            dims.append("batch" if same(d, batch) else str(d).replace(" ", ""))
    return helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(aval.dtype)), dims)




def export_jax(
    model: Any,
    sample_inputs: Any,
    path: str | os.PathLike[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
) -> ExportReport:
    """Export a JAX function, ``(apply_fn, params)`` pair or ``flax.nnx`` Module called on
    ``sample_inputs``; batch axis dynamic; parity checked against the JAX outputs.

    Every input must have the batch axis first; the function is traced with a symbolic
    batch size, so it must not depend on the batch size's value.
    """
    jax = require("jax", "jax")
    jnp = require("jax.numpy", "jax")
    target = int(opset or MAX_OPSET)
    if not MIN_OPSET <= target <= MAX_OPSET:
        raise ValueError(f"opset must be between {MIN_OPSET} and {MAX_OPSET}; got {target}")
    arrays = as_input_list(sample_inputs)
    names = list(input_names or input_names_of(
        sample_inputs, ["input"] if len(arrays) == 1 else
        [f"input{i}" for i in range(len(arrays))]))
    if len(names) != len(arrays):
        raise ValueError(f"{len(names)} input_names for {len(arrays)} sample inputs")
    if len(set(names)) != len(names):
        raise ValueError(f"input names must be unique; got {names}")
    fn, params, kind = callable_of(model)

    out_tree = fn(params, *[jnp.asarray(a) for a in arrays])
    leaves = jax.tree_util.tree_leaves(out_tree)
    if not leaves:
        raise ValueError("the function returns no arrays")
    onames = name_outputs(out_tree, output_names, len(leaves))
    expected = {n: np.asarray(v) for n, v in zip(onames, leaves, strict=True)}

    (b,) = jax.export.symbolic_shape("b")
    specs = [jax.ShapeDtypeStruct((b, *a.shape[1:]), a.dtype) for a in arrays]
    try:
        closed = jax.make_jaxpr(fn)(params, *specs)
    except Exception as exc:
        raise ValueError(
            f"cannot trace the {kind} with a symbolic batch size ({type(exc).__name__}: "
            f"{exc}); the function must work for any batch size") from exc

    param_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    jaxpr = closed.jaxpr
    n_params = len(jaxpr.invars) - len(arrays)
    if n_params != len(param_leaves):
        raise ValueError(f"the traced function takes {n_params} parameter arrays, the "
                         f"params pytree holds {len(param_leaves)}")
    g = Graph()
    g.used.update([*names, *onames])  # no intermediate tensor takes an input/output name
    args: list[Value] = []
    for (p, leaf), var in zip(param_leaves, jaxpr.invars[:n_params], strict=True):
        try:
            value = np.asarray(leaf, dtype=var.aval.dtype)
        except Exception:  # noqa: BLE001 - PRNG keys and other opaque values: fine unused
            value = np.zeros((), dtype=np.float32)
        args.append(Const(value, path_name(p)))
    for n, a, var in zip(names, arrays, jaxpr.invars[n_params:], strict=True):
        # JAX computes in its own dtypes (int64 -> int32 unless x64 is enabled): the ONNX
        # input keeps the sample's dtype and is cast inside.
        want = np.dtype(var.aval.dtype)
        args.append(n if a.dtype == want else
                    g.op("Cast", [n], f"{n}/cast", to=helper.np_dtype_to_tensor_dtype(want)))
    consts = [const_of(c) for c in closed.consts]
    conv = Converter(g, b, names[0] if arrays[0].ndim >= 1 else None)
    outs = conv.run(jaxpr, consts, args)

    # Name the outputs: rename the tensor that computes each (or add an Identity).
    produced = {o for node in g.nodes for o in node.output}
    for oname, val in zip(onames, outs, strict=True):
        tensor = conv.name(val)
        if tensor in produced and tensor not in names and tensor not in onames:
            rename(g, tensor, oname)
            produced.discard(tensor)
            produced.add(oname)
        else:
            g.nodes.append(helper.make_node("Identity", [tensor], [oname], name=oname))
    sink_transposes(g, set(onames))
    prune(g, set(onames))

    in_vis = [_value_info(n, v.aval.update(dtype=a.dtype), b)
              for n, a, v in zip(names, arrays, jaxpr.invars[n_params:], strict=True)]
    out_vis = [_value_info(n, v.aval, b) for n, v in zip(onames, jaxpr.outvars, strict=True)]
    graph = helper.make_graph(
        g.nodes, "jax", in_vis, out_vis,
        initializer=[onnx.numpy_helper.from_array(np.asarray(v), k)
                     for k, v in g.inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", target)],
                              producer_name="layerscope", producer_version="jaxpr")
    notes = [f"traced a {kind} with jax.make_jaxpr and a symbolic batch size; "
             "jaxpr primitives written as ONNX operators"]
    feeds = dict(zip(names, arrays, strict=True))
    return finish(proto, path, "jax", feeds, expected, tolerance, notes)
