"""dragkit's ``freedrag`` against FreeDrag's own code (LPengYang/FreeDrag at ``a35d988``, its diffusion version's
``run_drag`` with the arguments of its UI's Run button, LoRA off, on CPU in float32): what it computed on the
DragDiffusion oracle's tiny random-weight SD 1.5-layout model is kept in ``tests/oracle/freedrag/`` (its README says
how it was made). The same inputs through our pipeline must take the same decision for every point at every round
(line-search branch and candidate), move the points where theirs went, and give the same per-update losses, latents
and image up to float noise (where Adam grows the library versions' 1.2e-5 past a threshold's margin, from their
inverted latent: the README's "Tolerance"); a changed parameter must not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import DragRequest

from .conftest import SHARED_ORACLE, shared_oracle_pipe, vae_inputs

pytest.importorskip("diffusers")

FIXTURE = Path(__file__).parent / "oracle" / "freedrag"
pytestmark = [
    pytest.mark.skipif(not SHARED_ORACLE.is_dir(), reason=f"the shared oracle model is not at {SHARED_ORACLE}"),
    pytest.mark.slow,
]
BRANCH = {"search": "search", "keep": "keep", "rollback_search": "backtrack"}


@pytest.fixture(scope="module")
def oracle_pipe():
    return shared_oracle_pipe()


def run(pipe, name: str, **changed):
    """Their case through ``freedrag``: every step's event (points, losses, the latent before its update, the line
    search's notes), the latent entering the VAE and the result."""
    case = json.loads((FIXTURE / f"{name}.json").read_text())
    s = case["settings"]
    image = Image.open(SHARED_ORACLE / "image.png").convert("RGB")
    mask = None
    if case["inputs"]["mask"] == "mask.png":
        mask = np.asarray(Image.open(SHARED_ORACLE / "mask.png").convert("L")) > 0  # their store_img: canvas > 0
    points = case["inputs"]["points_xy"]
    request = DragRequest(image, points[0::2], points[1::2], mask=mask, prompt=s["prompt"], seed=42)
    settings = dict(
        lora="none",
        resize_width=0,
        feature_block=case["derived"]["unet_feature_idx"][0] - 1,  # their index 0 is the mid block's output
        inference_steps=case["derived"]["n_inference_step"],
        inversion_strength=s["inversion_strength"],
        lam=float(s["lam"]),
        l_expected=float(s["l_expected"]),
        d_max=float(s["d_max"]),
        latent_lr=s["latent_lr"],
        drag_steps=s["max_step"],
        mutual_attn_start_layer=s["start_layer"],
    )
    events: list[dict] = []

    def keep(ev):
        events.append({k: ev[k] for k in ("step", "handles", "latent", "losses", "notes", "final")})

    with vae_inputs(pipe.vae) as decoded:
        pipe.clear_source_cache()
        result = pipe(request, method="freedrag", progress=False, callback=keep, **{**settings, **changed})
    return case, events, decoded[-1], result


def their_decisions(rnd: dict) -> list[tuple[str, int | None]]:
    """One round's line-search decision per point, as ours notes it: (branch, chosen candidate)."""
    searched = iter(rnd["line_search"])
    out = []
    for sign in rnd["signs_before"]:
        if sign:
            out.append(("arrived", None))
            continue
        entry = next(searched)
        out.append((BRANCH[entry["branch"]], entry.get("chosen_index")))
    return out


def compare(name, case, events, final, result) -> dict:
    """How far ours is from theirs: the rounds (where each starts, each point's decision), the points the line search
    chose, the per-update losses and latents, the latent entering the VAE and the image."""
    from safetensors.torch import load_file

    tensors = load_file(str(FIXTURE / f"{name}.safetensors"))
    ours = [e for e in events if "round" in e["notes"]]
    decisions = [list(zip(e["notes"]["search"], e["notes"]["chosen"], strict=True)) for e in ours]
    theirs = [their_decisions(r) for r in case["rounds"]]
    paired = list(zip(ours, case["rounds"], strict=False))
    points = max(
        float((e["handles"] - torch.tensor(r["handles_after_search"], dtype=torch.float64)).abs().max())
        for e, r in paired
    )
    updates = [e for e in events if not e["final"]]
    both = list(zip(updates, case["updates"], strict=False))
    per_update = tensors["dragged_latents_per_update"]
    img = np.abs(
        np.asarray(result.image, np.int16) - np.asarray(Image.open(FIXTURE / f"{name}.png").convert("RGB"), np.int16)
    )
    return {
        "rounds": (len(ours), case["n_rounds"]),
        "rounds_equal": sum(a == b for a, b in zip(decisions, theirs, strict=False)),
        "round_starts": ([e["step"] for e in ours], [r["updates_before"] for r in case["rounds"]]),
        "updates": (len(updates), case["n_updates"]),
        "points": points,
        "loss_total": max(abs(sum(e["losses"].values()) - u["loss_total"]) for e, u in both),
        "loss_motion": max(abs(e["losses"]["motion"] - u["loss_feature_sum"]) for e, u in both),
        "latents": max(float((events[j + 1]["latent"][0] - per_update[j]).abs().max()) for j in range(len(both))),
        "final_latent": float((final - tensors["final_latents"][1:]).abs().max()),
        "image": (int(img.max()), float(img.mean())),
    }


def check(got: dict, case: dict, result, tol: tuple[float, float, float, float, tuple[int, float]]) -> None:
    """Every round and decision theirs, the points to float rounding, the numbers within ``tol`` (losses, per-update
    latents, the latent entering the VAE, the image's max and mean level difference)."""
    loss_tol, latent_tol, final_tol, (img_max, img_mean) = tol[0], tol[1], tol[2], tol[3]
    assert result.info["stop_reason"] == "arrived" and case["stop_reason"] == "all_signs_1"
    assert got["rounds"][0] == got["rounds"][1] and got["updates"][0] == got["updates"][1], got
    assert got["round_starts"][0] == got["round_starts"][1], got["round_starts"]
    assert got["rounds_equal"] == got["rounds"][1], got  # branch and chosen candidate of every point, every round
    assert got["points"] < 1e-4, got["points"]
    assert got["loss_total"] < loss_tol and got["loss_motion"] < loss_tol, got
    assert got["latents"] < latent_tol, got["latents"]
    assert got["final_latent"] < final_tol, got["final_latent"]
    assert got["image"][0] <= img_max and got["image"][1] < img_mean, got["image"]


def with_their_inversion(pipe, monkeypatch, name: str) -> None:
    """Their inverted latent in place of ours: takes out the one difference the library versions make (1.2e-5)."""
    from safetensors.torch import load_file

    theirs = load_file(str(FIXTURE / f"{name}.safetensors"))["inverted_latent"]
    invert = pipe.engine.invert
    monkeypatch.setattr(pipe.engine, "invert", lambda *a, **kw: theirs.to(invert(*a, **kw)))


# Measured (tests/oracle/freedrag/README.md, "Tolerance"). With their UI's l_expected 1 every decision is far from its
# threshold (58 % of it at the nearest) and the drag ends in one or two rounds: from our own inversion the points
# agree to 1.4e-6, the latents to 6e-5, the latent entering the VAE to 6.4e-4, the image within 1 level.
@pytest.mark.parametrize("name", ["mask", "nomask_long"])
def test_freedrag_reproduces_their_code(oracle_pipe, name):
    case, events, final, result = run(oracle_pipe, name)
    assert result.info["drag_timestep"] == case["derived"]["drag_timestep"]
    check(compare(name, case, events, final, result), case, result, (1e-4, 1e-3, 0.01, (4, 0.2)))


# With l_expected 0.1 the long drag takes 14 rounds and 58 updates, and an end-of-round loss passes 0.05 by 3.5e-4:
# closer than what our inversion's 1.2e-5 grows to under Adam (losses 9e-3 apart late in the drag). Started from their
# inverted latent, every round and decision is theirs, the latents within 7.0e-5, the losses 1.3e-5, the image 1 level.
def test_freedrag_long_drag_is_theirs_from_their_inverted_latent(oracle_pipe, monkeypatch):
    with_their_inversion(oracle_pipe, monkeypatch, "nomask_long_l01")
    case, events, final, result = run(oracle_pipe, "nomask_long_l01")
    check(compare("nomask_long_l01", case, events, final, result), case, result, (5e-4, 2e-3, 0.03, (4, 0.3)))


def test_freedrag_mask_term_is_theirs(oracle_pipe, monkeypatch):
    """The mask term (a mean over the latent, lam 10, their one-step denoised latents): from their inverted latent the
    first 23 updates of ``mask_l01`` stay within 6.7e-7 of theirs and the losses within 3.3e-7. Then a latent cell
    whose one-step difference sits at 0 takes the other sign of |.|'s gradient and Adam moves it a whole step (1.5e-3),
    so the run departs after that (rounds 7 against 8; measured, and README). Asserted: the first two rounds' decisions
    and the first 12 updates, before such a flip."""
    with_their_inversion(oracle_pipe, monkeypatch, "mask_l01")
    case, events, _, _ = run(oracle_pipe, "mask_l01")
    from safetensors.torch import load_file

    per_update = load_file(str(FIXTURE / "mask_l01.safetensors"))["dragged_latents_per_update"]
    ours = [e for e in events if "round" in e["notes"]][:2]
    decisions = [list(zip(e["notes"]["search"], e["notes"]["chosen"], strict=True)) for e in ours]
    assert decisions == [their_decisions(r) for r in case["rounds"][:2]]
    updates = [e for e in events if not e["final"]][:12]
    assert any(u["mask_term_recomputed"] > 0 for u in case["updates"][1:12])  # the term is at work
    for j, (e, u) in enumerate(zip(updates, case["updates"], strict=False)):
        assert abs(sum(e["losses"].values()) - u["loss_total"]) < 1e-4, j
        assert float((events[j + 1]["latent"][0] - per_update[j]).abs().max()) < 1e-4, j


def test_a_changed_parameter_departs_from_their_code(oracle_pipe):
    """Negative control: d_max 4 instead of their 5 searches shorter segments, puts the points elsewhere and ends on
    another latent and image."""
    case, events, final, result = run(oracle_pipe, "nomask_long", d_max=4.0)
    got = compare("nomask_long", case, events, final, result)
    assert got["points"] > 0.5 and got["final_latent"] > 0.05 and got["image"][0] > 20, got
