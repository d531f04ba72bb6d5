import contextlib
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A tiny random-weight Stable Diffusion pipeline folder, built offline and saved with save_pretrained."""
    pytest.importorskip("diffusers")
    from dragkit.utils.testing import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def pipe(tiny_sd):
    """The tiny SD loaded once per test session through the real loading path."""
    from dragkit import DragDiffusionPipeline

    p = DragDiffusionPipeline.from_pretrained(tiny_sd)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="session")
def face_png(tmp_path_factory, gan_pipe):
    d = tmp_path_factory.mktemp("face")
    gan_pipe.generate(27).image.save(d / "face.png")
    return d / "face.png"


@pytest.fixture(scope="session")
def gan_pipe():
    from dragkit import DragGANPipeline

    return DragGANPipeline.from_pretrained()


@pytest.fixture(scope="session")
def pixel_pipe(tmp_path_factory):
    from dragkit import DragDiffusionPipeline
    from dragkit.utils.testing import build_tiny_pixel

    p = DragDiffusionPipeline.from_pretrained(build_tiny_pixel(tmp_path_factory.mktemp("pixel")))
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    """A tiny random-weight SDXL pipeline folder (two text encoders, text_time conditioning), built offline."""
    pytest.importorskip("diffusers")
    from dragkit.utils.testing import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="session")
def xl_pipe(tiny_sdxl):
    from dragkit import DragDiffusionPipeline

    p = DragDiffusionPipeline.from_pretrained(tiny_sdxl)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="session")
def tiny_sd2_v(tmp_path_factory):
    """A tiny random-weight SD 2.x-style v-prediction pipeline folder, built offline."""
    pytest.importorskip("diffusers")
    from dragkit.utils.testing import build_tiny_sd2_v

    return build_tiny_sd2_v(tmp_path_factory.mktemp("tiny-sd2-v"))


@pytest.fixture
def nvidia(monkeypatch):
    """Stand-ins named as NVIDIA's modules (``torch_utils.persistence``, ``dnnlib.util``, ``dnnlib.tflib.network``),
    present only while a test runs, so that pickling writes the globals their network files name: ``Persistent``
    writes what their persistence writes, ``EasyDict`` and ``Network`` pickle as theirs do. None of their code."""
    ns = types.SimpleNamespace()

    def _reconstruct_persistent_obj(meta):  # never called: the reader maps this name to a record
        raise AssertionError("the reader called the file's reconstructor")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict

    class Network:  # TensorFlow-era dnnlib.tflib.network.Network: pickled through its own __getstate__
        def __init__(self, state):
            self._state = state

        def __getstate__(self):
            return self._state

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    tfnet = types.ModuleType("dnnlib.tflib.network")
    tfnet.Network = Network
    for name, mod in {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
        "dnnlib.tflib": types.ModuleType("dnnlib.tflib"),
        "dnnlib.tflib.network": tfnet,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)

    class Persistent:  # what persistence.persistent_class's __reduce__ writes
        def __init__(self, class_name, state, source):
            self.class_name, self.state, self.source = class_name, state, source

        def __reduce__(self):
            meta = dict(type="class", version=6, module_src=self.source, class_name=self.class_name, state=self.state)
            return (_reconstruct_persistent_obj, (meta,))

    ns.EasyDict, ns.Persistent, ns.Network = EasyDict, Persistent, Network
    return ns


def write_nvidia_pkl(nvidia, generator, path):
    """``generator`` (dragkit's StyleGAN2) written as NVIDIA's snapshots store one: ``{G, D, G_ema, ...}`` with
    ``G_ema`` (and ``G``) in their persistence layout, every module's state and the init kwargs; the embedded
    "source" would stop the interpreter if anything ran it."""
    import pickle
    from collections import OrderedDict

    def persistent(module, kwargs=None):
        state = {
            "training": False,
            "_parameters": OrderedDict((k, torch.nn.Parameter(v.clone())) for k, v in module._parameters.items()),
            "_buffers": OrderedDict(module._buffers),
            "_modules": OrderedDict((k, persistent(m)) for k, m in module._modules.items()),
            "_init_args": (),
            "_init_kwargs": kwargs or {},
        }
        return nvidia.Persistent("Generator" if kwargs else type(module).__name__, state, "raise SystemExit")

    g = persistent(generator, generator.init_kwargs)
    path.write_bytes(pickle.dumps({"G": g, "D": None, "G_ema": g, "augment_pipe": None}, protocol=3))
    return path


@pytest.fixture
def oracle_pkl(nvidia, tmp_path):
    """The DragGAN oracle's small random 128-px StyleGAN2 (tests/oracle/draggan) as an NVIDIA ``.pkl``."""
    from dragkit.engines.gan import load_stylegan

    return write_nvidia_pkl(nvidia, load_stylegan(Path(__file__).parent / "oracle" / "draggan"), tmp_path / "g.pkl")


# the official DragDiffusion code's tiny random SD 1.5-layout model, which the other methods' oracles share
SHARED_ORACLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "oracle" / "dragdiffusion"


def shared_oracle_pipe():
    """``DragDiffusionPipeline`` on the shared oracle model, progress bars off (each oracle test module keeps one)."""
    from dragkit import DragDiffusionPipeline

    p = DragDiffusionPipeline.from_pretrained(SHARED_ORACLE / "model")
    p.set_progress_bar_config(disable=True)
    return p


@contextlib.contextmanager
def vae_inputs(vae):
    """While inside, every latent entering ``vae.decode`` (× its scaling factor: as the oracles record it) is
    appended to the yielded list; the VAE is restored afterwards."""
    seen: list[torch.Tensor] = []
    decode = vae.decode

    def keep(z, *args, **kwargs):
        seen.append(z.detach().clone() * vae.config.scaling_factor)
        return decode(z, *args, **kwargs)

    vae.decode = keep
    try:
        yield seen
    finally:
        del vae.decode
