"""Prediction: sliding window, fold ensembles, export to the original geometry, and the files API.

Inference never imports training; networks come from a model folder (:mod:`suprem_nn.model_folder`) or a
released SuPreM file. The arrows inside run one way: ``api`` (keyword arguments -> settings) -> ``chosen`` ->
``sources`` (one function per model source) -> ``run`` (the files loop) -> ``predictor`` (one case).
"""
from .api import predict
from .components import keep_largest_component
from .predictor import PredictionResult, Predictor
from .run import RunSummary, run_prediction
from .settings import PredictionSettings
from .sliding_window import compute_steps, gaussian_importance_map, sliding_window_predict

__all__ = ["predict", "run_prediction", "RunSummary", "PredictionSettings", "Predictor", "PredictionResult",
           "keep_largest_component", "sliding_window_predict", "compute_steps", "gaussian_importance_map"]
