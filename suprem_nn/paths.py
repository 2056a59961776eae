"""Where raw datasets, preprocessed caches and trained models live.

Each root comes from an optional environment variable; none is mandatory.

===================  =======================  ===============================
root                 environment variable     default
===================  =======================  ===============================
raw datasets         ``SUPREM_RAW``           ``~/suprem_nn_data/raw``
preprocessed cache   ``SUPREM_PREPROCESSED``  ``~/suprem_nn_data/preprocessed``
trained models       ``SUPREM_RESULTS``       ``~/suprem_nn_data/results``
===================  =======================  ===============================
"""
from __future__ import annotations

import os
from pathlib import Path

_DEFAULT_BASE = Path("~/suprem_nn_data")


def _root(env: str, sub: str) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser() if value else (_DEFAULT_BASE / sub).expanduser()


def raw_root() -> Path:
    return _root("SUPREM_RAW", "raw")


def preprocessed_root() -> Path:
    return _root("SUPREM_PREPROCESSED", "preprocessed")


def results_root() -> Path:
    return _root("SUPREM_RESULTS", "results")
