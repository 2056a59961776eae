"""Loader for the released SuPreM layouts and every other flavour, and its failure modes."""

import argparse
import os
import random
from collections import OrderedDict

import pytest
import torch

from suprem_nn.networks import (
    BACKBONES,
    SUPREM_CLASS_MAPS,
    CheckpointError,
    UniversalModel,
    build_network,
    init_from_pretrained,
    load_checkpoint_file,
    load_universal_model,
)
from suprem_nn.networks.segresnet import SuPreMSegResNet
from tests.fabricated_weights import make_fake_released_checkpoint

HEAD_PREFIX = {"unet": "out_tr.", "segresnet": "conv_final.2.", "swinunetr": "out."}
BACKBONE_KEYS = {"unet": 104, "segresnet": 81, "swinunetr": 157}
FILE_KEYS = {"unet": 117, "segresnet": 83, "swinunetr": 170}
UNIVERSAL_HEAD = ["organ_embedding", "precls_conv.0.weight", "precls_conv.0.bias", "precls_conv.2.weight",
                  "precls_conv.2.bias", "GAP.0.weight", "GAP.0.bias", "GAP.3.weight", "GAP.3.bias",
                  "controller.weight", "controller.bias", "text_to_vision.weight", "text_to_vision.bias"]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    return {fam: make_fake_released_checkpoint(fam, root / f"supervised_suprem_{fam}_2100.pth", seed=3)
            for fam in ("unet", "segresnet", "swinunetr")}


@pytest.fixture(scope="module")
def raw(released):
    return {fam: torch.load(p, weights_only=True) for fam, p in released.items()}


def backbone_of(raw_net: dict, family: str) -> dict:
    """File tensors under the model's backbone names, computed independently of the loader."""
    if family == "segresnet":
        return {k[len("module."):]: v for k, v in raw_net.items() if not k.startswith("module.conv_final.2.")}
    return {k[len("module.backbone."):]: v for k, v in raw_net.items() if k.startswith("module.backbone.")}


# ----------------------------------------------------------------------------- released layout


@pytest.mark.parametrize("family", ["unet", "segresnet", "swinunetr"])
def test_fabricated_file_has_released_layout(raw, family):
    assert list(raw[family]) == ["net"]
    net = raw[family]["net"]
    assert len(net) == FILE_KEYS[family]
    assert all(k.startswith("module.") for k in net)
    assert all(v.dtype in (torch.float32, torch.int64) for v in net.values())
    if family == "segresnet":
        assert net["module.convInit.conv.weight"].shape == (16, 1, 3, 3, 3)
        assert net["module.conv_final.2.conv.weight"].shape == (32, 16, 1, 1, 1)
        return
    assert list(net)[0] == "module.organ_embedding"
    assert net["module.organ_embedding"].shape == (32, 512)
    assert net["module.controller.weight"].shape == (153, 512, 1, 1, 1)
    assert net["module.text_to_vision.weight"].shape == (256, 512)
    assert sorted(k[len("module."):] for k in net if not k.startswith("module.backbone.")) == sorted(UNIVERSAL_HEAD)
    assert sum(k.startswith("module.backbone.") for k in net) == BACKBONE_KEYS[family]
    if family == "unet":
        assert net["module.backbone.down_tr64.ops.0.conv1.weight"].shape == (32, 1, 3, 3, 3)
        assert net["module.GAP.3.weight"].shape == (256, 512, 1, 1, 1)
        assert net["module.precls_conv.0.weight"].shape == (64,)
    else:
        assert net["module.backbone.swinViT.patch_embed.proj.weight"].shape == (48, 1, 2, 2, 2)
        assert net["module.GAP.0.weight"].shape == (768,)
        assert net["module.precls_conv.2.weight"].shape == (8, 48, 1, 1, 1)


@pytest.mark.parametrize("family", ["unet", "segresnet", "swinunetr"])
def test_full_load_for_direct_inference(released, raw, family):
    model, report = load_universal_model(released[family])
    net = raw[family]["net"]
    state = model.state_dict()
    assert len(state) == len(net)
    for key, value in net.items():
        assert torch.equal(state[key[len("module."):]], value), key
    assert isinstance(model, UniversalModel if family != "segresnet" else SuPreMSegResNet)
    assert not model.training
    assert report.mode == "full" and report.family == family and report.container == "net"
    assert report.stripped_prefixes == ["module."]
    assert report.num_classes_in_file == 32
    assert report.class_names_in_file == SUPREM_CLASS_MAPS[32]
    assert report.skipped == {}
    assert len(report.loaded) == FILE_KEYS[family]
    assert "sigmoid" in report.output_activation
    assert "32 (spleen" in str(report)


@pytest.mark.parametrize("family", ["unet", "segresnet", "swinunetr"])
def test_backbone_load_for_fine_tuning_keeps_fresh_head(released, raw, family):
    torch.manual_seed(0)
    model = build_network(family, 1, 7)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIX[family])}
    report = init_from_pretrained(model, family, released[family])
    state = model.state_dict()
    expected = backbone_of(raw[family]["net"], family)
    assert len(expected) == BACKBONE_KEYS[family] == len(report.loaded)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    for key, value in head_before.items():
        assert torch.equal(state[key], value), f"head {key} was overwritten"
    assert sorted(report.kept_fresh) == sorted(head_before)
    assert report.mode == "backbone" and report.family == family
    assert report.num_classes_in_file == 32
    text = str(report)
    if family == "segresnet":
        assert sorted(report.skipped) == ["conv_final.2.conv.bias", "conv_final.2.conv.weight"]
        assert "task head" in report.skipped["conv_final.2.conv.weight"]
    else:
        assert sorted(report.skipped) == sorted(UNIVERSAL_HEAD)
        assert "text embedding" in report.skipped["organ_embedding"]
        assert "dynamic-head" in report.skipped["controller.weight"]
        assert "skipped 1: organ_embedding" in text
    assert "freshly initialised" in text and f"loaded: {BACKBONE_KEYS[family]} tensors" in text


@pytest.mark.parametrize("family, shape", [("unet", (16, 16, 16)), ("segresnet", (16, 16, 16))])
def test_multichannel_input_adaptation(released, raw, family, shape):
    one = build_network(family, 1, 2)
    init_from_pretrained(one, family, released[family])
    three = build_network(family, 3, 2)
    three.load_state_dict({k: v for k, v in one.state_dict().items() if k.startswith(HEAD_PREFIX[family])},
                          strict=False)
    report = init_from_pretrained(three, family, released[family])
    key = "down_tr64.ops.0.conv1.weight" if family == "unet" else "convInit.conv.weight"
    src = backbone_of(raw[family]["net"], family)[key]
    assert torch.equal(three.state_dict()[key], src.repeat(1, 3, 1, 1, 1) / 3)
    assert list(report.adapted) == [key] and "divided by 3" in report.adapted[key]
    assert "adapted" in str(report)
    # The same image on every channel gives the 1-channel network's response.
    x = torch.randn(2, 1, *shape)
    one.eval()
    three.eval()
    with torch.no_grad():
        assert torch.allclose(three(x.repeat(1, 3, 1, 1, 1)), one(x), atol=1e-4)


def test_load_universal_model_with_25_classes_reports_abdomenatlas_order(tmp_path):
    path = make_fake_released_checkpoint("unet", tmp_path / "u25.pth", num_classes=25)
    model, report = load_universal_model(path, backbone="unet")
    assert model.num_classes == 25 and report.class_names_in_file[0] == "aorta"
    with torch.no_grad():
        y = model(torch.randn(1, 1, 16, 16, 16))
    assert y.shape == (1, 25, 16, 16, 16)


# ----------------------------------------------------------------------------- other flavours


def _strip(sd, prefix):
    return OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))


def _only_backbone(net):
    """Backbone tensors with their 'backbone.' prefix kept (Universal head and 'module.' removed)."""
    return OrderedDict((k, v) for k, v in _strip(net, "module.").items() if k.startswith("backbone."))


FLAVOURS = {
    # name: (builder from the released 'net' dict, container, stripped prefixes)
    "state_dict": (lambda n: {"state_dict": n}, "state_dict", ["module."]),
    "model": (lambda n: {"model": _strip(n, "module.")}, "model", []),
    "bare_module": (lambda n: n, None, ["module."]),
    "bare_no_prefix": (lambda n: _strip(n, "module."), None, []),
    "net_with_training_state": (lambda n: {"net": n, "epoch": 7, "optimizer": {"state": {}}}, "net", ["module."]),
    "backbone_prefixed_only": (lambda n: {"net": _only_backbone(n)}, "net", ["backbone."]),
    "backbone_export_no_prefix": (lambda n: {"net": _strip(n, "module.backbone.")}, "net", []),
    "double_ddp": (lambda n: OrderedDict(("module." + k, v) for k, v in n.items()), None, ["module.", "module."]),
}


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_other_flavours_load_backbone(tmp_path, raw, flavour):
    build, container, prefixes = FLAVOURS[flavour]
    path = tmp_path / f"{flavour}.pth"
    torch.save(build(raw["unet"]["net"]), path)
    model = build_network("unet", 1, 3)
    report = init_from_pretrained(model, "unet", path)
    assert report.container == container
    assert report.stripped_prefixes == prefixes
    expected = backbone_of(raw["unet"]["net"], "unet")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    if flavour == "net_with_training_state":
        assert report.ignored_entries == ["epoch", "optimizer"]
    if "backbone" in flavour:
        assert report.layout == "backbone only" and report.num_classes_in_file is None
        with pytest.raises(CheckpointError, match="without an output head"):
            load_universal_model(path)


def test_segresnet_flavours_and_fine_tuned_plain_file(tmp_path, raw):
    bare = _strip(raw["segresnet"]["net"], "module.")
    torch.save({"state_dict": bare}, tmp_path / "s.pth")
    model = build_network("segresnet", 1, 4)
    report = init_from_pretrained(model, "segresnet", tmp_path / "s.pth")
    assert len(report.loaded) == 81 and report.container == "state_dict"
    # A fine-tuned plain U-Net (module. + target keys) rebuilds with its own head for inference.
    tuned = build_network("unet", 1, 18)
    torch.save({"net": OrderedDict(("module." + k, v) for k, v in tuned.state_dict().items())}, tmp_path / "t.pth")
    rebuilt, rep = load_universal_model(tmp_path / "t.pth")
    assert rep.layout == "plain with head" and rep.num_classes_in_file == 18
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in tuned.state_dict().items())


def test_load_checkpoint_file_returns_flat_state_dict(released, raw):
    sd = load_checkpoint_file(released["unet"])
    assert len(sd) == 117 and "organ_embedding" in sd and "backbone.down_tr64.ops.0.conv1.weight" in sd
    assert torch.equal(sd["controller.weight"], raw["unet"]["net"]["module.controller.weight"])


# ----------------------------------------------------------------------------- failures


def test_wrong_backbone_for_file(released):
    with pytest.raises(CheckpointError, match=r"U-Net.*SegResNet") as err:
        init_from_pretrained(build_network("segresnet", 1, 2), "segresnet", released["unet"])
    assert str(released["unet"]) in str(err.value)
    with pytest.raises(CheckpointError, match="not 'swinunetr'"):
        load_universal_model(released["unet"], backbone="swinunetr")


def test_shape_mismatch_outside_head(tmp_path, raw, released):
    net = OrderedDict(raw["unet"]["net"])
    net["module.backbone.down_tr128.ops.0.conv1.weight"] = torch.zeros(64, 64, 1, 1, 1)
    torch.save({"net": net}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"down_tr128\.ops\.0\.conv1\.weight: file \(64, 64, 1, 1, 1\)"):
        init_from_pretrained(build_network("unet", 1, 2), "unet", tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="shapes differ"):
        load_universal_model(tmp_path / "bad.pth")
    # A model built with non-release sizes does not match the release file.
    with pytest.raises(CheckpointError, match="shapes differ"):
        init_from_pretrained(build_network("segresnet", 1, 2, init_filters=32), "segresnet", released["segresnet"])


def test_missing_and_extra_tensors_are_counted(tmp_path, raw):
    net = OrderedDict(raw["unet"]["net"])
    del net["module.backbone.up_tr64.ops.1.bn1.running_var"]
    torch.save({"net": net}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"117 tensors \(104 backbone \+ 13 head\), found 116; missing 1"):
        init_from_pretrained(build_network("unet", 1, 2), "unet", tmp_path / "missing.pth")
    net = OrderedDict(raw["segresnet"]["net"])
    net["module.extra.weight"] = torch.zeros(3)
    torch.save({"net": net}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="unexpected 1 \\(extra.weight\\)"):
        load_universal_model(tmp_path / "extra.pth")


def test_truncated_corrupt_empty_and_missing_files(tmp_path, released):
    data = released["segresnet"].read_bytes()
    cases = {
        "truncated.pth": data[: len(data) // 2],
        "text.pth": b"not a checkpoint\n",
        "empty.pth": b"",
        # NEWOBJ on an empty stack: torch's safe unpickler raises IndexError (as for 8 % of random files)
        "opcode.pth": b"\x81.",
    }
    # Random bytes make torch.load raise UnpicklingError, IndexError, KeyError or UnicodeDecodeError by seed.
    cases.update({f"random{seed}.pth": random.Random(seed).randbytes(4096) for seed in range(40)})
    network = build_network("segresnet", 1, 2)
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as err:
            init_from_pretrained(network, "segresnet", path)
        message = str(err.value)
        assert str(path) in message
        assert any(w in message for w in ("truncated", "corrupt", "empty")), message
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint_file(tmp_path / "absent.pth")
    assert issubclass(CheckpointError, ValueError)


def test_backbone_table_states_the_released_layouts():
    """The release facts of the backbone table equal the counts this file states independently (reference §2)."""
    released = {name: b.release for name, b in BACKBONES.items() if b.release is not None}
    assert sorted(released) == sorted(FILE_KEYS)
    for family, release in released.items():
        assert (release.file_keys, release.backbone_keys) == (FILE_KEYS[family], BACKBONE_KEYS[family])
        assert BACKBONES[family].head_prefixes == (HEAD_PREFIX[family],)
        assert release.key_prefix == ("module." if family == "segresnet" else "module.backbone.")


def test_backbone_without_released_weights_cannot_start_from_a_file(tmp_path, released):
    model = build_network("mednext", 1, 2, init_filters=4, blocks_down=[1, 1, 1, 1], blocks_bottleneck=1,
                          blocks_up=[1, 1, 1, 1])
    with pytest.raises(CheckpointError, match=r"no SuPreM weights exist for MedNeXt .*'mednext'.*train it from scratch"):
        init_from_pretrained(model, "mednext", released["segresnet"])
    # a MedNeXt state dict is not mistaken for a SuPreM file of another family
    torch.save({"net": model.state_dict()}, tmp_path / "mednext.pth")
    with pytest.raises(CheckpointError, match="does not look like a SuPreM checkpoint"):
        load_checkpoint_file(tmp_path / "mednext.pth")
    # nor can its backbone be exported in a released layout (suprem_export_backbone)
    from suprem_nn.networks.release_layout import release_state_dict
    with pytest.raises(CheckpointError, match="has no released SuPreM weights"):
        release_state_dict("mednext", model.state_dict())


def test_not_a_suprem_checkpoint(tmp_path):
    torch.save({"net": {"encoder.layer.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not look like a SuPreM"):
        load_checkpoint_file(tmp_path / "other.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pth")
    with pytest.raises(CheckpointError, match="no state dict found"):
        load_checkpoint_file(tmp_path / "nostate.pth")


class _Payload:
    """Unpickling this object runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_executed(tmp_path, raw):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"net": raw["segresnet"]["net"], "payload": _Payload(marker)}, path)
    assert not marker.exists()
    for attempt in (
        lambda: load_checkpoint_file(path),
        lambda: load_universal_model(path),
        lambda: init_from_pretrained(build_network("segresnet", 1, 2), "segresnet", path),
    ):
        with pytest.raises(CheckpointError, match="allow_unsafe=True") as err:
            attempt()
        assert str(path) in str(err.value) and "system" in str(err.value)
        assert not marker.exists()


def test_allow_unsafe_is_an_explicit_opt_in(tmp_path, raw):
    path = tmp_path / "with_args.pth"
    torch.save({"net": raw["segresnet"]["net"], "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint_file(path)
    model, report = load_universal_model(path, allow_unsafe=True)
    assert report.family == "segresnet" and report.ignored_entries == ["args"]
