"""Every option of every installed command explains itself in --help (a bare ``--epochs N`` tells a new user nothing)."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = re.findall(r'"(suprem_[a-z_]+)=(suprem_nn\.cli\.[a-z_]+):main"', (ROOT / "setup.py").read_text())


@pytest.mark.parametrize("name,module", SCRIPTS, ids=[n for n, _ in SCRIPTS])
def test_every_option_has_help(name, module):
    parser = importlib.import_module(module).build_parser()
    assert parser.prog == name
    silent = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions if not a.help]
    assert not silent, f"{name}: options without help text: {silent}"


def test_the_commands_are_found():
    assert {"suprem_train", "suprem_predict", "suprem_demo"} <= {n for n, _ in SCRIPTS}
