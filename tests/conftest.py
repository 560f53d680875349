import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_collection_modifyitems(config, items):
    """A test that uses the pre-trained fixture checkpoint is slow: the first one pays its pre-training,
    and each one trains or evaluates on it."""
    for item in items:
        if "tiny_checkpoint" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny BLIP pre-trained for a few steps on a few scenes (seconds): a real checkpoint folder."""
    from vlpeft.recipes.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    record = pretrain(PretrainConfig(scenes=256, steps=40, batch_size=16, warmup=5, lr=1e-3), out, progress=False)
    return out, record
