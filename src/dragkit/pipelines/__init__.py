"""Python API: pipeline objects in the diffusers style (``from_pretrained``, ``.to``, one ``__call__``).

``DragDiffusionPipeline`` and ``LucidDragPipeline`` are imported on first use (diffusers takes seconds to import).
"""

from typing import Any

from .gan import DragGANPipeline, GANSample
from .identity import IdentityPipeline

__all__ = [
    "DragDiffusionPipeline",
    "DragGANPipeline",
    "GANSample",
    "IdentityPipeline",
    "LucidDragPipeline",
    "load_pipeline",
]


def load_pipeline(
    engine: str,
    model: str | None = None,
    device: str = "cpu",
    dtype: Any = None,
    quiet: bool = False,
    vae: str | None = None,
    unet: str | None = None,
):
    """The pipeline for a method's ``engine`` on ``device``: ``model`` (default: the engine's) in ``dtype``; ``vae``
    (diffusion: a hub id or folder of an ``AutoencoderKL`` or ``AutoencoderTiny``) replaces the checkpoint's VAE,
    e.g. SDXL's fixed for float16, ``madebyollin/sdxl-vae-fp16-fix``, or TAESD, ``madebyollin/taesd``; ``unet`` (a
    hub id or folder of a UNet or of a pipeline with one) replaces its UNet, e.g. FastDrag's LCM-distilled
    ``SimianLuo/LCM_Dreamshaper_v7`` (its guidance embedding: ``lcm_guidance``)."""
    if engine == "identity":
        return IdentityPipeline()
    check_model_fits(engine, model)
    if engine == "gan":  # dtype None or float32 for the DCGAN; a StyleGAN also runs float16/bfloat16 (autocast)
        pipe = DragGANPipeline.from_pretrained(model or "dcgan-faces").to(device)
        pipe.engine.set_precision(dtype)
        return pipe
    from .diffusion import DEFAULT_MODEL, DragDiffusionPipeline

    kwargs: dict[str, Any] = {"progress": not quiet}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if vae is not None:
        kwargs["vae"] = load_vae(vae, dtype)
    if unet is not None:
        kwargs["unet"] = load_unet(unet, dtype)
    pipe = DragDiffusionPipeline.from_pretrained(model or DEFAULT_MODEL, **kwargs).to(device)
    if unet is not None:
        check_unet_fits(pipe, unet)
    pipe.replaced = {k: v for k, v in (("vae", vae), ("unet", unet)) if v is not None}
    pipe.set_progress_bar_config(disable=True if quiet else None, leave=False)
    return pipe


def check_model_fits(engine: str, model: str | None) -> None:
    """A one-line :class:`~dragkit.core.errors.ParameterError` that points the right way when a method's engine and
    the named model do not go together: a diffusion model for a GAN method, or the GAN for a diffusion method."""
    from pathlib import Path

    from ..core.errors import ParameterError

    if model is None:
        return
    path = Path(model)
    if engine == "gan":
        from .diffusion import PACKAGED_MODELS

        diffusion = (
            model in PACKAGED_MODELS
            or (path / "model_index.json").is_file()
            or model.endswith((".safetensors", ".ckpt"))
            or (not path.exists() and "/" in model and path.suffix not in (".pkl", ".pt", ".pth"))
        )
        if diffusion:
            raise ParameterError(
                f"--model {model}: this is a diffusion model, and the method runs on the GAN engine; use a "
                "diffusion method, e.g. --method dragkit (fast) or --method dragdiffusion"
            )
    elif engine == "diffusion" and model == "dcgan-faces":
        raise ParameterError(
            "--model dcgan-faces: this is the face GAN, and the method runs on the diffusion engine; use a GAN "
            "method, e.g. --method dragkit-gan or --method draggan"
        )
    elif engine == "diffusion" and (path.suffix == ".pkl" or (path / "init_kwargs.json").is_file()):
        raise ParameterError(
            f"--model {model}: this is a StyleGAN generator, and the method runs on the diffusion engine; use a GAN "
            "method, e.g. --method draggan"
        )


def load_vae(name: str, dtype: Any = None) -> Any:
    """An autoencoder from a hub id or a local folder (its own or a pipeline's ``vae`` subfolder): an
    ``AutoencoderKL``, or a tiny one (``AutoencoderTiny``: TAESD, ``madebyollin/taesd`` or ``taesdxl``, which decodes
    many times faster), as its config names it; a one-line :class:`~dragkit.core.errors.ModelError` when it cannot be
    loaded."""
    from pathlib import Path

    from diffusers import AutoencoderKL, AutoencoderTiny

    from ..core.errors import ModelError

    path = Path(name)
    sub = "vae" if (path / "vae" / "config.json").is_file() else None
    from diffusers.utils import logging as dlogging

    kwargs = {} if dtype is None else {"torch_dtype": dtype}
    verbosity = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # AutoencoderTiny's saved config carries a key its loader calls unexpected
    try:
        kind = AutoencoderKL.load_config(name, subfolder=sub).get("_class_name", "AutoencoderKL")
        cls = AutoencoderTiny if kind == "AutoencoderTiny" else AutoencoderKL
        return cls.from_pretrained(name, subfolder=sub, **kwargs)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load VAE {name!r}: {first}") from None
    finally:
        dlogging.set_verbosity(verbosity)


def load_unet(name: str, dtype: Any = None) -> Any:
    """A ``UNet2DConditionModel`` from a hub id or a local folder (its own, or a pipeline's ``unet`` subfolder); a
    one-line :class:`~dragkit.core.errors.ModelError` when it cannot be loaded."""
    from pathlib import Path

    from diffusers import UNet2DConditionModel

    from ..core.errors import ModelError

    path = Path(name)
    local = path.exists()
    sub = "unet" if (path / "unet" / "config.json").is_file() or not local else None
    kwargs = {} if dtype is None else {"torch_dtype": dtype}
    try:
        return UNet2DConditionModel.from_pretrained(name, subfolder=sub, **kwargs)
    except Exception as e:
        if sub == "unet" and not local:  # a hub id of a UNet repository rather than a pipeline's
            try:
                return UNet2DConditionModel.from_pretrained(name, **kwargs)
            except Exception:
                pass
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load UNet {name!r}: {first}") from None


def check_unet_fits(pipe: Any, name: str) -> None:
    """A one-line :class:`~dragkit.core.errors.ModelError` when a replacement UNet does not fit the checkpoint's
    VAE (latent channels) or text encoders (cross-attention width)."""
    from ..core.errors import ModelError

    unet = pipe.unet
    if pipe.vae is not None:
        channels = getattr(pipe.vae.config, "latent_channels", None)
        if channels is not None and unet.config.in_channels not in (channels, 2 * channels + 1):
            raise ModelError(
                f"UNet {name!r} takes {unet.config.in_channels} input channels; this model's VAE gives {channels}"
            )
    width = sum(e.config.hidden_size for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e)
    if width and unet.config.cross_attention_dim != width:
        raise ModelError(
            f"UNet {name!r} attends to {unet.config.cross_attention_dim}-wide text; this model's text encoders give "
            f"{width} (a UNet of another family)"
        )


def __getattr__(name: str) -> Any:
    if name in ("DragDiffusionPipeline", "LucidDragPipeline"):
        from . import diffusion

        return getattr(diffusion, name)
    raise AttributeError(name)
