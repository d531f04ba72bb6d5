"""The command line, run as a user runs it: a subprocess, exit codes, one-line errors, files on disk."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from .helpers import dragkit

pytestmark = [pytest.mark.subprocess]


@pytest.fixture
def face(face_png):
    return face_png


FAST = ["--method", "draggan", "--set", "drag_steps=5", "--set", "invert_steps=10", "--set", "invert_restarts=2", "-q"]


@pytest.mark.slow
def test_edit_writes_png_and_json(face, tmp_path):
    out = tmp_path / "out.png"
    r = dragkit("edit", face, "--drag", "31,50:31,45", "-o", out, *FAST)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    assert Image.open(out).size == (64, 64)
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["method"] == "draggan"
    assert rec["params"]["drag_steps"] == 5 and rec["params"]["r_p"] == 4
    assert rec["points"]["handles"] == [[31.0, 50.0]] and rec["points"]["targets"] == [[31.0, 45.0]]
    assert len(rec["points"]["final_handles"]) == 1
    assert rec["trajectory"][0]["step"] == 0 and "motion" in rec["trajectory"][0]["losses"]
    assert {"invert", "drag", "total"} <= set(rec["timings"])
    assert rec["info"]["source"] == "inverted" and rec["info"]["inversion_psnr"] > 10
    assert "torch" in rec["versions"]
    # the recipe also travels inside the PNG
    assert json.loads(Image.open(out).text["dragkit"])["method"] == "draggan"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.png"]


@pytest.mark.slow
def test_edit_with_mask_and_noop_pair(face, tmp_path):
    m = np.zeros((64, 64), np.uint8)
    m[35:64, 15:50] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    out = tmp_path / "o.png"
    r = dragkit(
        "edit", face, "--drag", "31,50:31,45", "--drag", "10,10:10,10", "--mask", tmp_path / "m.png", "-o", out, *FAST
    )
    assert r.returncode == 0, r.stderr
    assert "nothing to move" in r.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["has_mask"] and rec["params"]["mask"].endswith("m.png") and rec["info"]["noop_pairs"] == [2]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--drag", "64,10:10,10"], "handle 1 at (64, 10) is outside the 64x64 image"),
        (["--drag", "10,10:10,80"], "target 1 at (10, 80) is outside"),
        (["--drag", "10,10,12"], "expected X1,Y1:X2,Y2"),
        (["--drag", "10,10:12"], "expected X1,Y1:X2,Y2"),
        (["--drag", "a,b:c,d"], "expected X1,Y1:X2,Y2"),
        (["--drag", "10,10:12,12", "--method", "nope"], "unknown method 'nope'"),
        (["--drag", "10,10:12,12", "--set", "r_q=2"], "unknown parameter 'r_q'"),
        (["--drag", "10,10:12,12", "--set", "drag_steps=-1"], "drag_steps=-1: must be ≥ 0"),
        (["--drag", "10,10:12,12", "--set", "latent_lr=nan"], "finite"),
        (["--drag", "10,10:12,12", "--mask", "MASK_WRONG"], "mask"),
        (["--drag", "10,10:12,12", "--mask", "MASK_NOTIMG"], "cannot read mask"),
        (["--drag", "10,10:12,12", "--mask", "auto", "--set", "auto_mask_segments=1"], "auto_mask_segments"),
        (["--drag", "10,10:12,12", "--device", "cuda"], "no CUDA device"),
        (["--drag", "10,10:12,12", "--dtype", "float16"], "the DCGAN runs in float32"),
        (["--drag", "10,10:12,12", "--dtype", "half"], "choose auto, float32"),
        (["--drag", "10,10:12,12", "--lora", "none"], "lora is a diffusion engine parameter"),
        ([], "no --drag given"),
    ],
)
def test_edit_user_mistakes(face, tmp_path, args, message):
    Image.new("L", (32, 32), 255).save(tmp_path / "wrong.png")
    (tmp_path / "notimg.png").write_text("hello")
    args = [str(tmp_path / "wrong.png") if a == "MASK_WRONG" else a for a in args]
    args = [str(tmp_path / "notimg.png") if a == "MASK_NOTIMG" else a for a in args]
    out = tmp_path / "o.png"
    r = dragkit("edit", face, "--method", "draggan", *args, "-o", out, "-q")  # a later --method wins
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dragkit: error:") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing", "truncated", "notimage", "dir"])
def test_edit_bad_input_files(tmp_path, face, kind):
    src = tmp_path / "in.png"
    if kind == "truncated":
        src.write_bytes(face.read_bytes()[:200])
    elif kind == "notimage":
        src.write_text("not an image at all")
    elif kind == "dir":
        src.mkdir()
    r = dragkit("edit", src, "--drag", "10,10:12,12", "-o", tmp_path / "o.png", "-q")
    assert r.returncode == 2 and r.stderr.startswith("dragkit: error:") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_edit_output_in_missing_folder(face, tmp_path):
    r = dragkit("edit", face, "--drag", "10,10:12,12", "-o", tmp_path / "nope" / "o.png", "-q")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_help_params_lists_names_and_defaults():
    r = dragkit("edit", "--help-params")
    assert r.returncode == 0
    for name in ("drag_steps", "latent_lr", "r_m", "r_p", "lam", "feature_block", "latent_block", "tracker"):
        assert name in r.stdout
    assert "\nloop\n* drag_steps " in r.stdout and "draggan 200" in r.stdout  # grouped by part, common ones marked
    assert max(len(line) for line in r.stdout.splitlines()) <= 100  # fits a terminal (100 columns when piped)
    one = dragkit("edit", "--help-params", "--method", "draggan")
    assert one.returncode == 0 and "draggan: 200" in one.stdout and "lora" not in one.stdout  # its engine's only


@pytest.mark.slow
def test_demo_writes_its_files(tmp_path):
    r = dragkit("demo", "-o", tmp_path / "demo", "-q")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert names == [
        "after.json",
        "after.png",
        "before.png",
        "before_after.png",
        "faces64_after.json",
        "faces64_after.png",
        "faces64_before_after.png",
        "trajectory.gif",
    ]
    # both halves move the content, judged independently (LPIPS-AlexNet features, not the method's tracker), and
    # keep the face outside the painted region
    rec = json.loads((tmp_path / "demo" / "after.json").read_text())
    assert rec["method"] == "dragkit-gan" and rec["has_mask"]
    demo = rec["info"]["demo"]
    assert demo["md_after"] <= 0.7 * demo["md_before"] and demo["lpips_outside_mask"] < 0.03
    gif = Image.open(tmp_path / "demo" / "trajectory.gif")
    assert gif.n_frames >= 2  # the source, then the edit's steps
    rec = json.loads((tmp_path / "demo" / "faces64_after.json").read_text())
    assert rec["method"] == "dragkit" and rec["info"]["model"] == "faces64" and rec["has_mask"]
    assert rec["params"]["composite"] == "mask" and rec["params"]["inversion_strength"] == 0.1
    demo64 = rec["info"]["demo"]
    assert demo64["md_after"] <= 0.7 * demo64["md_before"] and demo64["lpips_outside_mask"] < 0.03
    assert "faces64" in r.stdout and "LPIPS outside the mask" in r.stdout and "realism in the mask" in r.stdout
    for d in (demo, demo64):  # the realism measure ran on both halves (a number; not asserted low: docs/realism.md)
        assert 0 < d["realism"] < 1 and isinstance(d["torn"], bool)
    assert "Loading pipeline" not in r.stderr  # --quiet hides diffusers' bars too


def test_version(capsys):
    from dragkit import __version__
    from dragkit.interfaces.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"dragkit {__version__}"


@pytest.mark.slow
def test_a_growing_step_budget_and_the_time_limit_are_said(face_png, tmp_path, capsys):
    from dragkit.interfaces.cli import main

    def run(*args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        return e.value.code, capsys.readouterr()

    out = tmp_path / "a.png"
    common = ["edit", face_png, "--method", "draggan", "--drag", "20,30:34,30", "-q", "--mask", "none"]
    code, io = run(*common, "--set", "schedule=adaptive", "--set", "drag_steps=2", "--set", "adaptive_step_cap=5",
                   "-o", out)  # fmt: skip
    assert code == 0, io.err
    budget = json.loads(out.with_suffix(".json").read_text())["info"]["step_budget"]
    assert budget["asked"] == 2 and 2 < budget["final"] <= 5 and "adaptive_step_cap" in budget["why"]
    assert f"grew the budget from 2 to {budget['final']} steps (cap 5)" in io.out
    code, io = run(*common, "--method", "draggan", "--time-limit", "0.001", "-o", tmp_path / "t.png")
    info = json.loads((tmp_path / "t.json").read_text())["info"]
    assert code == 0 and info["stop_reason"] == "cancelled" and info["time_limit"] == 0.001
    assert "stopped at --time-limit 0.001 s" in io.out


def test_a_model_of_the_other_engine_points_to_a_method_that_fits(face_png, tmp_path, capsys):
    from dragkit.interfaces.cli import main

    for method, model, hint in (
        ("draggan", "faces64", "this is a diffusion model.*--method dragkit"),
        ("dragdiffusion", "dcgan-faces", "this is the face GAN.*--method dragkit-gan"),
    ):
        with pytest.raises(SystemExit) as e:
            main(
                [
                    "edit",
                    str(face_png),
                    "--method",
                    method,
                    "--model",
                    model,
                    "--drag",
                    "1,1:2,2",
                    "-o",
                    str(tmp_path / "o.png"),
                ]
            )
        err = capsys.readouterr().err
        assert e.value.code == 2 and re.search(hint, err) and err.count("\n") == 1, err


@pytest.mark.slow
@pytest.mark.subprocess
def test_long_work_is_visible_in_a_log(face, tmp_path):
    """stderr is a pipe here, not a terminal: tqdm would draw nothing, so the edit prints plain lines instead."""
    out = tmp_path / "o.png"
    args = ["edit", face, "--drag", "31,50:31,45", "-o", out, *FAST[:-1]]  # no -q
    r = dragkit(*args, env_extra={"DRAGKIT_LOG_EVERY": "0"})
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert any(ln.startswith("dragkit: invert: started") for ln in lines)  # the GAN inversion's bar, as lines
    assert any(re.match(r"dragkit: drag: step \d+/5 in \d+ s", ln) for ln in lines)  # periodic lines
    assert any(re.match(r"dragkit: drag: \d+\.\d s$", ln) for ln in lines)  # the stage, when it ends
    quiet = dragkit(*args, "-q", "-o", tmp_path / "q.png")
    assert not any(ln.startswith("dragkit: drag") for ln in quiet.stderr.splitlines())


@pytest.mark.slow
def test_without_a_method_a_photo_goes_to_diffusion_and_a_gan_face_to_the_gan(face_png, tmp_path, capsys):
    from dragkit.interfaces.cli import main
    from dragkit.utils.io import write_png

    def run(*args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        return e.value.code, capsys.readouterr()

    drag = ["--drag", "32,49:32,44", "-q"]
    code, io = run("edit", face_png, *drag, "-o", tmp_path / "p.png")  # a photo, offline: SD 1.5 is not here
    assert code == 2 and io.err.count("\n") == 1
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in io.err and "--model faces64" in io.err
    assert "--method draggan" in io.err
    code, io = run("edit", face_png, *drag, "--model", "someone/sd-model", "-o", tmp_path / "m.png")  # named, offline
    assert code == 2 and "'someone/sd-model'" in io.err and "--model faces64" in io.err and "no --method" not in io.err
    code, io = run("edit", face_png, *drag, "--model", "faces64", "-o", tmp_path / "f.png")
    chosen = json.loads((tmp_path / "f.json").read_text())["info"]["defaults_chosen"]
    assert code == 0 and chosen["method"] == "dragkit" and chosen["model"] == "faces64" and "[no --method" in io.out
    made = tmp_path / "made.png"  # as the demo writes its source: the PNG says the face GAN made it
    from PIL import Image

    write_png(made, Image.open(face_png), {"dragkit": json.dumps({"source": "dcgan-faces", "seed": 27})})
    code, io = run("edit", made, *drag, "--set", "drag_steps=2", "-o", tmp_path / "g.png")
    rec = json.loads((tmp_path / "g.json").read_text())
    assert code == 0 and rec["method"] == "dragkit-gan" and "face GAN" in rec["info"]["defaults_chosen"]["why"]


def test_edit_help_answers_which_method_which_model_and_where_and_lists_every_method():
    from dragkit.interfaces.cli import edit
    from dragkit.methods import METHODS

    doc = edit.__doc__
    for question in ("Which method:", "Which model:", "Where it goes:", "downloaded on first use"):
        assert question in doc
    listed = set(re.findall(r"[a-z][a-z0-9]*(?:-gan)?", doc.split("Methods:")[1].split("--help-params")[0]))
    assert {m for m in METHODS if m != "identity"} <= listed  # a new preset must be named here too


def test_root_help_first_screen_answers_the_three_questions(capsys):
    from dragkit.interfaces.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    head = text.split("Options")[0]  # before the option and command tables: the first screen
    for answer in ("dragkit demo", "Which method:", "faces64", "downloaded on first use", "no download", "OUT.json"):
        assert answer in head, answer


def test_in_a_log_a_diffusion_edit_runs_and_prints_its_stages(face_png, tmp_path, capsys):
    """With stderr not a terminal the bars become lines; the diffusion engine iterates tensors of timesteps through
    them (a one-element tensor holding timestep 0 once iterated as nothing)."""
    from dragkit.core.progress import LogBar, log_lines
    from dragkit.interfaces.cli import main

    try:
        assert list(LogBar(torch.tensor([0]))) == [0] and len(list(LogBar(torch.tensor([981, 0])))) == 2
        log_lines(True, every=3600)
        capsys.readouterr()
        bar = LogBar(desc="drag", total=6)
        for _ in range(100):  # an adaptive schedule grows the budget a step at a time: said once, not 100 times
            bar.total += 1
            bar.refresh()
        assert capsys.readouterr().err.count("the budget is now") == 1
        out = tmp_path / "f.png"
        with pytest.raises(SystemExit) as e:
            main(["edit", str(face_png), "--drag", "32,49:32,44", "--model", "faces64", "-o", str(out)])
        err = capsys.readouterr().err
        assert e.value.code == 0, err
        assert "dragkit: warp: " in err and "dragkit: inversion: " in err and out.is_file()
    finally:
        log_lines(False)
