"""Hand-built ONNX graphs in the patterns of TensorFlow (tf2onnx) and JAX (jax2tf) exports.

NHWC tensors wrapped in Transpose pairs around each Conv, ``strided_slice`` Slices, LayerNorm and
GELU written out op by op, Einsum dense layers. Random weights; every graph is checked by onnx.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Builder:
    """Collects nodes and random initializers; names every node (keys refer to nodes by name)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, *shape: int) -> str:
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
        return self.const(name, (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))

    def op(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def model(self, inputs: list, outputs: list, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="zoo")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model

    def dense(self, x: str, d_in: int, d_out: int, name: str) -> str:
        """x @ W + b, as tf2onnx/jax2tf write a Dense layer."""
        y = self.op("MatMul", [x, self.weight(f"{name}/kernel", d_in, d_out)], f"{name}/MatMul")
        return self.op("Add", [y, self.const(f"{name}/bias", np.zeros(d_out, np.float32) + 0.1)], f"{name}/BiasAdd")

    def layer_norm(self, x: str, dim: int, name: str) -> str:
        """Decomposed LayerNorm: (x - mean) / sqrt(var + eps) * gamma + beta."""
        mean = self.op("ReduceMean", [x], f"{name}/mean", axes=[-1], keepdims=1)
        centred = self.op("Sub", [x, mean], f"{name}/sub")
        square = self.op("Mul", [centred, centred], f"{name}/square")
        var = self.op("ReduceMean", [square], f"{name}/variance", axes=[-1], keepdims=1)
        std = self.op("Sqrt", [self.op("Add", [var, self.const(f"{name}/eps", np.float32(1e-6))], f"{name}/add")],
                      f"{name}/sqrt")
        normed = self.op("Div", [centred, std], f"{name}/div")
        scaled = self.op("Mul", [normed, self.const(f"{name}/gamma", np.ones(dim, np.float32))], f"{name}/mul")
        return self.op("Add", [scaled, self.const(f"{name}/beta", np.zeros(dim, np.float32))], f"{name}/add_1")

    def gelu_tanh(self, x: str, name: str) -> str:
        """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
        cube = self.op("Pow", [x, self.const(f"{name}/three", np.float32(3))], f"{name}/pow")
        inner = self.op("Add", [x, self.op("Mul", [cube, self.const(f"{name}/c", np.float32(0.044715))], f"{name}/mul")],
                        f"{name}/add")
        scaled = self.op("Mul", [inner, self.const(f"{name}/k", np.float32(np.sqrt(2 / np.pi)))], f"{name}/mul_1")
        one_plus = self.op("Add", [self.op("Tanh", [scaled], f"{name}/tanh"), self.const(f"{name}/one", np.float32(1))],
                           f"{name}/add_1")
        half = self.op("Mul", [x, self.const(f"{name}/half", np.float32(0.5))], f"{name}/mul_2")
        return self.op("Mul", [half, one_plus], f"{name}/mul_3")

    def gelu_erf(self, x: str, name: str) -> str:
        """x * 0.5 * (1 + erf(x / sqrt(2)))."""
        erf = self.op("Erf", [self.op("Div", [x, self.const(f"{name}/sqrt2", np.float32(np.sqrt(2)))], f"{name}/div")],
                      f"{name}/erf")
        one_plus = self.op("Add", [erf, self.const(f"{name}/one", np.float32(1))], f"{name}/add")
        return self.op("Mul", [self.op("Mul", [x, one_plus], f"{name}/mul"), self.const(f"{name}/half", np.float32(0.5))],
                       f"{name}/mul_1")


def value(name: str, shape: list, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def tf_nhwc_cnn() -> onnx.ModelProto:
    """tf2onnx CNN: NHWC input, Transpose pairs around each Conv, mean over H and W, Dense head."""
    b = Builder(1)
    x = "input_1"
    for i, (c_in, c_out) in enumerate([(3, 32), (32, 64)]):
        nchw = b.op("Transpose", [x], f"conv{i}/transpose_in", perm=[0, 3, 1, 2])
        conv = b.op("Conv", [nchw, b.weight(f"conv{i}/kernel", c_out, c_in, 3, 3), b.const(f"conv{i}/bias", np.full(c_out, 0.1, np.float32))],
                    f"conv{i}/Conv2D", pads=[1, 1, 1, 1])
        x = b.op("Transpose", [b.op("Relu", [conv], f"conv{i}/Relu")], f"conv{i}/transpose_out", perm=[0, 2, 3, 1])
    pooled = b.op("ReduceMean", [x], "global_average_pooling2d/Mean", axes=[1, 2], keepdims=0)
    logits = b.dense(pooled, 64, 10, "dense")
    b.op("Softmax", [logits], "probs", axis=-1)
    return b.model([value("input_1", [1, 16, 16, 3])], [value("probs", [1, 10])], "tf_nhwc_cnn")


def jax_classifier() -> onnx.ModelProto:
    """jax2tf token classifier: Dense, decomposed LayerNorm, erf and tanh GELUs, strided_slice of the
    first token (a Slice over every axis, the feature axis taken whole), Dense head."""
    b, d = Builder(2), 128
    h = b.dense("x", 16, d, "embed")
    h = b.gelu_erf(b.layer_norm(h, d, "ln0"), "gelu0")
    h = b.gelu_tanh(b.layer_norm(b.dense(h, d, d, "mlp"), d, "ln1"), "gelu1")
    first = b.op("Slice", [h, b.const("begin", np.array([0, 0, 0])), b.const("end", np.array([1, 1, d])),
                           b.const("axes", np.array([0, 1, 2])), b.const("strides", np.array([1, 1, 1]))], "strided_slice")
    flat = b.op("Reshape", [first, b.const("shape", np.array([1, d]))], "Reshape")
    b.dense(flat, d, 10, "head")
    return b.model([value("x", [1, 8, 16])], [value("head/BiasAdd", [1, 10])], "jax_classifier")


def einsum_mlp() -> onnx.ModelProto:
    """TF/JAX Einsum dense layers (``btd,dh->bth``, ``btd,dnh->btnh``) and Einsum attention."""
    b, d, heads = Builder(3), 64, 2
    h = b.op("Einsum", ["x", b.weight("dense/kernel", 16, d)], "dense/einsum", equation="btd,dh->bth")
    h = b.op("Relu", [b.op("Add", [h, b.const("dense/bias", np.full(d, 0.1, np.float32))], "dense/add")], "dense/relu")
    q, k, v = (b.op("Einsum", [h, b.weight(f"{n}/kernel", d, heads, d // heads)], f"{n}/einsum", equation="btd,dnh->btnh")
               for n in "qkv")
    scores = b.op("Softmax", [b.op("Einsum", [q, k], "attn/scores", equation="bqnh,bknh->bnqk")], "attn/softmax", axis=-1)
    ctx = b.op("Einsum", [scores, v], "attn/context", equation="bnqk,bknh->bqnh")
    out = b.op("Einsum", [ctx, b.weight("o/kernel", heads, d // heads, d)], "o/einsum", equation="btnh,nhd->btd")
    pooled = b.op("ReduceMean", [b.op("Add", [out, h], "residual")], "pool", axes=[1], keepdims=0)
    b.op("Einsum", [pooled, b.weight("head/kernel", d, 4)], "head/einsum", equation="bd,dc->bc")
    return b.model([value("x", [1, 8, 16])], [value("head/einsum", [1, 4])], "einsum_mlp")


def tf_keras_mlp() -> onnx.ModelProto:
    """A Keras MLP as tf2onnx writes it: Identity-routed weights, a shared bias, BatchNorm folded to Mul/Add."""
    b = Builder(4)
    kernel = b.op("Identity", [b.weight("dense/kernel", 16, 32)], "dense/MatMul/ReadVariableOp")
    h = b.op("MatMul", ["x", kernel], "dense/MatMul")
    shared = b.const("shared_bias", np.full(32, 0.05, np.float32))
    h = b.op("Add", [h, shared], "dense/BiasAdd")
    h = b.op("Add", [b.op("Mul", [h, b.const("bn/scale", np.full(32, 1.5, np.float32))], "bn/mul"),
                     b.const("bn/offset", np.full(32, -0.1, np.float32))], "bn/add")
    h = b.op("Relu", [h], "relu")
    h = b.op("Add", [b.op("MatMul", [h, b.weight("dense_1/kernel", 32, 32)], "dense_1/MatMul"), shared], "dense_1/BiasAdd")
    b.dense(b.op("Relu", [h], "relu_1"), 32, 10, "dense_2")
    return b.model([value("x", [1, 16])], [value("dense_2/BiasAdd", [1, 10])], "tf_keras_mlp")


GRAPHS: dict[str, Callable[[], onnx.ModelProto]] = {
    "tf_nhwc_cnn": tf_nhwc_cnn,
    "jax_classifier": jax_classifier,
    "einsum_mlp": einsum_mlp,
    "tf_keras_mlp": tf_keras_mlp,
}
