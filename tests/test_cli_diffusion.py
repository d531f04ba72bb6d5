"""``dragkit edit --method dragdiffusion`` end to end on a real DragBench sample (offline, tiny model)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragkit.utils.io import safe_unpickle

from .helpers import dragkit

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/dragbench/land_scape/PJC_2023-09-15-1603-42"


@pytest.mark.skipif(not SAMPLE.exists(), reason="../shared/data/dragbench is not beside the checkout")
def test_dragbench_sample_round_trip(tiny_sd, tmp_path):
    meta = safe_unpickle(SAMPLE / "meta_data.pkl")
    src = SAMPLE / "original_image.png"
    w, h = Image.open(src).size
    assert (w, h) == (512, 341)  # not square, height not a multiple of 8
    Image.fromarray((meta["mask"] * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    pts = meta["points"]
    drags = [f"{pts[i][0]},{pts[i][1]}:{pts[i + 1][0]},{pts[i + 1][1]}" for i in range(0, len(pts), 2)]
    out = tmp_path / "out.png"
    args = ["edit", src, "--method", "dragdiffusion", "--model", tiny_sd, "--prompt", meta["prompt"]]
    args += [a for d in drags for a in ("--drag", d)]
    args += ["--mask", tmp_path / "mask.png", "-o", out, "--lora", "train", "--profile", "-q"]
    args += ["--set", "lora_steps=2", "--set", "drag_steps=3", "--set", "mutual_attn_start_layer=4"]
    r = dragkit(*args, env_extra={"DRAGKIT_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (512, 341)
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["method"] == "dragdiffusion" and rec["prompt"] == meta["prompt"] and rec["has_mask"]
    assert rec["params"]["inference_steps"] == 50 and rec["params"]["r_m"] == 1 and rec["params"]["lam"] == 0.1
    assert rec["info"]["working_size"] == [512, 344] and rec["info"]["grid_size"] == [172, 256]
    assert rec["points"]["handles"] == [list(map(float, p)) for p in pts[0::2]]
    assert "mask" in rec["trajectory"][1]["losses"]
    # --profile prints the stage table
    for stage in ("load", "lora", "inversion", "drag", "sampling", "decode", "total"):
        assert stage in r.stdout


def test_missing_model_offline_is_one_line(tmp_path, face_png):
    r = dragkit("edit", face_png, "--method", "dragdiffusion", "--drag", "10,10:12,12", "-o", tmp_path / "o.png")
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()
    assert len(line) == 1 and "stable-diffusion-v1-5/stable-diffusion-v1-5" in line[0] and "--model" in line[0]
    assert not (tmp_path / "o.png").exists()


def test_a_folder_that_is_not_a_pipeline(tmp_path, face_png):
    (tmp_path / "m").mkdir()
    r = dragkit(
        "edit",
        face_png,
        "--method",
        "dragdiffusion",
        "--model",
        tmp_path / "m",
        "--drag",
        "10,10:12,12",
        "-o",
        tmp_path / "o.png",
    )
    assert r.returncode == 2 and "not a diffusers pipeline folder" in r.stderr


def test_stabledrag_end_to_end_records_confidences(tiny_sd, tmp_path, face_png):
    out = tmp_path / "sd.png"
    args = ["edit", face_png, "--method", "stabledrag", "--model", tiny_sd, "--prompt", "a face", "-q"]
    args += ["--drag", "20,30:30,30", "--drag", "40,20:40,28", "-o", out, "--lora", "none"]
    args += ["--set", "drag_steps=4", "--set", "stop_distance=0", "--set", "mutual_attn_start_layer=4"]
    r = dragkit(*args, env_extra={"DRAGKIT_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["method"] == "stabledrag"
    p = rec["params"]
    assert p["tracker"] == "discriminative" and p["supervision"] == "confidence_gated" and 0 < p["tau"] < 1
    # DragDiffusion's defaults otherwise
    assert p["r_m"] == 1 and p["r_p"] == 3 and p["lam"] == 0.1 and p["latent_lr"] == 0.01
    steps = rec["trajectory"]
    assert "confidences" not in steps[0]  # nothing is tracked on the initial latent
    assert len(steps) == 5 and all(len(s["confidences"]) == 2 for s in steps[1:])
    assert all(0.0 <= c <= 1.0 for s in steps[1:] for c in s["confidences"])
    assert rec["info"]["confidences"] == steps[-1]["confidences"]


def test_adaptivedrag_end_to_end_with_its_automatic_mask_and_without(tiny_sd, tmp_path, face_png):
    base = ["edit", face_png, "--method", "adaptivedrag", "--model", tiny_sd, "--prompt", "a face", "-q"]
    base += ["--drag", "20,30:30,30", "--lora", "none", "--set", "drag_steps=3", "--set", "mutual_attn_start_layer=4"]
    base += ["--set", "closs_steps=2", "--set", "inference_steps=10", "--set", "adaptive_step_cap=6"]
    env = {"DRAGKIT_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "ad.png"
    r = dragkit(*base, "-o", out, env_extra=env)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    p = rec["params"]
    assert rec["method"] == "adaptivedrag" and p["mask"] == "auto" and rec["has_mask"]
    assert p["supervision"] == p["tracker"] == "semantic" and p["backtrack"] and p["schedule"] == "adaptive"
    assert p["inversion_strength"] == 0.8 and p["closs_weight"] == 100.0
    assert len(rec["info"]["closs"]) == 2 and 0 < rec["info"]["auto_mask"]["fraction"] < 1
    assert 3 <= len(rec["trajectory"]) - 1 <= 6  # the adaptive schedule: 3 steps planned, at most 6
    m = np.asarray(Image.open(tmp_path / "ad.mask.png"))
    assert m.shape == (64, 64) and m[30, 20] == 255  # the handle (x=20, y=30) may change
    # --mask none overrides the preset's automatic mask
    out2 = tmp_path / "nomask.png"
    r = dragkit(*base, "--mask", "none", "-o", out2, env_extra=env)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out2.with_suffix(".json").read_text())
    assert rec["params"]["mask"] == "none" and not rec["has_mask"] and not (tmp_path / "nomask.mask.png").exists()


@pytest.mark.skipif(not SAMPLE.exists(), reason="../shared/data/dragbench is not beside the checkout")
@pytest.mark.parametrize(
    ("method", "sets", "sampler"),
    [
        ("gooddrag", ["lora_steps=2", "drag_steps=2", "drag_phases=2", "inference_steps=10"], "alternate"),
        ("fastdrag", [], "warp"),
    ],
)
def test_the_new_presets_run_a_dragbench_sample_through_bench_and_eval(tiny_sd, tmp_path, method, sets, sampler):
    dragbench = SAMPLE.parents[1]
    run = tmp_path / "run"
    args = ["bench", dragbench, "--categories", SAMPLE.parent.name, "--limit", "1", "--method", method]
    args += ["--model", tiny_sd, "-o", run, "-q", "--set", "mutual_attn_start_layer=4"]
    args += [a for s in sets for a in ("--set", s)]
    r = dragkit(*args, env_extra={"DRAGKIT_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    (rec_path,) = run.glob("samples/*/*/result.json")
    rec = json.loads(rec_path.read_text())
    assert rec["method"] == method and rec["params"]["sampler"] == sampler and rec["has_mask"]
    assert Image.open(rec_path.with_name("result.png")).size == Image.open(rec_path.with_name("source.png")).size
    if method == "fastdrag":  # one warp, no optimization, no LoRA
        assert rec["info"]["lora"] == "none" and rec["info"]["steps"] == 0 and rec["info"]["warp"]["region_cells"] > 0
    else:  # LoRA, then two drag phases of two updates each, both in the trajectory
        assert rec["info"]["lora"] == "trained" and rec["info"]["drag_phases"] == 2 and rec["info"]["steps"] == 4
        assert {s["phase"] for s in rec["trajectory"]} == {0, 1}
    r = dragkit("eval", run, "--md", "alex", "-q")
    assert r.returncode == 0, r.stderr
    o = json.loads((run / "metrics.json").read_text())["overall"]
    assert o["samples"] == 1 and o["pairs"] >= 1 and 0 < o["if"] < 1 and np.isfinite(o["md_alex"])
    assert f"# {method} on dragbench" in (run / "metrics.md").read_text()
