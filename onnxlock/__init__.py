"""onnxlock: lock ONNX models with a secret key; restore them exactly at load time."""
