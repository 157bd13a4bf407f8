"""Export a model to ONNX for serving (`VisionLearner.to_onnx`): one input, one output,
the batch dimension free.

Uses torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`), which needs
only the `onnx` package (`pip install "lrkit[onnx]"`), not onnxscript; it is checked before any
work so a missing package costs one line, not a traceback from inside torch.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17  # ONNX operator set: supported by onnxruntime >= 1.12 and torch's exporter


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example: torch.Tensor,
    input_name: str = "images",
    output_name: str = "logits",
) -> Path:
    """Write `model` (in eval mode) to `path` as ONNX, traced on `example` (B, C, H, W).

    The batch dimension is dynamic; H and W are those of `example`. The model's training mode
    is restored afterwards. Raises ModuleNotFoundError (one line) when `onnx` is not installed.
    """
    if importlib.util.find_spec("onnx") is None:
        raise ModuleNotFoundError(
            "exporting to ONNX needs the onnx package: pip install 'lrkit[onnx]' (or onnx)"
        )
    path = Path(path)
    param = next(model.parameters(), None)
    if param is not None:
        example = example.to(param.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        model.train(was_training)
    return path
