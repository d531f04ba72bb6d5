"""dragkit's ``gooddrag`` against the official GoodDrag code (zewei-Zhang/GoodDrag at ``fc01bc1``, ``run_gooddrag``,
LoRA off, run unchanged on CPU in float32): what it computed on the small random SD 1.5-layout model of the
DragDiffusion oracle is kept in ``tests/oracle/gooddrag/`` (its README says how it was made). The same inputs through
our pipeline give the same handles at every tracking of the two short drags, the same losses up to float noise and
an image within a few levels; on the long drag, the same schedule of phases, updates and trackings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragkit import DragRequest

from .conftest import SHARED_ORACLE as SHARED
from .conftest import shared_oracle_pipe

pytest.importorskip("diffusers")

ORACLE = Path(__file__).parent / "oracle" / "gooddrag"
pytestmark = [
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared model is not at {SHARED}"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def pipe():
    return shared_oracle_pipe()


def run(pipe, name: str, **overrides):
    """Our ``gooddrag`` on the case (their UI's settings are the preset's; LoRA off, the 128-px image as it is):
    the fixture's record, ours per step ``(phase, step in the phase, handles, losses)``, the result."""
    meta = json.loads((ORACLE / f"{name}.json").read_text())
    points = meta["inputs"]["points"]  # [x, y]: handle, target, ...
    image = Image.open(SHARED / "image.png").convert("RGB")
    mask = np.asarray(Image.open(SHARED / "mask.png").convert("L")) > 127 if name == "mask" else None
    request = DragRequest(image, points[0::2], points[1::2], mask=mask, prompt=meta["inputs"]["prompt"], seed=42)
    events = []
    result = pipe(request, method="gooddrag", lora="none", resize_width=0, progress=False,
                  callback=lambda e: events.append(e), **overrides)  # fmt: skip
    first = {}
    steps = []
    for e in events:
        first.setdefault(e["phase"], e["step"])
        handles = [[round(float(v)) for v in h] for h in e["handles"].tolist()]
        steps.append((e["phase"], e["step"] - first[e["phase"]], handles, dict(e["losses"])))
    return meta, steps, result


def tracked(meta: dict, steps: list) -> tuple[list, list]:
    """Their handles after each tracking, and ours at the same phase and update count."""
    ours = {(ph, k): h for ph, k, h, _ in reversed(steps)}  # a step's handles as the loop reports them
    theirs = [
        ((t["t_idx"], t["updates_in_timestep"]), [[int(v) for v in h] for h in t["after"]]) for t in meta["trackings"]
    ]
    return [h for _, h in theirs], [ours.get(key) for key, _ in theirs]


@pytest.mark.parametrize("name", ["nomask", "mask"])
def test_gooddrag_tracks_their_handles_at_every_tracking(pipe, name):
    meta, steps, result = run(pipe, name)
    theirs, ours = tracked(meta, steps)
    assert ours == theirs  # 7 trackings without the mask, 5 with it
    # their printed total loss per update against ours (measured: relative 2e-5 at the first, 1e-3 by the 12th)
    losses = [sum(loss.values()) for _, _, _, loss in steps if loss]
    want = [u["loss_total"] for u in meta["updates"]]
    assert len(losses) == len(want)
    assert np.allclose(losses, want, rtol=3e-3)
    assert result.info["stop_reason"] == "arrived"
    image = np.asarray(result.image, float)
    theirs_image = np.asarray(Image.open(ORACLE / f"{name}.png").convert("RGB"), float)
    assert np.abs(image - theirs_image).mean() < 1.5 and np.abs(image - theirs_image).max() <= 24  # measured 0.4 / 9


def test_gooddrag_runs_their_schedule_on_the_long_drag(pipe):
    """Seven phases of 30 updates and 11 trackings each, as theirs. The handles agree up to their 5th tracking
    round; the 6th (update 15) differs, and so does ours when our own inverted latent is moved by noise of the size
    of the gap between their inversion (diffusers 0.20) and ours (5.7e-5): the L1 mask term's sign at elements
    that sit at their reference is decided by rounding, and Adam turns it into steps of up to lr."""
    meta, steps, result = run(pipe, "nomask_long")
    phases = {ph for ph, *_ in steps}
    assert phases == set(range(7)) and result.info["stop_reason"] == "max_steps"
    updates = [sum(1 for ph, _, _, loss in steps if ph == k and loss) for k in range(7)]
    assert updates == [p["updates"] for p in meta["drag_phases"]] == [30] * 7
    theirs, ours = tracked(meta, steps)
    assert ours[:5] == theirs[:5]


def test_departures_from_their_code_fail_the_oracle(pipe):
    """Fresh features for tracking (the paper's reading), the positions' weight with their λ, another stride: each
    tracks other handles than theirs."""
    for overrides in ({"track_lagged": False}, {"patch_weight": "positions"}, {"motion_step": 2.0}):
        meta, steps, _ = run(pipe, "nomask", **overrides)
        theirs, ours = tracked(meta, steps)
        assert ours != theirs, overrides
