"""The GAN engine, its methods and the command line on a StyleGAN2 generator: the DragGAN oracle's small random
128-px one (tests/oracle/draggan), opened from dragkit's folder layout and from an NVIDIA-layout ``.pkl``. (With
random weights the features mean nothing, so these tests check the mechanics; that the drag is DragGAN's own is
tests/test_oracle_draggan.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import DragRequest, ParameterError
from dragkit.engines.gan import StyleGANEngine, load_engine, save_stylegan
from dragkit.pipelines.gan import DragGANPipeline

from .helpers import dragkit

ORACLE = Path(__file__).parent / "oracle" / "draggan"


@pytest.fixture(scope="module")
def pipe():
    return DragGANPipeline.from_pretrained(ORACLE)


def test_a_pkl_and_the_folder_layout_open_the_same_generator(oracle_pkl, tmp_path, pipe):
    engine = load_engine(oracle_pkl)
    assert isinstance(engine, StyleGANEngine) and engine.resolution == 128 and engine.num_ws == 12
    with torch.no_grad():
        a, b = engine.synthesize(engine.sample_z(3)), pipe.engine.synthesize(pipe.engine.sample_z(3))
    assert torch.equal(a, b)
    again = load_engine(save_stylegan(engine.generator, tmp_path / "copy"))  # dragkit's layout round trip
    with torch.no_grad():
        assert torch.equal(again.synthesize(again.sample_z(3)), a)


def test_codes_w_plus_rows_w_and_spatial_give_the_seed_s_image(pipe):
    eng = pipe.engine
    sample = eng.sample_z(5)
    base = {"latent_block": 0, "w_layers": 6, "w_space": "w+"}
    with torch.no_grad():
        image = eng.synthesize(sample)
        rows = eng.edit_code(sample, base)
        assert rows.tensor.shape == (1, 6, 64) and torch.equal(eng.synthesize(rows), image)
        shared = eng.edit_code(sample, {**base, "w_space": "w"})  # truncated on every row: one w is the same
        assert shared.tensor.shape == (1, 1, 64) and torch.equal(eng.synthesize(shared), image)
        spatial = eng.edit_code(sample, {**base, "latent_block": 4})  # features + image entering the 64-px block
        assert spatial.tensor.shape == (1, 64 + 3, 32, 32)
        assert torch.allclose(eng.synthesize(spatial), image, atol=1e-5)
        f0 = eng.features(rows, 5, (128, 128))
        assert torch.allclose(eng.features(spatial, 5, (128, 128)), f0, atol=1e-5)
    # a changed row changes the image; a kept row is read from the styles, not from the tensor
    moved = rows.with_tensor(rows.tensor + 0.5)
    assert not torch.allclose(eng.synthesize(moved), image, atol=1e-3)
    with pytest.raises(ParameterError, match="w_layers=13: this generator has 12 rows"):
        eng.edit_code(sample, {**base, "w_layers": 13})


@pytest.mark.parametrize("method", ["draggan", "stabledrag-gan", "adaptivedrag-gan", "dragkit-gan"])
def test_every_gan_method_runs_on_a_stylegan(pipe, method):
    sample = pipe.generate(3)
    request = DragRequest(sample.image, handles=[(44, 64)], targets=[(54, 64)])
    out = pipe(request, method=method, code=sample.code, drag_steps=3, progress=False)
    assert out.image.size == (128, 128) and out.info["generator"] == "stylegan2"
    assert out.params["feature_block"] == 5 and out.params["r_m"] == 1 and out.params["r_p"] == 3
    if method == "dragkit-gan":
        assert out.params["latent_block"] == 4 and out.info["warp"]["code_shape"] == [67, 32, 32]
    else:
        assert out.params["latent_block"] == 0
    if method in ("draggan", "adaptivedrag-gan"):
        assert (out.params["tracker"], out.params["supervision"]) == ("draggan", "draggan")
    # outside the code's reach nothing is random: the same edit again is the same image
    again = pipe(request, method=method, code=sample.code, drag_steps=3, progress=False)
    assert np.array_equal(np.asarray(out.image), np.asarray(again.image))


def test_a_warp_needs_a_spatial_code(pipe):
    sample = pipe.generate(3)
    request = DragRequest(sample.image, handles=[(44, 64)], targets=[(54, 64)])
    with pytest.raises(ParameterError, match="init=warp needs a spatial code: latent_block=0"):
        pipe(request, method="dragkit-gan", code=sample.code, latent_block=0, progress=False)


def test_a_user_image_is_fitted_and_pti_tunes_a_copy(pipe):
    """invert_method=latent fits w then w+; pti fits w then tunes a copy of the generator (the engine's own is left
    as it was) and the edit runs on the copy."""
    target = pipe.generate(7).image
    request = DragRequest(target, handles=[(44, 64)], targets=[(50, 64)])
    before = {k: v.clone() for k, v in pipe.engine.generator.state_dict().items()}
    latent = pipe(request, method="draggan", invert_steps=4, drag_steps=1, progress=False)
    assert latent.info["source"] == "inverted" and latent.info["inversion_steps"] == 8
    pti = pipe(request, method="draggan", invert_steps=4, invert_method="pti", pti_steps=3, pti_lpips_stop=0.0,
               drag_steps=1, progress=False)  # fmt: skip
    assert pti.info["inversion_method"] == "pti" and pti.info["inversion_steps"] == 4 + 3
    assert "inversion_stopped" not in pti.info
    assert all(torch.equal(v, before[k]) for k, v in pipe.engine.generator.state_dict().items())


@pytest.mark.slow
def test_the_command_line_edits_a_pkl_s_own_image_by_seed_and_a_user_image(oracle_pkl, tmp_path, pipe):
    out = tmp_path / "out.png"
    r = dragkit("edit", "--gan-seed", 3, "--model", oracle_pkl, "--drag", "44,64:54,64", "-o", out,
                "--set", "drag_steps=3", "-q")  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["method"] == "draggan" and info["info"]["generator"] == "stylegan2"
    assert info["info"]["source"] == "generated" and info["info"]["steps"] == 3
    source = Image.open(tmp_path / "out_source.png")
    assert np.array_equal(np.asarray(source.convert("RGB")), np.asarray(pipe.generate(3).image))
    fitted = tmp_path / "fitted.png"
    r = dragkit("edit", tmp_path / "out_source.png", "--model", oracle_pkl, "--drag", "44,64:54,64", "-o", fitted,
                "--set", "invert_steps=2", "--set", "drag_steps=1", "-q")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "[no --method: draggan" in r.stdout and "inversion PSNR" in r.stdout
    bad = dragkit("edit", "--gan-seed", 3, "--model", oracle_pkl, "--method", "dragkit", "--drag", "1,1:2,2",
                  "-o", tmp_path / "x.png")  # fmt: skip
    assert bad.returncode != 0 and "--gan-seed 3: dragkit runs on the diffusion engine" in bad.stderr
    missing = dragkit("edit", "--gan-seed", 3, "--model", tmp_path / "missing.pkl", "--drag", "1,1:2,2",
                      "-o", tmp_path / "y.png")  # fmt: skip
    assert missing.returncode == 2 and "missing.pkl': no such file or folder" in missing.stderr


@pytest.mark.slow
def test_a_gan_set_benches_on_the_seeds_own_codes(oracle_pkl, tmp_path):
    """``dragkit gan-set`` writes a dataset of the generator's images with seeded drags; ``dragkit bench`` with a GAN
    method on the same generator edits each seed's code (no fit), and the identity control runs on it too."""
    sets = tmp_path / "set"
    r = dragkit("gan-set", sets, "--model", oracle_pkl, "--count", 2, "--handles", "distinctive", "-q")
    assert r.returncode == 0, r.stderr
    records = sorted(sets.glob("samples/distinctive/*/sample.json"))
    assert [p.parent.name for p in records] == ["seed0000", "seed0001"]
    first = json.loads(records[0].read_text())
    assert first["generated"] == {"generator": str(oracle_pkl.resolve()), "seed": 0}
    (h, t) = first["handles"][0], first["targets"][0]
    assert 0.06 * 128 - 1 <= np.hypot(t[0] - h[0], t[1] - h[1]) <= 0.2 * 128 + 1
    run = tmp_path / "run"
    r = dragkit("bench", sets, "-o", run, "--method", "draggan", "--model", oracle_pkl, "--set", "drag_steps=2", "-q")
    assert r.returncode == 0, r.stderr
    results = sorted(run.glob("samples/*/*/result.json"))
    assert len(results) == 2
    assert all(json.loads(p.read_text())["info"]["source"] == "generated" for p in results)
    r = dragkit("bench", sets, "-o", tmp_path / "identity", "--method", "identity", "-q")
    assert r.returncode == 0, r.stderr


def test_half_precision_runs_under_autocast_close_to_float32():
    """float16/bfloat16 (a GPU's precision; autocast runs on a CPU too): the image stays close to float32's, a drag
    runs; the DCGAN refuses it in one line."""
    from dragkit.core.errors import ParameterError as PE
    from dragkit.engines.gan import GANEngine

    pipe = DragGANPipeline.from_pretrained(ORACLE)
    code = pipe.engine.sample_z(3)
    with torch.no_grad():
        ref = pipe.engine.synthesize(code)
        pipe.engine.set_precision(torch.bfloat16)
        half = pipe.engine.synthesize(code)
    assert half.dtype == torch.float32 and 0 < float((half - ref).abs().mean()) < 0.05
    sample = pipe.generate(3)
    out = pipe(DragRequest(sample.image, [(44, 64)], [(54, 64)]), code=sample.code, drag_steps=2, progress=False)
    assert out.info["steps"] == 2
    with pytest.raises(PE, match="the DCGAN runs in float32"):
        GANEngine.from_pretrained().set_precision(torch.float16)


def test_a_cancel_ends_pivotal_tuning_where_it_is_and_says_so(pipe):
    """``--time-limit`` / Stop during PTI: the fit ends at once, the edit is made on the copy as tuned so far, and
    the result says how many of the planned steps ran."""
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 6  # four w steps, two tuning steps, then stop

    target = pipe.generate(7).image
    request = DragRequest(target, handles=[(44, 64)], targets=[(50, 64)])
    out = pipe(request, method="draggan", invert_steps=4, invert_method="pti", pti_steps=50, pti_lpips_stop=0.0,
               cancel=cancel, progress=False)  # fmt: skip
    assert out.info["inversion_steps"] == 6
    assert out.info["inversion_stopped"] == "cancelled after 6 of 54 steps"
    assert out.info["stop_reason"] == "cancelled"
