"""vlpeft: controlled empirical studies of parameter-efficient fine-tuning on BLIP-style
vision-language pre-trained models (after Tian et al., arXiv 2403.08433)."""

__version__ = "0.1.0"


def load_model(path_or_hub_id: str, *, device: str = "cpu"):
    """Load a vlpeft checkpoint folder or a transformers BLIP checkpoint (folder or hub id).

    Returns a `vlpeft.model.checkpoint.LoadedModel` (model, tokenizer, image preprocessing)."""
    from vlpeft.model.checkpoint import load_model as _load

    return _load(path_or_hub_id, device=device)
