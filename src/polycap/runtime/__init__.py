"""Runtimes other than plain torch for polycap's own models (``polycap.runtime.onnx``: onnxruntime on CPU)."""
