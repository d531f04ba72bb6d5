"""Every diffusion preset through the CLI on a tiny random-weight model of every checkpoint family.

Builds each family of ``dragkit.utils.families.FAMILIES`` from the real configs (``--configs``, default
``../shared/data/model_configs``), then runs ``dragkit edit`` once per (family, preset) with a short budget and records
whether it finished, what the result's JSON says was carried over to the family (``adapted_to_model``) and the error
line when it did not. Writes ``OUT/families.json`` and a Markdown table ``OUT/families.md``; rerun to resume.

    python scripts/families_check.py -o out/families   # then copy out/families/families.json to docs/model_families/
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dragkit.methods import METHODS
from dragkit.utils.families import FAMILIES, build_family, build_taesd, self_attention_layers

SHORT = ["--set", "drag_steps=3", "--set", "lora_steps=2", "--set", "resize_width=0", "--set", "drag_phases=2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--configs", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/model_configs")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--methods", default=",".join(n for n, m in METHODS.items() if m.engine == "diffusion"))
    args = ap.parse_args()
    out, models = args.out, args.out / "models"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(out / "image.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[20:48, 24:52] = 255
    Image.fromarray(mask).save(out / "mask.png")
    taesd = models / "taesd"
    if not (taesd / "config.json").exists():
        build_taesd(taesd, args.configs)
    record = out / "families.json"
    results = json.loads(record.read_text()) if record.exists() else {}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for family in args.families.split(","):
        folder = models / family
        if not (folder / "model_index.json").exists():
            build_family(family, folder, args.configs)
        sa = self_attention_layers(json.loads((folder / "unet" / "config.json").read_text()))
        for method in args.methods.split(","):
            key = f"{family}/{method}"
            if key in results:
                continue
            extra = ["--mask", str(out / "mask.png")]
            if method == "inpaint4drag":
                extra += ["--set", "inpaint_lora=none", "--set", f"inpaint_vae={taesd}"]
            cmd = [sys.executable, "-m", "dragkit", "edit", str(out / "image.png"), "--model", str(folder),
                   "--method", method, "--drag", "34,30:40,26", "-o", str(out / "runs" / f"{family}-{method}.png"),
                   "-q", *SHORT, *extra]  # fmt: skip
            t = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            row = {"family": family, "method": method, "self_attention_layers": sa, "rc": p.returncode,
                   "seconds": round(time.perf_counter() - t, 1)}  # fmt: skip
            if p.returncode == 0:
                info = json.loads((out / "runs" / f"{family}-{method}.json").read_text())
                row["adapted_to_model"] = info.get("info", info).get("adapted_to_model")
            else:
                lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
                row["error"] = lines[-1][:300] if lines else ""
            results[key] = row
            tmp = record.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1))
            tmp.replace(record)
            print(key, row["rc"], row.get("error", ""), row["seconds"], flush=True)
    methods = args.methods.split(",")
    lines = ["| family (self-attention layers) | " + " | ".join(f"`{m}`" for m in methods) + " |",
             "|---|" + "---|" * len(methods)]  # fmt: skip
    for family in args.families.split(","):
        cells = []
        for m in methods:
            r = results.get(f"{family}/{m}")
            cells.append("–" if r is None else ("ok" if r["rc"] == 0 else "refused" if "ParameterError" in r.get(
                "error", "") or "error:" in r.get("error", "") else "FAILS"))  # fmt: skip
        sa = next((r["self_attention_layers"] for k, r in results.items() if k.startswith(family + "/")), "?")
        lines.append(f"| {family} ({sa}) | " + " | ".join(cells) + " |")
    (out / "families.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
