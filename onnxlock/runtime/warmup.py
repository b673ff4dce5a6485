"""onnxruntime's start-up, paid ahead: a process's first session takes ~8 ms more than later ones
(the operator schemas, the CPU kernel registry, the code's first run), and building a session
releases the GIL. So the first load in a process builds a one-node session in a thread of its own
(``background.ahead``) while it opens the key and restores the weights: beside a passphrase's KDF
it is hidden whole, beside an identity's key opening in part."""

from __future__ import annotations

import onnxruntime as ort

from ..proto import ModelProto, TensorProto

_QUIET = 3  # onnxruntime's errors-only log level


def one_node_model() -> bytes:
    """y = Identity(x), x a float[1]: the smallest model onnxruntime builds a session for."""
    model = ModelProto(ir_version=8, producer_name="onnxlock-warmup")
    model.opset_import.add(domain="", version=13)
    graph = model.graph
    graph.name = "warmup"
    graph.node.add(op_type="Identity", input=["x"], output=["y"])
    for value, name in ((graph.input.add(), "x"), (graph.output.add(), "y")):
        value.name = name
        value.type.tensor_type.elem_type = TensorProto.FLOAT
        value.type.tensor_type.shape.dim.add(dim_value=1)
    return model.SerializeToString()


def first_session() -> None:
    """Build and drop a one-node CPU session (call after telemetry is turned off: the loader's
    ``disable_telemetry``)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.log_severity_level = _QUIET
    ort.InferenceSession(one_node_model(), options, providers=["CPUExecutionProvider"])
