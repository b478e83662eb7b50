"""The one place ONNX Runtime sessions are built (providers and threads from settings)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from shared.settings import Settings


def build_session(model: bytes | Path, settings: Settings) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.onnx_intra_op_threads
    options.inter_op_num_threads = settings.onnx_inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = set(ort.get_available_providers())
    # CUDA is used when asked for and present; CPU is always the fallback.
    providers = [p for p in settings.onnx_providers if p in available] or ["CPUExecutionProvider"]
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=providers)
