"""Small COCO / VQAv2 fixture files in the official formats, shared by the task and study tests."""

import json

from PIL import Image


def write_jpg(path, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), color).save(path)


KARPATHY = [  # (cocoid, folder, split)
    (1, "train2014", "train"), (2, "train2014", "train"), (3, "val2014", "restval"),
    (4, "val2014", "val"), (5, "val2014", "test"), (6, "val2014", "test"),
]


def write_coco(tmp_path):
    root = tmp_path / "coco"
    images = []
    for k, (cocoid, folder, split) in enumerate(KARPATHY):
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        write_jpg(root / folder / name, (40 * cocoid, 10, 10))
        sentences = [{"raw": f"Picture number {cocoid}.", "tokens": ["picture", "number", str(cocoid)]}]
        images.append(
            {"filepath": folder, "filename": name, "cocoid": cocoid, "imgid": k, "split": split, "sentences": sentences}
        )
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return {"karpathy_json": str(tmp_path / "dataset_coco.json"), "image_root": str(root)}


def write_vqav2(tmp_path, val_images=(11, 12, 13, 14)):
    root = tmp_path / "images"
    files = {}
    for subset, ids in (("train2014", (1, 2)), ("val2014", val_images)):
        questions, annotations = [], []
        for i in ids:
            write_jpg(root / subset / f"COCO_{subset}_{i:012d}.jpg", (i, i, i))
            for k, (q, answers) in enumerate([
                ("What color is it?", ["white"] * 7 + ["gray"] * 3),
                ("How many dogs?", ["two"] * 5 + ["2"] * 3 + ["3"] * 2),
            ]):
                qid = 10 * i + k
                questions.append({"image_id": i, "question": q, "question_id": qid})
                annotations.append({
                    "question_id": qid, "image_id": i, "question_type": "what", "answer_type": "other",
                    "multiple_choice_answer": answers[0],
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)
                    ],
                })
        short = subset[:-4]
        files[f"{short}_questions"] = tmp_path / f"v2_OpenEnded_mscoco_{subset}_questions.json"
        files[f"{short}_annotations"] = tmp_path / f"v2_mscoco_{subset}_annotations.json"
        files[f"{short}_questions"].write_text(json.dumps({"data_subtype": subset, "questions": questions}))
        files[f"{short}_annotations"].write_text(json.dumps({"data_subtype": subset, "annotations": annotations}))
    test_questions = tmp_path / "v2_OpenEnded_mscoco_test-dev2015_questions.json"
    write_jpg(root / "test2015" / f"COCO_test2015_{99:012d}.jpg", (9, 9, 9))
    test_questions.write_text(json.dumps({"data_subtype": "test-dev2015", "questions": [
        {"image_id": 99, "question": "Is it sunny?", "question_id": 990}]}))
    return {**{k: str(v) for k, v in files.items()}, "image_root": str(root)}, str(test_questions)


# ---------------------------------------------------------------------------------------------
# A user's own data, the same examples in every format a task file takes

import csv as _csv  # noqa: E402

import yaml as _yaml  # noqa: E402

USER_COLOURS = {  # image id -> (colour word, RGB)
    "im00": ("red", (220, 30, 30)), "im01": ("green", (30, 200, 40)), "im02": ("blue", (30, 40, 220)),
    "im03": ("yellow", (230, 220, 30)), "im04": ("black", (10, 10, 10)), "im05": ("white", (245, 245, 245)),
    "im06": ("purple", (140, 40, 160)), "im07": ("orange", (240, 140, 20)), "im08": ("gray", (128, 128, 128)),
    "im09": ("brown", (120, 70, 30)), "im10": ("pink", (240, 150, 190)), "im11": ("cyan", (40, 220, 220)),
}
USER_FORMATS = ("jsonl", "csv", "imagefolder", "hf-disk", "parquet")


def user_rows(kind):
    """The rows of the user dataset: captioning has one row per image with two captions; VQA one row
    per question, two questions per image."""
    rows = []
    for image_id, (colour, _) in USER_COLOURS.items():
        if kind == "caption":
            rows.append({"image_id": image_id, "captions": [f"a {colour} square", f"the square is {colour}"]})
        else:
            dark = "yes" if colour in ("black", "blue", "purple", "brown") else "no"
            rows.append({"image_id": image_id, "question_id": f"{image_id}-c", "question": "what colour is it?",
                         "answers": [colour, colour, "dark" if dark == "yes" else colour]})
            rows.append({"image_id": image_id, "question_id": f"{image_id}-d", "question": "is it dark?",
                         "answers": [dark]})
    return rows


def write_user_images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, (_, rgb) in USER_COLOURS.items():
        image = Image.new("RGB", (12 + int(image_id[2:]), 10), rgb)  # sizes differ: 12-23 x 10 px
        image.putpixel((0, 0), (0, 0, 0))
        image.save(folder / f"{image_id}.png")


def write_task_file(task_file, **keys):
    task_file.parent.mkdir(parents=True, exist_ok=True)
    task_file.write_text(_yaml.safe_dump(keys, sort_keys=False))
    return task_file


def write_user_task(tmp_path, fmt, kind, name=None):
    """A task file over the user dataset in format `fmt` (splits carved by vlpeft). -> its path."""
    root = tmp_path / f"{fmt}-{kind}"
    rows = user_rows(kind)
    name = name or f"mine-{fmt}-{kind}"
    if fmt in ("jsonl", "csv"):
        write_user_images(root / "images")
        for r in rows:
            r["image"] = f"images/{r['image_id']}.png"
        if fmt == "jsonl":
            data = root / "data.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            data = root / "data.csv"
            with open(data, "w", newline="") as f:
                w = _csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                for r in rows:
                    w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
        return write_task_file(root / "task.yaml", name=name, kind=kind, format=fmt, path=data.name)
    if fmt == "imagefolder":
        write_user_images(root / "data")
        for r in rows:
            r["file_name"] = f"{r['image_id']}.png"
        (root / "data" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return write_task_file(root / "task.yaml", name=name, kind=kind, format=fmt, path="data")
    import datasets

    write_user_images(root / "images")
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    # encoded images inside the dataset, as the Hub's Parquet files and save_to_disk hold them
    columns["image"] = [
        {"bytes": (root / "images" / f"{r['image_id']}.png").read_bytes(), "path": f"{r['image_id']}.png"} for r in rows
    ]
    ds = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
    if fmt == "hf-disk":
        ds.save_to_disk(str(root / "saved"))
        path = "saved"
    else:
        (root / "pq").mkdir()
        ds.to_parquet(str(root / "pq" / "data.parquet"))
        path = "pq"
    import shutil

    shutil.rmtree(root / "images")  # the images now live inside the dataset
    return write_task_file(root / "task.yaml", name=name, kind=kind, format=fmt, path=path)


def altered_checkpoint(ckpt, dest):
    """A copy of checkpoint folder `ckpt` at `dest` with one weight tensor scaled by 1.5: another base
    checkpoint, for the rule that a run is used only on the one it adapted. -> dest."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(ckpt, dest)
    state = load_file(dest / "model.safetensors")
    key = sorted(state)[0]
    state[key] = state[key] * 1.5
    save_file(state, str(dest / "model.safetensors"))
    return dest
