import os

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
