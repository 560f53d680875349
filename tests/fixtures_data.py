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
