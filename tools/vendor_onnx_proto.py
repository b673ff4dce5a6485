"""Write onnxlock/onnx_ml_descriptor.py: onnx-ml.proto's descriptor, taken from the installed onnx,
from which onnxlock.proto builds ONNX's messages without importing onnx. Rerun after raising the
onnx version onnxlock is built against; tests/test_proto.py checks the vendored one still agrees.

    python tools/vendor_onnx_proto.py
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import onnx

TARGET = Path(__file__).resolve().parent.parent / "onnxlock" / "onnx_ml_descriptor.py"


def main() -> None:
    serialized = onnx.onnx_ml_pb2.DESCRIPTOR.serialized_pb
    lines = textwrap.wrap(base64.b64encode(serialized).decode("ascii"), 96)
    body = "\n".join(f'    "{line}"' for line in lines)
    TARGET.write_text(
        f'"""onnx-ml.proto\'s FileDescriptorProto (from onnx {onnx.__version__}), written by\n'
        'tools/vendor_onnx_proto.py: onnxlock.proto builds ONNX\'s messages from it."""\n\n'
        "import base64\n\n"
        f'ONNX_VERSION = "{onnx.__version__}"\n'
        f"SERIALIZED = base64.b64decode(\n{body}\n)\n")
    print(f"wrote {TARGET} ({len(serialized):,} bytes of descriptor, onnx {onnx.__version__})")


if __name__ == "__main__":
    main()
