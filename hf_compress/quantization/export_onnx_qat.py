"""Put a QAT model's trained int8 grid into an ONNX graph, so ONNX Runtime runs the grid the model was trained on.

The float graph comes from torch's exporter with the weights already on the grid (see
:mod:`hf_compress.quantization.export_source`). Each quantized Linear/Conv1D shows up as a ``MatMul`` (or ``Gemm``)
whose weight initializer holds exactly the grid values; it is found by content (the exporters rename and transpose
initializers) and rewritten:

- static per-tensor activation scales from QAT (``QATConfig(activations="per_tensor")``): the input goes through
  ``QuantizeLinear`` / ``DequantizeLinear`` with the trained scale and zero point, the weight through
  ``DequantizeLinear`` with the trained per-channel (or per-tensor) scales; ORT fuses the QDQ pattern into an int8
  matmul. The activation grid is written as uint8 (integers and zero point shifted by 128: the same grid), because
  ONNX Runtime's fast x86 int8 kernels take uint8 activations and int8 weights (int8 x int8 QDQ measured 2.5x
  slower than uint8 x int8 on MiniLM here);
- weight-only QAT, or per-token activations (no ONNX op holds a per-token grid): ``DynamicQuantizeLinear`` on the
  input, ``MatMulInteger`` with the trained int8 weights and zero points, then the trained scales (the pattern ORT's
  own dynamic quantization writes, fused by ORT into ``DynamicQuantizeMatMul``).

The weights are the trained integers either way: nothing is re-quantized. Per-group grids have no int8 matmul in
ONNX Runtime on CPU and are refused with a pointer to the formats that hold them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from hf_compress.quantization.export_source import ExportSource, QuantizedLayer

SUPPORTED_GRANULARITIES = ("per_tensor", "per_channel")


@dataclass
class GridRewrite:
    """What :func:`apply_trained_grid` changed in the graph."""

    layers: int
    static_activation_layers: int
    dynamic_activation_layers: int
    weight_max_abs_diff: float
    zeros_kept: bool
    sparsity: float
    notes: list[str] = field(default_factory=list)


def check_grids(source: ExportSource) -> None:
    """Raise a ValueError (before anything is written) for grids ONNX Runtime's int8 kernels cannot run."""
    for name, layer in source.layers.items():
        if layer.spec.granularity not in SUPPORTED_GRANULARITIES:
            raise ValueError(
                f"format='onnx-int8' holds per_tensor and per_channel weight grids; module {name!r} was trained "
                f"with granularity={layer.spec.granularity!r}. Use format='compressed-tensors' (vLLM) or "
                "format='quanto' for per-group grids, or train with granularity='per_channel'"
            )


def _digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def apply_trained_grid(model, source: ExportSource):
    """Rewrite ``model`` (an ``onnx.ModelProto`` exported from ``source.model``) in place; returns a GridRewrite."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    by_content: dict[str, QuantizedLayer] = {}
    for layer in source.layers.values():
        by_content[_digest(layer.dequantized().numpy())] = layer

    new_nodes, new_initializers, done = [], [], {}
    dynamic_inputs: dict[str, tuple[str, str, str]] = {}
    static = dynamic = 0
    notes: list[str] = []
    max_diff, zeros_kept, zeros, total = 0.0, True, 0, 0
    per_token = False

    def constant(name, array):
        new_initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    for node in graph.node:
        layer = _match(node, initializers, by_content, numpy_helper)
        if layer is None:
            new_nodes.append(node)
            continue
        prefix = f"hf_compress/{layer.name}"
        if layer.name in done:  # the same weight feeding a second matmul (tied weights)
            prefix = f"{prefix}/{done[layer.name]}"
        done[layer.name] = done.get(layer.name, 0) + 1
        q = layer.q.numpy().astype(np.int8)  # [out, in]
        scale = layer.scale.numpy().reshape(-1).astype(np.float32)
        zero_point = layer.zero_point.numpy().reshape(-1).astype(np.int8)
        if layer.spec.granularity == "per_tensor":
            scale, zero_point = scale.reshape(()), zero_point.reshape(())
        q_name = constant(f"{prefix}/weight_int8", q.T.copy())  # [in, out] as MatMul's B
        scale_name = constant(f"{prefix}/weight_scale", scale)
        zero_name = constant(f"{prefix}/weight_zero_point", zero_point)
        # the check: what the graph now holds against the grid values
        restored = (q.astype(np.float32) - zero_point.reshape(-1, 1).astype(np.float32)) * scale.reshape(-1, 1)
        max_diff = max(max_diff, float(np.abs(restored - layer.dequantized().numpy()).max()))
        is_zero = q == zero_point.reshape(-1, 1)
        zeros += int(is_zero.sum())
        total += is_zero.size
        if layer.source_zeros is not None and not bool(is_zero[layer.source_zeros.numpy()].all()):
            zeros_kept = False

        activation_input = node.input[0]
        matmul_output = f"{prefix}/matmul_output" if node.op_type == "Gemm" and len(node.input) > 2 else node.output[0]
        activation = layer.activation
        if activation is not None and not activation.dynamic:
            static += 1
            a_scale = constant(f"{prefix}/input_scale", activation.scale.float().numpy().reshape(()))
            # the same grid shifted to uint8 (q + 128, zero point + 128): ORT's fast x86 kernels are u8 x s8
            a_zero = constant(
                f"{prefix}/input_zero_point",
                (activation.zero_point.numpy().astype(np.int32) + 128).astype(np.uint8).reshape(()),
            )
            new_nodes += [
                helper.make_node("QuantizeLinear", [activation_input, a_scale, a_zero], [f"{prefix}/input_q"]),
                helper.make_node("DequantizeLinear", [f"{prefix}/input_q", a_scale, a_zero], [f"{prefix}/input_dq"]),
                helper.make_node("DequantizeLinear", [q_name, scale_name, zero_name], [f"{prefix}/weight_dq"], axis=1),
                helper.make_node("MatMul", [f"{prefix}/input_dq", f"{prefix}/weight_dq"], [matmul_output]),
            ]
        else:
            dynamic += 1
            per_token = per_token or activation is not None
            if activation_input not in dynamic_inputs:  # q/k/v share one dynamic quantization of their input
                base = f"hf_compress/dynamic/{len(dynamic_inputs)}"
                outputs = (f"{base}/q", f"{base}/scale", f"{base}/zero_point")
                new_nodes.append(helper.make_node("DynamicQuantizeLinear", [activation_input], list(outputs)))
                dynamic_inputs[activation_input] = outputs
            input_q, input_scale, input_zero = dynamic_inputs[activation_input]
            new_nodes += [
                helper.make_node(
                    "MatMulInteger", [input_q, q_name, input_zero, zero_name], [f"{prefix}/matmul_int32"]
                ),
                helper.make_node("Cast", [f"{prefix}/matmul_int32"], [f"{prefix}/matmul_float"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [input_scale, scale_name], [f"{prefix}/output_scale"]),
                helper.make_node("Mul", [f"{prefix}/matmul_float", f"{prefix}/output_scale"], [matmul_output]),
            ]
        if matmul_output != node.output[0]:  # Gemm's bias
            new_nodes.append(helper.make_node("Add", [matmul_output, node.input[2]], [node.output[0]]))

    if not done:
        raise ValueError(
            f"onnx-int8: none of the {len(source.layers)} quantized modules was found as a MatMul/Gemm weight in the "
            "exported graph; the exporter changed the weights (report this with the model class)"
        )
    missing = sorted(set(source.layers) - set(done))
    if missing:
        notes.append(f"{len(missing)} quantized modules were not found in the graph and stay float: {missing[:4]}")
    if per_token:
        notes.append(
            "QAT used per-token activation scales, which no ONNX op holds: ONNX Runtime quantizes those inputs "
            "dynamically per tensor (DynamicQuantizeLinear); the weights keep their trained grid"
        )
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_initializers)
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return GridRewrite(len(done), static, dynamic, max_diff, zeros_kept, zeros / max(total, 1), notes)


def _match(node, initializers, by_content, numpy_helper):
    """The quantized layer whose grid values are this MatMul/Gemm's weight initializer, or None."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in initializers:
        return None
    attributes = {attribute.name: attribute for attribute in node.attribute}
    if node.op_type == "Gemm":
        if attributes.get("transA") and attributes["transA"].i:
            return None
        if any(name in attributes and attributes[name].f != 1.0 for name in ("alpha", "beta")):
            return None
    weight = numpy_helper.to_array(initializers[node.input[1]])
    if weight.ndim != 2 or weight.dtype != np.float32:
        return None
    transposed = node.op_type == "Gemm" and "transB" in attributes and attributes["transB"].i
    out_in = weight if transposed else weight.T
    layer = by_content.get(_digest(out_in))
    if layer is None or not np.array_equal(out_in, layer.dequantized().numpy()):
        return None
    return layer
