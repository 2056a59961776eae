"""Training precision: bfloat16 only where the GPU has it (float16 with a scaler otherwise), bfloat16 autocast on
the CPU when asked, and the choice stated in words for the training log."""
from __future__ import annotations

import pytest
import torch

from suprem_nn.training import precision
from suprem_nn.training.config import TrainingConfig
from suprem_nn.training.losses import make_loss
from suprem_nn.training.precision import TrainingPrecision, choose_training_precision
from suprem_nn.training.trainer import Trainer

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def _gpu(monkeypatch, has_bf16: bool):
    """A GPU that does (Ampere+) or does not (V100, T4) run bfloat16 natively, as torch reports it."""
    seen = {}

    def is_bf16_supported(including_emulation=True):
        seen["including_emulation"] = including_emulation
        return has_bf16 or including_emulation  # emulation "supports" bf16 everywhere, slower than fp16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    return seen


@pytest.mark.parametrize("asked", ["auto", "bf16"])
def test_gpu_without_bf16_gets_fp16_with_a_scaler(monkeypatch, asked):
    seen = _gpu(monkeypatch, has_bf16=False)
    p = choose_training_precision(asked, CUDA)
    assert (p.autocast, p.grad_scaler) == (torch.float16, True)
    assert seen["including_emulation"] is False, "emulated bfloat16 must not count as support"
    assert "no native bfloat16" in p.describe() and "gradient scaler" in p.describe()


def test_gpu_with_bf16_and_the_explicit_choices(monkeypatch):
    _gpu(monkeypatch, has_bf16=True)
    assert choose_training_precision("auto", CUDA) == TrainingPrecision(
        torch.bfloat16, False, "mixed_precision auto; the GPU has bfloat16")
    assert choose_training_precision("fp16", CUDA).grad_scaler
    assert choose_training_precision("off", CUDA).autocast is None


def test_old_torch_without_including_emulation(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert not precision.gpu_has_bf16()


def test_cpu_choices():
    assert choose_training_precision("bf16", CPU) == TrainingPrecision(torch.bfloat16, False,
                                                                       "mixed_precision bf16 on the CPU")
    assert choose_training_precision("auto", CPU).autocast is None
    fp16 = choose_training_precision("fp16", CPU)
    assert fp16.autocast is None and not fp16.grad_scaler and "float32" in fp16.describe()


def _step_trainer(mixed_precision: str) -> Trainer:
    """A Trainer holding just what one training step uses: a small conv net, its loss and optimiser, on the CPU."""
    t = Trainer.__new__(Trainer)
    t.cfg, t.device, t.epoch = TrainingConfig(mixed_precision=mixed_precision), CPU, 0
    t.precision = choose_training_precision(mixed_precision, CPU)
    t.amp_dtype, t.scaler = t.precision.autocast, None
    torch.manual_seed(0)
    t.network = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.Conv3d(4, 2, 1))
    t.train_model, t.loss_fn = t.network, make_loss(True)
    t.optimizer = torch.optim.SGD(t.network.parameters(), lr=0.1)
    return t


@pytest.mark.parametrize("asked,dtype", [("bf16", torch.bfloat16), ("auto", torch.float32)])
def test_cpu_training_step_runs_in_the_chosen_format(asked, dtype):
    t = _step_trainer(asked)
    seen = []
    t.network[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = t.network[0].weight.detach().clone()
    g = torch.Generator().manual_seed(1)
    batch = {"data": torch.randn(2, 1, 8, 8, 8, generator=g),
             "target": (torch.rand(2, 2, 8, 8, 8, generator=g) > 0.5).float()}
    loss = t._train_step(batch)
    assert seen == [dtype], "the convolution ran in the chosen format"
    assert loss == loss and t.network[0].weight.dtype == torch.float32, "weights stay float32"
    assert not torch.equal(before, t.network[0].weight), "the step updated the weights"
