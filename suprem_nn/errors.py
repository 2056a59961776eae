"""User-facing errors.

Every error a user can cause (bad file, bad dataset, bad flag) is a
:class:`SupremError`. The command-line wrappers print its message on one line
and exit non-zero without a traceback (``--debug`` shows the traceback).
"""
from __future__ import annotations

import os


class SupremError(Exception):
    """An error caused by the input, with a message that names the file and the problem."""

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ImageReadError(SupremError):
    """An image file or DICOM folder could not be read or is not a usable 3D image."""


class DatasetError(SupremError):
    """A dataset folder, its dataset.json or its layout is wrong."""


class PlanError(SupremError):
    """plans.json or a preset is missing fields or has wrong types."""
