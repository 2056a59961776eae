"""Download on first use of the released SuPreM weights, against a real HTTP server on 127.0.0.1.

Every failure must be one line that names the URL, the folder and what to do, and must leave nothing under the
final name (and, unless the bytes can resume, no ``.part`` either). Files are fabricated in the released
layouts; SegResNet (19 MB) where the family does not matter.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.fabricated_weights import make_fake_released_checkpoint
from suprem_nn.networks.weights import (WeightsError, download_weights, ensure_weights, prefetch_weights,
                                        register_weights, resolve_pretrained_checkpoint)

from .weights_server import Served, WeightsServer

REPO = Path(__file__).resolve().parents[2]
SEG = "supervised_suprem_segresnet_2100.pth"
UNET = "supervised_suprem_unet_2100.pth"


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> dict:
    """The fabricated released SegResNet file (bytes); the family checks serve it under the U-Net name."""
    folder = tmp_path_factory.mktemp("released")
    return {"segresnet": make_fake_released_checkpoint("segresnet", folder / "segresnet.pth").read_bytes()}


@pytest.fixture
def server():
    with WeightsServer() as srv:
        yield srv


@pytest.fixture
def env(tmp_path, monkeypatch, server) -> Path:
    """Weights folder under tmp_path, downloads from the test server, network allowed; returns the folder."""
    for var in ("SUPREM_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("SUPREM_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("SUPREM_WEIGHTS_URL", server.url)
    monkeypatch.setenv("SUPREM_DOWNLOAD_TIMEOUT", "10")
    return tmp_path / "weights"


def left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def one_line(text: str) -> str:
    assert len(str(text).strip().splitlines()) == 1, text
    return str(text)


def command(name: str) -> list[str]:
    """The installed console script, as a user runs it (module fallback for an install without scripts)."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.is_file() else [sys.executable, "-m", f"suprem_nn.cli.{name[len('suprem_'):]}"]


def test_first_use_downloads_verifies_and_reuses(env, server, released):
    server.state.files[SEG] = Served(released["segresnet"])
    path = ensure_weights("segresnet", progress=False)
    assert path == env / SEG and path.read_bytes() == released["segresnet"]
    assert left_in(env) == [SEG] and server.state.full_gets(SEG) == 1
    assert torch.load(path, weights_only=True)["net"].keys()
    assert ensure_weights("segresnet", progress=False) == path and len(server.state.requests) == 1


def test_resume_after_the_connection_drops_mid_file(env, server, released):
    data = released["segresnet"]
    server.state.files[SEG] = Served(data, mode="drop_once")
    path = download_weights("segresnet", progress=False)
    assert path.read_bytes() == data
    assert server.state.full_gets(SEG) == 1 and server.state.ranges(SEG) == [f"bytes={len(data) // 2}-"]
    assert left_in(env) == [SEG]


def test_a_later_run_resumes_the_kept_bytes(env, server, released):
    data = released["segresnet"]
    server.state.files[SEG] = Served(data, mode="drop_always")
    with pytest.raises(WeightsError, match="the next run resumes") as err:
        download_weights("segresnet", progress=False)
    assert "gave up after 5 attempt(s), 5.0 MB received" in one_line(err.value)
    assert left_in(env) == [SEG + ".part"] and (env / (SEG + ".part")).read_bytes() == data[: 5 << 20]
    server.state.files[SEG] = Served(data)
    server.state.requests.clear()
    assert download_weights("segresnet", progress=False).read_bytes() == data
    assert server.state.full_gets(SEG) == 0 and server.state.ranges(SEG) == [f"bytes={5 << 20}-"]
    assert left_in(env) == [SEG]


def test_kept_bytes_of_another_file_are_refused_and_removed(env, server, released):
    env.mkdir()
    (env / (SEG + ".part")).write_bytes(b"\0" * 4096)  # not the start of this file
    server.state.files[SEG] = Served(released["segresnet"])
    with pytest.raises(WeightsError, match="is not the released SuPreM segresnet checkpoint"):
        download_weights("segresnet", progress=False)
    assert left_in(env) == []


def test_bad_timeout_setting_is_named(env, monkeypatch):
    monkeypatch.setenv("SUPREM_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(WeightsError, match="SUPREM_DOWNLOAD_TIMEOUT must be a positive number of seconds, got 'soon'"):
        download_weights("segresnet", progress=False)
    assert not env.exists()


def test_404_is_one_line_and_leaves_nothing(env, server):
    with pytest.raises(WeightsError) as err:
        download_weights("segresnet", progress=False)
    msg = one_line(err.value)
    assert "HTTP 404" in msg and f"{server.url}/{SEG}" in msg and str(env) in msg and "--register FILE" in msg
    assert not env.exists()


@pytest.mark.parametrize("mode", ["html", "html_octet"])
def test_html_page_instead_of_the_file_is_refused(env, server, mode):
    server.state.files[SEG] = Served(b"", mode=mode)
    with pytest.raises(WeightsError, match="HTML page") as err:
        download_weights("segresnet", progress=False)
    assert f"{server.url}/{SEG}" in one_line(err.value)
    assert not env.exists()


def test_a_stalled_server_gives_up_after_the_timeout(env, server, released, monkeypatch):
    monkeypatch.setenv("SUPREM_DOWNLOAD_TIMEOUT", "1")
    server.state.files[SEG] = Served(released["segresnet"], mode="stall")
    t0 = time.monotonic()
    with pytest.raises(WeightsError, match="stalled for 1 s") as err:
        download_weights("segresnet", progress=False)
    assert time.monotonic() - t0 < 10
    assert str(env) in one_line(err.value)
    assert not env.exists()


def test_wrong_layout_is_refused_before_it_gets_the_final_name(env, server, released, tmp_path):
    # the U-Net name serving SegResNet weights: the family check refuses it
    server.state.files[UNET] = Served(released["segresnet"])
    with pytest.raises(WeightsError, match="holds SuPreM segresnet weights, not unet ones") as err:
        download_weights("unet", progress=False)
    assert f"{server.url}/{UNET}" in one_line(err.value) and "nothing was saved" in str(err.value)
    # a SegResNet backbone without its head loads safely but is not the released layout (83 tensors)
    sd = torch.load(make_fake_released_checkpoint("segresnet", tmp_path / "x.pth"), weights_only=True)["net"]
    torch.save({"net": {k: v for k, v in sd.items() if not k.startswith("module.conv_final.2.")}}, tmp_path / "headless.pth")
    server.state.files[SEG] = Served((tmp_path / "headless.pth").read_bytes())
    with pytest.raises(WeightsError, match=r"not the released segresnet layout .*83 tensors"):
        download_weights("segresnet", progress=False)
    assert not env.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs, smaller than the 19 MB SegResNet file (same approach as tests/reliability)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({(r.stderr or r.stdout).strip()}); run as root to test a full disk")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("mode, words", [("ok", "MB free, the file needs"), ("no_length", "is full")])
def test_full_disk_leaves_nothing(env, server, released, small_disk, monkeypatch, mode, words):
    # announced size: refused before writing; unknown size: the write fails midway and the part file goes
    monkeypatch.setenv("SUPREM_WEIGHTS", str(small_disk / "weights"))
    server.state.files[SEG] = Served(released["segresnet"], mode=mode)
    with pytest.raises(WeightsError, match=words) as err:
        download_weights("segresnet", progress=False)
    assert str(small_disk / "weights") in one_line(err.value)
    assert left_in(small_disk) == []
    st = os.statvfs(small_disk)
    assert st.f_bfree == st.f_blocks  # every byte written was given back


def _blocked_on_flock(pids: set[int]) -> bool:
    """True when one of ``pids`` waits for a flock (/proc/locks lists waiters with '->')."""
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if "->" in parts and "FLOCK" in parts and int(parts[parts.index("FLOCK") + 3]) in pids:
            return True
    return False


def test_two_concurrent_first_uses_download_once(env, server, released):
    if not Path("/proc/locks").is_file():
        pytest.skip("needs /proc/locks to see the second process wait for the lock")
    server.state.files[SEG] = Served(released["segresnet"], mode="hold")
    procs = [subprocess.Popen(command("suprem_download_weights") + ["segresnet"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO) for _ in range(2)]
    try:
        assert server.state.first_get.wait(60), "no process reached the server"
        deadline = time.monotonic() + 60
        while not _blocked_on_flock({p.pid for p in procs}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _blocked_on_flock({p.pid for p in procs}), "the second process never waited for the first"
        server.state.release.set()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(f"segresnet: {env / SEG} (verified)" in out for out, _ in outs)
    assert server.state.full_gets(SEG) == 1 and server.state.ranges(SEG) == []
    assert left_in(env) == [SEG] and (env / SEG).read_bytes() == released["segresnet"]


def test_offline_command_says_what_to_do_and_leaves_nothing(env, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on: connection refused, as on a blocked network
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("SUPREM_WEIGHTS_URL", closed)
    r = subprocess.run(command("suprem_download_weights") + ["segresnet"], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line = one_line(r.stderr)
    assert line.startswith("suprem_download_weights: error: cannot download the SuPreM segresnet weights")
    assert f"{closed}/{SEG}" in line and f"put the file in {env} as {SEG}" in line and "--register FILE" in line
    assert not env.exists()


def test_offline_setting_never_touches_the_network(env, server, monkeypatch):
    monkeypatch.setenv("SUPREM_OFFLINE", "1")
    with pytest.raises(WeightsError, match="SUPREM_OFFLINE") as err:
        ensure_weights("segresnet", use_flag="--checkpoint FILE")
    assert "--checkpoint FILE" in one_line(err.value) and server.state.requests == [] and not env.exists()


def test_register_checks_the_file_and_places_it(env, released, tmp_path):
    from suprem_nn.cli.download_weights import main

    mine = tmp_path / "elsewhere" / "copy.pth"
    mine.parent.mkdir()
    mine.write_bytes(released["segresnet"])
    assert main(["unet", "--register", str(mine), "--quiet"]) == 1
    assert not (env / SEG).exists() and not (env / UNET).exists()
    assert main(["--register", str(mine), "--quiet"]) == 0
    assert (env / SEG).read_bytes() == released["segresnet"] and left_in(env) == [SEG]
    broken = tmp_path / "broken.pth"
    broken.write_bytes(released["segresnet"][: 1 << 20])
    with pytest.raises(WeightsError, match=str(broken)):
        register_weights(broken, folder=tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_register_mismatch_message_names_file_and_both_families(env, released, tmp_path, capsys):
    from suprem_nn.cli.download_weights import main

    mine = tmp_path / "copy.pth"
    mine.write_bytes(released["segresnet"])
    assert main(["unet", "--register", str(mine)]) == 1
    line = one_line(capsys.readouterr().err)
    assert str(mine) in line and "holds SuPreM segresnet weights, not unet ones" in line


def test_training_resolves_the_plan_file_through_an_hf_mirror(env, server, released, monkeypatch):
    monkeypatch.delenv("SUPREM_WEIGHTS_URL")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    server.state.files[f"MrGiovanni/SuPreM/resolve/main/{SEG}"] = Served(released["segresnet"])
    plan = SimpleNamespace(plan_name="suprem_segresnet", pretrained="segresnet", checkpoint={
        "file": SEG, "url": f"https://huggingface.co/MrGiovanni/SuPreM/resolve/main/{SEG}?download=true"})
    path = resolve_pretrained_checkpoint(plan, None, progress=False)
    assert path == env / SEG and path.read_bytes() == released["segresnet"]
    assert server.state.requests[0][0] == f"/MrGiovanni/SuPreM/resolve/main/{SEG}?download=true"


def test_planning_only_warns_when_the_weights_cannot_be_fetched(env, server, released, caplog):
    caplog.set_level("INFO", logger="suprem_nn")
    assert prefetch_weights("segresnet", progress=False) is None
    warning = one_line(caplog.records[-1].getMessage())
    assert "HTTP 404" in warning and "--pretrained-checkpoint PATH" in warning and "Planning does not need" in warning
    assert caplog.records[-1].levelname == "WARNING"
    server.state.files[SEG] = Served(released["segresnet"])
    assert prefetch_weights("segresnet", progress=False) == env / SEG


def test_predict_reads_the_family_from_the_file(tmp_path, released, capsys):
    from suprem_nn.cli.predict import main
    from suprem_nn.inference.models import ModelError, load_suprem_released

    ckpt = tmp_path / "some_name.pth"
    ckpt.write_bytes(released["segresnet"])
    plan, nets = load_suprem_released(None, ckpt)
    assert plan.pretrained == "segresnet" and plan.network == "segresnet" and len(nets) == 1
    with pytest.raises(ModelError) as err:
        load_suprem_released("unet", ckpt)
    assert f"{ckpt}: holds SuPreM segresnet weights but --suprem unet was given" in str(err.value)
    rc = main(["-i", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "out"), "--suprem", "unet",
               "--checkpoint", str(ckpt), "--quiet"])
    line = one_line(capsys.readouterr().err)
    assert rc == 1 and line.startswith("suprem_predict: error: ") and str(ckpt) in line and "segresnet" in line and "--suprem unet" in line


def _small_ct(path: Path) -> Path:
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    ct = (rng.normal(0, 50, (40, 40, 24)) - 100).astype(np.int16)
    nib.save(nib.Nifti1Image(ct, np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    return path


def test_predict_suprem_downloads_the_released_file_on_first_use(env, server, released, tmp_path, capsys):
    from suprem_nn.cli.predict import main

    server.state.files[SEG] = Served(released["segresnet"])
    ct = _small_ct(tmp_path / "ct.nii.gz")
    rc = main(["-i", str(ct), "-o", str(tmp_path / "seg.nii.gz"), "--suprem", "segresnet", "--num-workers", "0",
               "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "seg.nii.gz").is_file() and (env / SEG).read_bytes() == released["segresnet"]
    assert server.state.full_gets(SEG) == 1


def test_plan_and_preprocess_fetches_the_weights_and_only_warns_without_them(env, server, released, tmp_path,
                                                                             monkeypatch, caplog):
    from suprem_nn.demo.phantom import write_phantom_dataset
    from suprem_nn.preprocessing.api import plan_and_preprocess

    monkeypatch.setenv("SUPREM_RAW", str(tmp_path / "raw"))
    write_phantom_dataset(tmp_path / "raw" / "Dataset901_Tiny", num_train=2, num_test=0, shape=(24, 24, 16),
                          spacing=(6.0, 6.0, 6.0))
    run = dict(pretrained="segresnet", num_processes=1, plan_only=True, progress=False)
    result = plan_and_preprocess("Dataset901_Tiny", **run)  # the server has no file yet: a warning, a plan
    assert result.plan is not None and (result.plan_folder / "plans.json").is_file()
    assert any(r.levelname == "WARNING" and "HTTP 404" in r.getMessage() for r in caplog.records)
    assert not env.exists()
    server.state.files[SEG] = Served(released["segresnet"])
    server.state.requests.clear()
    plan_and_preprocess("Dataset901_Tiny", **run)
    assert (env / SEG).read_bytes() == released["segresnet"] and server.state.full_gets(SEG) == 1
