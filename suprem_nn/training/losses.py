"""Training losses and the per-epoch pseudo-Dice counts.

Shapes: logits ``(B, C, X, Y, Z)``. Targets are the cache's segmentation layout:
exclusive plans ``(B, 1, X, Y, Z)`` integer labels 0..K (C = K + 1 softmax
channels, channel 0 = background); multi-label plans ``(B, K, X, Y, Z)`` binary
masks (C = K sigmoid channels, masks may overlap).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMOOTH = 1e-5


def soft_dice(probs: torch.Tensor, onehot: torch.Tensor, batch_dice: bool = True) -> torch.Tensor:
    """Mean soft Dice over channels of ``probs``/``onehot`` (B, C, ...).

    ``batch_dice`` sums over the batch as one volume (nnU-Net's 3D default), which
    keeps a class absent from one patch from dominating the gradient.

    Parameters
    ----------
    probs : torch.Tensor
        (B, C, X, Y, Z) probabilities (softmax or sigmoid).
    onehot : torch.Tensor
        Reference of the same shape and dtype, 0/1 per channel.
    batch_dice : bool
        Sum over batch and voxels per channel (True) or over voxels per image and channel (False).

    Returns
    -------
    torch.Tensor
        Scalar: ``(2 * intersection + 1e-5) / (sum of both + 1e-5)``, averaged over the channels (and images).
    """
    axes = (0, *range(2, probs.dim())) if batch_dice else tuple(range(2, probs.dim()))
    intersect = (probs * onehot).sum(axes)
    denom = probs.sum(axes) + onehot.sum(axes)
    return ((2 * intersect + SMOOTH) / (denom + SMOOTH).clamp_min(1e-8)).mean()


class DiceCELoss(nn.Module):
    """Exclusive labels: cross-entropy + (1 - soft Dice over the foreground channels)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy + (1 - soft Dice over the foreground channels 1..C-1), computed in float32.

        Parameters
        ----------
        logits : torch.Tensor
            (B, C, X, Y, Z) softmax logits, C = K + 1 with channel 0 the background.
        target : torch.Tensor
            (B, 1, X, Y, Z) integer labels 0..K.

        Returns
        -------
        torch.Tensor
            Scalar float32 loss; the Dice sums over the batch as one volume.
        """
        logits = logits.float()
        labels = target[:, 0].long()
        ce = F.cross_entropy(logits, labels)
        probs = torch.softmax(logits, 1)
        onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
        return ce + 1 - soft_dice(probs[:, 1:], onehot[:, 1:])


class DiceBCELoss(nn.Module):
    """Multi-label masks: binary cross-entropy with logits + (1 - soft sigmoid Dice), as SuPreM pretrained."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy with logits + (1 - soft sigmoid Dice over all channels), computed in float32.

        Parameters
        ----------
        logits : torch.Tensor
            (B, K, X, Y, Z) one independent logit per class.
        target : torch.Tensor
            (B, K, X, Y, Z) binary masks (they may overlap).

        Returns
        -------
        torch.Tensor
            Scalar float32 loss; the Dice sums over the batch as one volume.
        """
        logits = logits.float()
        target = target.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return bce + 1 - soft_dice(torch.sigmoid(logits), target)


def make_loss(multilabel: bool) -> nn.Module:
    """:class:`DiceBCELoss` for a multi-label plan, else :class:`DiceCELoss`."""
    return DiceBCELoss() if multilabel else DiceCELoss()


@torch.no_grad()
def dice_counts(logits: torch.Tensor, target: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """True positives, false positives and false negatives per foreground class: (3, K) float64.

    Summed over every voxel of the batch, so counts from many batches (and many
    ranks) add up to nnU-Net's global "pseudo-Dice" of validation patches.

    Parameters
    ----------
    logits : torch.Tensor
        (B, C, X, Y, Z) network output.
    target : torch.Tensor
        (B, 1, X, Y, Z) integer labels (exclusive) or (B, K, X, Y, Z) binary masks (multi-label).
    multilabel : bool
        True: a class is predicted where its logit > 0 (sigmoid > 0.5), K = C. False: argmax over the C softmax
        channels, K = C - 1 (background channel 0 left out).

    Returns
    -------
    torch.Tensor
        float64 (3, K): rows TP, FP, FN in voxels, on the logits' device.
    """
    if multilabel:
        pred = logits > 0          # sigmoid > 0.5
        ref = target.bool()
    else:
        k = logits.shape[1]
        pred = F.one_hot(logits.argmax(1), k).movedim(-1, 1)[:, 1:].bool()
        ref = F.one_hot(target[:, 0].long(), k).movedim(-1, 1)[:, 1:].bool()
    axes = (0, *range(2, pred.dim()))
    tp = (pred & ref).sum(axes)
    fp = (pred & ~ref).sum(axes)
    fn = (~pred & ref).sum(axes)
    return torch.stack([tp, fp, fn]).double()


def pseudo_dice_per_class(counts: torch.Tensor) -> list[float]:
    """Per-class Dice ``2TP / (2TP + FP + FN)`` from the counts of :func:`dice_counts` (nnU-Net's "pseudo-Dice").

    Parameters
    ----------
    counts : torch.Tensor
        Shape ``(3, K)``: rows TP, FP, FN, one column per foreground class (summed over batch and voxels).

    Returns
    -------
    list of float
        One Dice per class; NaN for a class absent from both prediction and reference.

    See Also
    --------
    suprem_nn.evaluation.metrics.dice_from_counts : the Dice of one class from TP and the two mask sizes.
    """
    tp, fp, fn = counts
    denom = 2 * tp + fp + fn
    return [float("nan") if d == 0 else float(2 * t / d) for t, d in zip(tp.tolist(), denom.tolist())]
