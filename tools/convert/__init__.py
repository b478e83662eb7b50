"""Converters from third-party weight files to the ONNX files the workers load."""
