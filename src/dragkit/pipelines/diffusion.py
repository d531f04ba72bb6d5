"""``DragDiffusionPipeline``: drag editing on any Stable Diffusion 1.x/2.x checkpoint (DragDiffusion and the
methods that extend it), in the diffusers style: typed components, ``from_pretrained``, ``.to``, one ``__call__``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..core import params as P
from ..core.errors import InputError, ModelError, ParameterError
from ..core.geometry import GridMap, drag_region
from ..core.loop import DragLoopOutput, FeatureOutput
from ..core.types import DragRequest, DragResult
from ..engines import diffusion as D
from ..parts import LatentMaskTerm
from ..parts.clip_guidance import ClipGuidanceTerm, load_clip
from ..parts.closs import closs_step, correspondence_loss
from ..parts.guidance import editing_energy, fit_patch_discriminator, score
from ..parts.intentions import Intention, LLMReasoner, reason
from ..utils.profiler import StageProfiler
from .common import editable_mask, make_result, noop_pairs, resolve_params, run_preset_loop

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# A model folder may carry parameter defaults measured for that checkpoint (faces64 does).
MODEL_DEFAULTS_FILE = "dragkit.json"


def read_model_defaults(path: Path) -> dict[str, Any]:
    """A model folder's measured parameter defaults: ``{"defaults": {name: value}, "why": "..."}``. Every name
    must be a parameter of the loop, a part or the diffusion engine, and every value valid; a bad file is a
    :class:`ModelError`."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        defaults = data["defaults"]
        if not isinstance(defaults, dict):
            raise TypeError("'defaults' is not an object")
        for k in defaults:
            if P.lookup(k).owner in ("interface", "engine:gan"):
                raise ParameterError(f"{k} cannot be a model default")
        return P.resolve({}, defaults)
    except (ValueError, KeyError, TypeError, ParameterError) as e:
        raise ModelError(f"{path}: not a valid model defaults file ({e})") from None


# Models that ship inside the package, addressable by name wherever a model is named.
PACKAGED_MODELS = {"faces64": Path(__file__).resolve().parents[1] / "models" / "faces64"}

try:  # diffusers is an optional dependency: the GAN side of dragkit works without it
    from diffusers import (
        AutoencoderKL,
        DDIMInverseScheduler,
        DDIMScheduler,
        DiffusionPipeline,
        UNet2DConditionModel,
        UNet2DModel,
    )
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from transformers import CLIPTextModel, CLIPTokenizer
except ImportError as e:  # pragma: no cover - exercised only without the extra
    _IMPORT_ERROR: ImportError | None = e
    DiffusionPipeline = object  # type: ignore[misc,assignment]
    StableDiffusionLoraLoaderMixin = object  # type: ignore[misc,assignment]
else:
    _IMPORT_ERROR = None


def _require_diffusers() -> None:
    if _IMPORT_ERROR is not None:
        raise ModelError(
            f"the diffusion engine needs the [diffusion] extra: pip install 'dragkit[diffusion]' ({_IMPORT_ERROR})"
        )


def working_size(w: int, h: int, resize_width: int) -> tuple[int, int]:
    """The size the model sees: width ``resize_width`` (aspect kept) or the input's, sides rounded to multiples
    of 8 (at least 8)."""
    if resize_width:
        h = h * resize_width / w
        w = resize_width
    return max(8, int(w / 8 + 0.5) * 8), max(8, int(h / 8 + 0.5) * 8)  # half-up, not banker's rounding


class DragDiffusionPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):  # type: ignore[misc]
    """Drag editing on a Stable Diffusion checkpoint (DragDiffusion, Shi et al., CVPR 2024).

    Example::

        pipe = DragDiffusionPipeline.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")
        pipe = pipe.to("cuda", torch.float16)
        req = DragRequest(Image.open("cat.png"), handles=[(250, 180)], targets=[(300, 180)], prompt="a cat")
        out = pipe(req)                       # identity LoRA trained (and cached), inverted, dragged, sampled
        out.image.save("cat_dragged.png")
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    # pixel-space unconditional models (a DDPMPipeline folder: unet + scheduler) have no VAE and no text encoder
    _optional_components = ["vae", "text_encoder", "tokenizer", "inverse_scheduler"]  # noqa: RUF012

    def __init__(
        self,
        unet: UNet2DConditionModel | UNet2DModel,
        scheduler: DDIMScheduler,
        vae: AutoencoderKL | None = None,
        text_encoder: CLIPTextModel | None = None,
        tokenizer: CLIPTokenizer | None = None,
        inverse_scheduler: DDIMInverseScheduler | None = None,
    ) -> None:
        _require_diffusers()
        super().__init__()
        # DragDiffusion's DDIM (whatever scheduler the checkpoint ships): no clipping of x0 (inversion is only exact
        # without it), alphas start at ᾱ₀.
        scheduler = DDIMScheduler.from_config(
            scheduler.config, clip_sample=False, set_alpha_to_one=False, steps_offset=scheduler.config.steps_offset
        )
        if inverse_scheduler is None:
            inverse_scheduler = D.aligned_inverse_scheduler(scheduler)
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            inverse_scheduler=inverse_scheduler,
        )
        self.model_name = "custom"
        self.load_profile: dict[str, Any] | None = None
        # parameter defaults measured for this checkpoint (a model folder's dragkit.json); between the method's
        # defaults and the caller's overrides
        self.model_defaults: dict[str, Any] = {}
        # source_cache: (key, inverted latent, the source branch's mutual-layer inputs by timestep), the last one
        self._source_cache: tuple[tuple, Tensor, dict[int, dict[str, Tensor]]] | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path = DEFAULT_MODEL, **kwargs: Any):  # type: ignore[override]
        """Load from a hub id, a local diffusers folder, or a single ``.safetensors`` checkpoint.

        ``dtype=torch.float16`` (or ``torch_dtype=``) loads the weights in that precision.
        Errors a user can fix (a missing model offline, a folder that is not a diffusers pipeline) are raised as
        :class:`~dragkit.errors.ModelError` with one line naming the model.
        """
        _require_diffusers()
        name = str(pretrained_model_name_or_path)
        if name in PACKAGED_MODELS:
            packaged = PACKAGED_MODELS[name]
            if not (packaged / "model_index.json").is_file():
                raise ModelError(f"model {name!r} is missing from this installation ({packaged}); reinstall dragkit")
            pretrained_model_name_or_path = packaged
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        if dtype is not None:  # diffusers renamed torch_dtype to dtype; speak whichever the installed one knows
            from diffusers.pipelines import pipeline_utils

            kwargs["dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"] = dtype
        prof = StageProfiler()
        path = Path(name)
        from diffusers.utils import logging as dlogging

        verbosity = dlogging.get_verbosity()
        dlogging.set_verbosity_error()  # its "couldn't connect" chatter would precede our one-line error
        try:
            with prof.stage("load"):
                pipe = cls._load(str(pretrained_model_name_or_path), Path(pretrained_model_name_or_path), **kwargs)
        except ModelError:
            raise
        except Exception as e:  # every loading failure becomes one line naming the model
            text = str(e)
            if not path.exists() and any(s in text for s in ("offline", "not fully cached", "connect", "resolve")):
                raise ModelError(
                    f"cannot load model {name!r}: it is not in the local cache and the hub is unreachable; "
                    "download it once with a network, or point --model at a local diffusers folder"
                ) from None
            first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
            raise ModelError(f"cannot load model {name!r}: {first}") from None
        finally:
            dlogging.set_verbosity(verbosity)
        pipe.model_name = name
        pipe.load_profile = prof.stages["load"]
        folder = Path(pretrained_model_name_or_path)
        if folder.is_dir():
            pipe.model_defaults = read_model_defaults(folder / MODEL_DEFAULTS_FILE)
        return pipe

    @classmethod
    def _load(cls, name: str, path: Path, **kwargs: Any) -> DragDiffusionPipeline:
        if name.endswith((".safetensors", ".ckpt")):
            if not path.is_file():
                raise ModelError(f"model file {name} not found")
            from diffusers import StableDiffusionPipeline

            sd = StableDiffusionPipeline.from_single_file(name, safety_checker=None, **kwargs)
            return cls(**{k: v for k, v in sd.components.items() if k in cls._get_signature_keys(cls)[0]})
        if path.exists() and not (path / "model_index.json").is_file():
            raise ModelError(
                f"{name} is not a diffusers pipeline folder (no model_index.json); save one with "
                "pipeline.save_pretrained(folder) or pass a hub id"
            )
        return super().from_pretrained(name, **kwargs)

    # ---- the steps of an edit -----------------------------------------------------------------------------

    @property
    def conditional(self) -> bool:
        """Whether the UNet reads text (``encoder_hidden_states``); pixel-space unconditional models do not."""
        return self.text_encoder is not None

    def cond(self, embeds: Tensor | None, batch: int = 1) -> dict[str, Tensor]:
        """The UNet's conditioning keyword arguments for a batch."""
        return {} if embeds is None else {"encoder_hidden_states": embeds.expand(batch, -1, -1)}

    def encode_prompt(self, prompt: str) -> Tensor | None:
        """CLIP text embeddings of ``prompt``; a prompt longer than the tokenizer's limit is truncated (warned).
        ``None`` for unconditional models, which ignore prompts (noted once per edit)."""
        if not self.conditional:
            if prompt:
                logger.warning("this model is unconditional: the prompt is ignored")
            return None
        tok = self.tokenizer
        limit = min(tok.model_max_length, self.text_encoder.config.max_position_embeddings)
        full = tok(prompt, truncation=False, return_tensors="pt").input_ids
        if full.shape[-1] > limit:
            logger.warning(
                "prompt is %d tokens; the text encoder reads %d: the rest is ignored", full.shape[-1], limit
            )
        ids = tok(prompt, padding="max_length", max_length=limit, truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0].to(self.unet.dtype)

    def image_to_tensor(self, image: Image.Image, size: tuple[int, int]) -> Tensor:
        """PIL → ``(1, 3, H, W)`` in [-1, 1] at ``size`` = ``(W, H)`` (bilinear)."""
        if image.size != size:
            image = image.resize(size, Image.BILINEAR)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        return x.to(self.device, (self.vae or self.unet).dtype)

    def encode_image(self, x: Tensor) -> Tensor:
        """The VAE posterior **mean** × ``scaling_factor`` (DragDiffusion's choice); the image itself for
        pixel-space models (identity codec)."""
        if self.vae is None:
            return x.to(self.unet.dtype)
        return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor

    def decode(self, latent: Tensor) -> Tensor:
        """Latent → image in [0, 1]."""
        x = (
            latent
            if self.vae is None
            else self.vae.decode(latent / self.vae.config.scaling_factor, return_dict=False)[0]
        )
        return (x / 2 + 0.5).clamp(0, 1)

    def invert(
        self,
        z0: Tensor,
        embeds: Tensor | None,
        steps: int,
        n_invert: int,
        progress: bool = True,
        *,
        record: Sequence[str] = (),
        records: dict[int, dict[str, Tensor]] | None = None,
        autocast: str = "none",
    ) -> Tensor:
        """DDIM-invert ``z0`` for ``n_invert`` of ``steps`` steps with ``DDIMInverseScheduler`` (no CFG); the result
        sits at the forward timestep ``timesteps[steps - n_invert]``. With ``record`` (self-attention module
        paths) each step also keeps those layers' inputs in ``records``, by timestep: ``source_kv=inversion``
        sampling reads them instead of denoising the source branch."""
        if record and records is None:
            raise ValueError("record needs a records dict to fill")
        inv = self.inverse_scheduler
        D.check_alignment(self.scheduler, inv, steps)
        timesteps = inv.timesteps[:n_invert]
        return self._run(
            z0,
            embeds,
            inv,
            self.progress_bar(timesteps) if progress else timesteps,
            record,
            records if record else None,
            autocast,
        )

    def _run(
        self,
        z: Tensor,
        embeds: Tensor | None,
        scheduler: Any,
        timesteps: Any,
        record: Sequence[str],
        records: dict[int, dict[str, Tensor]] | None,
        autocast: str,
    ) -> Tensor:
        """Step one latent through ``timesteps`` with ``scheduler`` (the UNet's plain self-attention), keeping the
        inputs of the ``record`` layers in ``records`` by timestep (every timestep gets an entry, empty when no layer
        is recorded). Inversion and :meth:`record_source` share it."""
        store: dict[str, Tensor] = {}
        modules = D.attention_modules(self.unet)
        procs = {name: D.RecordingProcessor(modules[name].processor, store, name) for name in record}
        with D.attention_processors(self.unet, procs):
            for t in timesteps:
                with D.autocast(self.device, autocast):
                    eps = self.unet(z, t, **self.cond(embeds), return_dict=False)[0]
                z = scheduler.step(eps.to(z.dtype), t, z, return_dict=False)[0]
                if records is not None:
                    records[int(t)] = dict(store)
        return z

    def sample(
        self,
        z_src: Tensor,
        z_edit: Tensor,
        embeds: Tensor | None,
        start: int,
        mutual: list[str],
        progress: bool = True,
        closs: dict[str, Any] | None = None,
        guide: dict[str, Any] | None = None,
        source: dict[int, dict[str, Tensor]] | None = None,
        autocast: str = "none",
    ) -> Tensor:
        """Denoise the batch ``[source, edited]`` from ``timesteps[start]`` with DDIM (eta 0), the self-attention of
        the ``mutual`` blocks reading the source branch's K/V (reference-latent control). Returns both latents.

        ``source`` (``source_kv=inversion``): the mutual layers' source inputs by timestep, recorded by
        :meth:`invert` or by :meth:`record_source`; then only the edited branch is denoised (batch 1) and
        ``z_src`` is returned unchanged.

        ``guide`` (LucidDrag's guidance, :meth:`_guided_eps`): ``edit``, ``keep_weight``, ``quality``, ``steps``,
        ``radius``, ``feature_block``, ``grid``, ``handles``, ``targets``, optionally ``keep`` (grid mask of what
        must stay), ``vacate``, ``discriminator`` and ``semantic``/``semantic_cond``; the first ``steps`` denoising
        steps use the guided noise prediction of the edited branch. Each step's energies are appended to
        ``guide["history"]``. With ``eta`` > 0 (and a ``generator`` and a latent-resolution ``region``) every step
        of the edited branch is a DDIM step with that η inside ``region`` (:meth:`_regional_step`).

        ``closs`` (AdaptiveDrag's correspondence loss, :mod:`dragkit.parts.closs`): ``weight``, ``lr``, ``steps``,
        ``radius``, ``feature_block``, ``grid``, ``handles`` and ``targets`` (grid ``(row, col)``), optionally
        ``where`` (a latent-resolution 0/1 mask: the step is confined to it); before each of the first ``steps``
        denoising steps the edited latent takes one Adam step on ``weight · CLoss`` computed from both branches'
        features (one forward of the batch, mutual attention on), and that latent is the one denoised. The loss
        before each step is appended to ``closs["history"]``.
        """
        timesteps = self.scheduler.timesteps[start:]
        if source is not None:
            if closs is not None or guide is not None:
                raise ParameterError(
                    "source_kv=inversion: the correspondence loss and LucidDrag's guidance read the source branch's "
                    "features; use source_kv=recompute with them"
                )
            missing = [int(t) for t in timesteps if int(t) not in source]
            if missing:
                raise RuntimeError(f"no recorded source inputs for timesteps {missing[:3]}...")
            feed: dict[str, Tensor] = {}
            procs = {name: D.MutualSelfAttentionProcessor(feed, name) for name in mutual}
            cond, z = self.cond(embeds, 1), z_edit
            with D.attention_processors(self.unet, procs):
                for t in self.progress_bar(timesteps) if progress else timesteps:
                    feed.update(source[int(t)])
                    with D.autocast(self.device, autocast):
                        eps = self.unet(z, t, **cond, return_dict=False)[0]
                    z = self.scheduler.step(eps.to(z.dtype), t, z, return_dict=False)[0]
            return torch.cat([z_src, z])
        z = torch.cat([z_src, z_edit])
        cond = self.cond(embeds, 2)
        procs = {name: D.MutualSelfAttentionProcessor() for name in mutual}
        with D.attention_processors(self.unet, procs):
            for k, t in enumerate(self.progress_bar(timesteps) if progress else timesteps):
                if closs is not None and k < closs["steps"]:
                    loss_of = partial(self._closs, z[:1], t=t, cond=cond, closs=closs)
                    z_edit, value = closs_step(z[1:], loss_of, closs["lr"], closs.get("where"))
                    closs.setdefault("history", []).append(round(value, 6))
                    z = torch.cat([z[:1], z_edit])
                if guide is not None and k < guide["steps"]:
                    eps = self._guided_eps(z, t, cond, guide)
                else:
                    with D.autocast(self.device, autocast):
                        eps = self.unet(z, t, **cond, return_dict=False)[0].to(z.dtype)
                if guide is not None and guide.get("eta", 0) > 0:
                    z = self._regional_step(eps, t, z, guide)
                else:
                    z = self.scheduler.step(eps, t, z, return_dict=False)[0]
        return z

    def record_source(
        self, z_src: Tensor, embeds: Tensor | None, start: int, mutual: list[str], autocast: str = "none"
    ) -> dict[int, dict[str, Tensor]]:
        """Denoise the source branch alone from ``timesteps[start]`` (its self-attention reads only itself, as in
        the ``[source, edited]`` batch) and return its inputs to the ``mutual`` layers by timestep: ``source`` for
        :meth:`sample`. The first edit of a source and every later one (``source_cache``) then sample the edited
        branch the same way, so a re-run gives the same pixels."""
        records: dict[int, dict[str, Tensor]] = {}
        self._run(z_src, embeds, self.scheduler, self.scheduler.timesteps[start:], mutual, records, autocast)
        return records

    def clear_source_cache(self) -> None:
        """Forget the kept source (``source_cache``): the next edit inverts and samples its source again."""
        self._source_cache = None

    def _source_key(
        self,
        request: DragRequest,
        params: dict[str, Any],
        info: dict[str, Any],
        mutual: list[str],
        size: tuple[int, int],
        reference: bool,
    ) -> tuple | None:
        """``source_cache``'s key: everything the inverted latent and the source branch's sampling depend on, or
        ``None`` when this edit neither reads nor fills the cache (it is off; the reference recipe; a sampler or
        a correspondence loss that reads more of the source branch than the mutual layers' inputs; a LoRA
        trained but not cached, whose weights have no name)."""
        if not params["source_cache"] or reference or params["sampler"] == "guidance" or params["closs_weight"] > 0:
            return None
        if params["lora"] != "none" and info.get("lora_cache") is None:
            return None
        digest = hashlib.sha256(request.image.tobytes()).hexdigest()
        settings = (params["inference_steps"], params["inversion_strength"], params["autocast"])
        return (
            id(self.unet),
            id(self.scheduler),
            digest,
            request.image.mode,
            request.image.size,
            size,
            request.prompt,
            params["lora"],
            info.get("lora_cache"),
            settings,
            bool(params["channels_last"]),
            params["source_kv"],
            tuple(mutual),
            str(self.device),
            str(self.unet.dtype),
        )

    def _regional_step(self, eps: Tensor, t: Tensor, z: Tensor, guide: dict[str, Any]) -> Tensor:
        """DiffEditor's regional SDE: the edited branch takes a DDIM step with η ``guide["eta"]`` (fresh noise from
        ``guide["generator"]``) inside ``guide["region"]`` and the deterministic step elsewhere; the source branch
        stays deterministic. Both steps are the scheduler's own."""
        det = self.scheduler.step(eps, t, z, return_dict=False)[0]
        noise = torch.randn(z[1:].shape, generator=guide["generator"]).to(z)
        sto = self.scheduler.step(eps[1:], t, z[1:], eta=guide["eta"], variance_noise=noise, return_dict=False)[0]
        r = guide["region"].to(z)
        return torch.cat([det[:1], r * sto + (1 - r) * det[1:]])

    def _guided_eps(self, z: Tensor, t: Tensor, cond: dict, guide: dict[str, Any]) -> Tensor:
        """The batch's noise prediction with energy guidance on the edited branch (classifier guidance on
        ``p ∝ exp(−E)``): ``ε_edit + √(1 − ᾱ_t)·∇E``, with ``E = edit · editing_energy − quality · D(x̂₀)`` — the
        editing energy of both branches' features (:func:`dragkit.parts.guidance.editing_energy`) and the
        discriminator's score of the decoded x0-prediction. One forward of the batch gives the features, the noise
        prediction and the gradient."""
        fb = guide["feature_block"]
        ze = z[1:].detach().float().requires_grad_(True)
        history: dict[str, float] = {}
        with torch.enable_grad():
            batch = torch.cat([z[:1].float(), ze]).to(self.unet.dtype)
            out = D.unet_forward(self.unet, batch, t, cond, [fb], need_eps=True)
            energy = ze.new_zeros(())
            if guide["edit"] > 0:
                f = F.interpolate(out.features[fb].float(), size=guide["grid"], mode="bilinear", align_corners=False)
                e = editing_energy(
                    f[1:],
                    f[:1],
                    guide["handles"],
                    guide["targets"],
                    guide["radius"],
                    guide.get("keep"),
                    guide["keep_weight"],
                    guide.get("vacate", 0.0),
                )
                energy = energy + guide["edit"] * e
                history["edit"] = round(float(e.detach()), 6)
            if guide["quality"] > 0 and guide.get("discriminator") is not None:
                x0 = self.scheduler.step(out.eps[1:].float(), t, ze, return_dict=False)[1]
                q = score(guide["discriminator"], self.decode(x0.to(self.unet.dtype)).float()).sum()
                energy = energy - guide["quality"] * q
                history["quality"] = round(float(q.detach()), 6)
            grad = torch.autograd.grad(energy, ze)[0] if energy.requires_grad else torch.zeros_like(ze)
        eps = out.eps.detach().clone()
        a = self.scheduler.alphas_cumprod[int(t)].to(eps.device, torch.float32)
        eps[1:] = (eps[1:].float() + (1 - a).sqrt() * grad).to(eps.dtype)
        if guide.get("semantic_cond") is not None:  # the intention's direction, source prompt → target prompt
            target_cond, source_cond = guide["semantic_cond"]
            e_t = self.unet(z, t, **target_cond, return_dict=False)[0][1:]
            e_s = self.unet(z, t, **source_cond, return_dict=False)[0][1:]
            eps[1:] = eps[1:] + guide["semantic"] * (e_t - e_s)
        guide.setdefault("history", []).append(history)
        return eps

    def _guidance(
        self,
        request: DragRequest,
        params: dict[str, Any],
        handles: Tensor,
        targets: Tensor,
        mask: Tensor | None,
        grid: tuple[int, int],
        fb: int,
        source: Tensor,
        info: dict[str, Any],
        prof: StageProfiler,
        discriminator: torch.nn.Module | None,
        latent_size: tuple[int, int],
    ) -> dict[str, Any]:
        """LucidDrag's guidance for :meth:`sample`, shared by every result: the editing energy over what must stay
        (outside the mask, or without one outside the drag's path), the region the seed variants may re-noise (its
        complement), and the quality term's discriminator (the user's module, or a patch discriminator fitted to
        the input image). The intention's prompts are added per result (:meth:`_semantic`)."""
        if mask is not None:
            keep = 1 - mask.float()
        else:
            pairs = [
                ((float(h[1]), float(h[0])), (float(t[1]), float(t[0]))) for h, t in zip(handles, targets, strict=True)
            ]
            keep = torch.from_numpy(~drag_region(grid, pairs, max(2.0, 0.1 * max(grid)))).float()
        guide: dict[str, Any] = {
            "edit": params["guide_edit"],
            "keep_weight": params["guide_keep"],
            "quality": params["guide_quality"],
            "steps": params["guide_steps"],
            "radius": params["guide_radius"],
            "feature_block": fb,
            "grid": grid,
            "handles": handles,
            "targets": targets,
            "keep": keep.to(self.device),
            "vacate": params["guide_vacate"],
            "region": F.interpolate((1 - keep)[None, None], size=latent_size, mode="nearest").to(self.device),
        }
        if discriminator is not None:
            guide["discriminator"] = discriminator.to(self.device).eval()  # only the input's gradient is taken
            info["discriminator"] = type(discriminator).__name__
        elif params["guide_quality"] > 0:
            with prof.stage("discriminator"):
                guide["discriminator"] = fit_patch_discriminator(
                    source, steps=params["discriminator_steps"], seed=request.seed
                ).to(self.device)
            info["discriminator"] = "PatchDiscriminator fitted to the input image"
        if params["guide_semantic"] > 0 and not self.conditional:
            info["semantic_guidance"] = "not applied: this model has no text conditioning"
            logger.warning("semantic guidance does not apply: %s has no text conditioning", self.model_name)
        return guide

    def _result_plan(
        self,
        request: DragRequest,
        params: dict[str, Any],
        num_results: int,
        intention: Intention | None,
        llm: LLMReasoner | None,
        prof: StageProfiler,
    ) -> list[tuple[Intention, int]]:
        """``(intention, variant)`` for each result, best first: the intentions in order of confidence, then seed
        variants of them (variant ``v`` re-noises the edit region with seed ``seed + v``). When the intentions
        cannot steer (an unconditional model, or ``guide_semantic=0``) only the most likely one is used and the
        other results are all seed variants."""
        if intention is not None:
            intentions = [intention]
        else:
            with prof.stage("intentions"):
                intentions = reason(
                    request.handles,
                    request.targets,
                    request.prompt,
                    image=request.image,
                    mask=request.mask,
                    n=num_results,
                    llm=llm,
                )
        if not (self.conditional and params["guide_semantic"] > 0):
            intentions = intentions[:1]
        n = len(intentions)
        return [(intentions[k % n], k // n) for k in range(num_results)]

    def _semantic(self, guide: dict[str, Any], params: dict[str, Any], chosen: Intention) -> dict[str, Any]:
        """A copy of ``guide`` steered by ``chosen``'s source → target prompts (text-conditioned models only)."""
        guide = {**guide, "history": []}
        if params["guide_semantic"] > 0 and self.conditional:
            guide["semantic"] = params["guide_semantic"]
            guide["semantic_cond"] = (
                self.cond(self.encode_prompt(chosen.target_prompt), 2),
                self.cond(self.encode_prompt(chosen.source_prompt), 2),
            )
        return guide

    def _closs(self, z_src: Tensor, z_edit: Tensor, t: Tensor, cond: dict, closs: dict[str, Any]) -> Tensor:
        """``weight · CLoss`` of the edited latent at timestep ``t`` (features of both branches in one forward)."""
        fb = closs["feature_block"]
        batch = torch.cat([z_src.to(z_edit.dtype), z_edit]).to(self.unet.dtype)
        out = D.unet_forward(self.unet, batch, t, cond, [fb], need_eps=False)
        f = F.interpolate(out.features[fb].float(), size=closs["grid"], mode="bilinear", align_corners=False)
        return closs["weight"] * correspondence_loss(f[1:], f[:1], closs["handles"], closs["targets"], closs["radius"])

    def _lora(
        self,
        mode: str,
        params: dict[str, Any],
        request: DragRequest,
        size: tuple[int, int],
        sample_x0: Callable[[torch.Generator], Tensor],
        embeds: Tensor | None,
        progress: bool,
        cache: bool = True,
        cancel: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Put the identity LoRA in place (train, reuse from cache, or load a path); returns facts for the JSON.
        ``cache=False`` trains every time and writes nothing (the reference recipe). A cancel ends the training
        early: that LoRA is used for this edit but never cached."""
        if mode == "none":
            return {"lora": "none"}
        if mode != "train":
            path = Path(mode)
            if not path.exists():
                raise InputError(f"LoRA path {mode} does not exist (use lora=none, lora=train or a saved LoRA)")
            try:
                self._load_unet_lora(path)
            except Exception as e:  # a LoRA that does not fit this UNet is a user-facing error
                D.remove_identity_lora(self.unet)
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ModelError(f"LoRA {mode} does not fit this model's UNet: {first}") from None
            return {"lora": str(path)}
        seed = request.seed
        settings = {k: params[k] for k in ("lora_steps", "lora_rank", "lora_lr", "lora_batch")}
        settings |= {"seed": seed, "size": list(size), "dtype": str(self.unet.dtype)}
        buf = io.BytesIO()
        request.image.save(buf, format="PNG")
        key = D.lora_cache_key(self.model_name, buf.getvalue(), request.prompt, settings)
        folder = D.lora_cache_dir() / key
        weights = folder / "pytorch_lora_weights.safetensors"
        if cache and weights.is_file():
            self._load_unet_lora(folder)
            return {"lora": "cached", "lora_cache": str(folder)}

        done = D.train_identity_lora(
            self.unet,
            self.scheduler,
            sample_x0,
            self.cond(embeds),
            steps=params["lora_steps"],
            rank=params["lora_rank"],
            lr=params["lora_lr"],
            batch=params["lora_batch"],
            seed=seed,
            progress=progress,
            cancel=cancel,
        )
        if done < params["lora_steps"]:
            return {
                "lora": "trained",
                "lora_cache": None,
                "lora_stopped": f"cancelled after {done} of {params['lora_steps']} steps",
            }
        if not cache:
            return {"lora": "trained", "lora_cache": None}
        sd = D.identity_lora_state_dict(self.unet)
        # Written under a temporary name and renamed: a crash never leaves a half-written LoRA in the cache.
        tmp = folder.with_name(folder.name + f".part{time.monotonic_ns()}")
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            self.save_lora_weights(str(tmp), unet_lora_layers=sd, safe_serialization=True)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            logger.warning("identity LoRA trained but not cached (%s): set DRAGKIT_CACHE to a writable folder", e)
            return {"lora": "trained", "lora_cache": None}
        try:
            tmp.rename(folder)
        except OSError:  # another process cached the same LoRA meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        return {"lora": "trained", "lora_cache": str(folder)}

    def _load_unet_lora(self, path: Path) -> None:
        state_dict, _alphas = self.lora_state_dict(str(path))
        D.load_identity_lora(self.unet, state_dict)

    @torch.no_grad()
    def __call__(
        self,
        request: DragRequest,
        *,
        method: str = "dragdiffusion",
        callback: Callable[[dict[str, Any]], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        progress: bool = True,
        intention: Intention | None = None,
        num_results: int | None = None,
        llm: LLMReasoner | None = None,
        discriminator: torch.nn.Module | None = None,
        recipe: str = "dragkit",
        **overrides: Any,
    ) -> DragResult | list[DragResult]:
        """Run one drag edit: identity LoRA → inversion → drag loop → sampling with reference-latent control
        (``sampler=guidance``, LucidDrag: no drag loop; energy guidance while sampling instead).

        Args:
            request: image, points, optional mask, prompt, seed.
            method: a preset that runs on the diffusion engine (``dragdiffusion``).
            callback: the loop's dict per step, plus ``handles_xy`` (image pixels).
            cancel: polled once per LoRA training step and once per drag step; True stops both early (the LoRA
                trained so far is used and not cached, ``info["lora_stopped"]`` says so; the result is sampled from
                the latent reached so far). Inversion and sampling, a fixed number of UNet steps, always finish
                (with ``sampler=guidance``, which has no drag loop, only the LoRA stops early).
            progress: show progress bars.
            intention: with ``sampler=guidance``, the intention whose prompts steer the semantic guidance
                (:mod:`dragkit.intentions`); by default the reasoner's most likely one.
            num_results: with ``sampler=guidance``, return a list of this many results, best first: one per
                intention (most confident first), then seed variants (``variant_eta``). Each result's
                ``info["intention"]`` and ``info["result"]`` say which. ``None``: one result, not in a list.
            llm: with ``sampler=guidance``, the endpoint that proposes the intentions
                (:class:`dragkit.intentions.LLMReasoner`); ``None``: the built-in geometry reasoner.
            discriminator: with ``sampler=guidance``, the quality term's image-fidelity model, any module mapping
                ``(B, 3, H, W)`` images in [0, 1] to logits (higher = better); it is moved to the pipeline's
                device and put in eval mode. ``None``: a patch discriminator fitted to the input image.
            recipe: ``dragkit`` (default) or ``reference``: DragDiffusion's steps done the way its code does them,
                for ``dragkit bench-speed`` and the exactness tests: the UNet's weights keep requiring gradients in
                the drag (their gradients are computed and kept), every drag step runs the whole UNet, the initial
                features come from one more forward, both branches are denoised, the LoRA is trained every time
                (the cache is neither read nor written). Same numbers as ``dragkit`` up to float noise.
            **overrides: any parameter by its stable name (``drag_steps=40``, ``lora="none"``, ...).
        """
        params = resolve_params(method, "diffusion", request, {**self.model_defaults, **overrides})
        given = {"intention": intention, "num_results": num_results, "llm": llm, "discriminator": discriminator}
        if params["sampler"] != "guidance" and any(v is not None for v in given.values()):
            names = ", ".join(k for k, v in given.items() if v is not None)
            raise ParameterError(f"{names}: only for sampler=guidance (method luciddrag); {method} uses sampler=drag")
        if num_results is not None and (isinstance(num_results, bool) or not isinstance(num_results, int)):
            raise ParameterError(f"num_results={num_results!r}: expected a whole number of results, 1 or more")
        if num_results is not None and num_results < 1:
            raise ParameterError(f"num_results={num_results}: ask for at least 1 result")
        if discriminator is not None and not isinstance(discriminator, torch.nn.Module):
            raise ParameterError(f"discriminator: expected a torch.nn.Module, got {type(discriminator).__name__}")
        if recipe not in ("dragkit", "reference"):
            raise ParameterError(f"recipe={recipe!r}: choose dragkit or reference")
        reference = recipe == "reference"
        if reference and params["source_kv"] != "recompute":
            raise ParameterError("recipe=reference recomputes the source branch: source_kv must be recompute")
        source_kv = params["source_kv"] == "inversion"
        if source_kv and (params["sampler"] == "guidance" or params["closs_weight"] > 0):
            raise ParameterError(
                "source_kv=inversion: the correspondence loss and LucidDrag's guidance read the source branch's "
                f"features while sampling ({method}); use source_kv=recompute"
            )
        prof = StageProfiler(self.device)
        if self.load_profile is not None:  # loading happens once per pipeline; every edit reports it
            prof.stages["load"] = dict(self.load_profile)
        W, H = request.size
        if self.vae is None:  # a pixel-space model only knows its training resolution: edit there, map back
            side = int(self.unet.config.sample_size)
            w8, h8 = side, side
        else:
            w8, h8 = working_size(W, H, params["resize_width"])
        grid = (int(0.5 * h8), int(0.5 * w8))
        gm = GridMap((H, W), grid, convention="corner")
        info: dict[str, Any] = {
            "engine": "diffusion",
            "model": self.model_name,
            "working_size": [w8, h8],
            "scale": [w8 / W, h8 / H],
            "grid_size": list(grid),
            "device": str(self.device),
            "dtype": str(self.unet.dtype).replace("torch.", ""),
            "recipe": recipe,
        }
        if self.model_defaults:
            info["model_defaults"] = {k: v for k, v in self.model_defaults.items() if k not in overrides}
        if (w8, h8) != (W, H):
            logger.info("image %dx%d is edited at %dx%d (multiples of 8); points are mapped", W, H, w8, h8)
        info.update(noop_pairs(request))
        # peft marks every other weight as frozen when it injects the LoRA: the caller's flags come back after
        flags = [(q, q.requires_grad) for q in self.unet.parameters()]
        steps, fb = params["inference_steps"], params["feature_block"]
        n_inv = D.inversion_step_count(params["inversion_strength"], steps)
        start = steps - n_inv
        if not 0 <= fb < len(self.unet.up_blocks):
            raise ParameterError(f"feature_block={fb}: this UNet has up_blocks 0..{len(self.unet.up_blocks) - 1}")
        mutual = D.self_attentions(self.unet)[params["mutual_attn_start_layer"] :]
        if not mutual:
            logger.warning(
                "mutual_attn_start_layer=%d: this UNet has only %d self-attention layers; no reference-latent control",
                params["mutual_attn_start_layer"],
                len(D.self_attentions(self.unet)),
            )
        info["mutual_attention_blocks"] = mutual

        try:
            with prof.stage("encode"):
                embeds = self.encode_prompt(request.prompt)
                x = self.image_to_tensor(request.image, (w8, h8))
                if self.vae is None:
                    z0 = x.to(self.unet.dtype)

                    def sample_x0(g: torch.Generator) -> Tensor:
                        return z0
                else:
                    dist = self.vae.encode(x).latent_dist
                    sf = self.vae.config.scaling_factor
                    z0 = dist.mean * sf

                    def sample_x0(g: torch.Generator) -> Tensor:
                        return (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(dist.mean)) * sf

            with prof.stage("lora"):
                info.update(
                    self._lora(
                        params["lora"],
                        params,
                        request,
                        (w8, h8),
                        sample_x0,
                        embeds,
                        progress,
                        cache=not reference,
                        cancel=cancel,
                    )
                )
            amp = params["autocast"]
            if params["channels_last"]:
                self.unet.to(memory_format=torch.channels_last)
            key = self._source_key(request, params, info, mutual, (w8, h8), reference)
            hit = key is not None and self._source_cache is not None and self._source_cache[0] == key
            info["source_cache"] = "hit" if hit else ("miss" if key is not None else "off")
            with prof.stage("inversion"):
                # the mutual layers' source inputs by timestep: recorded while inverting (source_kv=inversion),
                # while sampling (source_cache), or the cached ones of an earlier edit of the same source
                inputs: dict[int, dict[str, Tensor]] = {}
                if hit:
                    _, zt, inputs = self._source_cache  # type: ignore[misc]
                else:
                    self._source_cache = None  # one source kept: the old one's memory is freed before inverting
                    record = mutual if source_kv else ()
                    zt = self.invert(z0, embeds, steps, n_inv, progress, record=record, records=inputs, autocast=amp)
            self.scheduler.set_timesteps(steps)
            t = self.scheduler.timesteps[start]
            info["drag_timestep"] = int(t)

            need_prev = (request.mask is not None or params["mask"] == "auto") and params["lam"] > 0
            cond = self.cond(embeds)
            terms: list[Any] = [LatentMaskTerm.from_params(params)]
            clip_term = None
            if request.edit_prompt.strip() and params["clip_weight"] > 0:
                with prof.stage("clip_load"):
                    clip = load_clip(params["clip_model"])
                    clip.model.to(self.device)
                    source = (x.float() / 2 + 0.5).clamp(0, 1)  # the input image, for the directional form
                    form, weight = params["clip_loss"], params["clip_weight"]
                    clip_term = ClipGuidanceTerm.build(clip, request.edit_prompt, weight, form, source, request.prompt)
                terms.append(clip_term)
                info["clip"] = {"model": params["clip_model"], "loss": params["clip_loss"]}
            # the UNet stops at the feature block unless ε is needed (the reference recipe always runs all of it)
            need_eps = need_prev or clip_term is not None or reference

            def features(latent: Tensor) -> FeatureOutput:
                with D.autocast(self.device, amp):
                    out = D.unet_forward(self.unet, latent.to(self.unet.dtype), t, cond, [fb], need_eps=need_eps)
                f = F.interpolate(out.features[fb].float(), size=grid, mode="bilinear", align_corners=False)
                extras = {}
                if need_eps:  # the scheduler's own step gives the previous latent and the x0-prediction
                    prev, x0 = self.scheduler.step(out.eps.float(), t, latent.float(), return_dict=False)[:2]
                    if need_prev:
                        extras["prev"] = prev
                    if clip_term is not None:  # CLIPDrag reads the decoded x0-prediction
                        extras["x0_image"] = self.decode(x0.to(self.unet.dtype))
                return FeatureOutput(f, extras)

            handles, targets = torch.round(gm.to_grid(request.handles)), torch.round(gm.to_grid(request.targets))
            mask, image_mask = editable_mask(request, params, features, zt.float(), handles, targets, gm, info, prof)
            if mask is not None:
                mask = mask.to(self.device)

            def on_step(ev: dict[str, Any]) -> None:
                ev["handles_xy"] = gm.to_image(ev["handles"]).tolist()
                if callback is not None:
                    callback(ev)

            guide = None
            plan: list[tuple[Intention, int]] = []
            if params["sampler"] == "guidance":  # LucidDrag: nothing is optimized; the sampling is guided instead
                out = DragLoopOutput(zt.float(), targets.clone(), 0, "guidance", [], 0.0)
                info["handles_tracked"] = False  # the reported handles are the targets: no tracker runs
                source = (x.float() / 2 + 0.5).clamp(0, 1)
                guide = self._guidance(
                    request, params, handles, targets, mask, grid, fb, source, info, prof, discriminator, zt.shape[-2:]
                )
                plan = self._result_plan(request, params, num_results or 1, intention, llm, prof)
            else:
                # dragkit: the weights are frozen (backward computes the latent's gradient only); the reference
                # recipe keeps them trainable as DragDiffusion's code does, and computes the initial features
                # with one more forward
                train = D.weights_require_grad(self.unet, reference)
                ckpt = D.gradient_checkpointing(self.unet, params["grad_checkpointing"])
                with prof.stage("drag"), train, ckpt:
                    if reference:
                        features(zt.float())
                    out = run_preset_loop(
                        zt.float(),
                        features,
                        handles,
                        targets,
                        params,
                        terms,
                        mask=mask,
                        callback=on_step,
                        cancel=cancel,
                        progress=progress,
                    )
            closs = None
            if params["closs_weight"] > 0:
                closs = {
                    "weight": params["closs_weight"],
                    "lr": params["closs_lr"],
                    "steps": params["closs_steps"],
                    # AdaptiveDrag's radius is in latent pixels; the features are compared on the grid
                    "radius": round(params["closs_radius"] * grid[0] / zt.shape[-2]),
                    "feature_block": fb,
                    "grid": grid,
                    "handles": handles,
                    "targets": targets,
                }
                if mask is not None:  # confined to the editable region (dragkit.parts.closs)
                    closs["where"] = F.interpolate(mask[None, None].float(), size=zt.shape[-2:], mode="nearest")
            if guide is None:
                replay = key is not None or source_kv
                with prof.stage("sampling"):
                    if key is not None and not hit and not source_kv:  # the source branch alone, recorded
                        inputs = self.record_source(zt, embeds, start, mutual, amp)
                    z = self.sample(
                        zt,
                        out.latent.to(zt.dtype),
                        embeds,
                        start,
                        mutual,
                        progress,
                        closs=closs,
                        source=inputs if replay else None,
                        autocast=amp,
                    )
                if key is not None and not hit:
                    self._source_cache = (key, zt, inputs)
                if closs is not None:
                    info["closs"] = closs["history"]
                runs = [(self._decode_to(z[1:], (H, W), prof), info)]
            else:
                runs = []
                for k, (chosen, variant) in enumerate(plan):
                    g = self._semantic(guide, params, chosen)
                    if variant > 0:  # a seed variant: fresh noise in the edit region
                        g["eta"] = params["variant_eta"]
                        g["generator"] = torch.Generator().manual_seed(request.seed + variant)
                    c = None if closs is None else {**closs, "history": []}
                    with prof.stage("sampling"):
                        z = self.sample(zt, out.latent.to(zt.dtype), embeds, start, mutual, progress, closs=c, guide=g)
                    run_info = {
                        **info,
                        **({} if c is None else {"closs": c["history"]}),
                        "intention": chosen.to_dict(),
                        "guidance": g["history"],
                        "result": {"index": k, "of": len(plan), "variant": variant, "eta": g.get("eta", 0.0)},
                    }
                    runs.append((self._decode_to(z[1:], (H, W), prof), run_info))
        finally:
            D.remove_identity_lora(self.unet)
            if params["channels_last"]:
                self.unet.to(memory_format=torch.contiguous_format)
            for q, flag in flags:
                q.requires_grad_(flag)
                if reference:  # the weight gradients the reference recipe accumulated
                    q.grad = None
        results = [
            make_result(request, img, out, gm, method=method, params=params, info=i, prof=prof, mask=image_mask)
            for img, i in runs
        ]
        return results if num_results is not None else results[0]

    def _decode_to(self, latent: Tensor, size: tuple[int, int], prof: StageProfiler) -> Image.Image:
        """Decode one latent and resize it to the source's ``(H, W)``."""
        with prof.stage("decode"):
            img = self.decode(latent)
            img = F.interpolate(img.float(), size=size, mode="bilinear", align_corners=False)
            arr = (img[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)  # truncation, as DragDiffusion
        return Image.fromarray(arr)
