"""Inference: the torch detector, the torch-free ONNX detector, post-processing, images, drawing, videos and peers."""
