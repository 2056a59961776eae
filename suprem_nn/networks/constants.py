"""Per-family facts that need no network code (so the planner can read them without importing MONAI)."""

SEGRESNET_DIVISIBILITY = 8
SEGRESNET_INPUT_CONV_KEYS = ("convInit.conv.weight",)
# Only the final 1x1x1 conv is task specific; conv_final.0 (GroupNorm) is part
# of the pretrained network and is loaded during fine-tuning.
SEGRESNET_HEAD_KEYS = ("conv_final.2.conv.weight", "conv_final.2.conv.bias")

SWIN_DIVISIBILITY = 32
# Tensors whose second axis is the number of image channels (patch embedding,
# and encoder1's 3x3x3 conv plus its 1x1x1 residual projection).
SWIN_INPUT_CONV_KEYS = (
    "swinViT.patch_embed.proj.weight",
    "encoder1.layer.conv1.conv.weight",
    "encoder1.layer.conv3.conv.weight",
)
