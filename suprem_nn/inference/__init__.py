"""Prediction: sliding window, fold ensembles, export to the original geometry, and the files API.

Inference never imports training; networks come from a model folder or a released SuPreM file.
"""
from .api import RunSummary, predict, run_prediction
from .predictor import PredictionResult, Predictor, keep_largest_component
from .sliding_window import compute_steps, gaussian_importance_map, sliding_window_predict

__all__ = ["predict", "run_prediction", "RunSummary", "Predictor", "PredictionResult", "keep_largest_component",
           "sliding_window_predict", "compute_steps", "gaussian_importance_map"]
