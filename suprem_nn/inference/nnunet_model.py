"""Public entry point for running nnU-Net v2 model folders: see :mod:`suprem_nn.inference.nnunet`."""
from .nnunet.model import NUMPY_SAFE_GLOBALS, LabelInfo, NnunetModel, is_nnunet_model_folder, load_nnunet_model
from .nnunet.predictor import NnunetPredictor

__all__ = ["NnunetPredictor", "NnunetModel", "LabelInfo", "load_nnunet_model", "is_nnunet_model_folder",
           "NUMPY_SAFE_GLOBALS"]
