"""One table from several ``scripts/gan_drag_eval.py`` runs: every method's rows pooled per drag length (short or
long, by each run's length range) and, with ``--by-handles``, per handle kind too.

For each method and group: the median MD before → after, how many drags ended closer and how many lost the content,
the median realism inside the region and how many edits it flags as torn, the mean LPIPS outside the mask and the
mean seconds per edit. A method that is in some runs only is pooled over those (its drag count says so); a drag
that one method edited in two of the runs counts once::

    python scripts/combine_evals.py out/heldout/faces64_* out/heldout/others_* --by-handles
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

LOST_PX = 5.0  # as scripts/gan_drag_eval.py


def runs(folders: list[Path]) -> list[tuple[dict[str, Any], str, list[dict[str, Any]]]]:
    """``(meta, method, rows)`` for every method of every run folder (one method: results.json at the top)."""
    out = []
    for folder in (f for f in folders if f.is_dir()):
        top = folder / "results.json"
        files = [top] if top.is_file() else sorted(folder.glob("*/results.json"))
        if not files:
            raise SystemExit(f"{folder}: no results.json (is it a gan_drag_eval output folder?)")
        for f in files:
            data = json.loads(f.read_text())
            out.append((data, data["method"], data["rows"]))
    return out


def group_of(meta: dict[str, Any], by_handles: bool) -> str:
    length = "long" if meta["length_range"][0] >= 15 else "short"
    return f"{length}, {meta.get('handles', 'distinctive')}" if by_handles else length


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "n": len(rows),
        "md_before": float(np.median([r["md_before"] for r in rows])),
        "md_after": float(np.median([r["md_after"] for r in rows])),
        "improved": sum(r["md_after"] < r["md_before"] for r in rows),
        "lost": sum(r["md_after"] > r["md_before"] + LOST_PX for r in rows),
        "realism": float(np.median([r["realism"] for r in rows])),
        "torn": sum(bool(r["torn"]) for r in rows),
        "lpips_outside": float(np.mean([r["lpips_outside"] for r in rows])),
        "seconds": float(np.mean([r["seconds"] for r in rows])),
    }


def table(folders: list[Path], by_handles: bool) -> tuple[str, dict[str, dict[str, Any]]]:
    pooled: dict[str, dict[str, list[dict[str, Any]]]] = {}
    seen: set[tuple] = set()  # a drag edited by one method in two runs counts once (the first run's row)
    for meta, method, rows in runs(folders):
        for r in rows:
            key = (method, r["seed"], tuple(r["handle"]), tuple(r["target"]))
            if key not in seen:
                seen.add(key)
                pooled.setdefault(method, {}).setdefault(group_of(meta, by_handles), []).append(r)
    groups = sorted({g for per in pooled.values() for g in per}, key=lambda g: (g.startswith("long"), g))
    result = {m: {g: summary(rs) for g, rs in per.items()} for m, per in pooled.items()}
    head = "| method | " + " | ".join(f"{g}: MD before → after; realism; torn" for g in groups)
    head += " | LPIPS outside | s / edit |"
    lines = [head, "|---|" + "---|" * len(groups) + "---:|---:|"]
    for method, per in result.items():
        cells = []
        for g in groups:
            s = per.get(g)
            cells.append(
                "–"
                if s is None
                else f"{s['md_before']:.2f} → {s['md_after']:.2f} ({s['improved']}/{s['n']} closer, "
                f"{s['lost']} lost); {s['realism']:.3f}; {s['torn']}/{s['n']}"
            )
        every = [s for s in per.values()]
        lpips = sum(s["lpips_outside"] * s["n"] for s in every) / sum(s["n"] for s in every)
        secs = sum(s["seconds"] * s["n"] for s in every) / sum(s["n"] for s in every)
        lines.append(f"| `{method}` | " + " | ".join(cells) + f" | {lpips:.4f} | {secs:.1f} |")
    return "\n".join(lines) + "\n", result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--by-handles", action="store_true", help="a group per handle kind as well as per length")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    text, result = table(args.folders, args.by_handles)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
