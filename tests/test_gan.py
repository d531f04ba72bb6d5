"""The GAN engine and DragGAN on the real bundled DCGAN face generator."""

import numpy as np
import pytest
import torch

from dragkit import DragGANPipeline, DragRequest, ModelError, ParameterError
from dragkit.bench.metrics import AlexFeatures, lpips_distance, mean_distance
from dragkit.engines.gan import DCGANGenerator, GANEngine, load_generator


def test_bundled_generator_is_real_and_deterministic(gan_pipe):
    a, b = gan_pipe.generate(3), gan_pipe.generate(3)
    assert a.image.size == (64, 64)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(gan_pipe.generate(4).image))
    # real weights: a face has structure (an untrained generator gives near-flat grey)
    assert np.asarray(a.image).std() > 20


def test_user_generator_files_load_through_the_real_path(tmp_path, gan_pipe):
    from safetensors.torch import save_file

    sd = gan_pipe.engine.generator.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "g.safetensors")
    torch.save({"netG_state_dict": sd}, tmp_path / "g.pt")
    z = torch.randn(1, 100, 1, 1)
    ref = gan_pipe.engine.generator(z)
    for f in ("g.safetensors", "g.pt"):
        g = load_generator(tmp_path / f)
        assert torch.allclose(g(z), ref)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelError, match="cannot load generator weights"):
        load_generator(tmp_path / "junk.pt")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="does not hold a DCGAN generator"):
        load_generator(tmp_path / "other.pt")
    with pytest.raises(ModelError, match="neither 'dcgan-faces' nor an existing file"):
        load_generator(tmp_path / "missing.pt")


def test_features_from_any_block_and_block_checks(gan_pipe):
    eng = gan_pipe.engine
    code = eng.sample_z(0)
    for block, channels in [(0, 512), (1, 256), (2, 128), (3, 64)]:
        f = eng.features(code, block, (64, 64))
        assert f.shape == (1, channels, 64, 64)
    # the same point expressed at a later block gives the same image
    assert torch.allclose(eng.synthesize(eng.advance(code, 2)), eng.synthesize(code), atol=1e-5)
    with pytest.raises(ParameterError, match="feature_block=1: must be in 2..4"):
        eng.check_blocks(2, 1)
    with pytest.raises(ParameterError, match="latent_block=7"):
        eng.check_blocks(7, 7)


@pytest.mark.slow
def test_inversion_fits_a_generated_face(gan_pipe):
    face = gan_pipe.generate(11)
    from dragkit.pipelines.gan import to_tensor

    inv = gan_pipe.engine.invert(to_tensor(face.image, 64), latent_block=2, steps=200, restarts=4, progress=False)
    assert inv.psnr > 28


def test_random_weights_generator_runs_the_same_code():
    eng = GANEngine(DCGANGenerator(z_dim=16, width=8).eval())
    pipe = DragGANPipeline(eng)
    face = pipe.generate(0)
    out = pipe(DragRequest(face.image, [(30, 30)], [(34, 30)]), code=face.code, progress=False, drag_steps=3)
    assert out.image.size == (64, 64) and out.info["steps"] <= 3


def test_draggan_moves_content_on_real_weights(gan_pipe):
    """The demo's drag, judged by an independent matcher (LPIPS-AlexNet features), never by our tracker."""
    from dragkit.interfaces.demo import DEMO_HANDLES, DEMO_SEED, DEMO_TARGETS

    face = gan_pipe.generate(DEMO_SEED)
    req = DragRequest(face.image, DEMO_HANDLES, DEMO_TARGETS)
    out = gan_pipe(req, code=face.code, progress=False)
    ex = AlexFeatures()
    before = mean_distance(face.image, face.image, req.handles, req.targets, ex).mean
    after = mean_distance(face.image, out.image, req.handles, req.targets, ex).mean
    assert before == 5 and after <= before - 1.5
    assert out.info["stop_reason"] == "arrived"
    # the face stays the same face: small perceptual change away from the drag
    yy, xx = np.mgrid[:64, :64]
    far = np.ones((64, 64), np.float32)
    for x, y in [*req.handles, *req.targets]:
        far[(xx - x) ** 2 + (yy - y) ** 2 <= 100] = 0
    assert lpips_distance(face.image, out.image, weight=far) < 0.1


def test_mask_keeps_the_outside_closer_to_the_source(gan_pipe):
    from dragkit.interfaces.demo import DEMO_HANDLES, DEMO_SEED, DEMO_TARGETS

    face = gan_pipe.generate(DEMO_SEED)
    mask = np.zeros((64, 64), bool)
    mask[36:60, 18:46] = True
    free = gan_pipe(DragRequest(face.image, DEMO_HANDLES, DEMO_TARGETS), code=face.code, progress=False)
    masked = gan_pipe(DragRequest(face.image, DEMO_HANDLES, DEMO_TARGETS, mask=mask), code=face.code, progress=False)
    outside = (~mask).astype(np.float32)
    assert lpips_distance(face.image, masked.image, weight=outside) < lpips_distance(
        face.image, free.image, weight=outside
    )
    assert masked.params["mask"] == "given"


def test_edit_is_deterministic_and_reports_everything(gan_pipe):
    face = gan_pipe.generate(2)
    req = DragRequest(face.image, [(30, 36)], [(33, 36)])
    steps = []
    a = gan_pipe(req, code=face.code, progress=False, callback=steps.append, record_frames=5)
    b = gan_pipe(req, code=face.code, progress=False)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert len(steps) == a.info["steps"] + 1 and "handles_xy" in steps[0]
    assert a.frames and a.frames[0][0] == 0
    assert a.trajectory[0]["handles"] == [[30.0, 36.0]]
    assert a.params["r_p"] == 4 and a.method == "draggan"


def test_cancel_stops_the_edit(gan_pipe):
    face = gan_pipe.generate(2)
    req = DragRequest(face.image, [(30, 36)], [(40, 36)])
    out = gan_pipe(req, code=face.code, progress=False, cancel=lambda: True)
    assert out.info["stop_reason"] == "cancelled" and out.info["steps"] == 0


def test_pipeline_rejects_parameters_it_cannot_use(gan_pipe):
    face = gan_pipe.generate(2)
    req = DragRequest(face.image, [(30, 36)], [(40, 36)])
    with pytest.raises(ParameterError, match="unknown parameter"):
        gan_pipe(req, code=face.code, progress=False, r_z=3)
    with pytest.raises(ParameterError, match="pass a mask image in the DragRequest"):
        gan_pipe(req, code=face.code, progress=False, mask="m.png")


@pytest.mark.slow
def test_a_photo_the_gan_cannot_make_warns_and_its_own_face_does_not(gan_pipe):
    from PIL import Image

    from dragkit.pipelines.gan import fit_warnings

    fast = {"drag_steps": 1, "invert_steps": 10, "invert_restarts": 1}
    rng = np.random.default_rng(0)  # a large picture of nothing like a face: stripes and noise
    stripes = np.tile((np.arange(256) // 16 % 2 * 200)[None, :, None], (256, 1, 3)) + rng.integers(
        0, 50, (256, 256, 3)
    )
    photo = Image.fromarray(stripes.astype(np.uint8))
    out = gan_pipe(DragRequest(photo, handles=[(120, 120)], targets=[(128, 120)]), **fast)
    size_note, fit_note = out.info["warnings"]
    assert "works at 64×64: this 256×256 image" in size_note and "diffusion method" in size_note
    assert f"PSNR {out.info['inversion_psnr']:.1f} dB" in fit_note and "dragkit" in fit_note
    assert fit_warnings((64, 64), 64, 22.5) == []  # its own faces refit at 22-32 dB: no warning
