#!/usr/bin/env bash
# Optional: the nnU-Net v2 peer venv that tests/nnunet_compat and the side-by-side benchmarks compare against.
# torch 2.13.0 (the local CPU build) first, then nnunetv2 pinned against it, then make PyPI's torchvision
# importable beside the CPU torch (nnU-Net imports it through timm). Does nothing when the venv already works.
set -euo pipefail
VENV="${NNUNET_VENV:-$HOME/peer/nnunet-venv}"
SHARED="${SUPREM_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}"
if [ -x "$VENV/bin/nnUNetv2_train" ] && "$VENV/bin/python" -c "import nnunetv2, torchvision" 2>/dev/null; then
  echo "nnU-Net peer venv ready: $VENV"; exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch==2.13.0
echo "torch==2.13.0" > "$VENV/torch-constraint.txt"
"$VENV/bin/pip" install -q -c "$VENV/torch-constraint.txt" nnunetv2==2.8.1
"$VENV/bin/python" "$SHARED/peer/patch_torchvision_cpu.py"
"$VENV/bin/python" -c "import nnunetv2, torchvision" && echo "nnU-Net peer venv installed: $VENV"
