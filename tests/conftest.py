import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def gan_pipe():
    from dragkit import DragGANPipeline

    return DragGANPipeline.from_pretrained()
