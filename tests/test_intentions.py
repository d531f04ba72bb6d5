"""LucidDrag's intention reasoner: the built-in geometry reasoner and the OpenAI-compatible client, the latter
against a real HTTP server on 127.0.0.1 started here (valid, malformed, slow and failing answers)."""

import json

import numpy as np
import pytest
from PIL import Image

from dragkit.parts.intentions import (
    LLMReasoner,
    ReasonerError,
    classify_drag,
    geometry_intentions,
    parse_intentions,
    reason,
)

from .helpers import GOOD, Endpoint


def top(handles, targets, mask=None):
    s = classify_drag(handles, targets, mask)
    return max(s, key=s.get), s


def test_the_geometry_classifier_on_hand_made_drags():
    assert top([(10, 10), (30, 12)], [(15, 10), (35, 12)])[0] == "move"  # a pure translation
    assert top([(20, 30)], [(28, 30)])[0] == "move"  # one pair, no mask
    kind, s = top([(20, 30), (40, 30)], [(14, 30), (46, 30)])  # a symmetric outward pair
    assert kind == "enlarge" and s["enlarge"] == pytest.approx(1.0) and s["move"] == pytest.approx(0.0)
    assert top([(20, 30), (40, 30)], [(25, 30), (35, 30)])[0] == "shrink"
    square = [(20, 20), (40, 20), (40, 40), (20, 40)]
    turned = [(25, 18), (42, 25), (35, 42), (18, 35)]  # each corner moved clockwise around the centre
    kind, s = top(square, turned)
    assert kind == "rotate" and s["rotate"] > 0.6
    assert top([(20, 30), (40, 30)], [(20, 30), (48, 30)])[0] == "stretch"  # one anchor, one pulled outward
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    assert top([(39, 30)], [(50, 30)], mask)[0] == "stretch"  # the mask's edge pulled outward
    assert top([(30, 30)], [(36, 30)], mask)[0] == "move"  # from inside the region: a move


def test_built_in_intentions_compose_the_users_prompt():
    out = geometry_intentions([(20, 30), (40, 30)], [(14, 30), (46, 30)], "a photo of a cat", n=3)
    assert out[0].kind == "enlarge" and out[0].source_prompt == "a photo of a cat"
    assert out[0].target_prompt == "a photo of a cat, with a larger object"
    assert sum(i.confidence for i in out) == pytest.approx(1.0, abs=1e-3) and len(out) <= 3
    moved = geometry_intentions([(20, 30)], [(20, 10)], "", n=2)
    assert moved[0].target_prompt == "a photo, with the object moved up" and moved[0].confidence == 1.0
    assert reason([(20, 30)], [(20, 10)]) == geometry_intentions([(20, 30)], [(20, 10)])


def test_parse_intentions_validates_and_sorts():
    out = parse_intentions("```json\n" + json.dumps(GOOD) + "\n```", n=5)
    assert [i.object for i in out] == ["head", "neck"] and out[0].confidence == 0.8
    assert len(parse_intentions(json.dumps(GOOD), n=1)) == 1
    bad = [
        ("sure! here you go", "not JSON"),
        (json.dumps({"intentions": []}), "no non-empty"),
        (json.dumps({"intentions": [{"object": "x", "source_prompt": "a", "confidence": 0.5}]}), "target_prompt"),
        (json.dumps({"intentions": [{**GOOD["intentions"][0], "confidence": 1.5}]}), "confidence"),
        (json.dumps({"intentions": [{**GOOD["intentions"][0], "confidence": True}]}), "confidence"),
    ]
    for text, msg in bad:
        with pytest.raises(ValueError, match=msg):
            parse_intentions(text, n=3)


def test_the_client_asks_with_the_image_and_the_key_and_reads_the_answer(monkeypatch):
    monkeypatch.setenv("DRAGKIT_LLM_KEY", "sk-secret-123")
    img = Image.new("RGB", (64, 48), "gray")
    with Endpoint([json.dumps(GOOD)]) as ep:
        out = reason([(20, 30)], [(30, 10)], "a horse", image=img, n=2, llm=LLMReasoner(ep.url, "vlm"))
    assert [i.object for i in out] == ["head", "neck"] and out[0].kind == "llm"
    (req,) = ep.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-secret-123"
    assert req["body"]["model"] == "vlm"
    user = req["body"]["messages"][-1]["content"]
    assert "handle (20, 30) -> target (30, 10)" in user[0]["text"] and "64x48" in user[0]["text"]
    assert user[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_a_malformed_answer_is_retried_once_then_a_clear_error(monkeypatch):
    monkeypatch.setenv("DRAGKIT_LLM_KEY", "sk-secret-123")
    with Endpoint(["I think the horse wants to move", json.dumps(GOOD)]) as ep:
        out = LLMReasoner(ep.url, "m")([(1, 1)], [(5, 5)], "a horse")
    assert out[0].object == "head" and len(ep.requests) == 2
    assert "invalid: not JSON" in ep.requests[1]["body"]["messages"][-1]["content"]
    with Endpoint(["nope", "still nope"]) as ep, pytest.raises(ReasonerError, match="invalid twice") as e:
        LLMReasoner(ep.url, "m")([(1, 1)], [(5, 5)])
    assert "sk-secret" not in str(e.value)


def test_slow_failing_and_absent_endpoints_are_one_line_errors():
    with Endpoint([json.dumps(GOOD)], delay=2.0) as ep, pytest.raises(ReasonerError, match="within 0.5 s"):
        LLMReasoner(ep.url, "m", timeout=0.5)([(1, 1)], [(5, 5)])
    with Endpoint([json.dumps(GOOD)], status=500) as ep, pytest.raises(ReasonerError, match="HTTP 500"):
        LLMReasoner(ep.url, "m", api_key="sk-x")([(1, 1)], [(5, 5)])
    with Endpoint([]) as ep:
        url = ep.url
    with pytest.raises(ReasonerError, match="cannot reach"):
        LLMReasoner(url, "m", timeout=2)([(1, 1)], [(5, 5)])


def test_the_key_never_reaches_reprs_logs_errors_or_results(monkeypatch, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    llm = LLMReasoner("http://user:pw-secret@127.0.0.1:9/v1", "m", api_key="sk-secret-456", timeout=0.5)
    assert "sk-secret" not in repr(llm) and "pw-secret" not in repr(llm) and "127.0.0.1:9" in repr(llm)
    with pytest.raises(ReasonerError) as e:  # nothing listens on port 9
        llm([(1, 1)], [(5, 5)])
    assert "secret" not in str(e.value) and "http://127.0.0.1:9/v1/chat/completions" in str(e.value)
    with Endpoint([json.dumps(GOOD)]) as ep:
        out = LLMReasoner(ep.url, "m", api_key="sk-secret-456")([(1, 1)], [(5, 5)])
    assert "secret" not in json.dumps([i.to_dict() for i in out])
    assert "secret" not in caplog.text
