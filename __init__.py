"""The root of a suprem_nn checkout, not the package (the package is the ``suprem_nn/`` folder inside it).

Why this file exists: when the current folder (or any ``sys.path`` entry) is the folder that *holds* a checkout
named ``suprem_nn``, ``import suprem_nn`` finds the checkout before the real package. Without an ``__init__.py``
here Python would import the checkout as an empty namespace package, and the failure would come late and
cryptic (``cannot import name '__version__' from 'suprem_nn' (unknown location)``, ``No module named
'suprem_nn.cli'``). With it, the import stops at once and says what happened and what to do.

Only an import under the name ``suprem_nn`` is stopped: tools that import the repository root under its own
folder name (a test runner walking up from a package) are left alone.
"""
import os as _os

if __name__ == "suprem_nn":
    _checkout = _os.path.dirname(_os.path.abspath(__file__))
    raise ImportError(
        f"suprem_nn: Python found the checkout folder {_checkout} instead of the suprem_nn package inside it, "
        f"because {_os.path.dirname(_checkout)} (the current folder, or a PYTHONPATH entry) holds the checkout. Run "
        f"Python from any other "
        f"folder, for example: cd {_checkout}  (once installed with: pip install -e {_checkout}, the package "
        f"imports from everywhere except the folder that holds the checkout)")
