"""The benchmark harness: dataset readers (and the pickle guard), `dragkit bench` (atomic bundles, failures
recorded, resume after a kill, two processes) and `dragkit eval` (MD, IF, DAI against hand-computed values)."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit.bench.datasets import open_dataset, pair_count, read_bundles
from dragkit.bench.evaluate import dai
from dragkit.core.errors import InputError

from .helpers import ENV, Endpoint, dragkit, make_drag100

DRAGBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "dragbench"
needs_dragbench = pytest.mark.skipif(not DRAGBENCH.is_dir(), reason="../shared/data/dragbench is not here")


@needs_dragbench
def test_dragbench_reads_all_205_samples_through_the_restricted_unpickler():
    samples = open_dataset(DRAGBENCH)
    assert len(samples) == 205 and pair_count(samples) == 349
    assert len({s.category for s in samples}) == 10
    s = samples[0]
    assert s.id == "animals/JH_2023-09-14-1820-16" and s.prompt == "a photo of a dog"
    assert s.handles == [(331.0, 179.0)] and s.targets == [(217.0, 177.0)]
    assert s.mask.shape == (512, 512) and s.mask.dtype == bool and 0 < s.mask.mean() < 1
    req = s.request()
    assert req.size == (512, 512)
    assert [x.category for x in open_dataset(DRAGBENCH, categories=["human_head"], limit=3)] == ["human_head"] * 3
    with pytest.raises(InputError, match="categories dogs: not in"):
        open_dataset(DRAGBENCH, categories=["dogs"])


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "data" / "cat" / "evil"
    d.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(d / "original_image.png")
    (d / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": "x", "points": [[1, 1], [2, 2]], "mask": Boom()}))
    with pytest.raises(InputError, match=r"meta_data.pkl: cannot read it safely \(refusing to unpickle posix.system"):
        open_dataset(tmp_path / "data")
    assert not (tmp_path / "pwned").exists()


def test_drag100_format_and_its_errors(tmp_path):
    root = make_drag100(tmp_path / "d100", n=2)
    samples = open_dataset(root)
    assert [s.id for s in samples] == ["cats/s1", "dogs/s0"]
    s = samples[1]
    assert s.handles == [(20.0, 20.0), (40.0, 40.0)] and s.targets == [(30.0, 24.0), (44.0, 36.0)]
    assert s.mask[30, 30] and not s.mask[5, 5]
    (root / "dogs" / "s0" / "points.json").write_text(json.dumps({"points": [[1, 2], [3, 4], [5, 6]]}))
    with pytest.raises(InputError, match="3 points; handles and targets alternate"):
        open_dataset(root)
    with pytest.raises(InputError, match="not a DragBench folder"):
        open_dataset(tmp_path)


def test_dai_matches_a_hand_computed_value():
    src = np.zeros((9, 9, 3))
    res = np.zeros((9, 9, 3))
    src[4, 2] = [1.0, 0.5, 0.0]  # the handle's pixel
    res[4, 6] = [0.0, 0.5, 0.0]  # the target's pixel differs by 1 in red
    assert dai(src, res, [(2, 4)], [(6, 4)], 0) == pytest.approx(1.0)
    # radius 1: the 3x3 patches differ only at the centre: 1 / 9; two identical pairs: divided by 2 once
    assert dai(src, res, [(2, 4), (2, 4)], [(6, 4), (6, 4)], 1) == pytest.approx(1 / 9)
    assert dai(src, src, [(2, 4)], [(2, 4)], 5) == 0.0  # off-image offsets are left out, not an error


def test_md_equals_a_hand_computed_value_on_synthetic_features():
    from dragkit.bench.metrics import mean_distance

    class OneHot:  # each image's feature: one-hot of the brightest pixel's colour channel pattern by position
        name = "onehot"

        def __call__(self, image, prompt=""):
            a = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
            return a + 1e-3

    src = np.zeros((20, 30, 3), np.uint8)
    src[5, 4] = [255, 0, 0]
    src[12, 20] = [0, 255, 0]
    out = np.zeros_like(src)
    out[8, 10] = [255, 0, 0]  # red moved to (10, 8); green gone to (25, 15)
    out[15, 25] = [0, 255, 0]
    md = mean_distance(Image.fromarray(src), Image.fromarray(out), [(4, 5), (20, 12)], [(10, 9), (25, 12)], OneHot())
    assert md.matches == [(10.0, 8.0), (25.0, 15.0)]
    assert md.distances == pytest.approx([1.0, 3.0]) and md.mean == pytest.approx(2.0)


def test_if_is_one_for_identical_images_and_lpips_matches_an_independent_computation():
    from dragkit.bench.metrics import lpips_distance
    from dragkit.bench.metrics.lpips import weights_path
    from dragkit.utils.io import safe_unpickle

    rng = np.random.default_rng(1)
    a = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    b = Image.fromarray(
        np.clip(np.asarray(a, dtype=np.int16) + rng.integers(-40, 40, (50, 70, 3)), 0, 255).astype(np.uint8)
    )
    assert 1 - lpips_distance(a, a, resize=(224, 224)) == pytest.approx(1.0, abs=1e-6)
    # LPIPS v0.1 written out here from the raw weights: scaling layer, AlexNet, unit-normalize, 1x1 heads, mean
    p = safe_unpickle(weights_path())

    def prep(im):
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        return (x - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor(
            [0.458, 0.448, 0.450]
        ).view(1, 3, 1, 1)

    def feats(x):
        out = []
        for i, (stride, pad) in enumerate([(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]):
            if i in (1, 2):
                x = torch.nn.functional.max_pool2d(x, 3, 2)
            k = p["AlexNet_0"][f"Conv_{i}"]
            w = torch.from_numpy(np.ascontiguousarray(k["kernel"].transpose(3, 2, 0, 1)))
            x = torch.relu(torch.nn.functional.conv2d(x, w, torch.from_numpy(np.asarray(k["bias"])), stride, pad))
            out.append(x)
        return out

    total = 0.0
    for i, (f0, f1) in enumerate(zip(feats(prep(a)), feats(prep(b)), strict=True)):
        n0 = f0 / (f0.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        n1 = f1 / (f1.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        lin = torch.from_numpy(np.asarray(p[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])).reshape(-1)
        total += float(((n0 - n1) ** 2 * lin.view(1, -1, 1, 1)).sum(1).mean())
    assert lpips_distance(a, b, resize=(224, 224)) == pytest.approx(total, rel=1e-4)
    assert 0.05 < total < 1


def test_dift_features_on_a_tiny_model(pipe):
    from dragkit.bench.metrics.dift import DiftFeatures

    dift = DiftFeatures(pipe, ensemble=2, up_ft_index=1)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    torch.manual_seed(42)
    f1 = dift(img, "a photo")
    torch.manual_seed(42)
    f2 = dift(img, "a photo")
    assert f1.shape[1:] == (40, 48) and torch.equal(f1, f2) and "t=261" in dift.name


@pytest.mark.slow
@pytest.mark.subprocess
def test_bench_runs_identity_records_failures_and_eval_measures_it(tmp_path):
    data = make_drag100(tmp_path / "d", n=4, bad=2)  # sample 2's target lies outside its image
    run = tmp_path / "run"
    r = dragkit("bench", data, "--method", "identity", "-o", run, "-q")
    assert r.returncode == 1 and "1 failed" in r.stdout and "dogs/s2" in r.stderr
    err = json.loads((run / "samples" / "dogs" / "s2" / "error.json").read_text())
    assert "target 1 at (84, 24) is outside the 64x64 image" in err["error"]
    rec = json.loads((run / "samples" / "cats" / "s1" / "result.json").read_text())
    assert rec["method"] == "identity" and rec["bench"]["seconds"] >= 0 and rec["sample"] == "cats/s1"
    back = {s.id: s for s in read_bundles(run)}  # a run reads back as its dataset
    orig = {s.id: s for s in open_dataset(data)}
    assert set(back) == set(orig)
    assert back["cats/s1"].handles == orig["cats/s1"].handles and (back["cats/s1"].mask == orig["cats/s1"].mask).all()
    r = dragkit("eval", run, "--md", "alex", "-q")
    assert r.returncode == 0, r.stderr
    m = json.loads((run / "metrics.json").read_text())
    o = m["overall"]
    assert o["samples"] == 3 and o["pairs"] == 6 and m["failed"] == ["dogs/s2"]
    assert o["if"] == 1.0 and o["lpips"] == 0.0  # identity: nothing changed
    assert o["realism"] == pytest.approx(0, abs=1e-5) and o["torn"] == 0  # ... and every patch is the source's
    assert o["md_alex"] == pytest.approx(o["mean_drag_length"], abs=2.0)  # nothing moved: MD ≈ the drag length
    assert set(m["categories"]) == {"cats", "dogs"} and "| **all** | 3 | 6 |" in (run / "metrics.md").read_text()
    assert Image.open(run / "metrics.png").width > 0 and Image.open(run / "contact_sheet.png").width > 300
    r2 = dragkit("eval", run, "--md", "alex", "-q")
    assert "3 samples measured before" in r2.stderr
    r3 = dragkit("eval", "--compare", run, run)
    assert r3.returncode == 0 and r3.stdout.count("`identity`") == 2
    bad = dragkit("bench", data, "--method", "draggan", "-o", run, "-q")
    assert bad.returncode == 2 and "holds a different run (method: 'identity' there, 'draggan' now)" in bad.stderr
    bad = dragkit("bench", data, "-o", tmp_path / "r2", "--categories", "birds")
    assert bad.returncode == 2 and "categories birds: not in" in bad.stderr
    bad = dragkit("eval", data)
    assert bad.returncode == 2 and "not a dragkit run" in bad.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_processes_share_the_samples(tmp_path):
    data = make_drag100(tmp_path / "d", n=6)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "dragkit", "bench", str(data), "--method", "identity", "-o", str(run), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = sorted(json.loads(p.read_text())["bench"]["rank"] for p in run.glob("samples/*/*/result.json"))
    assert ranks == [0, 0, 0, 1, 1, 1]
    assert "process 1 of 2" in r.stdout and "process 2 of 2" in r.stdout


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_gscore_judge_through_a_loopback_endpoint(tmp_path):
    data = make_drag100(tmp_path / "d", n=2)
    run = tmp_path / "run"
    assert dragkit("bench", data, "-o", run, "-q").returncode == 0
    with Endpoint(['{"score": 7}', "Score: 9 out of 10"]) as ep:
        r = dragkit("eval", run, "--md", "alex", "-q", "--gscore-url", ep.url, "--gscore-model", "judge")
    assert r.returncode == 2 and "GScore judge answered 'Score: 9 out of 10'" in r.stderr
    with Endpoint(['{"score": 7}', '{"score": 8}']) as ep:
        r = dragkit("eval", run, "--md", "alex", "-q", "--gscore-url", ep.url, "--gscore-model", "judge")
    assert r.returncode == 0, r.stderr
    assert "1 samples measured before" in r.stderr and len(ep.requests) == 1  # the judged sample was kept
    assert json.loads((run / "metrics.json").read_text())["overall"]["gscore"] == 7.0
    assert ep.requests[0]["body"]["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png")


def test_eval_offline_leads_with_the_way_out(tmp_path, capsys):
    from dragkit.interfaces.cli import main

    data = make_drag100(tmp_path / "d", n=1)
    run = tmp_path / "run"
    with pytest.raises(SystemExit):
        main(["bench", str(data), "--method", "identity", "-o", str(run), "-q"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["eval", str(run), "-q"])  # the official MD by default: DIFT's SD 2.1 is not here
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("dragkit: error: measure without DIFT's model with --md alex")
