"""Step 1 (nnU-Net's venv): nnU-Net-preprocessed cases (.b2nd) -> one compressed .npz the GPU machine can carry.

usage: <nnunet venv>/bin/python export_data.py PREPROCESSED_CONFIG_FOLDER OUT.npz
(e.g. nnUNet_preprocessed/Dataset902_RealCTBench/nnUNetPlans_3d_fullres, written by nnUNetv2_plan_and_preprocess)
"""
import glob
import os
import sys

import blosc2
import numpy as np

folder, out = sys.argv[1], sys.argv[2]
arrays = {}
for f in sorted(glob.glob(os.path.join(folder, "*.b2nd"))):
    if f.endswith("_seg.b2nd"):
        continue
    case = os.path.basename(f)[:-len(".b2nd")]
    arrays[case + "_data"] = blosc2.open(f)[:].astype(np.float16)
    arrays[case + "_seg"] = blosc2.open(os.path.join(folder, case + "_seg.b2nd"))[:].astype(np.int8)
    print(case, arrays[case + "_data"].shape)
np.savez_compressed(out, **arrays)
