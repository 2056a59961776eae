"""The namespace-package trap: Python started in the folder that holds a checkout named ``suprem_nn``.

The checkout's root ``__init__.py`` turns the late, cryptic ``cannot import name '__version__'`` into one clear
ImportError at import time. The checkout is rebuilt in a temporary folder: the root files and the real package
(a symlink), under the name ``suprem_nn``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _checkout(parent: Path, with_root_init: bool = True) -> Path:
    root = parent / "suprem_nn"
    root.mkdir(parents=True)
    for name in ("setup.py", "pytest.ini") + (("__init__.py",) if with_root_init else ()):
        shutil.copyfile(REPO / name, root / name)
    try:
        (root / "suprem_nn").symlink_to(REPO / "suprem_nn", target_is_directory=True)
    except OSError:
        pytest.skip("symlinks are not available here")
    return root


def _python(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["-c", "from suprem_nn import __version__"],
                                     ["-m", "suprem_nn.cli.predict", "--help"],
                                     ["-S", "-c", "import suprem_nn.cli.predict"]])
def test_clear_message_from_the_folder_holding_the_checkout(tmp_path, command):
    root = _checkout(tmp_path)
    r = _python(tmp_path, *command)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ImportError: suprem_nn: Python found the checkout folder {root} instead of the "
                           f"suprem_nn package inside it, because {tmp_path} "), r.stderr
    assert f"cd {root}" in last and "__version__" not in r.stderr


def test_without_the_root_file_the_trap_is_there(tmp_path):
    """What the root __init__.py prevents (``-S``: the same result whatever the way the package is installed)."""
    _checkout(tmp_path, with_root_init=False)
    r = _python(tmp_path, "-S", "-c", "from suprem_nn import __version__")
    assert r.returncode != 0 and "cannot import name '__version__'" in r.stderr, r.stderr


def test_inside_the_checkout_the_package_imports(tmp_path):
    root = _checkout(tmp_path)
    r = _python(root, "-c", "import suprem_nn; print(suprem_nn.__version__)")
    assert r.returncode == 0 and r.stdout.strip() == __import__("suprem_nn").__version__, r.stderr
