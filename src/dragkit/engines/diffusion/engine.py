"""``DiffusionEngine``: a diffusion model's state for drag editing, the way ``GANEngine`` holds a generator.

It owns the components (UNet, VAE, text encoder and tokenizer, the DDIM scheduler and its aligned inverse) and
offers what every diffusion method is built from: ``encode``/``decode``, ``invert(z0, …)``, ``features_at(t, …)`` (a
feature function for the drag loop at any timestep), ``denoise(…, start, stop)`` (any span of the schedule, with
mutual self-attention and sampling-time parts), the source cache and the identity LoRA. Methods compose these in
drivers (``dragkit.methods.drivers``); the pipeline only orders the steps of an edit. The engine's parameters are in
:mod:`.params`, the pieces it is built from in :mod:`.components`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ...core.errors import ModelError, ParameterError
from ...core.protocols import FeatureFn, SamplingGuide
from . import lora as L
from . import params as _params  # noqa: F401 - the engine's parameters are registered with it
from .attention import MutualSelfAttentionProcessor, RecordingProcessor, attention_processors, self_attentions
from .components import Embeds, Posterior, PromptEmbeds, gradient_checkpointing, model_family
from .features import autocast, bottleneck_function, feature_function, mid_block_of, replaced_output
from .sampling import (
    Variation,
    active,
    apply_latent_guides,
    check_alignment,
    check_feed,
    guided_noise,
    regional_step,
    run_steps,
)
from .source_cache import Records, SourceCache

logger = logging.getLogger(__name__)


class DiffusionEngine:
    """A diffusion model for drag editing: Stable Diffusion 1.x/2.x (``UNet2DConditionModel`` with a VAE and a CLIP
    text encoder; ε- or v-prediction, as the scheduler's ``prediction_type`` says), SDXL (two text encoders, the
    pooled embedding and size conditioning; :class:`PromptEmbeds`) or a pixel-space unconditional ``UNet2DModel``
    (no VAE, no text).

    ``progress_bar`` wraps an iterable of timesteps in a progress bar (the pipeline's, so that its configuration
    applies); the default is tqdm's.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler: Any,
        inverse_scheduler: Any,
        vae: torch.nn.Module | None = None,
        text_encoder: torch.nn.Module | None = None,
        tokenizer: Any = None,
        name: str = "custom",
        progress_bar: Callable[[Iterable], Iterable] | None = None,
        text_encoder_2: torch.nn.Module | None = None,
        tokenizer_2: Any = None,
    ) -> None:
        self.unet, self.vae = unet, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.family = model_family(unet, vae)
        if self.family == "sdxl" and (text_encoder_2 is None or tokenizer_2 is None):
            raise ValueError("an SDXL UNet needs both text encoders and tokenizers (text_encoder_2, tokenizer_2)")
        self.scheduler, self.inverse_scheduler = scheduler, inverse_scheduler
        self.name = name
        self.timestep_cond: Tensor | None = None  # an LCM UNet's guidance embedding for this edit (lcm_guidance)
        self._tiny_vaes: dict[str, Any] = {}  # TAESDs loaded for previews or inpainting, by name
        self._preview_fallback_said = False
        self.source_cache = SourceCache()
        if progress_bar is None:
            from ...core.progress import progress_bar as bar

            progress_bar = lambda it: bar(it, leave=False)  # noqa: E731
        self.progress_bar = progress_bar

    # ---- the model ---------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def conditional(self) -> bool:
        """Whether the UNet reads text (``encoder_hidden_states``); pixel-space unconditional models do not."""
        return self.text_encoder is not None or self.text_encoder_2 is not None

    @property
    def scale_factor(self) -> int:
        """Image pixels per latent pixel: ``2^(VAE levels − 1)`` from the VAE's config (8 for SD); 1 without a VAE."""
        if self.vae is None:
            return 1
        config = self.vae.config
        return 2 ** (len(getattr(config, "encoder_block_out_channels", None) or config.block_out_channels) - 1)

    def working_size(self, size: tuple[int, int], params: dict[str, Any]) -> tuple[int, int]:
        """``(w, h)`` the model sees for an image of ``size = (W, H)``: a pixel-space model's own resolution, else by
        ``size_rule`` — ``rounded``: width ``resize_width`` (aspect kept; 0 keeps it), sides rounded half-up to
        multiples of :attr:`scale_factor`; ``official``: the image's own size (DragDiffusion's code)."""
        if self.vae is None:  # a pixel-space model only knows its training resolution
            side = int(self.unet.config.sample_size)
            return side, side
        W, H = size
        if params["size_rule"] == "official":
            if params["resize_width"] not in (0, W):
                raise ParameterError(
                    f"size_rule=official edits the image at its own size ({W}x{H}), as DragDiffusion's DragBench "
                    f"script does; resize_width={params['resize_width']} would resize it: set resize_width=0"
                )
            return W, H
        w, h = float(W), float(H)
        if params["resize_width"]:
            h = h * params["resize_width"] / w
            w = params["resize_width"]
        f = self.scale_factor
        return max(f, int(w / f + 0.5) * f), max(f, int(h / f + 0.5) * f)  # half-up, not banker's rounding

    def self_attentions(self) -> list[str]:
        return self_attentions(self.unet)

    def mutual_layers(self, start_layer: int) -> list[str]:
        """The self-attentions from the ``start_layer``-th on (execution order) that read the source branch's keys
        and values while sampling; a warning when there are none."""
        names = self.self_attentions()
        if not names[start_layer:]:
            logger.warning(
                "mutual_attn_start_layer=%d: this UNet has only %d self-attention layers; no reference-latent control",
                start_layer,
                len(names),
            )
        return names[start_layer:]

    # ---- text and images ---------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str, size: tuple[int, int] | None = None) -> Embeds:
        """The UNet's text conditioning for ``prompt``: CLIP hidden states (SD 1.x/2.x), or for SDXL both encoders'
        penultimate hidden states, the second's pooled embedding and the size conditioning for an image of ``size``
        = ``(w, h)`` (the UNet's own resolution when ``None``), edited uncropped at that size. A prompt longer than
        a tokenizer's limit is truncated (warned). ``None`` for unconditional models, which ignore prompts."""
        if not self.conditional:
            if prompt:
                logger.warning("this model is unconditional: the prompt is ignored")
            return None
        if self.family != "sdxl":
            return self._text_states(self.tokenizer, self.text_encoder, prompt)[0].to(self.unet.dtype)
        hidden, pooled = [], None
        for tok, enc in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            if enc is None:  # SDXL's refiner has the second encoder only
                continue
            out = self._text_states(tok, enc, prompt, hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's projected (pooled) embedding, as diffusers' SDXL pipeline takes it
        if size is None:
            side = int(self.unet.config.sample_size) * self.scale_factor
            size = (side, side)
        w, h = size
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=self.unet.dtype, device=self.device)
        dtype = self.unet.dtype
        return PromptEmbeds(torch.cat(hidden, -1).to(dtype), pooled.to(dtype), time_ids)

    def _text_states(self, tok: Any, enc: torch.nn.Module, prompt: str, hidden_states: bool = False) -> Any:
        limit = min(tok.model_max_length, enc.config.max_position_embeddings)
        full = tok(prompt, truncation=False, return_tensors="pt").input_ids
        if full.shape[-1] > limit:
            logger.warning(
                "prompt is %d tokens; the text encoder reads %d: the rest is ignored", full.shape[-1], limit
            )
        ids = tok(prompt, padding="max_length", max_length=limit, truncation=True, return_tensors="pt").input_ids
        return enc(ids.to(self.device), output_hidden_states=hidden_states)

    def cond(self, embeds: Embeds, batch: int = 1) -> dict[str, Any]:
        """The UNet's conditioning keyword arguments for a batch (with ``timestep_cond`` when ``lcm_guidance``
        feeds an LCM UNet's guidance embedding)."""
        if embeds is None:
            return {}
        if isinstance(embeds, PromptEmbeds):
            cond = embeds.cond(batch)
        else:
            cond = {"encoder_hidden_states": embeds.expand(batch, -1, -1)}
        if self.timestep_cond is not None:
            cond["timestep_cond"] = self.timestep_cond.expand(batch, -1)
        return cond

    def guidance_embedding(self, value: str) -> Tensor | None:
        """``lcm_guidance``'s embedding for this UNet: ``None`` for ``none``; for a number ``w``, the embedding an
        LCM UNet was distilled with (diffusers' LCM pipeline's ``get_guidance_scale_embedding``), projected by the
        UNet's ``time_cond_proj_dim`` layer. A one-line error for a UNet without one or a value that is no number."""
        if value == "none":
            return None
        try:
            w = float(value)
        except ValueError:
            raise ParameterError(f"lcm_guidance={value!r}: a guidance scale w (e.g. 7.5) or none") from None
        dim = getattr(self.unet.config, "time_cond_proj_dim", None)
        if not dim:
            raise ParameterError(
                f"lcm_guidance={value}: this UNet has no guidance embedding (time_cond_proj_dim); it conditions "
                "LCM-distilled UNets only, e.g. --unet SimianLuo/LCM_Dreamshaper_v7"
            )
        from diffusers import LatentConsistencyModelPipeline

        # a method of the LCM pipeline that reads no pipeline state: diffusers' own formula, called unbound
        emb = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, torch.tensor([w]), embedding_dim=dim)
        return emb.to(self.device, self.unet.dtype)

    def image_tensor(self, image: Image.Image, size: tuple[int, int]) -> Tensor:
        """PIL → ``(1, 3, H, W)`` in [-1, 1] at ``size`` = ``(W, H)`` (bilinear)."""
        if image.size != size:
            image = image.resize(size, Image.BILINEAR)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        return x.to(self.device, (self.vae or self.unet).dtype)

    def encode(self, x: Tensor) -> Posterior:
        """An image tensor's latent: the VAE posterior's mean × ``scaling_factor`` (DragDiffusion's choice) and draws
        from it; the image itself for pixel-space models (identity codec)."""
        if self.vae is None:
            z0 = x.to(self.unet.dtype)
            return Posterior(z0, lambda g: z0)
        vae = self.upcast_vae()
        encoded = vae.encode(x.to(vae.dtype))
        sf = vae.config.scaling_factor
        dtype = self.unet.dtype
        if not hasattr(encoded, "latent_dist"):  # a tiny autoencoder (TAESD): one latent, no posterior
            z0 = (encoded.latents * sf).to(dtype)
            return Posterior(z0, lambda g: z0)
        dist = encoded.latent_dist
        mean = (dist.mean * sf).to(dtype)
        return Posterior(
            mean,
            lambda g: ((dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(dist.mean)) * sf).to(
                dtype
            ),
        )

    def decode(self, latent: Tensor) -> Tensor:
        """Latent → image in [0, 1]."""
        if self.vae is None:
            x = latent
        else:
            vae = self.upcast_vae()
            x = vae.decode(latent.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        return (x / 2 + 0.5).clamp(0, 1)

    def upcast_vae(self) -> torch.nn.Module:
        """The VAE, moved to float32 first when it is in float16 and its config says ``force_upcast`` (SDXL's VAE
        overflows in float16; a VAE fixed for float16, such as ``madebyollin/sdxl-vae-fp16-fix``, says it does not
        and stays as it is). Logged once."""
        vae = self.vae
        if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            logger.info("the VAE overflows in float16 (force_upcast): it runs in float32")
            vae.to(torch.float32)
        return vae

    def tiny_vae(self, name: str) -> Any:
        """A tiny autoencoder (TAESD) by hub id or folder, loaded once per engine (``auto``: the family's)."""
        from .inpaint import TINY_VAE, load_tiny_vae

        name = TINY_VAE.get(self.family, name) if name == "auto" else name
        if name not in self._tiny_vaes:
            self._tiny_vaes[name] = load_tiny_vae(name, self.unet.dtype, self.device)
        return self._tiny_vaes[name]

    def preview_decoder(self, name: str) -> tuple[Any, str]:
        """``preview_vae``'s autoencoder and what it is: ``auto`` falls back to the model's own VAE, said once in the
        log, when TAESD cannot be loaded (offline and not cached); a named one that cannot be loaded is an error."""
        if self.vae is None:
            return None, "none (pixel-space model)"
        if name == "model":
            return self.vae, "model"
        try:
            return self.tiny_vae(name), name
        except ModelError as e:
            if name != "auto":
                raise
            if not self._preview_fallback_said:
                logger.warning("%s; previews are decoded with the model's own VAE (slower)", e)
                self._preview_fallback_said = True
            return self.vae, "model (TAESD could not be loaded)"

    @torch.no_grad()
    def preview_image(self, latent: Tensor, t: Tensor, embeds: Embeds, vae: str, size: tuple[int, int]) -> Image.Image:
        """What ``latent`` (at timestep ``t``) would denoise to now: one UNet call, the scheduler's prediction of the
        clean latent, decoded by ``vae`` (:meth:`preview_decoder`) and resized to ``size = (H, W)``. For live
        previews; the result itself is always decoded by the model's own VAE."""
        z = latent.detach().to(self.unet.dtype)
        eps = self.unet(z, t, **self.cond(embeds, z.shape[0]), return_dict=False)[0]
        x0 = self.scheduler.step(eps.float(), t, z.float(), return_dict=False)[1]
        decoder, _ = self.preview_decoder(vae)
        if decoder is None or decoder is self.vae:
            img = self.decode(x0)
        else:
            x = decoder.decode(x0.to(decoder.dtype) / decoder.config.scaling_factor, return_dict=False)[0]
            img = (x / 2 + 0.5).clamp(0, 1)
        img = F.interpolate(img.float(), size=size, mode="bilinear", align_corners=False)
        return Image.fromarray((img[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))

    def decode_image(self, latent: Tensor, size: tuple[int, int]) -> Image.Image:
        """Decode one latent to a PIL image resized (bilinear) to ``size = (H, W)``; ×255 truncated to uint8, as
        DragDiffusion's code does."""
        img = F.interpolate(self.decode(latent).float(), size=size, mode="bilinear", align_corners=False)
        return Image.fromarray((img[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8))

    # ---- the schedule ------------------------------------------------------------------------------------------

    def timesteps(self, steps: int) -> Tensor:
        """The forward DDIM timesteps of a ``steps``-step schedule (the inverse scheduler set to mirror them)."""
        check_alignment(self.scheduler, self.inverse_scheduler, steps)
        return self.scheduler.timesteps

    def invert(
        self,
        z0: Tensor,
        embeds: Embeds,
        steps: int,
        n_invert: int,
        *,
        record: Sequence[str] = (),
        records: Records | None = None,
        progress: bool = True,
        autocast_mode: str = "none",
    ) -> Tensor:
        """DDIM-invert ``z0`` for ``n_invert`` of ``steps`` steps with ``DDIMInverseScheduler`` (no CFG); the result
        sits at the forward timestep ``timesteps[steps - n_invert]``. With ``records`` each step keeps the inputs of
        the ``record`` layers (self-attention module paths) there, by timestep: ``source_kv=inversion`` sampling reads
        them instead of denoising the source branch. Every inverted timestep gets an entry, an empty one when
        ``record`` is empty (a UNet with fewer self-attentions than the preset's first mutual layer): the sampling
        then has nothing to read and runs with plain self-attention, as ``source_kv=recompute`` does."""
        if record and records is None:
            raise ValueError("record needs a records dict to fill")
        check_alignment(self.scheduler, self.inverse_scheduler, steps)
        timesteps = self.inverse_scheduler.timesteps[:n_invert]
        return run_steps(
            self.unet,
            self.inverse_scheduler,
            z0,
            self.cond(embeds),
            self.progress_bar(timesteps) if progress else timesteps,
            record,
            records,
            autocast_mode,
        )

    # ---- features and denoising --------------------------------------------------------------------------------

    def features_at(
        self,
        t: Tensor,
        embeds: Embeds,
        feature_block: int,
        grid: tuple[int, int],
        *,
        denoised: bool = False,
        x0_image: bool = False,
        full: bool = False,
        autocast_mode: str = "none",
    ) -> FeatureFn:
        """A feature function for the drag loop at timestep ``t``: ``up_blocks[feature_block]``'s output on the
        supervision ``grid`` (gradients to the latent), plus the one-step denoise (``denoised``) and the decoded
        x0-prediction (``x0_image``) when loss terms read them. The UNet stops at the feature block unless the noise
        prediction is needed (or ``full``)."""
        n = len(self.unet.up_blocks)
        if not 0 <= feature_block < n:
            raise ParameterError(f"feature_block={feature_block}: this UNet has up_blocks 0..{n - 1}")
        return feature_function(
            self.unet,
            self.scheduler,
            t,
            self.cond(embeds),
            feature_block,
            grid,
            denoised=denoised,
            decode=self.decode if x0_image else None,
            full=full,
            autocast_mode=autocast_mode,
        )

    def bottleneck_at(
        self,
        t: Tensor,
        embeds: Embeds,
        latent: Tensor,
        feature_block: int,
        grid: tuple[int, int],
        *,
        denoised: bool = False,
        x0_image: bool = False,
        autocast_mode: str = "none",
    ) -> tuple[Tensor, FeatureFn]:
        """The UNet's bottleneck (mid-block output) on ``latent`` at ``t`` and the drag loop's feature function of a
        bottleneck (:func:`~dragkit.engines.diffusion.features.bottleneck_function`; DragNoise)."""
        decode = self.decode if x0_image else None
        return bottleneck_function(
            self.unet, self.scheduler, t, self.cond(embeds), latent, feature_block, grid,
            denoised=denoised, decode=decode, autocast_mode=autocast_mode,
        )  # fmt: skip

    def with_bottleneck(self, h: Tensor) -> contextlib.AbstractContextManager:
        """While inside, every UNet call's mid-block output is ``h`` (DragNoise's propagation)."""
        return replaced_output(mid_block_of(self.unet), h)

    def denoise(
        self,
        z_edit: Tensor,
        embeds: Embeds,
        start: int,
        stop: int | None = None,
        *,
        z_src: Tensor | None = None,
        mutual: Sequence[str] = (),
        source: Records | None = None,
        guides: Sequence[SamplingGuide] = (),
        feature_block: int = 0,
        grid: tuple[int, int] = (1, 1),
        variation: Variation | None = None,
        progress: bool = True,
        autocast_mode: str = "none",
        reports: list[dict[str, float]] | None = None,
        record_source: Records | None = None,
    ) -> tuple[Tensor | None, Tensor]:
        """Denoise from ``timesteps[start]`` to ``timesteps[stop]`` (the end when ``None``) with DDIM (η 0) and return
        ``(source latent, edited latent)``. The schedule is the one :meth:`timesteps` set.

        - With ``z_src``: the batch ``[source, edited]``; the self-attention of the ``mutual`` layers reads the
          source branch's keys and values (reference-latent control). ``guides`` act on the edited branch at each
          step (:class:`~dragkit.core.protocols.SamplingGuide`, features from ``up_blocks[feature_block]`` on
          ``grid``); each step's reports are appended to ``reports``. ``variation``: a seed variant's regional SDE.
          ``record_source``: filled with the source half's inputs to the ``mutual`` layers by timestep, for a later
          edit of the same source (``source_cache``) to read instead of a source branch.
        - With ``source`` (recorded inputs of the ``mutual`` layers by timestep, from :meth:`invert` or a batched
          pass's ``record_source``): the edited branch alone (batch 1), its mutual layers reading the recorded
          source; the source latent comes back as ``None``.
        - With neither: the edited branch alone, plain self-attention.
        """
        timesteps = self.scheduler.timesteps[start:stop]
        bar = self.progress_bar(timesteps) if progress else timesteps
        if z_src is None:
            feed: dict[str, Tensor] = {}
            if source is not None:
                check_feed(source, timesteps, guides)
                procs = {name: MutualSelfAttentionProcessor(feed, name) for name in mutual}
            else:
                procs = {}
            cond, z = self.cond(embeds, 1), z_edit
            with attention_processors(self.unet, procs):
                for t in bar:
                    if source is not None:
                        feed.update(source[int(t)])
                    with autocast(self.device, autocast_mode):
                        eps = self.unet(z, t, **cond, return_dict=False)[0]
                    z = self.scheduler.step(eps.to(z.dtype), t, z, return_dict=False)[0]
            return None, z
        z = torch.cat([z_src, z_edit])
        cond = self.cond(embeds, 2)
        store: dict[str, Tensor] = {}
        procs: dict[str, Any] = {name: MutualSelfAttentionProcessor() for name in mutual}
        if record_source is not None:
            procs = {name: RecordingProcessor(proc, store, name, take=len(z_src)) for name, proc in procs.items()}
        with attention_processors(self.unet, procs):
            for k, t in enumerate(bar):
                report: dict[str, float] = {}
                latent = active(guides, "latent", k)
                if latent:
                    z = apply_latent_guides(self.unet, latent, z, t, cond, k, feature_block, grid, report)
                noise, directions = active(guides, "noise", k), active(guides, "direction", k)
                if noise or directions:
                    eps = guided_noise(
                        self.unet,
                        self.scheduler,
                        self.decode,
                        noise,
                        directions,
                        z,
                        t,
                        cond,
                        k,
                        feature_block,
                        grid,
                        report,
                    )
                else:
                    with autocast(self.device, autocast_mode):
                        eps = self.unet(z, t, **cond, return_dict=False)[0].to(z.dtype)
                if variation is not None and variation.eta > 0:
                    z = regional_step(self.scheduler, eps, t, z, variation)
                else:
                    z = self.scheduler.step(eps, t, z, return_dict=False)[0]
                if reports is not None:
                    reports.append(report)
                if record_source is not None:
                    record_source[int(t)] = dict(store)
        return z[:1], z[1:]

    # ---- the identity LoRA and the engine's state during an edit -----------------------------------------------

    def identity_lora(
        self,
        params: dict[str, Any],
        image: Image.Image,
        prompt: str,
        seed: int,
        size: tuple[int, int],
        posterior: Posterior,
        embeds: Embeds,
        *,
        progress: bool = True,
        cache: bool = True,
        cancel: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Put the identity LoRA ``params["lora"]`` in place (trained, cached, or loaded; see
        :func:`~dragkit.engines.diffusion.lora.prepare_identity_lora`; trained with gradient checkpointing when
        ``grad_checkpointing``); it stays until :meth:`editing` ends."""
        with gradient_checkpointing(self.unet, params["grad_checkpointing"]):
            return L.prepare_identity_lora(
                self.unet,
                self.scheduler,
                self.name,
                params["lora"],
                params,
                image,
                prompt,
                seed,
                size,
                posterior.sample,
                self.cond(embeds),
                progress=progress,
                cache=cache,
                cancel=cancel,
            )

    def channels_last(self, on: bool) -> None:
        """Run the UNet's convolutions in channels-last layout from here on (until :meth:`editing` ends)."""
        if on:
            self.unet.to(memory_format=torch.channels_last)

    @contextlib.contextmanager
    def editing(self, params: dict[str, Any]) -> Iterator[None]:
        """The engine's state for one edit, restored afterwards even when the edit raised: the identity LoRA
        removed, the VAE's tiling (``vae_tiling``), the UNet's memory layout (:meth:`channels_last`), every
        parameter's ``requires_grad`` flag (peft marks every other weight as frozen when it injects an adapter) and
        gradient as they were."""
        flags = [(q, q.requires_grad, q.grad) for q in self.unet.parameters()]
        self.timestep_cond = self.guidance_embedding(params["lcm_guidance"])
        tiling = params["vae_tiling"] and self.vae is not None and not getattr(self.vae, "use_tiling", False)
        if tiling:
            self.vae.enable_tiling()
        try:
            yield
        finally:
            self.timestep_cond = None
            if tiling:
                self.vae.disable_tiling()
            L.remove_identity_lora(self.unet)
            if params["channels_last"]:
                self.unet.to(memory_format=torch.contiguous_format)
            for q, flag, grad in flags:
                q.requires_grad_(flag)
                q.grad = grad

    def source_key(
        self,
        image: Image.Image,
        prompt: str,
        size: tuple[int, int],
        params: dict[str, Any],
        lora_cache: str | None,
        mutual: Sequence[str],
    ) -> tuple:
        """``source_cache``'s key for this model (see :meth:`SourceCache.key`)."""
        parts = {
            "unet": id(self.unet),
            "scheduler": id(self.scheduler),
            "device": str(self.device),
            "dtype": str(self.unet.dtype),
        }
        return SourceCache.key(parts, image, prompt, size, params, lora_cache, list(mutual))
