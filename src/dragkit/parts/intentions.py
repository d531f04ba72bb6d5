"""LucidDrag's intention reasoner (Cui et al., NeurIPS 2024, §3.1): before dragging, decide *what* the drag means —
N intentions, each an object description, a source prompt, a target prompt and a confidence.

Two reasoners behind one call, :func:`reason`:

- :class:`LLMReasoner`, a client for any OpenAI-compatible chat endpoint (``POST {base}/chat/completions``): it
  sends the drag's geometry, the user's prompt and optionally the image (a data URL, for vision models), asks
  for strict JSON and validates the answer (one retry, then a clear error; a timeout per request). The key comes
  from the caller or the environment (``DRAGKIT_LLM_KEY``, else ``OPENAI_API_KEY``) and goes only into the
  ``Authorization`` header: never into errors, logs or results.
- the built-in offline reasoner, :func:`geometry_intentions`: it classifies the drag's geometry (move, enlarge,
  shrink, stretch, rotate) from the points and the mask and composes the prompts from the user's prompt.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..core.errors import DragkitError

KINDS = ("move", "enlarge", "shrink", "stretch", "rotate")


class ReasonerError(DragkitError):
    """The intention endpoint failed or answered something unusable (the message never holds the key)."""


@dataclass(frozen=True)
class Intention:
    """One reading of a drag: what is dragged (``object``), the prompts before and after, how likely."""

    object: str
    source_prompt: str
    target_prompt: str
    confidence: float
    kind: str = "llm"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------- geometry


def classify_drag(
    handles: Sequence[Sequence[float]], targets: Sequence[Sequence[float]], mask: np.ndarray | None = None
) -> dict[str, float]:
    """Scores in [0, 1] for each kind of drag, from ``(x, y)`` points (and the editable mask when given).

    With ``d_i = t_i − h_i`` and ``c`` the handles' centroid:

    - **move**: the displacements agree, ``1 − spread/length`` (``spread`` the RMS deviation from their mean);
    - **enlarge / shrink** (two handles or more): the share of the motion that points away from / toward ``c``
      (mean radial component over mean length), when every handle agrees in sign;
    - **rotate** (two handles or more): the share that is tangential around ``c``, all in the same sense;
    - **stretch**: outward motion along one axis — two or more handles where some stay put (anchors) while the
      others move away from ``c``; or a single handle on the edge of the mask pulled outward from the mask's
      centre (extending the region).

    A single pair without a mask is a move.
    """
    h = np.asarray(handles, dtype=float).reshape(-1, 2)
    t = np.asarray(targets, dtype=float).reshape(-1, 2)
    d = t - h
    lengths = np.linalg.norm(d, axis=1)
    scale = float(lengths.mean()) if len(d) else 0.0
    scores = dict.fromkeys(KINDS, 0.0)
    if scale < 1e-9:
        return scores
    spread = float(np.sqrt(((d - d.mean(0)) ** 2).sum(1).mean()))
    scores["move"] = max(0.0, 1.0 - spread / scale)
    if len(h) >= 2:
        c = h.mean(0)
        r = h - c
        rn = np.linalg.norm(r, axis=1, keepdims=True)
        r = np.divide(r, rn, out=np.zeros_like(r), where=rn > 1e-9)
        radial = (d * r).sum(1)
        tangential = d[:, 0] * r[:, 1] * -1 + d[:, 1] * r[:, 0]  # cross(r, d): + = clockwise in image (y down)
        moving = lengths > 0.25 * lengths.max()
        if moving.any():
            rad, tan = radial[moving], tangential[moving]
            if (rad > 0).all():
                share = float(rad.mean() / lengths[moving].mean())
                anchors = (~moving).any()
                scores["stretch" if anchors else "enlarge"] = share
            elif (rad < 0).all():
                scores["shrink"] = float(-rad.mean() / lengths[moving].mean())
            if (tan > 0).all() or (tan < 0).all():
                scores["rotate"] = float(np.abs(tan).mean() / lengths[moving].mean())
        scores["move"] *= 1.0 - max(scores["enlarge"], scores["shrink"], scores["rotate"], scores["stretch"])
    elif mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        centre = np.array([xs.mean(), ys.mean()])
        x, y = (round(float(v)) for v in h[0])
        hgt, wid = mask.shape
        y0, y1, x0, x1 = max(y - 2, 0), min(y + 3, hgt), max(x - 2, 0), min(x + 3, wid)
        window = mask[y0:y1, x0:x1]
        on_edge = window.any() and not window.all()
        out = h[0] - centre
        if on_edge and np.linalg.norm(out) > 1e-9 and float(d[0] @ out) > 0:
            scores["stretch"] = float(d[0] @ out / (np.linalg.norm(out) * lengths[0]))
            scores["move"] *= 1.0 - scores["stretch"]
    return scores


def _direction(d: np.ndarray) -> str:
    ang = math.degrees(math.atan2(-d[1], d[0])) % 360  # image y points down
    names = [
        "right",
        "up and to the right",
        "up",
        "up and to the left",
        "left",
        "down and to the left",
        "down",
        "down and to the right",
    ]
    return names[int(((ang + 22.5) % 360) // 45)]


def _phrase(kind: str, obj: str, handles: np.ndarray, targets: np.ndarray) -> str:
    d = (targets - handles).mean(0)
    if kind == "move":
        return f"with the {obj} moved {_direction(d)}"
    if kind == "enlarge":
        return f"with a larger {obj}"
    if kind == "shrink":
        return f"with a smaller {obj}"
    if kind == "stretch":
        return f"with a {'wider' if abs(d[0]) >= abs(d[1]) else 'taller'} {obj}"
    r, dd = handles - handles.mean(0), targets - handles
    tan = float(np.mean(r[:, 0] * dd[:, 1] - r[:, 1] * dd[:, 0]))  # cross(r, d) > 0: clockwise on screen
    return f"with the {obj} rotated {'clockwise' if tan > 0 else 'counterclockwise'}"


def geometry_intentions(
    handles: Sequence[Sequence[float]],
    targets: Sequence[Sequence[float]],
    prompt: str = "",
    mask: np.ndarray | None = None,
    n: int = 3,
) -> list[Intention]:
    """The built-in reasoner: up to ``n`` intentions, the most likely first, one per kind of drag with a positive
    score (always at least one). The source prompt is the user's (or "a photo"); the target adds what the drag
    does to "the object" (the built-in reasoner cannot see what the object is). Confidences are the scores
    normalized to sum to 1 over the kinds returned."""
    scores = classify_drag(handles, targets, mask)
    ranked = sorted((k for k in KINDS if scores[k] > 0), key=lambda k: -scores[k])[: max(n, 1)] or ["move"]
    total = sum(scores[k] for k in ranked) or 1.0
    src = prompt.strip() or "a photo"
    h, t = np.asarray(handles, float).reshape(-1, 2), np.asarray(targets, float).reshape(-1, 2)
    return [
        Intention(
            object="the object",
            source_prompt=src,
            target_prompt=f"{src}, {_phrase(k, 'object', h, t)}",
            confidence=round(scores[k] / total if scores[k] > 0 else 1.0, 4),
            kind=k,
        )
        for k in ranked
    ]


# ---------------------------------------------------------------------------------------------------- LLM endpoint

SYSTEM = (
    "You read point-based image edits. A user dragged handle points to target points on an image. Propose the "
    "most likely intentions behind the drag. Answer with JSON only, no prose: "
    '{"intentions": [{"object": str, "source_prompt": str, "target_prompt": str, "confidence": number}]} with '
    "confidence in [0, 1], most likely first. source_prompt describes the image before the edit, target_prompt "
    "after it."
)


def image_data_url(image: Any) -> str:
    """A PIL image as a PNG ``data:`` URL, as OpenAI-compatible vision endpoints take images."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def parse_intentions(text: str, n: int) -> list[Intention]:
    """Validate an endpoint's answer: JSON (optionally in a code fence) with an ``intentions`` list of objects
    holding non-empty strings ``object``, ``source_prompt``, ``target_prompt`` and a number ``confidence`` in
    [0, 1]. Returns at most ``n``, sorted by confidence; raises :class:`ValueError` saying what is wrong."""
    m = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    body = m.group(1) if m else text
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at char {e.pos})") from None
    items = data.get("intentions") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError("no non-empty 'intentions' list")
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise ValueError(f"intention {i + 1} is not an object")
        for key in ("object", "source_prompt", "target_prompt"):
            if not isinstance(it.get(key), str) or not it[key].strip():
                raise ValueError(f"intention {i + 1}: '{key}' is missing or not a non-empty string")
        c = it.get("confidence")
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 <= c <= 1:
            raise ValueError(f"intention {i + 1}: 'confidence' must be a number in [0, 1], got {c!r}")
        out.append(Intention(it["object"].strip(), it["source_prompt"].strip(), it["target_prompt"].strip(), float(c)))
    return sorted(out, key=lambda x: -x.confidence)[:n]


@dataclass
class LLMReasoner:
    """A client for an OpenAI-compatible chat endpoint. ``base_url`` like ``http://127.0.0.1:8000/v1``."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)  # never shown: not in repr, errors, logs or results
    timeout: float = 60.0
    send_image: bool = True

    def key(self) -> str | None:
        return self.api_key or os.environ.get("DRAGKIT_LLM_KEY") or os.environ.get("OPENAI_API_KEY")

    def shown_url(self) -> str:
        """The endpoint as errors and results show it: credentials in the address (``user:pass@``) removed."""
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.username is None and parts.password is None:
            return self.base_url
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def __repr__(self) -> str:
        return f"LLMReasoner(base_url={self.shown_url()!r}, model={self.model!r}, timeout={self.timeout!r})"

    def request(self, messages: list[dict[str, Any]]) -> str:
        url = self.base_url.rstrip("/") + "/chat/completions"
        shown = self.shown_url().rstrip("/") + "/chat/completions"
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0.2}).encode()
        headers = {"Content-Type": "application/json"}
        key = self.key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read().decode("utf-8", "replace"))
        except TimeoutError:
            raise ReasonerError(f"intention endpoint {shown} did not answer within {self.timeout:g} s") from None
        except urllib.error.HTTPError as e:
            raise ReasonerError(f"intention endpoint {shown} answered HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise ReasonerError(f"cannot reach the intention endpoint {shown}: {e.reason}") from None
        except json.JSONDecodeError:
            raise ReasonerError(f"intention endpoint {shown} did not answer with JSON") from None
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise ReasonerError(f"intention endpoint {shown} answered without choices[0].message.content") from None

    def __call__(
        self,
        handles: Sequence[Sequence[float]],
        targets: Sequence[Sequence[float]],
        prompt: str = "",
        image: Any = None,
        n: int = 3,
    ) -> list[Intention]:
        pairs = "; ".join(
            f"handle ({h[0]:g}, {h[1]:g}) -> target ({t[0]:g}, {t[1]:g})"
            for h, t in zip(handles, targets, strict=True)
        )
        size = f" The image is {image.size[0]}x{image.size[1]} pixels (x right, y down)." if image is not None else ""
        text = f"Image description: {prompt or '(none)'}.{size} Drags: {pairs}. Give {n} intentions."
        content: Any = text
        if image is not None and self.send_image:
            url = image_data_url(image)
            content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]
        problem = ""
        for attempt in range(2):  # one retry, telling the model what was wrong
            answer = self.request(messages)
            try:
                return parse_intentions(answer, n)
            except ValueError as e:
                problem = str(e)
                if attempt == 0:
                    messages = [
                        *messages,
                        {"role": "assistant", "content": answer},
                        {"role": "user", "content": f"That answer was invalid: {problem}. Answer with the JSON only."},
                    ]
        raise ReasonerError(f"the intention endpoint's answer was invalid twice: {problem}")


def reason(
    handles: Sequence[Sequence[float]],
    targets: Sequence[Sequence[float]],
    prompt: str = "",
    *,
    image: Any = None,
    mask: np.ndarray | None = None,
    n: int = 3,
    llm: LLMReasoner | None = None,
) -> list[Intention]:
    """N intentions for a drag: from the endpoint when one is given, else from the built-in geometry reasoner."""
    if llm is not None:
        return llm(handles, targets, prompt, image, n)
    return geometry_intentions(handles, targets, prompt, mask, n)
