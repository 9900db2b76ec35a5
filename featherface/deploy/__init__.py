"""Deployment: ONNX / TorchScript export and its exact rewrites, OpenVINO, quantisation and the benchmark."""
