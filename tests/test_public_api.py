"""The public Python API, used as a Python user would: ``from suprem_nn import ...`` on a real CT, no subprocess
except to show that ``import suprem_nn`` alone does not import torch.

One tiny pipeline (4.5 mm, 32^3 patches, a SegResNet with 8 filters, 2 training steps): plan_and_preprocess ->
train -> predict -> evaluate, then the persistent Predictor on the same CT held in memory (numpy array with its
geometry, and a SimpleITK image) must give exactly the label map ``predict`` wrote.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tests.conftest import REAL_CASES, REPO, add_tiny_scratch_plan, make_nnunet_dataset

DATASET = "Dataset101_RealCT"
CASE = REAL_CASES[0]


def test_import_suprem_nn_is_fast_and_names_the_api():
    code = ("import sys, suprem_nn; assert 'torch' not in sys.modules, 'torch imported'; "
            "print(sorted(set(suprem_nn.__all__) & set(dir(suprem_nn))))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("plan_and_preprocess", "train", "predict", "evaluate", "Predictor"):
        assert f"'{name}'" in r.stdout


def test_four_functions_and_predictor_on_a_real_ct(real_ct, tmp_path):
    import SimpleITK as sitk

    import suprem_nn
    from suprem_nn import Predictor, evaluate, plan_and_preprocess, predict, train
    from suprem_nn.io import read_image
    from suprem_nn.paths import preprocessed_root, raw_root, results_root

    # each name is one documented function at suprem_nn.<stage>.api (Predictor: inference.predictor)
    for f in (plan_and_preprocess, train, predict, evaluate, Predictor):
        assert f.__doc__ and f is getattr(suprem_nn, f.__name__)
    for f in (plan_and_preprocess, train, predict, evaluate):
        assert f.__module__.endswith(".api") and "Parameters\n    ----------" in f.__doc__, f

    raw = make_nnunet_dataset(raw_root(), DATASET, test_cases=[CASE])
    result = plan_and_preprocess(DATASET, pretrained="segresnet", target_spacing=[4.5, 4.5, 4.5],
                                 patch_size=[32, 32, 32], batch_size=2, num_processes=1, progress=False)
    assert result.complete and sorted(result.processed) == sorted(REAL_CASES)
    add_tiny_scratch_plan(preprocessed_root() / DATASET)

    record = train(DATASET, 0, plan_name="tiny_segresnet", from_scratch=True, epochs=1, iterations_per_epoch=2,
                   val_iterations=1, num_workers=0, device="cpu", final_validation=False, echo=False)
    assert record["epoch"] == 1 and np.isfinite(record["train_loss"])
    model = results_root() / DATASET / "tiny_segresnet"
    # the model folder keeps the format of every earlier release (tests/test_model_folder.py loads one)
    assert (model / "plans.json").is_file() and (model / "fold_0" / "checkpoint_final.pth").is_file()

    out = tmp_path / "pred"
    summary = predict(raw / "imagesTs", out, model, engine="torch", progress=False)
    assert summary.ok and summary.cases == [CASE]
    report = json.loads(summary.report_path.read_text())
    assert report["source"] == f"model folder {model}" and report["settings"]["step_size"] == 0.5

    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / f"{CASE}.nii.gz").write_bytes((raw / "labelsTr" / f"{CASE}.nii.gz").read_bytes())
    scores = evaluate(ref, out, pred_labels=out / "run_report.json", ref_labels=raw / "dataset.json")
    assert scores["num_cases"] == 1 and (out / "summary.json").is_file() and (out / "metrics.csv").is_file()

    written, geometry = read_image(out / f"{CASE}.nii.gz")
    predictor = Predictor.from_model_folder(model, folds=[0], engine="torch")
    ct, ct_geometry = read_image(raw / "imagesTs" / f"{CASE}_0000.nii.gz")
    labels = predictor.predict_array(ct, ct_geometry.spacing, ct_geometry.origin, ct_geometry.direction)
    assert labels.shape == ct.shape == tuple(geometry.shape)
    np.testing.assert_array_equal(labels, written)

    image = sitk.ReadImage(str(raw / "imagesTs" / f"{CASE}_0000.nii.gz"))
    label_image = predictor.predict_image(image)
    assert label_image.GetSize() == image.GetSize()
    np.testing.assert_allclose(label_image.GetSpacing(), image.GetSpacing())
    np.testing.assert_allclose(label_image.GetOrigin(), image.GetOrigin())
    np.testing.assert_allclose(label_image.GetDirection(), image.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label_image), np.transpose(written, (2, 1, 0)))
