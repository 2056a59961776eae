"""Run inside nnU-Net's own venv: time nnU-Net v2's prediction stages per case (read / preprocess / network /
export+write), calling the same functions nnUNetv2_predict calls, one case after the other.

usage: <nnunet venv>/bin/python _nnunet_stages.py MODEL_FOLDER OUT_DIR TTA(0|1) IMAGE [IMAGE ...]
Prints one JSON object: {case: {"read": s, "preprocess": s, "network": s, "export": s}}.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.export_prediction import export_prediction_from_logits
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

model, out, tta, images = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
torch.set_num_threads(os.cpu_count())  # what nnUNetv2_predict does on the CPU
p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta, perform_everything_on_device=False,
                    device=torch.device("cpu"), verbose=False, allow_tqdm=False)
p.initialize_from_trained_model_folder(model, use_folds=("all",), checkpoint_name="checkpoint_final.pth")
out.mkdir(parents=True, exist_ok=True)
stages = {}
for image in images:
    case = Path(image).name.replace("_0000.nii.gz", "")
    t0 = time.perf_counter()
    data, props = SimpleITKIO().read_images([image])
    t1 = time.perf_counter()
    pre = p.configuration_manager.preprocessor_class(verbose=False)
    data, _, props = pre.run_case_npy(data, None, props, p.plans_manager, p.configuration_manager, p.dataset_json)
    t2 = time.perf_counter()
    logits = p.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
    t3 = time.perf_counter()
    export_prediction_from_logits(logits, props, p.configuration_manager, p.plans_manager, p.dataset_json,
                                  str(out / case), False)
    t4 = time.perf_counter()
    stages[case] = {"read": t1 - t0, "preprocess": t2 - t1, "network": t3 - t2, "export": t4 - t3}
print(json.dumps(stages))
