"""A checkpoint crafted to run code when unpickled: loading it with pickle creates ``marker``."""
from __future__ import annotations

import os
from pathlib import Path

import torch


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # what pickle calls on load: os.system("touch marker")
        return (os.system, (f"touch '{self.marker}'",))


def make_malicious_checkpoint(path: Path, marker: Path, state: dict | None = None, **extra) -> Path:
    """A .pth that looks like a checkpoint (optional real ``state`` under the usual keys) plus the payload."""
    payload = {**(state or {}), **extra, "payload": _Payload(marker)}
    torch.save(payload, path)
    assert not Path(marker).exists()
    return Path(path)
