"""Without the optional dynamic-network-architectures the nnU-Net agreement tests skip with that reason (a new
user's test run stays green), and fail with it under SUPREM_REQUIRE_OPTIONAL=1 (CI installs every part)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
REASON = "suprem_predict --nnunet-model needs the optional package dynamic_network_architectures"


def _pytest_without_the_package(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    blocked = tmp_path / "blocked" / "dynamic_network_architectures"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("not installed (blocked by the test)")\n')
    run_env = {k: v for k, v in os.environ.items() if k != "SUPREM_REQUIRE_OPTIONAL"}
    run_env.update(PYTHONPATH=os.pathsep.join([str(blocked.parent), str(REPO)]), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "tests/nnunet_compat/test_nnunet_compat.py"], cwd=REPO, env=run_env, capture_output=True,
                          text=True, timeout=600)


def test_missing_optional_package_skips_with_the_reason(real_ct, tmp_path):
    r = _pytest_without_the_package(tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]
    summary = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ skipped in [\d.]+s", summary), r.stdout[-3000:]  # all of them, none passed or failed
    assert REASON in r.stdout and "blocked by the test" in r.stdout


def test_missing_optional_package_fails_in_ci(real_ct, tmp_path):
    r = _pytest_without_the_package(tmp_path, SUPREM_REQUIRE_OPTIONAL="1")
    assert r.returncode == 1 and REASON in r.stdout and "SUPREM_REQUIRE_OPTIONAL=1" in r.stdout, r.stdout[-3000:]
    assert "skipped" not in r.stdout
