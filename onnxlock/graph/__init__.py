"""Reading, normalising and editing ONNX graphs. Knows nothing of keys or onnxruntime."""
