"""Class labels for evaluation: parse ``-l`` specs and read them from dataset.json / plans.json.

A label set maps class name -> label value (an int, or a list of ints for a region made of several values).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from ..errors import SupremError
from ..utils.json_file import read_json


def parse_label_spec(spec: Union[str, os.PathLike]) -> tuple[dict[str, Union[int, list]], str]:
    """Parse a label spec (``-l``).

    Parameters
    ----------
    spec : str or os.PathLike
        ``"liver=1,spleen=2"``, ``"1,2"`` (classes named by their value), ``"kidney=2+3"`` (a region), or the
        path of a dataset.json / plans.json.

    Returns
    -------
    classes : dict
        Class name -> label value, or list of values for a region; background (value 0) is dropped from JSON
        files.
    source : str
        Where the labels came from, for the summary.

    Raises
    ------
    SupremError
        A malformed item, a repeated class, or no class at all.
    """
    text = os.fspath(spec).strip()
    path = Path(text)
    if text.lower().endswith(".json") or path.is_file():
        return labels_from_json(path), str(path)
    classes: dict[str, Union[int, list]] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep:
            name, value = item, item
        try:
            parsed = [int(v) for v in value.split("+")]
        except ValueError:
            raise SupremError(f"bad label item '{item}' in '{text}': expected name=value with an integer value "
                              "(name=1+2 for a region), or a dataset.json / plans.json path") from None
        if not name or name in classes:
            raise SupremError(f"bad label item '{item}' in '{text}': " +
                              ("empty class name" if not name else f"class '{name}' given twice"))
        classes[name] = parsed[0] if len(parsed) == 1 else parsed
    if not classes:
        raise SupremError(f"no labels in '{text}'")
    return validate_labels(classes, text), "-l " + text


def labels_from_json(path: Union[str, os.PathLike]) -> dict[str, Union[int, list]]:
    """Class names and label values from a JSON file.

    Parameters
    ----------
    path : str or os.PathLike
        A dataset.json (``labels`` in either direction: name -> value or value -> name), a plans.json
        (``class_names`` with ``label_values``) or a run_report.json.

    Returns
    -------
    dict
        Class name -> label value (or list of values for a region), background dropped.

    Raises
    ------
    SupremError
        An unreadable file or one without labels.
    """
    path = Path(path)
    data = read_json(path, missing="label file not found")
    if isinstance(data, dict) and "class_names" in data and "label_values" in data:
        names, values = data["class_names"], data["label_values"]
        if (not isinstance(names, list) or not isinstance(values, list) or len(names) != len(values)
                or not all(isinstance(n, str) for n in names)
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
            raise SupremError("'class_names' and 'label_values' must be lists of strings and integers of equal "
                              "length", path)
        return validate_labels(dict(zip(names, values)), path)
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
        raise SupremError("expected a dataset.json with a 'labels' object or a plans.json with 'class_names' and "
                          "'label_values'", path)
    raw = data["labels"]
    if raw and all(isinstance(v, str) for v in raw.values()) and all(re.fullmatch(r"\d+", k) for k in raw):
        raw = {v: int(k) for k, v in raw.items()}  # {"1": "spleen"} (nnU-Net v1 / BTCV style)
    classes = {}
    for name, value in raw.items():
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and value:
            if value == [0]:
                continue
            classes[name] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            if value == 0:
                continue
            classes[name] = value
        else:
            raise SupremError(f"label '{name}' has value {value!r}; expected an integer or a list of integers", path)
    if not classes:
        raise SupremError("'labels' holds no foreground class", path)
    return validate_labels(classes, path)


def validate_labels(labels: Mapping[str, object], source: object = "labels") -> dict[str, Union[int, list]]:
    """Check a class name -> label value mapping.

    Parameters
    ----------
    labels : Mapping
        Class name -> value.
    source : object
        Where the labels came from (a path is named in errors).

    Returns
    -------
    dict
        The same mapping as a plain dict.

    Raises
    ------
    SupremError
        A name that is not a non-empty string, or a value that is not a positive integer (or a non-empty list of
        them).
    """
    out: dict[str, Union[int, list]] = {}
    where = None if isinstance(source, str) and not Path(source).suffix else source
    for name, value in labels.items():
        if not isinstance(name, str) or not name.strip():
            raise SupremError(f"class names must be non-empty strings, got {name!r}", where)
        vals = value if isinstance(value, (list, tuple)) else [value]
        if not vals or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in vals):
            raise SupremError(f"class '{name}' has label value {value!r}; values must be integers > 0 "
                              "(0 is background)", where)
        out[name] = int(vals[0]) if not isinstance(value, (list, tuple)) else [int(v) for v in vals]
    if not out:
        raise SupremError("no classes to evaluate", where)
    return out
