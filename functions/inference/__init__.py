"""Inference Lambda: the TensorFlow-Serving-shaped prediction API over ONNX Runtime."""
