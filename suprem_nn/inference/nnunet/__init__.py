"""Run trained nnU-Net v2 models (``nnUNet_results/DatasetXXX/Trainer__Plans__config``) with suprem_nn's predictor.

:mod:`.model` reads the folder (plans, dataset.json, checkpoints, network), :mod:`.preprocessing` reproduces
nnU-Net's preprocessing and export geometry, :mod:`.predictor` plugs both into the files API.
"""
