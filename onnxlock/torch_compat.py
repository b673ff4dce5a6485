"""Import torchvision (and onnx2torch, which imports it) next to a CPU build of torch.

The torchvision wheel on PyPI is built against CUDA torch; beside ``torch==2.13.0+cpu`` its C
extension cannot load, and ``import torchvision`` then fails while registering fake kernels for
its detection ops (nms, qnms). onnxlock needs none of those ops, only the pure-Python model code,
so when the extension cannot load their schemas are declared here first and the import succeeds;
calling the ops would still raise. With a matching torchvision this does nothing.
"""

from __future__ import annotations

import functools
import importlib.util
import os


@functools.cache
def prepare_torchvision() -> bool:
    """Make ``import torchvision`` work; True when its C extension loaded, False when shimmed."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    folder = os.path.dirname(spec.origin)
    library = next((os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.startswith("_C.")), None)
    if library is not None:
        try:
            torch.ops.load_library(library)
            return True
        except (OSError, RuntimeError):
            pass
    lib = torch.library.Library("torchvision", "DEF")  # noqa: kept alive by the cache below
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(lib)
    return False


_KEEP: list = []
