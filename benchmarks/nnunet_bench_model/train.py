"""Step 2 (a GPU machine): train nnU-Net's planned PlainConvUNet on nnU-Net-preprocessed arrays, time-bounded.

usage: python train.py PLANS.json DATA.npz OUT_DIR SECONDS DEVICE
Needs torch and dynamic-network-architectures only. A plain loop, not nnU-Net's trainer: random 32x112x128-style
patches (a third centred on foreground), random flips on every axis, small intensity jitter, CE + soft Dice,
SGD 0.01 Nesterov with nnU-Net's poly decay over the time budget, bfloat16 autocast, batch 8 on CUDA. Writes the
float16 state dict in <= 15 MiB parts (weights_part_k.bin) so it fits the device tool's file limits; assemble.py
turns it into an nnU-Net model folder. The benchmark model: 110 s on one H100, 1,915 iterations.
"""
import io
import json
import math
import os
import sys
import time
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from dynamic_network_architectures.architectures.unet import PlainConvUNet

plans_path, data_path, out_dir, seconds, device = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
os.makedirs(out_dir, exist_ok=True)  # before training: a missing folder must not cost the trained weights
cfg = json.load(open(plans_path))["configurations"]["3d_fullres"]
a = cfg["architecture"]["arch_kwargs"]
K = 14
torch.manual_seed(0)
net = PlainConvUNet(1, a["n_stages"], a["features_per_stage"], nn.Conv3d, a["kernel_sizes"], a["strides"],
                    a["n_conv_per_stage"], K, a["n_conv_per_stage_decoder"], conv_bias=True, norm_op=nn.InstanceNorm3d,
                    norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, nonlin=nn.LeakyReLU,
                    nonlin_kwargs={"inplace": True}, deep_supervision=False).to(device)
patch = cfg["patch_size"]
z = np.load(data_path)
cases = []
for n in sorted({k.rsplit("_", 1)[0] for k in z.files}):
    d = torch.from_numpy(z[n + "_data"].astype(np.float32))
    s = torch.from_numpy(np.maximum(z[n + "_seg"].astype(np.int64), 0))
    pads = []
    for dim, p in zip(reversed(d.shape[1:]), reversed(patch)):
        extra = max(p - dim, 0)
        pads += [extra // 2, extra - extra // 2]
    d = F.pad(d, pads, value=float(d.min()))
    s = F.pad(s, pads, value=0)
    fg = torch.nonzero(s[0] > 0)
    cases.append((d.to(device), s.to(device), fg.to(device)))
    print(n, tuple(d.shape), "fg voxels", len(fg), flush=True)
rng = np.random.default_rng(0)

def sample():
    d, s, fg = cases[rng.integers(len(cases))]
    shape = d.shape[1:]
    if rng.random() < 0.33 and len(fg):
        c = fg[rng.integers(len(fg))].tolist()
        start = [int(np.clip(ci - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, sh - p)) for ci, p, sh in zip(c, patch, shape)]
    else:
        start = [int(rng.integers(0, sh - p + 1)) for p, sh in zip(patch, shape)]
    sl = tuple(slice(st, st + p) for st, p in zip(start, patch))
    x, y = d[(slice(None),) + sl], s[(slice(None),) + sl]
    for ax in (1, 2, 3):
        if rng.random() < 0.5:
            x, y = x.flip(ax), y.flip(ax)
    x = x * float(rng.uniform(0.9, 1.1)) + float(rng.normal(0, 0.05))
    return x, y

opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
B = 8 if device.startswith("cuda") else 1
t0, it = time.time(), 0
net.train()
while True:
    frac = (time.time() - t0) / seconds
    if frac >= 1:
        break
    for g in opt.param_groups:
        g["lr"] = 0.01 * (1 - frac) ** 0.9
    xs, ys = zip(*[sample() for _ in range(B)])
    x, y = torch.stack(xs), torch.stack(ys)[:, 0]
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
        logits = net(x)
    logits = logits.float()
    ce = F.cross_entropy(logits, y)
    p = logits.softmax(1)
    oh = F.one_hot(y, K).permute(0, 4, 1, 2, 3).float()
    inter, den = (p * oh).sum((0, 2, 3, 4)), (p + oh).sum((0, 2, 3, 4))
    dice = ((2 * inter + 1e-5) / (den + 1e-5))[1:].mean()
    loss = ce + (1 - dice)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
    opt.step()
    it += 1
    if it % 100 == 0 or it == 1:
        print(f"it {it} t {time.time() - t0:.0f}s loss {loss.item():.3f} ce {ce.item():.3f} soft dice {dice.item():.3f}",
              flush=True)
print(f"trained {it} iterations of batch {B} in {time.time() - t0:.0f} s", flush=True)
sd, seen = {}, {}
for k, v in net.state_dict().items():  # the decoder holds the encoder: keep shared tensors shared
    if v.data_ptr() not in seen:
        seen[v.data_ptr()] = v.detach().half().cpu()
    sd[k] = seen[v.data_ptr()]
buf = io.BytesIO()
torch.save(sd, buf)
raw = buf.getvalue()
part = 15 * 2 ** 20
for i in range(math.ceil(len(raw) / part)):
    open(f"{out_dir}/weights_part_{i}.bin", "wb").write(raw[i * part:(i + 1) * part])
print("weights bytes", len(raw), flush=True)
