"""The OpenVINO engine's compiled-model cache, its fallbacks to torch, the engine choice, and OpenVINO's
telemetry kept off."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("openvino")

from suprem_nn.inference import engine_cache, engines  # noqa: E402
from suprem_nn.inference.engines import EngineError, prepare_engine  # noqa: E402
from suprem_nn.networks import build_network  # noqa: E402

from .helpers import CrashesWhenTraced, UnconvertibleNet  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
SHAPE = (1, 1, 32, 32, 32)


def _network(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("segresnet", 1, 3, init_filters=8).eval()


def _torch_logits(net, x):
    with torch.inference_mode():
        return net(x)


def test_cache_hit_and_corrupt_entry_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))
    net = _network(seed=3)
    shape = SHAPE
    (converted,), first = prepare_engine([net], "openvino", CPU, shape, None)
    blob = Path(first["cache"][0]["file"])
    assert first["cache"][0]["status"] == "converted" and blob.is_file() and blob.parent == tmp_path / "cache"
    assert first["cache"][0]["converted_in"] == "a separate process"
    # The first run already runs from the stored entry, as later runs do (the in-process compilation is freed)
    assert converted.blob is not None and len(converted.blob) == blob.stat().st_size

    import suprem_nn.inference.engine_conversion as conversion

    def no_conversion(*a, **k):
        raise AssertionError("converted although the cache holds this network")

    with monkeypatch.context() as m:
        m.setattr(conversion, "convert_into_cache", no_conversion)
        (ov_net,), second = prepare_engine([net], "openvino", CPU, shape, None)
    assert second["cache"][0]["status"] == "hit" and second["convert_seconds"] == 0
    x = torch.randn(shape)
    assert float((_torch_logits(ov_net, x) - _torch_logits(net, x)).abs().max()) <= 1e-3

    # A truncated blob is rebuilt, not loaded and not fatal.
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 3])
    (ov_net,), third = prepare_engine([net], "openvino", CPU, shape, None)
    assert third["cache"][0]["status"] == "rebuilt"
    assert float((_torch_logits(ov_net, x) - _torch_logits(net, x)).abs().max()) <= 1e-3
    assert engine_cache.read_entry(engine_cache.cache_key(engine_cache.network_fingerprint(net), shape, "f32",
                                                          third["version"]))[1] == "hit"

    # Other weights, another patch or another precision never reuse the entry.
    other = _network(seed=4)
    assert engine_cache.network_fingerprint(other) != engine_cache.network_fingerprint(net)
    keys = {engine_cache.key_name(engine_cache.cache_key("f", s, p, "v"))
            for s in (shape, (1, 1, 64, 64, 64)) for p in ("f32", "bf16")}
    assert len(keys) == 4


def _block_openvino(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError


def test_missing_openvino_default_falls_back_with_one_line(monkeypatch, caplog):
    _block_openvino(monkeypatch)
    net = _network()
    with caplog.at_level(logging.WARNING, logger="suprem_nn.predict"):
        nets, report = prepare_engine([net], None, CPU, SHAPE, None)
    assert nets == [net] and report["name"] == "torch" and report["fallback_from"] == "openvino"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "not installed" in lines[0] and "using the torch engine instead" in lines[0]
    with pytest.raises(EngineError, match="--engine openvino: OpenVINO is not installed"):
        prepare_engine([net], "openvino", CPU, SHAPE, None)


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("*")) if cache.exists() else []


def _in_the_helper(monkeypatch):
    """Convert test networks in the helper process, as the backbones exported for any window size are (this
    process's backbone table decides; the helper then converts by its own, a trace for these networks)."""
    import suprem_nn.networks.registry as registry

    monkeypatch.setattr(registry, "openvino_conversion", lambda network: "any size")


@pytest.mark.parametrize("where", ["a separate process", "this process"])
def test_conversion_failure_default_falls_back_explicit_fails(monkeypatch, caplog, tmp_path, where):
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))
    if where == "a separate process":
        _in_the_helper(monkeypatch)
    net = UnconvertibleNet()  # OpenVINO's converter has no rule for aten::lgamma
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    with caplog.at_level(logging.WARNING, logger="suprem_nn.predict"):
        nets, report = prepare_engine([net], None, CPU, SHAPE, None)
    # the failed conversion leaves the process's logging as it was (OpenVINO's converter set the root logger to
    # ERROR, which hid every later warning of the process)
    assert (root.level, root.handlers) == (level, handlers)
    assert nets == [net] and report["name"] == "torch"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    # the converter's own first line is a C++ source location; the line names the operation instead
    assert "OpConversionFailure" in lines[0] and "aten::lgamma" in lines[0] and ".cpp" not in lines[0], lines
    assert lines[0].endswith("using the torch engine instead")
    with pytest.raises(EngineError, match="could not convert.*aten::lgamma"):
        prepare_engine([net], "openvino", CPU, SHAPE, None)
    assert not any(name.endswith(".json") for name in _entries(tmp_path / "cache"))


def test_converter_crash_ends_the_helper_not_the_prediction(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))
    _in_the_helper(monkeypatch)
    net = CrashesWhenTraced()  # its trace dies of SIGSEGV in any process but this one
    with caplog.at_level(logging.WARNING, logger="suprem_nn.predict"):
        nets, report = prepare_engine([net], None, CPU, SHAPE, None)
    assert nets == [net] and report["name"] == "torch"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "conversion process was killed by SIGSEGV" in lines[0], lines
    assert report["fallback_reason"] in lines[0]
    with pytest.raises(EngineError, match="--engine openvino: .*killed by SIGSEGV"):
        prepare_engine([net], "openvino", CPU, SHAPE, None)
    assert _entries(tmp_path / "cache") == []


def test_network_the_helper_cannot_receive_is_converted_here(monkeypatch, tmp_path):
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))

    class LocalNet(torch.nn.Module):  # a local class cannot be pickled for the helper process
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    net = LocalNet().eval()
    _in_the_helper(monkeypatch)
    (ov_net,), report = prepare_engine([net], "openvino", CPU, SHAPE, None)
    assert report["cache"][0]["converted_in"] == "this process" and report["cache"][0]["status"] == "converted"
    x = torch.randn(SHAPE)
    assert float((_torch_logits(ov_net, x) - _torch_logits(net, x)).abs().max()) <= 1e-4


@pytest.mark.parametrize("executable", ["/bin/false", "/nonexistent/python"])
def test_no_helper_process_converts_here(monkeypatch, tmp_path, executable):
    """Where this interpreter cannot start a helper (an embedding application's sys.executable), the conversion
    runs in this process instead of giving up OpenVINO."""
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "executable", executable)  # /bin/false starts, reads nothing and exits 1
    net = _network(seed=6)
    (ov_net,), report = prepare_engine([net], "openvino", CPU, SHAPE, None)
    assert report["cache"][0]["converted_in"] == "this process"
    x = torch.randn(SHAPE)
    assert float((_torch_logits(ov_net, x) - _torch_logits(net, x)).abs().max()) <= 1e-3


def test_export_failure_is_traced_instead(monkeypatch):
    """A backbone whose export fails is traced at the window; the report keeps why (run in this process, where the
    backbone table can be patched)."""
    from suprem_nn.inference import engine_conversion
    import suprem_nn.networks.registry as registry

    class DataDependent(torch.nn.Module):  # torch.export cannot branch on a tensor's value
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 2, 1)

        def forward(self, x):
            return self.conv(x) if float(x.mean()) > -10 else -self.conv(x)

    monkeypatch.setattr(registry, "openvino_conversion", lambda network: "any size")  # as for SuPreM's U-Net
    compiled, report = engine_conversion.convert_and_check(DataDependent().eval(), SHAPE, None, "f32", 1)
    assert report["conversion"] == "traced at the window" and report["check_window"] == list(SHAPE[2:])
    assert report["export_error"] and report["check_max_abs_diff"] <= 1e-4


def test_unwritable_cache_still_runs_the_conversion(monkeypatch, caplog, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "a_file" / "cache"))
    net = _network(seed=5)
    with caplog.at_level(logging.WARNING, logger="suprem_nn.predict"):
        (ov_net,), report = prepare_engine([net], "openvino", CPU, SHAPE, None)
    entry = report["cache"][0]
    assert entry["converted_in"] == "a separate process" and entry["store_error"]
    assert [r.getMessage() for r in caplog.records] == [
        f"could not store the compiled model in {tmp_path / 'a_file' / 'cache'} ({entry['store_error']}); "
        "the next run converts again"]
    x = torch.randn(SHAPE)
    assert float((_torch_logits(ov_net, x) - _torch_logits(net, x)).abs().max()) <= 1e-3


def test_engine_choice_rules():
    assert engines.choose_engine(None, CPU) == ("openvino", False)
    assert engines.choose_engine(None, torch.device("cuda")) == ("torch", False)
    assert engines.choose_engine("torch", CPU) == ("torch", True)
    with pytest.raises(EngineError, match="runs on the CPU"):
        engines.choose_engine("openvino", torch.device("cuda"))
    with pytest.raises(EngineError, match="unknown engine"):
        engines.choose_engine("tensorrt", CPU)


_CONVERT = """
import sys, torch
if sys.argv[1] == "ours":
    from suprem_nn.inference.openvino_engine import convert_network
    convert_network(torch.nn.Conv3d(1, 1, 1), (1, 1, 8, 8, 8))
elif sys.argv[1] == "ours, size-generic":
    from suprem_nn.inference.openvino_engine import convert_network_exported
    convert_network_exported(torch.nn.Conv3d(1, 1, 1), (1, 1, 96, 96, 96))
else:
    import openvino
    openvino.convert_model(torch.nn.Conv3d(1, 1, 1), example_input=torch.zeros(1, 1, 8, 8, 8))
"""


def test_telemetry_stays_off(tmp_path):
    """OpenVINO's converter creates a client id under $HOME/intel and queues usage events unless opted out;
    through suprem_nn it does neither. (The plain call is the control that shows the check can fail.)"""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    for who in ("ours", "ours, size-generic", "plain"):
        home = tmp_path / who.replace(", ", "_")
        home.mkdir()
        r = subprocess.run([sys.executable, "-c", _CONVERT, who], env={**env, "HOME": str(home)},
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        made = sorted(p.name for p in (home / "intel").glob("*")) if (home / "intel").exists() else []
        if who.startswith("ours"):
            assert made == [], (who, made)
        else:
            assert "openvino_ga_cid" in made, made
