"""The OpenVINO engine on one window: f32 logits equal torch's for each backbone (small networks and windows keep
each conversion to seconds; benchmarks/bench_engines.py measures SuPreM's full-size networks at 96^3)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("openvino")

from suprem_nn.inference.engines import prepare_engine  # noqa: E402
from suprem_nn.networks import build_network  # noqa: E402
from suprem_nn.networks.unet3d import BatchStatsBatchNorm3d  # noqa: E402

CPU = torch.device("cpu")
SMALL = {"unet": {}, "segresnet": {"init_filters": 8}, "swinunetr": {"feature_size": 12},
         "mednext": {"init_filters": 8, "blocks_down": (1, 1, 1, 1), "blocks_bottleneck": 1, "blocks_up": (1, 1, 1, 1)}}
# Swin UNETR needs 64^3: at 32^3 its bottleneck is 1 voxel, where instance normalisation is undefined.
# 64^3 still pads stage 1 (32 -> 35) and stage 2 (16 -> 21) to whole 7^3 windows and shifts them.
WINDOW = {"unet": 16, "segresnet": 32, "swinunetr": 64, "mednext": 32}  # MedNeXt: 4 stages, sizes divisible by 16


def _network(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(name, 1, 3, **SMALL[name]).eval()


def _torch_logits(net, x):
    with torch.inference_mode():
        return net(x)


@pytest.mark.parametrize("name", ["unet", "segresnet", "swinunetr", "mednext"])
def test_window_logits_equal_torch(name, tmp_path, monkeypatch):
    """f32 logits within 1e-3 of torch's on a fresh window (not the one the conversion checked)."""
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))  # converted here, not found in a cache
    net = _network(name)
    if name == "unet":
        # Running statistics unlike any window's: a conversion that used them instead of the window's own
        # batch statistics (what SuPreM's U-Net does in eval) would be far off.
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-2, 2)
                m.running_var.uniform_(0.2, 4)
    shape = (1, 1) + (WINDOW[name],) * 3
    (ov_net,), report = prepare_engine([net], "openvino", CPU, shape, None)
    assert report["name"] == "openvino" and report["precision"] == "f32"
    assert report["cache"][0]["status"] == "converted" and report["convert_seconds"] > 0
    # the backbones exported for any size reach the conversion helper (engine_conversion.py): each pickles and its
    # class imports there; Swin UNETR, exported at its window, converts in this process
    assert report["cache"][0]["converted_in"] == ("this process" if name == "swinunetr" else "a separate process")
    # all four are exported (networks.registry.openvino_conversion; Swin UNETR at its window only), and this
    # window is too small for a range of sizes (see the next test)
    assert report["cache"][0]["conversion"] == "exported at the window"
    assert ov_net.uses_batch_statistics == (name == "unet")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    ref = _torch_logits(net, x)
    ours = _torch_logits(ov_net, x)
    assert ours.shape == ref.shape and ours.dtype == torch.float32
    assert float((ours - ref).abs().max()) <= 1e-3, float((ours - ref).abs().max())
    assert float(ref.abs().max()) > 1e-2  # not a vacuous comparison of near-zero outputs
    if name == "unet":
        for m in net.modules():
            if isinstance(m, BatchStatsBatchNorm3d):
                m.batch_stats_in_eval = False
        assert float((_torch_logits(net, x) - ours).abs().max()) > 0.1


@pytest.mark.parametrize("name", ["unet", "segresnet", "mednext"])
def test_exported_backbones_convert_without_a_full_window_pass(name, tmp_path, monkeypatch):
    """SuPreM's U-Net is exported for any window size and checked on a small window: torch never runs it on the
    full window while converting (at 96^3 that float32 pass peaked at 2.4 GB), and the compiled full-window model
    still gives torch's logits, batch statistics included. MedNeXt and SegResNet are exported the same way (Swin
    UNETR at its window only: test_window_logits_equal_torch)."""
    from torch._subclasses.fake_tensor import FakeTensor

    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))
    net = _network(name)
    for m in net.modules():  # running statistics unlike any window's, as in test_window_logits_equal_torch
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-2, 2)
            m.running_var.uniform_(0.2, 4)
    shape = (1, 1, 48, 48, 96)
    seen = []
    hook = net.register_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape)) if not isinstance(args[0], FakeTensor) else None)
    (ov_net,), report = prepare_engine([net], "openvino", CPU, shape, None)
    hook.remove()
    entry = report["cache"][0]
    # the recording hook (a lambda) cannot be pickled, so the conversion ran in this process, where it sees the passes
    assert entry["converted_in"] == "this process"
    assert entry["conversion"] == "exported for any window size"
    assert entry["check_window"] == [32, 32, 64]  # 48 = 3 x 16 -> 2 x 16; 96 = 3 x 32 -> 2 x 32
    assert seen == [(1, 1, 32, 32, 64)], seen  # only the check's reference pass ran torch on real data
    x = torch.randn(shape, generator=torch.Generator().manual_seed(8))
    ours, ref = _torch_logits(ov_net, x), _torch_logits(net, x)
    assert ours.shape == ref.shape == (1, 3, 48, 48, 96)
    assert float((ours - ref).abs().max()) <= 1e-3
    assert float(ref.abs().max()) > 1e-2


def _assert_sliding_window_equals_torch(ov_net, net, keep_channels):
    """A class subset through the sliding window (mirroring, overlapping windows) gives torch's probabilities."""
    from suprem_nn.inference.sliding_window import sliding_window_predict

    volume = torch.randn(1, 40, 36, 48, generator=torch.Generator().manual_seed(4))
    common = dict(patch_size=(32, 32, 32), step_size=0.5, mirror_axes=(0, 2), activation="sigmoid",
                  keep_channels=keep_channels)
    ours = sliding_window_predict(ov_net, volume, **common)
    with torch.inference_mode():
        reference = sliding_window_predict(net, volume, **common)
    assert ours.shape == (len(keep_channels), 40, 36, 48)
    assert float((ours - reference).abs().max()) < 1e-4


def test_kept_channels_of_a_full_model_and_windows_do_not_share_buffers(tmp_path, monkeypatch):
    """A model converted with all channels returns the kept ones on request, and a window's logits stay what
    they were after the next window runs (OpenVINO writes each call's output into a new tensor); the sliding
    window with a class subset gives torch's probabilities."""
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))
    net = _network("segresnet")
    (ov_net,), _ = prepare_engine([net], "openvino", CPU, (1, 1, 32, 32, 32), None)
    torch.manual_seed(3)
    x1, x2 = torch.randn(1, 1, 32, 32, 32), torch.randn(1, 1, 32, 32, 32)
    full1 = ov_net(x1)
    kept = ov_net(x1, keep_channels=torch.tensor([2, 0]))
    assert kept.shape == (1, 2, 32, 32, 32) and torch.equal(kept, full1[:, [2, 0]])
    first = ov_net(x1)
    ov_net(x2)  # the request still refers to the previous output: it must not be written again
    assert torch.equal(first, full1)

    _assert_sliding_window_equals_torch(ov_net, net, keep_channels=[2, 0])


def test_model_converted_for_kept_channels_outputs_only_those(tmp_path, monkeypatch):
    """A prediction that keeps a subset of the classes gets a model that computes only those channels (its output
    buffer holds 2 of 3 here): same logits as torch's for them, its own cache entry, and a call asking for other
    channels is refused instead of returning the wrong ones."""
    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))
    net = _network("segresnet")
    shape = (1, 1, 32, 32, 32)
    (all_net,), all_report = prepare_engine([net], "openvino", CPU, shape, None)
    (ov_net,), report = prepare_engine([net], "openvino", CPU, shape, None, output_channels=[0, 2])
    assert report["cache"][0]["status"] == "converted"  # not the all-channel entry
    assert report["cache"][0]["file"] != all_report["cache"][0]["file"]
    assert report["output_channels"] == [0, 2] and all_report["output_channels"] is None
    assert list(ov_net.compiled.outputs[0].get_shape()) == [1, 2, 32, 32, 32]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(11))
    kept = ov_net(x, keep_channels=torch.tensor([0, 2]))
    reference = _torch_logits(net, x)[:, [0, 2]]
    assert kept.shape == (1, 2, 32, 32, 32)
    assert float((kept - reference).abs().max()) <= 1e-3
    for wrong in (None, torch.tensor([2, 0]), torch.tensor([0, 1])):
        with pytest.raises(ValueError, match=r"converted for output channels \[0, 2\]"):
            ov_net(x, keep_channels=wrong)

    _assert_sliding_window_equals_torch(ov_net, net, keep_channels=[0, 2])
    (again,), hit = prepare_engine([net], "openvino", CPU, shape, None, output_channels=[0, 2])
    assert hit["cache"][0]["status"] == "hit" and again.output_channels == [0, 2]


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="reads the resident set size from /proc (Linux)")
def test_sliding_window_gives_the_activation_buffers_back(tmp_path, monkeypatch):
    """After a volume's pass the compiled model no longer holds its activation buffers (they would otherwise
    stay allocated through the export and the next case's reading), and the next pass allocates them again
    and gives the same logits."""
    from suprem_nn.inference.sliding_window import sliding_window_predict

    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    # 96^3 with 8 filters: about 80 MB of planned buffers, well above the noise of the process's RSS
    net = build_network("segresnet", 1, 3, init_filters=8).eval()
    (ov_net,), _ = prepare_engine([net], "openvino", CPU, (1, 1, 96, 96, 96), None)
    volume = torch.randn(1, 96, 96, 96, generator=torch.Generator().manual_seed(5))
    direct = ov_net(volume[None])  # allocates the buffers, which a bare call keeps
    held = _rss_mb()
    first = sliding_window_predict(ov_net, volume, (96, 96, 96), use_gaussian=False)
    released = _rss_mb()
    assert released < held - 40, (held, released)
    second = sliding_window_predict(ov_net, volume, (96, 96, 96), use_gaussian=False)
    assert torch.equal(first, second)
    assert torch.equal(first, direct[0])  # one window, uniform weights: the pass returns that window's logits


def test_cached_model_runs_from_the_mapped_entry_and_survives_dropped_pages(tmp_path, monkeypatch):
    """A cache hit imports the memory-mapped entry without a copy. Dropping its pages at the end of a pass
    changes no logit, OpenVINO never writes into the mapping, and an entry replaced on disk meanwhile (a rename,
    as write_entry does) does not reach the running model."""
    import hashlib
    import mmap

    from suprem_nn.inference import engine_cache

    monkeypatch.setenv("SUPREM_ENGINE_CACHE", str(tmp_path / "cache"))
    net = _network("segresnet")
    shape = (1, 1, 32, 32, 32)
    prepare_engine([net], "openvino", CPU, shape, None)  # converts and stores the entry
    (ov_net,), report = prepare_engine([net], "openvino", CPU, shape, None)
    assert report["cache"][0]["status"] == "hit" and isinstance(ov_net.blob, mmap.mmap)
    entry = Path(report["cache"][0]["file"])
    on_disk = hashlib.sha256(entry.read_bytes()).hexdigest()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(11))
    first = _torch_logits(ov_net, x)
    ov_net.release_buffers()
    key = engine_cache.cache_key(engine_cache.network_fingerprint(net), shape, "f32", report["version"])
    engine_cache.write_entry(key, b"another model")  # replaces the file by a rename
    assert _torch_logits(ov_net, x).equal(first)
    ov_net.release_buffers()
    assert _torch_logits(ov_net, x).equal(first)
    assert hashlib.sha256(ov_net.blob).hexdigest() == on_disk
    assert float((first - _torch_logits(net, x)).abs().max()) <= 1e-3


_TWO_MODELS_THEN_SIGNALS = """
import os, signal, sys, time
import torch
from suprem_nn.inference.engines import prepare_engine
from suprem_nn.networks import build_network

net = build_network("segresnet", 1, 2, init_filters=8).eval()
first = prepare_engine([net], "openvino", torch.device("cpu"), (1, 1, 16, 16, 16), None)[0]
second = prepare_engine([net], "openvino", torch.device("cpu"), (1, 1, 16, 16, 16), None)[0]
del first    # dropped in the order they were made, as a run's folds or two predictions are
del second
try:
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
    time.sleep(5)
except KeyboardInterrupt:
    print("KeyboardInterrupt")
children = []
signal.signal(signal.SIGCHLD, lambda *_: children.append(1))  # as a training DataLoader's worker ends
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("SIGCHLD handled" if children else "no SIGCHLD")
"""


def test_signals_still_reach_python_after_models_are_dropped(tmp_path):
    """Each OpenVINO Core used to make its own CPU plugin instance, which swaps the thread's alternate signal stack
    and puts back the one it found when destroyed. Two models dropped first-made first left the main thread on
    an unmapped stack, and the next signal with a Python handler killed the process with SIGSEGV: Ctrl-C, or the
    SIGCHLD of a training DataLoader's worker after a prediction in the same process (the crash that made the
    test suite run as two pytest processes). One Core per process keeps one plugin instance."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "SUPREM_ENGINE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", _TWO_MODELS_THEN_SIGNALS], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.split() == ["KeyboardInterrupt", "SIGCHLD", "handled"]
