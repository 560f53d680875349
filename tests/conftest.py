import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny BLIP pre-trained for a few steps on a few scenes (seconds): a real checkpoint folder."""
    from vlpeft.recipes.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    record = pretrain(PretrainConfig(scenes=256, steps=40, batch_size=16, warmup=5, lr=1e-3), out, progress=False)
    return out, record
