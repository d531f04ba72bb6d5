"""dragkit's StyleGAN2 generator: the papers' structure, NVIDIA's weight names, and the whole route from a
``.pkl`` in NVIDIA's layout (read safely) to the same image. The comparison with DragGAN's own code on the same
weights is ``tests/test_oracle_draggan.py`` (``tests/oracle/draggan/README.md``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dragkit.core.errors import ModelError
from dragkit.engines.gan.nvidia_pkl import PersistentRecord
from dragkit.engines.gan.stylegan2 import (
    StyleGAN2Generator,
    generator_from_record,
    lowpass_filter,
    modulated_conv,
    upsample2x,
)

TINY = dict(
    z_dim=16, w_dim=16, img_resolution=32, mapping_layers=2, channel_base=256, channel_max=16, conv_clamp=256.0
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    g = StyleGAN2Generator(**TINY).eval().requires_grad_(False)
    with torch.no_grad():  # trained-looking values where a fresh one has zeros
        g.mapping.w_avg.normal_()
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return g


def record_of(g: StyleGAN2Generator, **changes) -> PersistentRecord:
    """``g`` as the reader returns an NVIDIA ``G_ema``: state by module, init kwargs as the snapshots store them."""

    def state(module) -> dict:
        return {
            "_parameters": dict(module._parameters),
            "_buffers": dict(module._buffers),
            "_modules": {
                k: PersistentRecord(type(m).__name__, 6, state(m), "", 0) for k, m in module._modules.items()
            },
        }

    s = state(g)
    s["_init_kwargs"] = {
        "z_dim": TINY["z_dim"],
        "c_dim": 0,
        "w_dim": TINY["w_dim"],
        "img_resolution": TINY["img_resolution"],
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": TINY["mapping_layers"]},
        "synthesis_kwargs": {"channel_base": 256, "channel_max": 16, "num_fp16_res": 4, "conv_clamp": 256},
        **changes,
    }
    return PersistentRecord("Generator", 6, s, "", 0)


def test_the_layout_is_nvidia_s(tiny):
    sd = tiny.state_dict()
    assert tiny.num_ws == 2 * 5 - 2  # 2·log2(32) − 2
    assert sd["synthesis.b4.const"].shape == (16, 4, 4) and "synthesis.b4.conv0.weight" not in sd
    assert sd["synthesis.b32.conv0.weight"].shape == (8, 16, 3, 3)  # channels min(256 // r, 16): 16 at 16 px, 8 at 32
    assert sd["synthesis.b32.conv0.affine.weight"].shape == (16, 16) and sd["synthesis.b32.torgb.weight"].shape[
        :2
    ] == (3, 8)
    assert (
        sd["synthesis.b32.conv1.noise_const"].shape == (32, 32) and sd["synthesis.b8.conv0.noise_strength"].ndim == 0
    )
    assert {"mapping.fc0.weight", "mapping.fc1.bias", "mapping.w_avg"} <= set(sd)
    assert torch.allclose(sd["synthesis.b8.resample_filter"], lowpass_filter()) and lowpass_filter().sum() == 1


def test_truncation_seed_and_noise_semantics(tiny):
    z = tiny.z_from_seed(7)
    assert torch.equal(z, torch.from_numpy(np.random.RandomState(7).randn(1, 16)))  # NVIDIA's and DragGAN's seeds
    ws = tiny.mapping(z)
    assert torch.allclose(ws, ws[:, :1].expand_as(ws))  # one w broadcast to every layer
    w0 = tiny.mapping(z, truncation_psi=0)
    assert torch.allclose(w0, tiny.mapping.w_avg.expand_as(w0))
    cut = tiny.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(cut[:, 3:], ws[:, 3:]) and torch.allclose(
        cut[:, :3], tiny.mapping.w_avg.lerp(ws[:, :3], 0.5)
    )
    a, b = tiny.synthesis(ws), tiny.synthesis(ws)
    assert torch.equal(a, b) and a.shape == (1, 3, 32, 32)  # const noise: deterministic
    g = torch.Generator().manual_seed(1)
    assert not torch.equal(tiny.synthesis(ws, noise_mode="random", generator=g), a)
    img, feats = tiny.synthesis(ws, return_features=True)
    assert torch.equal(img, a) and [f.shape[-1] for f in feats] == [4, 8, 16, 32]


def test_every_w_row_reaches_its_layer(tiny):
    """The papers' layout: b4 reads rows 0–1, each later block three rows starting at the previous block's to-RGB
    row. Changing one row changes the features only from the block whose convolutions read it on (a row read only
    by the last to-RGB changes the image alone)."""
    ws = tiny.mapping(tiny.z_from_seed(1))
    base_img, base = tiny.synthesis(ws, return_features=True)
    for row, first_block in [(0, 0), (1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (7, None)]:
        w2 = ws.clone()
        w2[:, row] += 1
        img, feats = tiny.synthesis(w2, return_features=True)
        changed = [not torch.equal(f, g) for f, g in zip(feats, base, strict=True)]
        assert (changed.index(True) if any(changed) else None) == first_block, (row, changed)
        assert not torch.equal(img, base_img)


def test_the_resampling_keeps_a_flat_image_flat():
    x = torch.full((1, 2, 6, 6), 0.5)
    y = upsample2x(x, lowpass_filter())
    assert y.shape == (1, 2, 12, 12) and torch.allclose(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 0.5))
    w = torch.randn(4, 2, 3, 3)
    out = modulated_conv(torch.randn(3, 2, 6, 6), w, torch.ones(3, 2), True, up=True, f=lowpass_filter())
    assert out.shape == (3, 4, 12, 12)


def test_a_record_in_nvidia_s_layout_builds_the_same_generator(tiny):
    g = generator_from_record(record_of(tiny))
    z = tiny.z_from_seed(3)
    assert torch.equal(g(z, truncation_psi=0.7), tiny(z, truncation_psi=0.7))
    assert g.synthesis.b4.conv1.conv_clamp == 256


def test_a_pkl_written_in_nvidia_s_layout_gives_the_same_image(tiny, tmp_path, nvidia):
    """The whole route: NVIDIA's persistence layout on disk → the safe reader → this generator."""
    from dragkit.engines.gan.nvidia_pkl import generator_record, read_nvidia_pkl

    from .conftest import write_nvidia_pkl

    path = write_nvidia_pkl(nvidia, tiny, tmp_path / "tiny.pkl")
    g = generator_from_record(generator_record(read_nvidia_pkl(path)))
    z = tiny.z_from_seed(11)
    assert torch.equal(g(z, truncation_psi=0.7), tiny(z, truncation_psi=0.7))


def test_what_it_cannot_run_is_one_line(tiny):
    with pytest.raises(ModelError, match=r"c_dim=10: conditional generators are not supported yet"):
        generator_from_record(record_of(tiny, c_dim=10))
    bad = record_of(tiny)
    bad.state["_init_kwargs"]["synthesis_kwargs"]["architecture"] = "resnet"
    with pytest.raises(ModelError, match="architecture='resnet'"):
        generator_from_record(bad)
    with pytest.raises(ModelError, match="do not fit a StyleGAN2 generator"):
        generator_from_record(record_of(tiny, img_resolution=64))
    sg3 = record_of(tiny)
    sg3.state["_modules"]["synthesis"].state["_modules"]["input"] = PersistentRecord(
        "SynthesisInput", 6, {"_parameters": {"weight": torch.ones(2, 2)}}, "", 0
    )
    with pytest.raises(ModelError, match="StyleGAN3"):
        generator_from_record(sg3)
    with pytest.raises(ValueError, match=r"ws is \(1, 3, 16\)"):
        tiny.synthesis(torch.zeros(1, 3, 16))
