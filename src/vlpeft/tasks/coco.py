"""The built-in `coco-caption` task: COCO captions on the Karpathy split (files you give), the
captioning task of BLIP and of Tian et al.; consistent with a real BLIP's pre-training.

Splits: Karpathy train (+ restval) / val / test, from Karpathy's `dataset_coco.json` or LAVIS's
`coco_karpathy_{train,val,test}.json` (see `vlpeft.data.coco`). Decoding starts from BLIP's caption
prompt "a picture of" (the `prompt` option).
"""

from __future__ import annotations

from pathlib import Path

from vlpeft.data.images import ImageCache, decode_file
from vlpeft.errors import UserError
from vlpeft.tasks.base import SPLIT_NAMES, LoadContext, TaskData, TaskDef, register_task
from vlpeft.tasks.splits import image_ids, image_sources, sources_digest, split_sizes

PATH_HELP = {
    "karpathy_json": "Karpathy's dataset_coco.json, or a folder holding LAVIS coco_karpathy_{train,val,test}.json",
    "image_root": "the folder holding the COCO images",
}


def load_coco(task: TaskDef, ctx: LoadContext) -> TaskData:
    from vlpeft.data.coco import load_coco_karpathy

    source, root = Path(ctx.paths["karpathy_json"]), ctx.paths["image_root"]
    if source.is_dir():
        files = {split: source / f"coco_karpathy_{split}.json" for split in SPLIT_NAMES}
        splits = {split: load_coco_karpathy(files[split], root, split) for split in SPLIT_NAMES}
        layout = f"LAVIS files {', '.join(str(f) for f in files.values())}"
    else:
        splits = {split: load_coco_karpathy(source, root, split) for split in SPLIT_NAMES}
        layout = f"Karpathy file {source}"
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = image_ids(splits[a]) & image_ids(splits[b])
        if shared:
            raise UserError(f"{source}: {len(shared)} images are in both the {a} and the {b} split "
                            f"(e.g. image {sorted(shared)[0]}); a test image must not be trained on")
    sources = image_sources(splits["train"] + splits["val"] + splits["test"], task.name)
    details = {
        "task": task.name,
        "source": layout,
        "image_root": root,
        "splits": {"train": "Karpathy train + restval", "val": "Karpathy val", "test": "Karpathy test"},
        "sizes": split_sizes(splits),
    }
    return TaskData(task, splits["train"], splits["val"], splits["test"], (), ImageCache(sources, decode_file),
                    f"files:{sources_digest(sources)}", details)


register_task(TaskDef(
    "coco-caption", "caption", "coco", "same data, same task",
    "COCO captioning on the Karpathy split, as in BLIP and Tian et al.", load_coco,
    paths=("karpathy_json", "image_root"), path_help=PATH_HELP, options={"prompt": "a picture of"},
))
