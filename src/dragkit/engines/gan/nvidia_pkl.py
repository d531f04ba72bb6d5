"""Reading NVIDIA's StyleGAN network pickles without running the code inside them.

A StyleGAN2-ADA or StyleGAN3 PyTorch ``.pkl`` (the files DragGAN's download script fetches) is a plain pickle of
``dict(G, D, G_ema, augment_pipe, training_set_kwargs)``. NVIDIA's ``torch_utils.persistence`` stores each network
as a call of ``_reconstruct_persistent_obj(meta)``, where ``meta`` holds the class name, the full source text of the
module that defined it, and the object's state (``_parameters``, ``_buffers``, nested ``_modules``, ``_init_args``,
``_init_kwargs`` and its plain attributes). Loading such a file the official way executes that source text. So
does any plain unpickler, and ``torch.load(weights_only=True)`` refuses it.

:func:`read_nvidia_pkl` reads it through a restricted unpickler with an allow-list (:data:`ALLOWED`):

- the persistence reconstructor becomes a :class:`PersistentRecord` keeping the class name, the init arguments and
  the state; the embedded source is **never executed** (only its length and SHA-256 are kept, to tell versions
  apart);
- tensors are rebuilt only from the legacy ``torch.save`` streams inside the file, through
  ``torch.load(..., weights_only=True)``, and ``torch._utils``' tensor and parameter rebuilders;
- numpy arrays, scalars and dtypes (as named by numpy 1, ``numpy.core``, and numpy 2, ``numpy._core``), ordered
  dicts and sets; ``dnnlib``'s ``EasyDict`` becomes a plain ``dict``;
- TensorFlow-era files: ``dnnlib.tflib.network.Network`` becomes a :class:`TFNetworkRecord` of its variables (the
  network's build source is not executed either). Converting their variables to the PyTorch layout is a separate
  step (NVIDIA's ``legacy.py`` does it by name); dragkit does not do it yet.

Anything else, including every callable a crafted file could name (``os.system``, ``builtins.eval``, a class whose
construction has effects), is refused with one line naming it.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...utils.io import RestrictedUnpickler

PERSISTENCE = ("torch_utils.persistence", "_reconstruct_persistent_obj")
EASYDICT = {("dnnlib.util", "EasyDict"), ("dnnlib", "EasyDict")}
TF_NETWORK = ("dnnlib.tflib.network", "Network")
TORCH_REBUILDERS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch.storage", "_load_from_bytes"),
}
# Every global an NVIDIA network pickle may name, and nothing else.
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        *RestrictedUnpickler.ALLOWED,
        ("builtins", "set"),
        ("builtins", "frozenset"),
        PERSISTENCE,
        *EASYDICT,
        TF_NETWORK,
        *TORCH_REBUILDERS,
    }
)


class NvidiaPickleError(ValueError):
    """The file is not an NVIDIA network pickle dragkit can read (the message names why, in one line)."""


@dataclass
class PersistentRecord:
    """One network object of an NVIDIA pickle, as data: what ``_reconstruct_persistent_obj`` would have rebuilt,
    without importing or executing anything. ``state`` is the object's ``__dict__`` as stored (its
    ``_parameters``, ``_buffers`` and ``_modules`` among them)."""

    class_name: str
    version: int
    state: dict[str, Any]
    source_sha256: str
    source_chars: int

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args", ()))

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return dict(self.state.get("_init_kwargs", {}))

    @property
    def parameters(self) -> dict[str, torch.Tensor]:
        return dict(self.state.get("_parameters") or {})

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        return dict(self.state.get("_buffers") or {})

    @property
    def modules(self) -> dict[str, PersistentRecord]:
        return {k: v for k, v in (self.state.get("_modules") or {}).items() if v is not None}

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every parameter and buffer under its dotted name, as ``torch.nn.Module.state_dict`` names them."""
        out = {prefix + k: v for k, v in {**self.parameters, **self.buffers}.items() if v is not None}
        for name, child in self.modules.items():
            out.update(child.state_dict(f"{prefix}{name}."))
        return out

    def attribute(self, name: str, default: Any = None) -> Any:
        """A plain attribute the object stored (``z_dim``, ``img_resolution``, ...)."""
        return self.state.get(name, default)


@dataclass
class TFNetworkRecord:
    """A TensorFlow-era ``dnnlib.tflib.network.Network`` as data: its name, constructor keyword arguments and
    variables (name → array). Its build source is kept as a hash only, never executed."""

    name: str = ""
    static_kwargs: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    components: dict[str, TFNetworkRecord] = field(default_factory=dict)
    build_func_name: str = ""
    source_sha256: str = ""

    def __setstate__(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise NvidiaPickleError(f"a TensorFlow network's state is {type(state).__name__}, not a dict")
        src = state.get("build_module_src", "")
        self.name = str(state.get("name", ""))
        self.static_kwargs = dict(state.get("static_kwargs") or {})
        self.variables = {str(k): np.asarray(v) for k, v in state.get("variables") or []}
        self.components = dict(state.get("components") or {})
        self.build_func_name = str(state.get("build_func_name", ""))
        self.source_sha256 = hashlib.sha256(str(src).encode()).hexdigest()


def _reconstruct(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or "class_name" not in meta:
        raise NvidiaPickleError("a persistent object without a class record: not an NVIDIA network pickle")
    src = str(meta.get("module_src", ""))
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise NvidiaPickleError(f"{meta['class_name']}: its state is {type(state).__name__}, not a dict")
    return PersistentRecord(
        class_name=str(meta["class_name"]),
        version=int(meta.get("version", 0)),
        state=dict(state),
        source_sha256=hashlib.sha256(src.encode()).hexdigest(),
        source_chars=len(src),
    )


def _load_from_bytes(data: bytes) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise NvidiaPickleError(f"a tensor's storage is {type(data).__name__}, not bytes")
    stream = io.BytesIO(data)
    return torch.load(stream, weights_only=True, map_location="cpu")


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple, requires_grad: bool, *rest: Any):
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise NvidiaPickleError(f"a tensor built on {type(storage).__name__}, not a storage")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: bool, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise NvidiaPickleError(f"a parameter built on {type(data).__name__}, not a tensor")
    return data.detach()  # a plain tensor: the weights are read, never trained here


class EasyDict(dict):
    """``dnnlib.util.EasyDict`` read as a plain dict (it is one, with attribute access)."""

    def __setstate__(self, state: Any) -> None:  # EasyDict keeps its items as items; any __dict__ state is empty
        if state:
            self.update(dict(state))


_REPLACEMENTS: dict[tuple[str, str], Any] = {
    PERSISTENCE: _reconstruct,
    TF_NETWORK: TFNetworkRecord,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    **{k: EasyDict for k in EASYDICT},
}


class NvidiaUnpickler(RestrictedUnpickler):
    """:class:`dragkit.utils.io.RestrictedUnpickler` with NVIDIA's network globals mapped to records
    (:data:`ALLOWED`; the module docstring says what each becomes)."""

    ALLOWED = ALLOWED

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REPLACEMENTS:
            return _REPLACEMENTS[(module, name)]
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: not one of the globals a StyleGAN network pickle holds"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"refusing a persistent id {str(pid)[:60]!r}: not an NVIDIA network pickle")


MAX_PKL_BYTES = 2 * 2**30  # the largest released StyleGAN3 snapshot is ≈ 0.4 GB; a larger file is refused unread


def read_nvidia_pkl(path: str | os.PathLike) -> dict[str, Any]:
    """The contents of an NVIDIA StyleGAN network pickle, as data: a dict whose networks are
    :class:`PersistentRecord` (PyTorch files) or :class:`TFNetworkRecord` (TensorFlow-era files). Nothing in the
    file is executed; a global outside :data:`ALLOWED` raises :class:`NvidiaPickleError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise NvidiaPickleError(f"{p}: no such file")
    size = p.stat().st_size
    if size > MAX_PKL_BYTES:
        raise NvidiaPickleError(f"{p}: {size:,} bytes, larger than any StyleGAN network pickle ({MAX_PKL_BYTES:,})")
    try:
        with open(p, "rb") as f:
            data = NvidiaUnpickler(f).load()
    except NvidiaPickleError as e:
        raise NvidiaPickleError(f"{p}: {e}") from None
    except pickle.UnpicklingError as e:
        why = str(e) if str(e).startswith("refusing") else f"not a readable network pickle ({e})"
        raise NvidiaPickleError(f"{p}: {why}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise NvidiaPickleError(f"{p}: not a readable network pickle ({e})") from None
    if isinstance(data, tuple) and len(data) == 3:  # TensorFlow-era files: (G, D, Gs)
        data = {"G": data[0], "D": data[1], "G_ema": data[2]}
    if not isinstance(data, dict):
        raise NvidiaPickleError(f"{p}: holds {type(data).__name__!r} data, not the dict of networks NVIDIA writes")
    return dict(data)


def generator_record(data: dict[str, Any], path: str | os.PathLike = "") -> PersistentRecord | TFNetworkRecord:
    """The network to edit with: ``G_ema`` (the weights averaged over training, what NVIDIA's and DragGAN's tools
    use), never ``G``, which differs from it in a real snapshot. ``D`` may be absent and is not needed."""
    g = data.get("G_ema")
    if g is None:
        raise NvidiaPickleError(f"{path or 'the pickle'} has no G_ema (keys: {', '.join(map(str, data)) or 'none'})")
    if not isinstance(g, (PersistentRecord, TFNetworkRecord)):
        raise NvidiaPickleError(f"{path or 'the pickle'}: G_ema is a {type(g).__name__}, not a network")
    return g
