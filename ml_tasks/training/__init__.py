"""Training, evaluation, ONNX export and the model registry (heavy libraries are imported lazily)."""
