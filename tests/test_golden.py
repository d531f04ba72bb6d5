"""Golden outputs of every preset on both engines, recorded before the diffusion side was rebuilt (issue 22): the
rebuilt code must give the same pixels, the same handles at every step and the same losses. Presets added since
(``fastdrag``, ``gooddrag``, ``dragkit``, ``dragkit-gan``) were recorded when they were added; ``dragkit``'s two
cases again when its warp began to sample backward (``warp_sample=backward``, issue 24), ``gooddrag``'s two when
issue 34 aligned it with GoodDrag's code (``patch_weight=side``, ``track_lagged``, λ 0.2), and ``faces64-fastdrag``
when ``fastdrag`` took FastDrag's latent region (``warp_region=bilinear``), ``clipdrag``'s when it took CLIPDrag's
code's fusion, CLIP input and near-target tracking.

Each case is one edit on small fixed inputs: the bundled DCGAN, a tiny random Stable Diffusion and a tiny random
CLIP built here from fixed seeds, and ``faces64``. What is kept per case (``tests/golden/<case>.json`` and
``.png``): the handles on the supervision grid and the losses at every step (as the loop's callback hands them
out), the final handles in image pixels, the facts in ``info`` that sampling-time parts report (CLoss and
guidance energies, intentions, the automatic mask's size), and the output pixels.

Tolerance. Handles must be equal at every step (whole grid pixels: a rounding change does not move them, an
algorithmic one does). Pixels: at most 1 level of 255 apart. Losses and energies: relative 1e-2. That last one was
1e-5 until 2026-12-01, when a fresh environment (the same torch, newer numpy 2.4, scipy 1.17, scikit-image 0.26,
Pillow 12.3) moved 8 of the 21 cases' losses by up to 4e-3 relative (already at the second step of
``draggan-mask-inverted``: an environment's rounding, not an accumulation) with every handle and pixel unchanged;
1e-2 leaves that a margin while the handles and pixels keep their exactness. On the machine and environment the
files were recorded on, the code reproduces them bit for bit; ``DRAGKIT_GOLDEN_STRICT=1`` checks that (every float
equal, every pixel equal). ``DRAGKIT_GOLDEN_RECORD=1`` rewrites the files (only for a deliberate change of
output, said in the commit).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dragkit import DragRequest
from dragkit.methods.drivers import GuidanceOptions

pytestmark = [pytest.mark.slow]

pytest.importorskip("diffusers")

GOLDEN = Path(__file__).parent / "golden"
RECORD = os.environ.get("DRAGKIT_GOLDEN_RECORD") == "1"
STRICT = os.environ.get("DRAGKIT_GOLDEN_STRICT") == "1"


@pytest.fixture(autouse=True)
def lora_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRAGKIT_CACHE", str(tmp_path / "cache"))


def noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
    return Image.fromarray(base).resize((w, h), Image.BICUBIC)


def box_mask(w: int, h: int, box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((h, w), bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


# tiny SD: mutual attention from the 4th of its 10 self-attentions, a short schedule, a 2-step identity LoRA
SD = dict(resize_width=0, mutual_attn_start_layer=4, inference_steps=20, drag_steps=8, lora="train", lora_steps=2)
SD_NOLORA = {**SD, "lora": "none"}


def sd_request(masked: bool = True, **kw: Any) -> DragRequest:
    mask = box_mask(96, 80, (16, 16, 88, 72)) if masked else None
    args = dict(prompt="a photo of a cat", seed=3, mask=mask)
    return DragRequest(noise_image(96, 80), [(40, 40), (60, 30)], [(56, 40), (60, 22)], **{**args, **kw})


def gan_request(gan_pipe, masked: bool = False):
    face = gan_pipe.generate(27)
    mask = box_mask(64, 64, (18, 34, 46, 60)) if masked else None
    return DragRequest(face.image, [(32, 49), (22, 29)], [(32, 44), (22, 25)], mask=mask, seed=27), face.code


def faces64_request(gan_pipe):
    from dragkit.core.geometry import drag_region

    face = gan_pipe.generate(27).image
    pairs = [((32.0, 49.0), (32.0, 44.0))]
    return DragRequest(face, [pairs[0][0]], [pairs[0][1]], mask=drag_region((64, 64), pairs, 8.0), seed=27)


def run_case(case: str, models: dict[str, Any]) -> list[tuple[Any, list[dict[str, Any]]]]:
    """Run one case; returns ``(result, the loop's callback events)`` for each result it makes."""
    events: list[dict[str, Any]] = []

    def cb(ev: dict[str, Any]) -> None:
        events.append({"step": ev["step"], "handles": ev["handles"].tolist(), "losses": dict(ev["losses"])})

    def one(pipe: Callable, req: DragRequest, **kw: Any) -> list[tuple[Any, list[dict[str, Any]]]]:
        events.clear()
        out = pipe(req, progress=False, callback=cb, **kw)
        return [(r, list(events)) for r in (out if isinstance(out, list) else [out])]

    gan, sd, f64 = models.get("gan"), models.get("sd"), models.get("faces64")
    if case in ("draggan", "stabledrag-gan", "adaptivedrag-gan", "dragkit-gan"):
        req, code = gan_request(gan)
        return one(gan, req, method=case, code=code, drag_steps=80)
    if case == "draggan-mask-inverted":  # a user's image: inverted into the generator first; a painted mask
        req, _ = gan_request(gan, masked=True)
        return one(gan, req, method="draggan", drag_steps=20, invert_steps=20, invert_restarts=2)
    if case == "identity":
        from dragkit.pipelines import IdentityPipeline

        return [(IdentityPipeline()(sd_request(), method="identity"), [])]
    if case in ("dragdiffusion", "stabledrag"):
        sd.clear_source_cache()
        return one(sd, sd_request(), method=case, **SD)
    if case == "dragdiffusion-nomask":
        sd.clear_source_cache()
        return one(sd, sd_request(masked=False), **SD_NOLORA)
    if case == "dragdiffusion-reedit":  # the same source edited twice: the second edit is a source-cache hit
        sd.clear_source_cache()
        first = one(sd, sd_request(), **SD)
        req2 = DragRequest(
            noise_image(96, 80), [(40, 40)], [(40, 56)], prompt="a photo of a cat", seed=3, mask=sd_request().mask
        )
        second = one(sd, req2, **SD)
        assert second[0][0].info["source_cache"] == "hit"
        return first + second
    if case == "dragdiffusion-source-kv":
        sd.clear_source_cache()
        return one(sd, sd_request(), source_kv="inversion", **SD_NOLORA)
    if case == "dragdiffusion-reference":
        sd.clear_source_cache()
        from dragkit.bench.speed import reference_edit

        return one(partial(reference_edit, sd), sd_request(), **SD)
    if case == "dragdiffusion-odd-size":  # sides not multiples of 8: edited at the nearest multiples, mapped back
        sd.clear_source_cache()
        req = DragRequest(noise_image(90, 70), [(40, 40)], [(52, 36)], prompt="a photo", seed=3)
        return one(sd, req, **SD_NOLORA)
    if case == "adaptivedrag":  # automatic mask, semantic parts, backtracking, adaptive steps, CLoss while sampling
        sd.clear_source_cache()
        return one(
            sd, sd_request(masked=False), method="adaptivedrag", adaptive_step_cap=16, **{**SD, "drag_steps": 10}
        )
    if case == "clipdrag":
        sd.clear_source_cache()
        req = sd_request(edit_prompt="a red square")
        return one(sd, req, method="clipdrag", clip_model=models["clip"], **{**SD_NOLORA, "drag_steps": 6})
    if case == "luciddrag":  # the guided sampler: intentions, then a seed variant
        sd.clear_source_cache()
        opts = GuidanceOptions(num_results=3)
        return one(
            sd, sd_request(), method="luciddrag", options=opts, discriminator_steps=10, **{**SD, "drag_steps": 0}
        )
    if case == "fastdrag":  # recorded when the preset was added (issue 23), not before the rebuild
        sd.clear_source_cache()
        return one(sd, sd_request(), method="fastdrag", **{**SD, "lora": "none", "inference_steps": 10})
    if case == "gooddrag":  # recorded when the preset was added (issue 23): three drag phases, then sampling
        sd.clear_source_cache()
        return one(sd, sd_request(), method="gooddrag", **{**SD, "drag_phases": 3, "drag_steps": 6})
    if case == "faces64-gooddrag":  # with faces64's own defaults for gooddrag (dragkit.json "methods")
        f64.clear_source_cache()
        return one(f64, faces64_request(gan), method="gooddrag", lora_steps=4, drag_phases=3, inference_steps=25)
    if case == "faces64-dragdiffusion":
        f64.clear_source_cache()
        return one(f64, faces64_request(gan), lora_steps=4, drag_steps=30, inference_steps=25)
    if case == "faces64-fastdrag":
        f64.clear_source_cache()
        return one(f64, faces64_request(gan), method="fastdrag")
    if case == "dragkit":  # recorded when the preset was added, again with warp_sample=backward (issue 24)
        sd.clear_source_cache()
        return one(sd, sd_request(), method="dragkit", **{**SD, "lora": "none"})
    if case == "faces64-dragkit":  # the demo's drag (recorded as the case above)
        f64.clear_source_cache()
        return one(f64, faces64_request(gan), method="dragkit")
    if case == "faces64-luciddrag":
        f64.clear_source_cache()
        opts = GuidanceOptions(num_results=2)
        return one(f64, faces64_request(gan), method="luciddrag", lora="none", discriminator_steps=10, options=opts)
    raise KeyError(case)


CASES = [
    "draggan",
    "stabledrag-gan",
    "adaptivedrag-gan",
    "dragkit-gan",
    "draggan-mask-inverted",
    "identity",
    "dragdiffusion",
    "dragdiffusion-nomask",
    "dragdiffusion-reedit",
    "dragdiffusion-source-kv",
    "dragdiffusion-reference",
    "dragdiffusion-odd-size",
    "stabledrag",
    "adaptivedrag",
    "clipdrag",
    "luciddrag",
    "fastdrag",
    "gooddrag",
    "dragkit",
    "faces64-dragdiffusion",
    "faces64-luciddrag",
    "faces64-fastdrag",
    "faces64-gooddrag",
    "faces64-dragkit",
]

INFO_KEYS = ("steps", "stop_reason", "closs", "guidance", "intention", "result", "auto_mask", "source_cache", "lora")


def record_of(result: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "steps": events,
        "handles": [list(p) for p in result.handles],
        "info": {k: result.info[k] for k in INFO_KEYS if k in result.info},
    }


@pytest.fixture(scope="module")
def models(pipe, gan_pipe, tmp_path_factory):
    from dragkit import DragDiffusionPipeline
    from dragkit.utils.testing import build_tiny_clip

    f64 = DragDiffusionPipeline.from_pretrained("faces64")
    f64.set_progress_bar_config(disable=True)
    clip = str(build_tiny_clip(tmp_path_factory.mktemp("golden-clip")))
    return {"gan": gan_pipe, "sd": pipe, "faces64": f64, "clip": clip}


def close(a: Any, b: Any, where: str) -> None:
    """Recursive comparison: equal structure and text, numbers within the tolerance (exact when strict)."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in b:
            close(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(b, float) and not isinstance(b, bool):
        if STRICT:
            assert a == b, f"{where}: {a!r} != {b!r}"
        else:
            assert a == pytest.approx(b, rel=1e-2, abs=1e-8), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("case", CASES)
def test_every_preset_reproduces_its_golden_output(case, models):
    runs = run_case(case, models)
    records = [record_of(r, ev) for r, ev in runs]
    images = [np.asarray(r.image) for r, _ in runs]
    path = GOLDEN / f"{case}.json"
    if RECORD:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(records, indent=1) + "\n")
        for i, im in enumerate(images):
            Image.fromarray(im).save(GOLDEN / f"{case}.{i}.png")
        pytest.skip(f"recorded {path.name}")
    expected = json.loads(path.read_text())
    assert len(records) == len(expected)
    for i, (rec, exp) in enumerate(zip(records, expected, strict=True)):
        # the handles at every step first: a whole-pixel difference there is an algorithmic change
        assert [s["handles"] for s in rec["steps"]] == [s["handles"] for s in exp["steps"]], f"{case}[{i}] handles"
        close(rec, exp, f"{case}[{i}]")
        want = np.asarray(Image.open(GOLDEN / f"{case}.{i}.png").convert("RGB"), np.int16)
        diff = np.abs(images[i].astype(np.int16) - want)
        assert int(diff.max()) <= (0 if STRICT else 1), f"{case}[{i}]: pixels differ by up to {int(diff.max())}"
