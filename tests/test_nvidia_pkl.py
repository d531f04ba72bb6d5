"""The NVIDIA network-pickle reader: it reads the layout StyleGAN2-ADA/StyleGAN3 PyTorch files and the
TensorFlow-era ones have, and it never runs anything a file names.

The files are made here in that layout (the ``nvidia`` fixture of ``conftest.py``): stand-in modules named as
NVIDIA's (``torch_utils.persistence``, ``dnnlib.util``, ``dnnlib.tflib.network``) exist only while a test pickles,
so that the pickle names the same globals a real file names. Their embedded "module source" would write a marker
file if anything executed it, and the stand-in reconstructor fails the test if anything calls it.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from dragkit.engines.gan.nvidia_pkl import (
    ALLOWED,
    NvidiaPickleError,
    PersistentRecord,
    TFNetworkRecord,
    generator_record,
    read_nvidia_pkl,
)


def network(ns, class_name, source, seed, children=None):
    g = torch.Generator().manual_seed(seed)
    state = {
        "training": False,
        "_parameters": OrderedDict(weight=torch.nn.Parameter(torch.randn(4, 8, generator=g)), bias=None),
        "_buffers": OrderedDict(w_avg=torch.randn(4, generator=g)),
        "_non_persistent_buffers_set": set(),
        "_modules": OrderedDict(children or {}),
        "_init_args": (),
        "_init_kwargs": ns.EasyDict(z_dim=8, w_dim=4, mapping_kwargs=ns.EasyDict(num_layers=2)),
        "z_dim": 8,
        "lr_multiplier": np.float32(0.01),
    }
    return ns.Persistent(class_name, state, source)


def write(tmp_path, data, protocol=3, name="net.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [3, 4])
def test_reads_a_stylegan_pytorch_pickle_as_data_without_running_its_embedded_source(nvidia, tmp_path, protocol):
    marker = tmp_path / "ran.txt"
    source = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('the embedded source ran')\n"
    g = network(nvidia, "Generator", source, 0, {"mapping": network(nvidia, "MappingNetwork", source, 1)})
    g_ema = network(nvidia, "Generator", source, 2, {"mapping": network(nvidia, "MappingNetwork", source, 3)})
    data = {"G": g, "G_ema": g_ema, "augment_pipe": None, "training_set_kwargs": nvidia.EasyDict(resolution=64)}
    data = read_nvidia_pkl(write(tmp_path, data, protocol))  # no D: a generator-only file
    assert not marker.exists()
    rec = generator_record(data)
    assert isinstance(rec, PersistentRecord) and rec.class_name == "Generator" and rec.source_chars == len(source)
    sd = rec.state_dict()
    assert set(sd) == {"weight", "w_avg", "mapping.weight", "mapping.w_avg"}  # bias=None is no tensor
    want = network(nvidia, "Generator", source, 2).state["_parameters"]["weight"]
    assert torch.equal(sd["weight"], want.detach()) and not sd["weight"].requires_grad
    assert not torch.equal(data["G"].state_dict()["weight"], sd["weight"])  # G_ema, never G
    kw = rec.init_kwargs
    assert kw == {"z_dim": 8, "w_dim": 4, "mapping_kwargs": {"num_layers": 2}}
    assert isinstance(kw["mapping_kwargs"], dict)
    assert rec.attribute("lr_multiplier") == np.float32(0.01) and data["training_set_kwargs"] == {"resolution": 64}


def test_accepts_numpy_1_names_as_nvidia_s_2020_files_have_them(nvidia, tmp_path):
    blob = pickle.dumps({"G_ema": network(nvidia, "Generator", "", 0)}, protocol=3)
    assert b"numpy._core.multiarray" in blob  # written under numpy 2 here
    path = tmp_path / "old.pkl"
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert generator_record(read_nvidia_pkl(path)).attribute("lr_multiplier") == np.float32(0.01)


class Hostile:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return (self.call, (self.arg,))


@pytest.mark.parametrize(
    "call, named", [(os.system, f"{os.system.__module__}.system"), (exec, "builtins.exec"), (eval, "builtins.eval")]
)
def test_refuses_a_pickle_that_would_run_a_command_and_runs_nothing(nvidia, tmp_path, call, named):
    marker = tmp_path / "owned"
    arg = f"touch {marker}" if call is os.system else f"open({str(marker)!r}, 'w').write('x')"
    data = {"G_ema": network(nvidia, "Generator", "", 0), "D": Hostile(call, arg)}
    with pytest.raises(NvidiaPickleError, match=f"refusing to unpickle {named}:") as e:
        read_nvidia_pkl(write(tmp_path, data))
    assert not marker.exists() and "\n" not in str(e.value)


def test_refuses_other_torch_globals_and_persistent_ids(nvidia, tmp_path):
    with pytest.raises(NvidiaPickleError, match=r"refusing to unpickle torch\.nn\.modules\.linear\.Linear"):
        read_nvidia_pkl(write(tmp_path, {"G_ema": torch.nn.Linear(2, 2)}))
    zipped = tmp_path / "torch_save.pkl"
    torch.save({"w": torch.ones(2)}, zipped, _use_new_zipfile_serialization=False)  # a torch.save stream: not a pkl
    with pytest.raises(NvidiaPickleError, match="not the dict of networks NVIDIA writes"):
        read_nvidia_pkl(zipped)


def test_reads_a_tensorflow_era_pickle_as_variables(nvidia, tmp_path):
    marker = tmp_path / "ran_tf.txt"

    def tf(name, variables, components=None):
        return nvidia.Network(
            dict(
                version=4,
                name=name,
                static_kwargs=dict(resolution=64, num_channels=3),
                components=components or {},
                build_module_src=f"open({str(marker)!r}, 'w').write('x')",
                build_func_name=name,
                variables=variables,
            )
        )

    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    synthesis = tf("G_synthesis", [("4x4/Conv/weight", w)])
    gs = tf("G_main", [("dlatent_avg", np.zeros(4, np.float32))], {"synthesis": synthesis})
    data = read_nvidia_pkl(write(tmp_path, (tf("G", []), tf("D", []), gs), protocol=4))
    rec = generator_record(data)
    assert isinstance(rec, TFNetworkRecord) and rec.name == "G_main" and not marker.exists()
    assert np.array_equal(rec.components["synthesis"].variables["4x4/Conv/weight"], w)
    assert rec.static_kwargs == {"resolution": 64, "num_channels": 3}


def test_says_what_is_missing(nvidia, tmp_path):
    with pytest.raises(NvidiaPickleError, match=r"has no G_ema \(keys: G, D\)"):
        generator_record(read_nvidia_pkl(write(tmp_path, {"G": None, "D": None})))
    with pytest.raises(NvidiaPickleError, match="no such file"):
        read_nvidia_pkl(tmp_path / "absent.pkl")
    (tmp_path / "text.pkl").write_text("not a pickle")
    with pytest.raises(NvidiaPickleError, match="not a readable network pickle"):
        read_nvidia_pkl(tmp_path / "text.pkl")
    assert ("torch_utils.persistence", "_reconstruct_persistent_obj") in ALLOWED and len(ALLOWED) < 30


def test_the_gan_engine_opens_pickles_only_through_the_safe_reader(nvidia, tmp_path):
    """A ``.pkl`` goes to the StyleGAN engine, through the reader: a hostile one is refused (nothing runs), one that
    is not a StyleGAN2 generator is one line, a TensorFlow-era one says which conversion it needs; the DCGAN loader
    points a ``.pkl`` to the right door."""
    from dragkit.core.errors import ModelError
    from dragkit.engines.gan import load_engine
    from dragkit.engines.gan.engine import load_generator

    marker = tmp_path / "ran.txt"
    hostile = write(tmp_path, {"G_ema": Hostile(os.system, f"touch {marker}")}, name="evil.pkl")
    with pytest.raises(ModelError, match="refusing to unpickle"):
        load_engine(hostile)
    assert not marker.exists()
    path = write(tmp_path, {"G_ema": network(nvidia, "Generator", "", 0)}, name="ffhq.pkl")
    with pytest.raises(ModelError, match="init_kwargs lack img_resolution: not a StyleGAN2 generator"):
        load_engine(path)
    tf = nvidia.Network(dict(version=4, name="G_main", static_kwargs={}, components={}, build_module_src="",
                             build_func_name="G_main", variables=[]))  # fmt: skip
    with pytest.raises(ModelError, match="TensorFlow-era StyleGAN pickle.*legacy.py"):
        load_engine(write(tmp_path, (None, None, tf), protocol=4, name="car-config-f.pkl"))
    with pytest.raises(ModelError, match="a network pickle is a StyleGAN file.*load_engine"):
        load_generator(path)
