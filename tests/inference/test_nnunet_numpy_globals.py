"""nnU-Net checkpoints hold numpy scalars: the weights_only allowlist works on NumPy 1.x and 2 and loads a
checkpoint written by either."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from suprem_nn.inference.nnunet.model import NUMPY_SAFE_GLOBALS, numpy_safe_globals


def _numpy(major: int, scalar):
    """A stand-in numpy module of the given major version: 2 has ``_core``, 1.x only ``core``."""
    multiarray = SimpleNamespace(scalar=scalar)
    fields = dict(dtype=np.dtype, float64=np.float64, float32=np.float32, int64=np.int64)
    if major == 2:
        return SimpleNamespace(_core=SimpleNamespace(multiarray=multiarray), **fields)
    return SimpleNamespace(core=SimpleNamespace(multiarray=multiarray), **fields)  # no _core, no dtypes (1.24)


@pytest.mark.parametrize("major", [1, 2])
def test_the_scalar_rebuilder_of_either_numpy_is_allowed_under_both_names(major):
    rebuild = object()
    allowed = numpy_safe_globals(_numpy(major, rebuild))
    names = {entry[1] for entry in allowed if isinstance(entry, tuple) and entry[0] is rebuild}
    assert names == {"numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar"}
    assert type(np.dtype(np.float64)) in allowed and np.dtype in allowed


def _checkpoint_bytes(numpy_major: int) -> bytes:
    """A checkpoint with nnU-Net's logging scalars, as NumPy ``numpy_major`` names the scalar rebuilder."""
    buf = io.BytesIO()
    torch.save({"network_weights": {"w": torch.ones(2)},
                "logging": {"mean_fg_dice": [np.float64(0.5)], "train_losses": [np.float32(1.25)]}}, buf,
               _use_new_zipfile_serialization=False)  # one plain pickle stream: module names are readable bytes
    data = buf.getvalue()
    now = np.float64(0).__reduce__()[0].__module__.encode() + b"\nscalar"  # how the installed NumPy names it
    written_by = b"numpy.core.multiarray\nscalar" if numpy_major == 1 else b"numpy._core.multiarray\nscalar"
    assert data.count(now) == 1
    return data.replace(now, written_by)


@pytest.mark.parametrize("numpy_major", [1, 2])
def test_checkpoint_written_by_numpy_1_or_2_loads_weights_only(numpy_major):
    with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
        ckpt = torch.load(io.BytesIO(_checkpoint_bytes(numpy_major)), weights_only=True)
    assert ckpt["logging"]["mean_fg_dice"] == [0.5] and ckpt["logging"]["train_losses"][0].dtype == np.float32
    with pytest.raises(Exception, match="Weights only load failed"):  # and nothing else is allowed
        torch.load(io.BytesIO(_checkpoint_bytes(numpy_major)), weights_only=True)
