"""Batch prediction: score an interval's trips with a registered ONNX model (heavy libraries load lazily)."""
