"""No import cycles between suprem_nn modules, and the checker finds one when there is one.

Module-level and function-level imports both count (see tests/import_graph.py): a cycle closed by an import
inside a function still ties the modules together, it only fails later and less clearly. Imports under
``if TYPE_CHECKING:`` do not count; they never run.
"""
from __future__ import annotations

from pathlib import Path

from tests.import_graph import describe, find_cycles, import_graph

PACKAGE = Path(__file__).resolve().parents[1] / "suprem_nn"


def test_suprem_nn_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 100  # the whole package was read, not an empty folder
    assert "suprem_nn.inference.predictor" in graph["suprem_nn.inference.run"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (move the shared part into a module both import):\n" + "\n".join(
        f"{' <-> '.join(c)}:\n{describe(c, graph)}" for c in cycles)


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for name, text in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_checker_finds_a_cycle_closed_inside_a_function(tmp_path):
    """The shape suprem_nn.inference had: a loop of modules closed by a function-level import back."""
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "sub/__init__.py": "",
        "sub/api.py": "from .predictor import Predictor\n",
        "sub/predictor.py": "from ..util import helper\n\nclass Predictor:\n    def run(self):\n"
                            "        from .api import run_prediction\n",
        "util.py": "import os\n",
        "typing_only.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub import api\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.sub.predictor"] == {"pkg.util", "pkg.sub.api"}
    assert graph["pkg.typing_only"] == set()  # TYPE_CHECKING imports never run
    cycles = find_cycles(graph)
    assert cycles == [["pkg.sub.api", "pkg.sub.predictor"]]
    assert "pkg.sub.predictor -> pkg.sub.api" in describe(cycles[0], graph)


def test_checker_finds_a_module_level_cycle_through_a_package_init(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "from . import a\n",
        "a.py": "import pkg.b.c\n",
        "b/__init__.py": "",
        "b/c.py": "import pkg\n",
        "clean.py": "from pkg.b import c\n",
    })
    assert find_cycles(import_graph(pkg)) == [["pkg", "pkg.a", "pkg.b.c"]]
