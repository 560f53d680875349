"""Checkpoint folders: vlpeft's own format, and transformers BLIP folders or hub ids.

vlpeft format (written by `save_checkpoint`, atomically file by file):
    config.json        {"format": "vlpeft-blip", "version": 1, "model": BlipConfig, "preprocess": ImagePreprocess}
    model.safetensors  weights (a tied LM head is stored once, as the decoder's word embeddings)
    tokenizer.json     the `tokenizers` WordPiece tokenizer
    pretrain.json      (pre-trained here) the data recipe, objectives, steps and seed
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from vlpeft.data.images import ImagePreprocess
from vlpeft.errors import UserError, shown
from vlpeft.io import atomic_path, hash_file, read_json, write_json
from vlpeft.model.blip import Blip
from vlpeft.model.config import BlipConfig
from vlpeft.model.tokenizer import TextTokenizer, load_tokenizer, save_tokenizer

FORMAT = "vlpeft-blip"


@dataclass
class LoadedModel:
    model: Blip
    tokenizer: TextTokenizer
    preprocess: ImagePreprocess
    source: str
    kind: str  # "vlpeft" or "transformers"
    pretrain: dict[str, Any] | None = None  # pretrain.json, when the checkpoint was pre-trained here
    extra: dict[str, Any] = field(default_factory=dict)


def scene_seed_of(pretrain: dict[str, Any] | None, given: int | None = None) -> int:
    """The synthetic-scene seed a checkpoint's scene tasks use: `given` when set, else the seed its
    pre-training drew its scenes with (`pretrain.json`), 0 for a checkpoint not pre-trained here."""
    return int(given) if given is not None else int((pretrain or {}).get("seed", 0))


def save_checkpoint(folder: str | Path, model: Blip, tokenizer: TextTokenizer, preprocess: ImagePreprocess,
                    pretrain: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tie_lm_head:
        state.pop("lm_head.out.weight", None)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    save_tokenizer(tokenizer, folder / "tokenizer.json")
    if pretrain is not None:
        write_json(folder / "pretrain.json", pretrain)
    # config.json last: a folder with a config is a complete checkpoint.
    write_json(folder / "config.json", {"format": FORMAT, "version": 1, "model": model.cfg.to_dict(),
                                        "preprocess": preprocess.to_dict()})
    return folder


# Checkpoints that ship with vlpeft, by name (`--model tiny`): vlpeft/checkpoints/<name>/, a vlpeft
# checkpoint folder plus SHIPPED_RECORD (how it was made, and its checkpoint_digest, checked on load).
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
SHIPPED_RECORD = "shipped.json"


def shipped_names() -> list[str]:
    return sorted(p.parent.name for p in SHIPPED_DIR.glob(f"*/{SHIPPED_RECORD}"))


def _local(ref: str | Path) -> Path | None:
    """The local folder a checkpoint reference names: the folder itself when it exists (a folder of
    yours named like a shipped checkpoint wins), else the shipped checkpoint of that name; None
    for anything else (a hub id, a missing folder)."""
    folder = Path(ref).expanduser()
    if folder.exists():
        return folder
    shipped = SHIPPED_DIR / str(ref)
    return shipped if str(ref) in shipped_names() else None


def checkpoint_exists(ref: str | Path) -> bool:
    """Whether `ref` names a complete local checkpoint (a folder with its config.json, or a shipped name)."""
    folder = _local(ref)
    return folder is not None and (folder / "config.json").is_file()


def locate(ref: str | Path) -> Path | None:
    """`_local`, a shipped checkpoint verified first: its digest must be the one recorded when it was
    made (a damaged or edited install is one line, not silently other scores)."""
    folder = _local(ref)
    if folder is not None and folder.parent == SHIPPED_DIR and not Path(ref).expanduser().exists():
        record = read_json(folder / SHIPPED_RECORD, "shipped checkpoint record")
        want, got = record.get("checkpoint_digest"), checkpoint_digest(folder)
        if got != want:
            raise UserError(f"{folder}: the shipped checkpoint {str(ref)!r} is not the one vlpeft was released with "
                            f"(digest {got}, recorded {want}); reinstall vlpeft")
    return folder


def load_model(path_or_hub_id: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a vlpeft checkpoint folder, a checkpoint shipped with vlpeft by name (`tiny`), a
    transformers BLIP folder, or (with a network) a hub id."""
    folder = locate(path_or_hub_id)
    if folder is None:
        folder = _download(str(path_or_hub_id))
    if not folder.is_dir():
        raise UserError(f"{folder}: a checkpoint must be a folder")
    meta = read_json(folder / "config.json", "checkpoint config")
    if not isinstance(meta, dict):
        raise UserError(f"{folder / 'config.json'}: expected a JSON object")
    if meta.get("format") == FORMAT:
        loaded = _load_vlpeft(folder, meta)
    elif meta.get("model_type") == "blip":
        loaded = _load_transformers(folder, meta)
    else:
        what = meta.get("model_type") or meta.get("format") or "unknown"
        raise UserError(f"{folder}: not a BLIP checkpoint (config.json describes {what!r})")
    loaded.model.to(device).eval()
    return loaded


def _load_vlpeft(folder: Path, meta: dict) -> LoadedModel:
    from safetensors.torch import load_file

    cfg = BlipConfig.from_dict(meta.get("model", {}), source=str(folder / "config.json"))
    preprocess = ImagePreprocess.from_dict(meta.get("preprocess") or {"image_size": cfg.vision.image_size})
    tokenizer = load_tokenizer(_need(folder / "tokenizer.json"), add_blip_tokens=False)
    weights = _need(folder / "model.safetensors")
    try:
        state = load_file(weights)
    except Exception as e:
        raise UserError(f"{weights}: cannot read weights ({e.__class__.__name__}: {str(e)[:160]})") from e
    model = _build(cfg, state, weights, allowed_missing={"lm_head.out.weight"} if cfg.tie_lm_head else set())
    return LoadedModel(model, tokenizer, preprocess, str(folder), "vlpeft", _read_pretrain(folder))


def _read_pretrain(folder: Path) -> dict[str, Any] | None:
    """The folder's pretrain.json, checked (None: it has none)."""
    pretrain_file = folder / "pretrain.json"
    pretrain = read_json(pretrain_file, "pretrain record") if pretrain_file.exists() else None
    if pretrain is not None:  # its seed draws the synthetic scenes of the scenes tasks
        seed = pretrain.get("seed", 0) if isinstance(pretrain, dict) else None
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"{pretrain_file}: expected a JSON object whose seed is an integer, got "
                            f"{shown(seed if isinstance(pretrain, dict) else pretrain)}")
    return pretrain


def pretrain_record(ref: str | Path) -> dict[str, Any] | None:
    """The pre-training record (pretrain.json) of the local checkpoint `ref` names, a folder or a
    shipped name, without loading it; None when it has none (a hub id, a transformers folder, a
    missing folder)."""
    folder = _local(ref)
    return None if folder is None else _read_pretrain(folder)


def _load_transformers(folder: Path, meta: dict) -> LoadedModel:
    from vlpeft.model.hf import config_from_hf, convert_state_dict, read_hf_weights

    tokenizer = load_tokenizer(folder)
    ids = {"cls": tokenizer.cls_id, "enc": tokenizer.enc_id}
    cfg = config_from_hf(meta, str(folder / "config.json"), token_ids=ids)
    pp_file = folder / "preprocessor_config.json"
    pp = read_json(pp_file, "image preprocessor config") if pp_file.exists() else {}
    size = pp.get("size", cfg.vision.image_size)
    size = size.get("height", cfg.vision.image_size) if isinstance(size, dict) else int(size)
    preprocess = ImagePreprocess(
        image_size=size, **{k: tuple(pp[f"image_{k}"]) for k in ("mean", "std") if f"image_{k}" in pp}
    )
    state = convert_state_dict(read_hf_weights(folder), cfg)
    # transformers' retrieval model has no contrastive temperature: BLIP's initial 0.07 (see _build).
    model = _build(cfg, state, folder, allowed_missing={"temp", "lm_head.out.weight"} if cfg.tie_lm_head else {"temp"})
    return LoadedModel(model, tokenizer, preprocess, str(folder), "transformers")


def _build(cfg: BlipConfig, state: dict, source: Path, allowed_missing: set[str]) -> Blip:
    """Blip(cfg) holding the tensors of `state`. The model is built on the meta device and takes the
    loaded tensors as its parameters (cast to fp32 where stored otherwise), so loading holds one copy
    of the weights, not two, and skips the random initialisation. Allowed missing tensors get their
    defined values: a tied LM head shares the decoder's word embeddings; the ITC temperature is 0.07."""
    with torch.device("meta"), _no_init():
        model = Blip(cfg)
    own = model.state_dict()
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise UserError(f"{source}: tensor {k} has shape {tuple(v.shape)}, the config says {tuple(own[k].shape)}")
    for k, v in state.items():  # a corrupt file decodes to nan/inf more often than not: say which tensor
        if v.is_floating_point() and not torch.isfinite(v).all():
            bad = int((~torch.isfinite(v)).sum())
            raise UserError(f"{source}: tensor {k} holds {bad} non-finite values (nan or inf); the file is corrupt")
    state = {k: v.to(own[k].dtype) if k in own and v.dtype != own[k].dtype else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if m not in allowed_missing]
    if missing or unexpected:
        parts = [f"missing {len(missing)} tensors (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else ""]
        raise UserError(f"{source}: weights do not match the model config: {'; '.join(p for p in parts if p)}")
    if cfg.tie_lm_head and model.lm_head is not None:
        model.lm_head.out.weight = model.text_decoder.embed.tokens.weight
    if model.temp is not None and model.temp.is_meta:
        # Why 0.07: BLIP's initial contrastive temperature (model/blip.py).
        model.temp = torch.nn.Parameter(torch.tensor(0.07))
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise UserError(
            f"{source}: weights do not match the model config: missing {len(left)} tensors (e.g. {left[0]})"
        )
    return model


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """torch.nn.init's functions as no-ops: a model built on the meta device to receive loaded tensors
    needs no initial values, and drawing them on meta tensors goes through PyTorch's Python reference
    ops, which load its compiler (seconds per process: every CLI command and study worker)."""
    names = ("normal_", "uniform_", "trunc_normal_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_",
             "xavier_uniform_", "zeros_", "ones_", "constant_")
    saved = {n: getattr(torch.nn.init, n) for n in names}
    for n in names:
        setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def _need(path: Path) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: missing from the checkpoint folder")
    return path


def _download(hub_id: str) -> Path:
    if hub_id.startswith((".", "/", "~")) or hub_id.count("/") != 1:
        raise UserError(f"{hub_id}: no such checkpoint folder")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
        if not any(folder.glob("*.safetensors")):  # an older repo: PyTorch weights only
            folder = Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.txt", "pytorch_model*.bin"]))
        return folder
    except Exception as e:
        raise UserError(f"{hub_id}: not a local folder, and the hub download failed ({e.__class__.__name__})") from e


_DIGESTS: dict[tuple, str] = {}

# Besides the weights, the files whose content changes what a checkpoint computes: its architecture
# and preprocessing (config.json, preprocessor_config.json) and its tokenizer. pretrain.json is not
# one: the scene seed it holds is recorded by each run and reused from there.
SETTINGS_FILES = ("config.json", "preprocessor_config.json", "tokenizer.json", "vocab.txt",
                  "tokenizer_config.json", "special_tokens_map.json")


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []


def _memo(files: list[Path], compute) -> str:
    """compute() remembered per process for files of the same size and modification time (a study
    worker asks once per cell)."""
    key = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _DIGESTS:
        _DIGESTS[key] = compute()
    return _DIGESTS[key]


def weights_digest(path_or_hub_id: str | Path) -> str:
    """Content digest of a local checkpoint's weight files alone (SHA-256 over *.safetensors then
    *.bin, first 16 hex digits; the hub id itself for a remote one). What runs and studies recorded as
    the checkpoint's identity before `checkpoint_digest` covered its settings too."""
    import hashlib

    files = _weight_files(_local(path_or_hub_id) or Path(path_or_hub_id))
    if not files:
        return str(path_or_hub_id)

    def compute() -> str:
        h = hashlib.sha256()
        for f in files:
            hash_file(h, f)
        return h.hexdigest()[:16]

    return _memo(files, compute)


def checkpoint_digest(path_or_hub_id: str | Path) -> str:
    """A local checkpoint's identity: everything that changes its outputs. SHA-256 (first 16 hex
    digits) over the weights' digest, then each of SETTINGS_FILES present, by name and content (JSON
    files parsed and written back with sorted keys, so spacing and key order do not count); the hub id
    itself for a remote one. Two folders with the same digest give the same scores."""
    import hashlib
    import json

    folder = _local(path_or_hub_id) or Path(path_or_hub_id)
    weights = _weight_files(folder)
    if not weights:
        return str(path_or_hub_id)
    settings = [folder / n for n in SETTINGS_FILES if (folder / n).is_file()]

    def compute() -> str:
        h = hashlib.sha256(weights_digest(folder).encode())
        for f in settings:
            h.update(f"\0{f.name}\0".encode())
            if f.suffix == ".json":
                value = read_json(f, "checkpoint file")
                h.update(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())
            else:
                hash_file(h, f)
        return h.hexdigest()[:16]

    return _memo([*weights, *settings], compute) if settings else weights_digest(folder)


def checkpoint_info(loaded: LoadedModel) -> dict[str, Any]:
    """A small JSON-able description for result records."""
    n = sum(p.numel() for p in loaded.model.parameters())
    return {"source": loaded.source, "kind": loaded.kind, "config": loaded.model.cfg.to_dict(),
            "parameters": n, "preprocess": loaded.preprocess.to_dict()}


__all__ = ["LoadedModel", "save_checkpoint", "load_model", "checkpoint_info", "weights_digest",
           "checkpoint_digest", "checkpoint_exists", "locate", "pretrain_record", "shipped_names", "SHIPPED_DIR"]
