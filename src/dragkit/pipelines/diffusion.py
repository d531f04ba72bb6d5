"""``DragDiffusionPipeline``: drag editing on any Stable Diffusion 1.x/2.x checkpoint (DragDiffusion and the
methods that extend it), in the diffusers style: typed components, ``from_pretrained``, ``.to``, one ``__call__``
whose numbered steps order an edit. The model's state lives in the engine
(:class:`~dragkit.engines.diffusion.DiffusionEngine`); how a method drags and samples is its driver
(:mod:`dragkit.methods.drivers`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..core import params as P
from ..core.errors import ModelError, ParameterError
from ..core.geometry import GridMap, dragdiffusion_points
from ..core.progress import LogBar, logging_lines
from ..core.types import DragRequest, DragResult
from ..engines.diffusion import DiffusionEngine, Records, ddim_schedulers, inversion_step_count
from ..engines.diffusion.inpaint import is_inpainting
from ..engines.diffusion.layout import adapt_to_unet
from ..methods import get_method
from ..methods.drivers import DiffusionEdit, GuidanceOptions, check_options, get_driver
from ..parts.intentions import Intention, LLMReasoner
from ..utils.profiler import StageProfiler
from .common import editable_mask, make_result, noop_pairs, resolve_params

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# A model folder may carry parameter defaults measured for that checkpoint (faces64 does).
MODEL_DEFAULTS_FILE = "dragkit.json"


def read_model_defaults(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A model folder's measured parameter defaults: ``{"defaults": {name: value}, "methods": {method: {name:
    value}}, "why": "..."}``. ``defaults`` apply to every method; ``methods`` (optional) hold values measured for
    one method, on top of ``defaults`` for that method only (a learning rate tuned for DragDiffusion is not
    GoodDrag's). Every name must be a parameter of the loop, a part or the diffusion engine, every value valid and
    every method a diffusion preset; a bad file is a :class:`ModelError`. Returns ``(defaults, per_method)``."""
    if not path.is_file():
        return {}, {}
    try:
        data = json.loads(path.read_text())
        defaults = _checked_defaults(data["defaults"], "'defaults'")
        methods = data.get("methods", {})
        if not isinstance(methods, dict):
            raise TypeError("'methods' is not an object")
        per_method = {}
        for name, values in methods.items():
            if get_method(name).engine != "diffusion":
                raise ParameterError(f"method {name!r} in 'methods' is not a diffusion preset")
            per_method[name] = _checked_defaults(values, f"'methods.{name}'")
        return defaults, per_method
    except (ValueError, KeyError, TypeError, ParameterError) as e:
        raise ModelError(f"{path}: not a valid model defaults file ({e})") from None


def single_file_family(path: Path) -> str:
    """Which pipeline a single-file checkpoint holds, by its own weights' names (diffusers' key for each family),
    never by the file's name: ``sdxl`` (the base model's second text encoder is there), ``sdxl-refiner`` (the
    refiner's only encoder is OpenCLIP), else ``sd`` (1.x/2.x). Reads only the names: a ``.safetensors`` header, or
    a ``.ckpt`` memory-mapped with ``weights_only=True``."""
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    else:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        keys = set(state.get("state_dict", state))
    if CHECKPOINT_KEY_NAMES["xl_base"] in keys:
        return "sdxl"
    if CHECKPOINT_KEY_NAMES["xl_refiner"] in keys:
        return "sdxl-refiner"
    return "sd"


def _checked_defaults(values: Any, where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise TypeError(f"{where} is not an object")
    for k in values:
        if P.lookup(k).owner in ("interface", "engine:gan"):
            raise ParameterError(f"{k} cannot be a model default")
    return P.resolve({}, values)


# Models that ship inside the package, addressable by name wherever a model is named.
PACKAGED_MODELS = {"faces64": Path(__file__).resolve().parents[1] / "models" / "faces64"}

try:  # diffusers is an optional dependency: the GAN side of dragkit works without it
    from diffusers import (
        AutoencoderKL,
        AutoencoderTiny,
        DDIMInverseScheduler,
        DDIMScheduler,
        DiffusionPipeline,
        UNet2DConditionModel,
        UNet2DModel,
    )
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
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


class DragDiffusionPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):  # type: ignore[misc]
    """Drag editing on a Stable Diffusion checkpoint (DragDiffusion, Shi et al., CVPR 2024).

    Example::

        pipe = DragDiffusionPipeline.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")
        pipe = pipe.to("cuda", torch.float16)
        req = DragRequest(Image.open("cat.png"), handles=[(250, 180)], targets=[(300, 180)], prompt="a cat")
        out = pipe(req)                       # identity LoRA trained (and cached), inverted, dragged, sampled
        out.image.save("cat_dragged.png")
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae"
    # pixel-space unconditional models (a DDPMPipeline folder: unet + scheduler) have no VAE and no text encoder;
    # only SDXL has the second text encoder
    _optional_components = [  # noqa: RUF012
        "vae",
        "text_encoder",
        "tokenizer",
        "text_encoder_2",
        "tokenizer_2",
        "inverse_scheduler",
    ]

    def __init__(
        self,
        unet: UNet2DConditionModel | UNet2DModel,
        scheduler: DDIMScheduler,
        vae: AutoencoderKL | AutoencoderTiny | None = None,
        text_encoder: CLIPTextModel | None = None,
        tokenizer: CLIPTokenizer | None = None,
        inverse_scheduler: DDIMInverseScheduler | None = None,
        text_encoder_2: CLIPTextModelWithProjection | None = None,
        tokenizer_2: CLIPTokenizer | None = None,
    ) -> None:
        _require_diffusers()
        super().__init__()
        scheduler, inverse_scheduler = ddim_schedulers(scheduler, inverse_scheduler)
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            inverse_scheduler=inverse_scheduler,
        )
        self.model_name = "custom"
        self.replaced: dict[str, str] = {}  # components given in place of the checkpoint's (--vae, --unet)
        self.load_profile: dict[str, Any] | None = None
        # parameter defaults measured for this checkpoint (a model folder's dragkit.json); between the method's
        # defaults and the caller's overrides: for every method, and on top of those for one method
        self.model_defaults: dict[str, Any] = {}
        self.method_defaults: dict[str, dict[str, Any]] = {}
        self._engine: DiffusionEngine | None = None

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | Path = DEFAULT_MODEL, *, progress: bool = True, **kwargs: Any
    ):
        """Load from a hub id, a local diffusers folder, or a single ``.safetensors`` checkpoint.

        ``dtype=torch.float16`` (or ``torch_dtype=``) loads the weights in that precision. diffusers' loading bar is
        shown with ``progress`` on a terminal only (in a log the profiler's ``load`` line says it).
        Errors a user can fix (a missing model offline, a folder that is not a diffusers pipeline) are raised as
        :class:`~dragkit.core.errors.ModelError` with one line naming the model.
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

        verbosity, bars = dlogging.get_verbosity(), dlogging.is_progress_bar_enabled()
        dlogging.set_verbosity_error()  # its "couldn't connect" chatter would precede our one-line error
        if not (progress and sys.stderr.isatty()):  # its "Loading pipeline components" bar
            dlogging.disable_progress_bar()
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
                    "download it once with a network, or use a local diffusers folder",
                    offline=True,
                ) from None
            first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
            raise ModelError(f"cannot load model {name!r}: {first}") from None
        finally:
            dlogging.set_verbosity(verbosity)
            if bars:
                dlogging.enable_progress_bar()
        pipe.model_name = name
        pipe.load_profile = prof.stages["load"]
        folder = Path(pretrained_model_name_or_path)
        if folder.is_dir():
            pipe.model_defaults, pipe.method_defaults = read_model_defaults(folder / MODEL_DEFAULTS_FILE)
        return pipe

    @classmethod
    def _load(cls, name: str, path: Path, **kwargs: Any) -> DragDiffusionPipeline:
        if name.endswith((".safetensors", ".ckpt")):
            if not path.is_file():
                raise ModelError(f"model file {name} not found")
            from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

            family = single_file_family(path)
            if family == "sdxl-refiner":
                raise ModelError(
                    f"{name} is an SDXL refiner: it has one text encoder and conditions on an aesthetic score; drag "
                    "editing runs on the SDXL base model"
                )
            if family == "sdxl":
                sd = StableDiffusionXLPipeline.from_single_file(name, **kwargs)
            else:
                sd = StableDiffusionPipeline.from_single_file(name, safety_checker=None, **kwargs)
            return cls(**{k: v for k, v in sd.components.items() if k in cls._get_signature_keys(cls)[0]})
        if path.exists() and not (path / "model_index.json").is_file():
            raise ModelError(
                f"{name} is not a diffusers pipeline folder (no model_index.json); save one with "
                "pipeline.save_pretrained(folder) or pass a hub id"
            )
        return super().from_pretrained(name, **kwargs)

    def defaults_for(self, method: str) -> dict[str, Any]:
        """This model's measured defaults for ``method``: those for every method, then those for this one."""
        return {**self.model_defaults, **self.method_defaults.get(method, {})}

    @property
    def engine(self) -> DiffusionEngine:
        """The engine over this pipeline's components (rebuilt if a component is replaced; it keeps the source
        cache, whose key names the model it belongs to)."""
        e = self._engine
        parts = (
            self.unet,
            self.scheduler,
            self.inverse_scheduler,
            self.vae,
            self.text_encoder,
            self.tokenizer,
            self.text_encoder_2,
            self.tokenizer_2,
        )
        if e is None or any(a is not b for a, b in zip(parts, self._engine_parts, strict=True)):
            e = DiffusionEngine(
                *parts[:6],
                name=self.model_name,
                progress_bar=self._steps_bar,
                text_encoder_2=parts[6],
                tokenizer_2=parts[7],
            )
            if self._engine is not None:
                e.source_cache = self._engine.source_cache
            self._engine, self._engine_parts = e, parts
        e.name = self.model_name
        return e

    def _steps_bar(self, iterable: Any) -> Any:
        """diffusers' progress bar over denoising steps, or plain lines in a log (``dragkit.core.progress``)."""
        if logging_lines() and getattr(self, "_progress_bar_config", {}).get("disable") is not True:
            return LogBar(iterable, "denoising")
        return self.progress_bar(iterable)

    def clear_source_cache(self) -> None:
        """Forget the kept source (``source_cache``): the next edit inverts and samples its source again."""
        self.engine.source_cache.clear()

    @torch.no_grad()
    def __call__(
        self,
        request: DragRequest,
        *,
        method: str = "dragdiffusion",
        callback: Callable[[dict[str, Any]], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        progress: bool = True,
        options: Any = None,
        record_frames: int = 0,
        **overrides: Any,
    ) -> DragResult | list[DragResult]:
        """Run one drag edit: identity LoRA → inversion → the method's driver (the drag loop, then sampling with
        reference-latent control; or, for ``sampler=guidance``, guided sampling alone) → decode.

        Args:
            request: image, points, optional mask, prompt, seed.
            method: a preset that runs on the diffusion engine (``dragdiffusion``).
            callback: the drag loop's dict per step, plus ``handles_xy`` (image pixels).
            cancel: polled once per LoRA training step and once per drag step; True stops both early (the LoRA
                trained so far is used and not cached, ``info["lora_stopped"]`` says so; the result is sampled from
                the latent reached so far). Inversion and sampling, a fixed number of UNet steps, always finish.
            progress: show progress bars.
            options: what the method's driver takes beyond parameters (LucidDrag's
                :class:`~dragkit.methods.drivers.GuidanceOptions`; :class:`LucidDragPipeline` spells them out). With
                several results asked for, a list of results comes back.
            record_frames: every this many drag steps (and the last), a preview of what the latent would denoise to
                (one UNet call, decoded by ``preview_vae``: TAESD by default) in ``result.frames`` and the callback's
                ``preview``, as the GAN pipeline's; for the drivers that optimize the latent (none for the others).
            **overrides: any parameter by its stable name (``drag_steps=40``, ``lora="none"``, ...).
        """
        # 1. Check the inputs: the method's parameters (preset < model defaults < overrides), its driver, options
        params, driver, adapted = self._check_inputs(request, method, options, overrides)
        engine, prof = self.engine, StageProfiler(self.device)
        if self.load_profile is not None:  # loading happens once per pipeline; every edit reports it
            prof.stages["load"] = dict(self.load_profile)
        (W, H), (w, h) = request.size, engine.working_size(request.size, params)
        grid = (int(0.5 * h), int(0.5 * w))
        gm = GridMap((H, W), grid, convention="corner")
        mutual = engine.mutual_layers(params["mutual_attn_start_layer"])
        info = self._edit_facts(request, method, (w, h), grid, mutual, overrides)
        if adapted:  # the preset's SD 1.5 numbers carried over to this UNet (dragkit.engines.diffusion.layout)
            info["adapted_to_model"] = {k: {"preset": a, "used": b} for k, (a, b) in adapted.items()}

        with engine.editing(params):
            # 2. Encode the prompt and the image at the working size
            with prof.stage("encode"):
                embeds = engine.encode_prompt(request.prompt, (w, h))
                x = engine.image_tensor(request.image, (w, h))
                posterior = engine.encode(x)

            # 3. The identity LoRA: trained (and cached), from the cache, or a user's file (not for a driver that
            #    starts from the image itself)
            if driver.inverts:
                with prof.stage("lora"):
                    args = (params, request.image, request.prompt, request.seed, (w, h), posterior, embeds)
                    info.update(engine.identity_lora(*args, progress=progress, cancel=cancel))
            engine.channels_last(params["channels_last"])

            # 4. Invert the image to the drag's timestep, or take it from the source cache
            key, zt, source, hit = None, posterior.mean, None, False
            if driver.inverts:
                key = self._cache_key(request, params, info, mutual, (w, h), driver.reads_source_branch)
                with prof.stage("inversion"):
                    zt, source, hit = self._invert(key, posterior.mean, embeds, params, mutual, progress)
            info["source_cache"] = "hit" if hit else ("miss" if key is not None else "off")
            start = params["inference_steps"] - inversion_step_count(
                params["inversion_strength"], params["inference_steps"]
            )
            t = engine.timesteps(params["inference_steps"])[start]
            info["drag_timestep"] = int(t)

            # 5. The points and the editable region on the supervision grid
            if params["size_rule"] == "official":  # DragDiffusion's own arithmetic (float32, then rounded)
                handles, targets = (dragdiffusion_points(p, (H, W), grid) for p in (request.handles, request.targets))
            else:
                handles, targets = torch.round(gm.to_grid(request.handles)), torch.round(gm.to_grid(request.targets))
            plain = engine.features_at(t, embeds, params["feature_block"], grid, autocast_mode=params["autocast"])
            mask, image_mask = editable_mask(request, params, plain, zt.float(), handles, targets, gm, info, prof)
            mask = None if mask is None else mask.to(self.device)

            # 6. Drag and sample: the method's driver
            edit = DiffusionEdit(
                engine=engine,
                request=request,
                method=method,
                params=params,
                embeds=embeds,
                image=x,
                latent=zt,
                start=start,
                timestep=t,
                grid=grid,
                grid_map=gm,
                handles=handles,
                targets=targets,
                mask=mask,
                mutual=mutual,
                source=source,
                cache_key=key,
                cache_hit=hit,
                info=info,
                prof=prof,
                callback=callback,
                cancel=cancel,
                progress=progress,
                record_frames=record_frames,
            )
            outcomes = driver.run(edit, options)
            if record_frames:
                _, info["preview_vae"] = engine.preview_decoder(params["preview_vae"])

            # 7. Decode each result to the input's size
            results = []
            for o in outcomes:
                with prof.stage("decode"):
                    if o.image is not None:  # the driver made the picture (at the working size)
                        image = o.image if o.image.size == (W, H) else o.image.resize((W, H), Image.BICUBIC)
                    else:
                        image = engine.decode_image(o.latent, (H, W))
                facts = {**info, **o.info}
                results.append(
                    make_result(
                        request,
                        image,
                        o.loop,
                        gm,
                        method=method,
                        params=params,
                        info=facts,
                        prof=prof,
                        frames=list(edit.frames) if o is outcomes[0] else None,
                        mask=image_mask,
                    )
                )
        many = options is not None and getattr(options, "num_results", None) is not None
        return results if many else results[0]

    def _check_inputs(
        self, request: DragRequest, method: str, options: Any, overrides: dict[str, Any]
    ) -> tuple[dict[str, Any], Any, dict[str, tuple[Any, Any]]]:
        """The edit's parameters (the preset's, then the model folder's for this method, then the caller's; the
        preset's layer numbers and working width carried over to this UNet, see
        :func:`~dragkit.engines.diffusion.layout.adapt_to_unet`) and its driver, checked: the driver takes these
        options; the source branch can be read from the inversion; the feature block exists. Returns the
        parameters, the driver and what was carried over."""
        model_defaults = self.defaults_for(method)
        params = resolve_params(method, "diffusion", request, {**model_defaults, **overrides})
        engine = self.engine
        fixed = set(model_defaults) | set(overrides)
        adapted = adapt_to_unet(params, fixed, engine.family, self.unet, engine.scale_factor)
        driver = get_driver(params["sampler"])
        check_options(driver, options, method)
        if params["source_kv"] == "inversion" and (driver.reads_source_branch or params["closs_weight"] > 0):
            raise ParameterError(
                "source_kv=inversion: the correspondence loss and LucidDrag's guidance read the source branch's "
                f"features while sampling ({method}); use source_kv=recompute"
            )
        if params["repair_strength"] > 0 and params["sampler"] != "warp":
            raise ParameterError(
                f"repair_strength={params['repair_strength']}: only the warp sampler repairs (sampler=warp, as "
                f"fastdrag and dragkit); {method} uses sampler={params['sampler']}"
            )
        if is_inpainting(self.unet) != (params["sampler"] == "inpaint"):
            raise ParameterError(
                f"{method} edits with sampler={params['sampler']}, which needs "
                + (
                    "an SD inpainting checkpoint (9 input channels; e.g. runwayml/stable-diffusion-inpainting)"
                    if params["sampler"] == "inpaint"
                    else "a plain checkpoint; this one is an inpainting checkpoint (9 input channels): use --method "
                    "inpaint4drag"
                )
            )
        n = len(self.unet.up_blocks)
        if not 0 <= params["feature_block"] < n:
            raise ParameterError(f"feature_block={params['feature_block']}: this UNet has up_blocks 0..{n - 1}")
        return params, driver, adapted

    def _edit_facts(
        self,
        request: DragRequest,
        method: str,
        size: tuple[int, int],
        grid: tuple[int, int],
        mutual: list[str],
        overrides: dict[str, Any],
    ) -> dict[str, Any]:
        """What every result of this edit reports about the model and the geometry."""
        (W, H), (w, h) = request.size, size
        if (w, h) != (W, H):
            logger.info("image %dx%d is edited at %dx%d; points are mapped", W, H, w, h)
        used = {k: v for k, v in self.defaults_for(method).items() if k not in overrides}
        return {
            "engine": "diffusion",
            "model": self.model_name,
            **({"replaced": dict(self.replaced)} if self.replaced else {}),
            "model_family": self.engine.family,
            "prediction_type": self.scheduler.config.prediction_type,
            "working_size": [w, h],
            "scale": [w / W, h / H],
            "grid_size": list(grid),
            "device": str(self.device),
            "dtype": str(self.unet.dtype).replace("torch.", ""),
            **({"model_defaults": used} if used else {}),
            **noop_pairs(request),
            "mutual_attention_blocks": mutual,
        }

    def _invert(
        self,
        key: tuple | None,
        z0: torch.Tensor,
        embeds: Any,
        params: dict[str, Any],
        mutual: list[str],
        progress: bool,
    ) -> tuple[torch.Tensor, Records | None, bool]:
        """The inverted latent, the source branch's recorded inputs to the mutual layers when the sampling may read
        them instead of recomputing the source (``source_kv=inversion``, or a source-cache hit), and whether the
        source cache had it."""
        engine = self.engine
        kept = engine.source_cache.get(key)
        if kept is not None:
            return kept.latent, kept.inputs, True
        engine.source_cache.clear()  # one source kept: the old one's memory is freed before inverting
        steps = params["inference_steps"]
        n_inv = inversion_step_count(params["inversion_strength"], steps)
        source_kv = params["source_kv"] == "inversion"
        records: Records | None = {} if source_kv else None
        zt = engine.invert(
            z0,
            embeds,
            steps,
            n_inv,
            record=mutual if source_kv else (),
            records=records,
            progress=progress,
            autocast_mode=params["autocast"],
        )
        return zt, records, False

    def _cache_key(
        self,
        request: DragRequest,
        params: dict[str, Any],
        info: dict[str, Any],
        mutual: list[str],
        size: tuple[int, int],
        reads_source_branch: bool,
    ) -> tuple | None:
        """``source_cache``'s key, or ``None`` when this edit neither reads nor fills the cache: it is off; the
        driver or a correspondence loss reads more of the source branch than the mutual layers' inputs; or a LoRA
        was trained but not cached, so its weights have no name."""
        if not params["source_cache"] or reads_source_branch or params["closs_weight"] > 0:
            return None
        if params["lora"] != "none" and info.get("lora_cache") is None:
            return None
        return self.engine.source_key(request.image, request.prompt, size, params, info.get("lora_cache"), mutual)


class LucidDragPipeline(DragDiffusionPipeline):
    """LucidDrag (Cui et al., NeurIPS 2024) with its own arguments spelled out: the same components and parameters
    as :class:`DragDiffusionPipeline`, method ``luciddrag`` by default.

    Example::

        pipe = LucidDragPipeline.from_pretrained("faces64")
        results = pipe(DragRequest(face, [(32, 49)], [(32, 44)]), num_results=3)   # best first
    """

    def __call__(  # type: ignore[override]
        self,
        request: DragRequest,
        *,
        method: str = "luciddrag",
        intention: Intention | None = None,
        num_results: int | None = None,
        llm: LLMReasoner | None = None,
        discriminator: torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> DragResult | list[DragResult]:
        """``intention``, ``num_results``, ``llm``, ``discriminator``: see
        :class:`~dragkit.methods.drivers.GuidanceOptions`; everything else as :meth:`DragDiffusionPipeline.__call__`.
        With ``num_results`` a list of results comes back, best first."""
        options = GuidanceOptions(intention, num_results, llm, discriminator)
        return super().__call__(request, method=method, options=options, **kwargs)
