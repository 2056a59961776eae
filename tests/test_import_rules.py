"""The one-way arrows between the parts of suprem_nn hold in the source: no part imports a part it must not.

The data's path is raw dataset -> plan -> cache -> model -> prediction -> evaluation; the low parts (io, utils,
datasets, networks) serve the stages and import none of them, and nothing imports the command-line layer.
Imports are read with ``ast`` from every module, at module level and inside functions (a lazy import is still
an arrow), with relative imports resolved. The rules include every rule of the project's hook
(``/work/shared/hooks/import_rules.py``): networks -> no training/inference, io -> no torch, nothing -> cli,
inference -> no training, planning -> no preprocessing.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "suprem_nn"

# The pipeline stages in the order the data passes them (datasets reads the raw data).
STAGES = ("datasets", "planning", "preprocessing", "training", "inference", "evaluation")

# part of the package -> parts (or outside modules) it must not import; names relative to the package,
# except outside modules (torch), which are absolute.
FORBIDDEN = {
    "planning": ("preprocessing", "training", "inference", "evaluation", "demo"),
    "networks": STAGES + ("demo",),
    "io": ("torch",) + STAGES + ("networks", "demo"),
    "utils": STAGES + ("networks", "demo"),
    "datasets": tuple(s for s in STAGES if s != "datasets") + ("networks", "demo"),
    "inference": ("training", "demo"),
    "preprocessing": ("training", "inference", "evaluation", "demo"),
}
OUTSIDE = {"torch"}
NOBODY_IMPORTS = ("cli",)   # only cli itself (and console scripts) may import the command-line layer

# Known arrows against FORBIDDEN, each with why it is still there: (file in the package, imported module).
# test_every_allowance_is_still_needed fails once one is gone, so this list only shrinks.
ALLOWED = {
    ("networks/weights.py", "planning.presets"):
        "a released backbone's file name and address are read from its preset (plans/<name>.json) through "
        "planning.presets.load_preset, inside released_weights(); the presets are backbone facts",
}


def imported_modules(path: Path, package_root: Path) -> list[tuple[int, list[str]]]:
    """Every import in the file ``path`` (functions included): ``(line, names)``, where ``names`` are the absolute
    module it reads first, then (``from X import y``) ``X.y`` for each imported name, which may be a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # the package a relative import starts from: the file's folder (for __init__.py too)
    package_parts = list(path.relative_to(package_root.parent).parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, [alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # relative: "." is the file's own package, each further dot one level up
                base = package_parts[: len(package_parts) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # "from .. import training" imports the part itself
            found.append((node.lineno, [module] + [f"{module}.{a.name}" for a in node.names if a.name != "*"]))
    return found


def violations(package_root: Path, allowed=frozenset()) -> list[str]:
    """Every import in the package at ``package_root`` that breaks :data:`FORBIDDEN` or :data:`NOBODY_IMPORTS`,
    except the ``(file, module)`` pairs of ``allowed``; one line per import statement and forbidden part."""
    name = package_root.name

    def under(module: str, target: str) -> bool:
        return module == target or module.startswith(target + ".")

    bad = []
    for path in sorted(package_root.rglob("*.py")):
        rel = path.relative_to(package_root)
        part = rel.parts[0][:-3] if len(rel.parts) == 1 else rel.parts[0]
        forbidden = [m if m in OUTSIDE else f"{name}.{m}" for m in FORBIDDEN.get(part, ())]
        if part not in NOBODY_IMPORTS:
            forbidden += [f"{name}.{m}" for m in NOBODY_IMPORTS]
        for line, modules in imported_modules(path, package_root):
            if any(rel.as_posix() == f and under(modules[0], f"{name}.{m}") for f, m in allowed):
                continue
            for target in forbidden:
                hit = next((m for m in modules if under(m, target)), None)
                if hit is not None:
                    bad.append(f"{rel}:{line}: {part} imports {hit}")
    return sorted(set(bad))


def test_the_package_keeps_every_import_rule():
    found = violations(PACKAGE, frozenset(ALLOWED))
    assert found == [], "imports against the one-way rules:\n" + "\n".join(found)


def test_every_allowance_is_still_needed():
    found = violations(PACKAGE)
    for (file, module), why in ALLOWED.items():
        assert any(v.startswith(f"{file}:") and f"imports suprem_nn.{module}" in v for v in found), \
            f"{file} no longer imports {module}: remove the allowance ({why})"


def test_the_rules_cover_the_project_hook():
    # the hook's five rules, each as (importer, forbidden target)
    hook = [("networks", "training"), ("networks", "inference"), ("io", "torch"), ("inference", "training"),
            ("planning", "preprocessing")]
    for importer, target in hook:
        assert target in FORBIDDEN[importer], (importer, target)
    assert NOBODY_IMPORTS == ("cli",)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


@pytest.mark.parametrize("files, expected", [
    # module-level relative import, planning -> preprocessing (the arrow this issue removed)
    ({"planning/fingerprint.py": "from ..preprocessing.cropping import foreground_box\n"},
     "planning/fingerprint.py:1: planning imports pkg.preprocessing.cropping"),
    # lazy import inside a function, networks -> training
    ({"networks/weights.py": "def f():\n    from ..training import trainer\n"},
     "networks/weights.py:2: networks imports pkg.training"),
    # "from .. import inference" names the part in the imported names
    ({"networks/registry.py": "from .. import inference\n"},
     "networks/registry.py:1: networks imports pkg.inference"),
    # io -> torch, absolute
    ({"io/image_io.py": "import torch.nn\n"}, "io/image_io.py:1: io imports torch.nn"),
    # anything -> cli, absolute import inside a method
    ({"evaluation/report.py": "class A:\n    def m(self):\n        import pkg.cli.evaluate\n"},
     "evaluation/report.py:3: evaluation imports pkg.cli.evaluate"),
    # inference -> training, two levels up from a sub-package
    ({"inference/nnunet/model.py": "from ...training.losses import dice\n"},
     "inference/nnunet/model.py:1: inference imports pkg.training.losses"),
    # a top-level module of the package counts as its own part
    ({"io.py": "import torch\n"}, "io.py:1: io imports torch"),
])
def test_the_checker_finds_a_broken_rule(tmp_path, files, expected):
    pkg = _write(tmp_path / "pkg", {"__init__.py": "", **files})
    assert violations(pkg) == [expected]


def test_the_checker_accepts_allowed_arrows(tmp_path):
    pkg = _write(tmp_path / "pkg", {
        "__init__.py": "",
        "preprocessing/api.py": "from ..planning.plans import Plan\nfrom ..io.cropping import crop\n",
        "cli/train.py": "from ..cli.common import run_command\nfrom ..training import api\n",
        "inference/api.py": "import torch\nfrom ..preprocessing import pipeline\n",
        "planning/decide.py": "from ..datasets import layout_of\nfrom .plans import Plan\n",
    })
    assert violations(pkg) == []
