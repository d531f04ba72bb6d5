"""dragkit's ``clipdrag`` against the official CLIPDrag code (HKUST-LongGroup/CLIPDrag at ``8fa32ff``, ``run_drag``,
LoRA off, run unchanged on CPU in float32, with a tiny random CLIP in OpenAI's layout standing in for ViT-B/16):
what it computed on the small random SD 1.5-layout model of the DragDiffusion oracle is kept in
``tests/oracle/clipdrag/`` (its README says how). The tiny CLIP is rebuilt here as a transformers ``CLIPModel`` from
its weights (the same numbers: text features equal to 6e-8), with a tokenizer that gives their ids for the edit
prompt; then ours must track their handles at every tracking and keep their losses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import DragRequest

from .conftest import SHARED_ORACLE as SHARED
from .conftest import shared_oracle_pipe

pytest.importorskip("diffusers")

ORACLE = Path(__file__).parent / "oracle" / "clipdrag"
pytestmark = [
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared model is not at {SHARED}"),
    pytest.mark.slow,
]


def tiny_clip(folder: Path) -> Path:
    """The fixture's OpenAI-layout CLIP as a transformers folder (model, a tokenizer for the edit prompt's words,
    OpenAI's normalization)."""
    from safetensors.torch import load_file
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    meta = json.loads((ORACLE / "clip_tiny.json").read_text())
    kw, sd = meta["constructor_kwargs"], load_file(str(ORACLE / "clip_tiny.safetensors"))
    tw, vw = kw["transformer_width"], kw["vision_width"]
    text = dict(
        vocab_size=kw["vocab_size"],
        hidden_size=tw,
        intermediate_size=4 * tw,
        num_hidden_layers=kw["transformer_layers"],
        num_attention_heads=kw["transformer_heads"],
        max_position_embeddings=kw["context_length"],
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=vw,
        intermediate_size=4 * vw,
        num_hidden_layers=kw["vision_layers"],
        num_attention_heads=vw // 64,
        image_size=kw["image_resolution"],
        patch_size=kw["vision_patch_size"],
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=kw["embed_dim"]))
    new = {}
    for src, dst, width in (
        ("transformer", "text_model.encoder", tw),
        ("visual.transformer", "vision_model.encoder", vw),
    ):
        i = 0
        while f"{src}.resblocks.{i}.ln_1.weight" in sd:
            s, d = f"{src}.resblocks.{i}.", f"{dst}.layers.{i}."
            for j, n in enumerate("qkv"):  # OpenAI packs q, k, v in one projection
                new[f"{d}self_attn.{n}_proj.weight"] = sd[s + "attn.in_proj_weight"][j * width : (j + 1) * width]
                new[f"{d}self_attn.{n}_proj.bias"] = sd[s + "attn.in_proj_bias"][j * width : (j + 1) * width]
            for a, b in (
                ("attn.out_proj", "self_attn.out_proj"),
                ("ln_1", "layer_norm1"),
                ("ln_2", "layer_norm2"),
                ("mlp.c_fc", "mlp.fc1"),
                ("mlp.c_proj", "mlp.fc2"),
            ):
                new[f"{d}{b}.weight"], new[f"{d}{b}.bias"] = sd[f"{s}{a}.weight"], sd[f"{s}{a}.bias"]
            i += 1
    for a, b in (
        ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
        ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
        ("ln_final.weight", "text_model.final_layer_norm.weight"),
        ("ln_final.bias", "text_model.final_layer_norm.bias"),
        ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
        ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
        ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
        ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),
        ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
        ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
        ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
        ("logit_scale", "logit_scale"),
    ):
        new[b] = sd[a]
    new["text_projection.weight"] = sd["text_projection"].T.contiguous()
    new["visual_projection.weight"] = sd["visual.proj"].T.contiguous()
    model.load_state_dict(new, strict=True)
    model.save_pretrained(folder)
    ids = dict(
        zip(["a", "photo", "of", "a", "smiling", "dog"], meta["tokens_of_edit_prompt"]["ids"][1:-1], strict=True)
    )
    vocab, merges = {"<|startoftext|>": 49406, "<|endoftext|>": 49407, "!": 0}, []
    for word, i in ids.items():  # a BPE that builds each word left to right, ending on OpenAI's id for it
        pieces = [*word[:-1], word[-1] + "</w>"]
        for piece in pieces:
            vocab.setdefault(piece, 40000 + len(vocab))
        cur = pieces[0]
        for piece in pieces[1:]:
            merges.append(f"{cur} {piece}")
            cur += piece
            vocab.setdefault(cur, 40000 + len(vocab))
        vocab[word + "</w>"] = i
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!").save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": {"height": 224, "width": 224},
                "image_processor_type": "CLIPImageProcessor",
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return shared_oracle_pipe(), str(tiny_clip(tmp_path_factory.mktemp("clip")))


def run(setup, name: str, **overrides):
    pipe, clip = setup
    meta = json.loads((ORACLE / f"{name}.json").read_text())
    args = meta["inputs"]["run_drag_arguments"]
    points = args["points"]  # [x, y]: handle, target, ...
    image = Image.open(SHARED / "image.png").convert("RGB")
    mask = np.asarray(Image.open(SHARED / "mask.png").convert("L")) > 127 if name.startswith("mask") else None
    request = DragRequest(
        image,
        points[0::2],
        points[1::2],
        mask=mask,
        prompt=args["lora_prompt"],
        seed=42,
        edit_prompt=args["drag_prompt"],
    )
    events = []
    pipe(
        request,
        method="clipdrag",
        lora="none",
        resize_width=0,
        clip_model=clip,
        progress=False,
        callback=events.append,
        **overrides,
    )
    ours = [[[round(float(v)) for v in h] for h in e["handles"].tolist()] for e in events[1:]]
    theirs = [[[int(v) for v in h] for h in t["after"]] for t in meta["trackings"]]
    return meta, events, ours, theirs


@pytest.mark.parametrize("name", ["mask", "nomask", "mask_long", "nomask_long"])
def test_clipdrag_tracks_their_handles_at_every_tracking(setup, name):
    meta, events, ours, theirs = run(setup, name)
    assert ours == theirs  # 2, 2, 8 and 9 trackings
    clip = [e["losses"]["clip"] for e in events if e["losses"]]
    motion = [e["losses"]["motion"] for e in events if e["losses"]]
    want = meta["updates"]
    assert np.allclose(clip, [u["clip_loss"] for u in want], rtol=1e-3)  # measured 1e-6 at the first update
    assert np.allclose(motion, [u["loss_motion"] for u in want], rtol=2e-2)
    first = torch.as_tensor(events[1]["latent"])
    from safetensors.torch import load_file

    assert float((first - load_file(str(ORACLE / f"{name}.safetensors"))["drag_latents"][1]).abs().max()) < 1e-3


def test_the_papers_forms_depart_from_their_code(setup):
    """The paper's fusion (projection), our CLIP input (bilinear, [0, 1]) and the paper's near-target tracking: each
    tracks other handles than their code on the long masked drag."""
    for overrides in ({"fusion_form": "projection"}, {"clip_preprocess": "resize"}, {"fast_near_rule": "paper"}):
        _, _, ours, theirs = run(setup, "mask_long", **overrides)
        assert ours != theirs, overrides
