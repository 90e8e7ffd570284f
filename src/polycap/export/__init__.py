"""Exported runtimes for polycap's own models (``polycap.export.onnx``: onnxruntime on CPU)."""
