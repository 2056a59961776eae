"""Fault injection for the reliability tests, loaded by Python at start-up when this folder is on PYTHONPATH.

With ``SUPREM_FAULT_STALL_CHECKPOINT=N`` the N-th atomic rename onto a ``checkpoint_*.pth`` is turned into a
write that stalls half-way: the temporary file is cut to half its size (what a process killed mid-``torch.save``
leaves), ``SUPREM_FAULT_READY`` is created so the test knows, and the process sleeps until it is killed. The
product code runs unchanged; only the timing of the kill is made certain.
"""
import os
import time

_N = int(os.environ.get("SUPREM_FAULT_STALL_CHECKPOINT", "0") or 0)
if _N:
    _real_replace = os.replace
    _count = [0]

    def _stalling_replace(src, dst, *a, **kw):
        name = os.path.basename(os.fspath(dst))
        if name.startswith("checkpoint_") and name.endswith(".pth"):
            _count[0] += 1
            if _count[0] == _N:
                os.truncate(src, os.path.getsize(src) // 2)
                open(os.environ["SUPREM_FAULT_READY"], "w").close()
                time.sleep(600)
        return _real_replace(src, dst, *a, **kw)

    os.replace = _stalling_replace
