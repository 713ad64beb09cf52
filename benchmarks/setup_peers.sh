#!/usr/bin/env bash
# Installs the libraries jaxsal is benchmarked against, never into jaxsal's own environment.
#
#   bash benchmarks/setup_peers.sh cpu         # tf-keras-vis venv (TensorFlow CPU, Keras 3)
#   bash benchmarks/setup_peers.sh torch-cpu   # PyTorch CPU venv to smoke-test the GPU peers
#   bash benchmarks/setup_peers.sh gpu-wheels  # wheels for an offline GPU machine
#
# cpu: the CPU suite runs tf-keras-vis through $PEER_VENV/bin/python (benchmarks.run
#   --peer-python, default /work/venvs/peer/bin/python or $JAXSAL_PEER_PYTHON).
# torch-cpu: $TORCH_VENV with torch, captum, grad-cam, ttach, jax and jaxsal (editable), for
#   `python -m benchmarks.run --suite gpu --cpu --torch-python $TORCH_VENV/bin/python`.
#   pytorch-grad-cam imports torchvision; PyPI's torchvision needs the torch release it was
#   built with (torch 2.14.1 + torchvision 0.29.1 here; the CPU-only torch 2.13.0 wheel
#   alone cannot import it).
# gpu-wheels: the GPU machines have PyTorch, torchvision, JAX (CUDA), flax, optax, h5py,
#   matplotlib, OpenCV, scikit-learn and scipy but no network. This downloads the rest (the
#   peers, and Keras to write the VGG16 .h5 file) into benchmarks/wheels/ (git-ignored); there:
#     python3 -m pip install --no-index --no-deps --target /tmp/site benchmarks/wheels/*.whl
#     export PYTHONPATH=/tmp/site:$PWD
#     python3 -m benchmarks.run --suite gpu --out benchmarks/results/gpu.json --write-readme
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-cpu}
PY=${PYTHON:-python3}
case "$mode" in
  cpu)
    PEER_VENV=${PEER_VENV:-/work/venvs/peer}
    [ -x "$PEER_VENV/bin/python" ] || "$PY" -m venv "$PEER_VENV"
    "$PEER_VENV/bin/python" -m pip install -q --upgrade pip
    "$PEER_VENV/bin/python" -m pip install -q "tensorflow-cpu==2.21.0" "keras==3.15.1" \
      "tf-keras-vis==0.8.7" h5py scipy
    ;;
  torch-cpu)
    TORCH_VENV=${TORCH_VENV:-/work/venvs/torch}
    [ -x "$TORCH_VENV/bin/python" ] || "$PY" -m venv "$TORCH_VENV"
    "$TORCH_VENV/bin/python" -m pip install -q --upgrade pip
    "$TORCH_VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    "$TORCH_VENV/bin/python" -m pip install -q "captum>=0.7" "ttach>=0.0.3" opencv-python-headless \
      tqdm scikit-learn scipy
    "$TORCH_VENV/bin/python" -m pip install -q --no-deps "grad-cam>=1.5"
    "$TORCH_VENV/bin/python" -m pip install -q -e ".[bench]" keras
    ;;
  gpu-wheels)
    mkdir -p benchmarks/wheels
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d benchmarks/wheels \
      "captum==0.9.0" "keras==3.15.1" "namex==0.1.0" optree
    # pure-Python packages published as source only: build their wheels here
    "$PY" -m pip wheel -q --no-deps -w benchmarks/wheels "grad-cam==1.5.7" "ttach==0.0.3"
    ls -la benchmarks/wheels
    ;;
  *) echo "usage: $0 cpu|torch-cpu|gpu-wheels" >&2; exit 2 ;;
esac
