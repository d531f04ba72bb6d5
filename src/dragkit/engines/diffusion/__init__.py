"""The diffusion engine: a Stable Diffusion (or pixel-space) model's state for drag editing, and its pieces.

- :mod:`.engine`: :class:`DiffusionEngine` (encode/decode, invert, features at any timestep, denoise any span of the
  schedule, the source cache and the identity LoRA); :mod:`.params`: the engine's parameters; :mod:`.components`:
  the pieces it is built from (the prompt embeddings, an image's latent, the DDIM pair, gradient switches);
- :mod:`.features`: UNet features through forward hooks, the forward stopped once they are in hand;
- :mod:`.attention`: attention processors (mutual self-attention, recording), installed and always restored;
- :mod:`.sampling`: the aligned DDIM schedules, stepping through a span, how sampling-time parts act;
- :mod:`.lora`: the identity LoRA through peft, cached on disk;
- :mod:`.source_cache`: the last source's inverted latent and recorded source branch.

Everything goes through diffusers' public contracts: schedulers do the DDIM math, features come from
``register_forward_hook``, attention is customised with processors, LoRA lives in peft adapters. diffusers itself
is imported only when a model is used.
"""

from .attention import (
    MutualSelfAttentionProcessor,
    RecordingProcessor,
    attention_modules,
    attention_processors,
    self_attentions,
)
from .components import (
    Embeds,
    Posterior,
    PromptEmbeds,
    ddim_schedulers,
    gradient_checkpointing,
    model_family,
    weights_require_grad,
)
from .engine import DiffusionEngine
from .features import UNetOutput, autocast, feature_function, unet_forward
from .lora import (
    LORA_ADAPTER,
    add_identity_lora,
    identity_lora_state_dict,
    load_identity_lora,
    lora_cache_dir,
    lora_cache_key,
    remove_identity_lora,
    train_identity_lora,
)
from .sampling import (
    Variation,
    aligned_inverse_scheduler,
    check_alignment,
    inversion_step_count,
    latent_step,
    renoise,
)
from .source_cache import Records, SourceCache

__all__ = [
    "LORA_ADAPTER",
    "DiffusionEngine",
    "Embeds",
    "MutualSelfAttentionProcessor",
    "Posterior",
    "PromptEmbeds",
    "RecordingProcessor",
    "Records",
    "SourceCache",
    "UNetOutput",
    "Variation",
    "add_identity_lora",
    "aligned_inverse_scheduler",
    "attention_modules",
    "attention_processors",
    "autocast",
    "check_alignment",
    "ddim_schedulers",
    "feature_function",
    "gradient_checkpointing",
    "identity_lora_state_dict",
    "inversion_step_count",
    "latent_step",
    "load_identity_lora",
    "lora_cache_dir",
    "lora_cache_key",
    "model_family",
    "remove_identity_lora",
    "renoise",
    "self_attentions",
    "train_identity_lora",
    "unet_forward",
    "weights_require_grad",
]
