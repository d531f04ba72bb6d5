"""The presets' layer numbers on UNets shaped unlike SD 1.5's.

Every diffusion preset names its feature block (``feature_block``: an index into ``up_blocks``) and its first
mutual self-attention layer (``mutual_attn_start_layer``: an index into the self-attentions in execution order) the
way its paper does, on SD 1.5's UNet (and SD 2.x's, which has the same blocks): four up blocks, the last three with
three attention modules of one transformer block each, at 1/4, 1/2 and 1/1 of the latent's resolution; 16
self-attentions, the up path's from index 7.

SDXL's UNet has three up blocks: two with three attention modules of 10 and 2 transformer blocks, at 1/4 and 1/2
of the latent's resolution, and one without attention at 1/1; 70 self-attentions, the up path's from index 34. A
preset's number is carried over by **resolution**: the layer or block that works at the same fraction of the
latent's resolution, in the same attention module. So DragDiffusion's feature block 2 (SD 1.5: 640 channels, output
at the latent's resolution) is SDXL's up block 1 (640 channels, output at the latent's resolution), its mutual
layers from 10 (the up path at 1/2 and 1/1) start at SDXL's up block 1 (64: its only up-path attention at 1/2 or
finer), and FastDrag's 7 (every up-path self-attention) is SDXL's 34 (every one too).

The distilled SD 1.5 / 2.x UNets keep SD 1.5's four up blocks with fewer layers: BK-SDM base drops one attention
module per up block (10 self-attentions), BK-SDM small and tiny and segmind's tiny-sd the mid block too (9). Their
layer numbers are carried over the same way: DragDiffusion's 10 is their up block 2's first self-attention (6 on
BK-SDM base, 5 on small), not a layer past their end.
"""

from __future__ import annotations

from typing import Any

from .attention import self_attentions

SD15_UP_BLOCKS = 4
SD15_FIRST_UP_LAYER = 7
SD15_MODULES_PER_UP_BLOCK = 3


def translate_feature_block(block: int, unet: Any) -> int:
    """SD 1.5's ``up_blocks[block]`` on ``unet``: the up block whose output has the same fraction of the latent's
    resolution (clamped to the blocks there are)."""
    n = len(unet.up_blocks)
    return min(max(block - (SD15_UP_BLOCKS - n), 0), n - 1)


def translate_mutual_start(index: int, unet: Any) -> int:
    """SD 1.5's self-attention ``index`` (an up-path one, 7 or more) on ``unet``: the first self-attention of the
    same attention module in the up block at the same resolution; where ``unet`` has no attention at that
    resolution, its finest up block with attention. A down-path or middle ``index`` is returned as it is."""
    if index < SD15_FIRST_UP_LAYER:
        return index
    block = 1 + (index - SD15_FIRST_UP_LAYER) // SD15_MODULES_PER_UP_BLOCK
    module = (index - SD15_FIRST_UP_LAYER) % SD15_MODULES_PER_UP_BLOCK
    names = self_attentions(unet)
    firsts: dict[int, list[int]] = {}  # up block -> index of each attention module's first self-attention
    for i, name in enumerate(names):
        parts = name.split(".")
        if parts[0] == "up_blocks" and name.endswith("transformer_blocks.0.attn1"):
            firsts.setdefault(int(parts[1]), []).append(i)
    if not firsts:
        return index
    target = translate_feature_block(block, unet)
    candidates = [j for j in sorted(firsts) if j <= target]
    j = candidates[-1] if candidates else min(firsts)
    modules = firsts[j]
    return modules[min(module, len(modules) - 1)]


def has_sd15_layout(unet: Any) -> bool:
    """Whether ``unet``'s up blocks and self-attentions are numbered as SD 1.5's (SD 1.5, SD 2.x, LCM Dreamshaper,
    the inpainting models): four up blocks and 16 self-attentions, so a preset's numbers mean the same layers."""
    return len(unet.up_blocks) == SD15_UP_BLOCKS and len(self_attentions(unet)) == 16


def native_width(unet: Any, scale_factor: int) -> int:
    """The image width a latent model was trained at: its UNet's ``sample_size`` × the VAE's factor (SD 1.5: 512,
    SD 2.x 768-v: 768, SDXL: 1024)."""
    return int(unet.config.sample_size) * scale_factor


def adapt_to_unet(
    params: dict[str, Any], fixed: set[str], family: str, unet: Any, scale_factor: int
) -> dict[str, tuple[Any, Any]]:
    """Carry a preset's SD 1.5 numbers over to this UNet, in place, for the parameters not in ``fixed`` (those a
    user or the model's own defaults set): on SDXL the feature block and the first mutual layer by resolution; on
    any latent model whose native width is not 512, ``resize_width`` scaled by it (SD 1.5's 512 is SDXL's 1024).
    Returns ``{name: (preset's value, value used)}`` for what changed."""
    changed: dict[str, tuple[Any, Any]] = {}
    if family == "pixel":
        return changed
    if family == "sdxl" or not has_sd15_layout(unet):
        for name, fn in (
            ("feature_block", translate_feature_block),
            ("mutual_attn_start_layer", translate_mutual_start),
        ):
            if name not in fixed:
                new = fn(params[name], unet)
                if new != params[name]:
                    changed[name] = (params[name], new)
                    params[name] = new
    width = native_width(unet, scale_factor)
    if "resize_width" not in fixed and params["resize_width"] and width != 512:
        new = max(scale_factor, round(params["resize_width"] * width / 512 / scale_factor) * scale_factor)
        if new != params["resize_width"]:
            changed["resize_width"] = (params["resize_width"], new)
            params["resize_width"] = new
    return changed
