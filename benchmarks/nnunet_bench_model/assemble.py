"""Step 3 (nnU-Net's venv): put the trained weights into an nnU-Net model folder nnUNetv2_predict can load.

usage: <nnunet venv>/bin/python assemble.py TEMPLATE_MODEL_FOLDER WEIGHTS_DIR OUT_MODEL_FOLDER
TEMPLATE_MODEL_FOLDER is any nnU-Net model folder of the same plan (e.g. from a 1-epoch nnUNetv2_train run): its
plans.json, dataset.json and fold_all/checkpoint_final.pth (trainer name, init args, mirroring axes) are kept,
only ``network_weights`` is replaced by the float16 state dict that train.py wrote in parts.
"""
import glob
import io
import shutil
import sys
from pathlib import Path

import torch

template, weights_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
(out / "fold_all").mkdir(parents=True, exist_ok=True)
for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
    shutil.copyfile(template / name, out / name)
raw = b"".join(Path(f).read_bytes() for f in sorted(glob.glob(str(weights_dir / "weights_part_*.bin"))))
trained = torch.load(io.BytesIO(raw), weights_only=True)
checkpoint = torch.load(template / "fold_all" / "checkpoint_final.pth", weights_only=False)  # our own template
assert set(trained) == set(checkpoint["network_weights"]), "weights do not match the template's network"
checkpoint["network_weights"] = {k: v.float() for k, v in trained.items()}
checkpoint["optimizer_state"] = None
torch.save(checkpoint, out / "fold_all" / "checkpoint_final.pth")
print("wrote", out)
