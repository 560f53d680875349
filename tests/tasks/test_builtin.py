"""The built-in tasks: every one loads with disjoint splits of the documented sizes, VQA candidate
answers cover train, images decode; COCO and VQAv2 from small files in the official formats; the
registries refuse duplicates."""

import json
from collections import Counter

import numpy as np
import pytest

from fixtures_data import write_coco, write_jpg, write_vqav2  # noqa: E402  (tests/ is on sys.path)
from vlpeft.data.records import CaptionExample, VQAExample
from vlpeft.data.scenes import generate_scene
from vlpeft.errors import UserError
from vlpeft.tasks import KINDS, TASKS, load_task, register_kind, register_task
from vlpeft.tasks.metrics import normalize_vqa_answer
from vlpeft.tasks.splits import image_ids

BUILT_IN = ["scenes-caption", "scenes-vqa", "easyvqa-caption", "easyvqa-vqa"]


@pytest.fixture(scope="module")
def loaded():
    """name -> TaskData, each built-in task loaded once for the whole module (scenes take ~2 s)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_task(name)
        return cache[name]

    return get


def assert_disjoint_by_image(data):
    train, val, test = image_ids(data.train), image_ids(data.val), image_ids(data.test)
    assert train and val and test
    assert not (train & val) and not (train & test) and not (val & test)


def assert_answers_cover_train(data):
    assert data.answers and len(set(data.answers)) == len(data.answers)
    train_answers = {normalize_vqa_answer(a) for e in data.train for a in e.answers}
    assert train_answers <= set(data.answers)
    counts = Counter(normalize_vqa_answer(a) for e in data.train + data.val for a in e.answers)
    assert [counts[a] for a in data.answers] == sorted((counts[a] for a in data.answers), reverse=True)


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_task_loads_with_disjoint_splits(name, loaded):
    data = loaded(name)
    info = TASKS[name]
    assert data.task == info and info.kind in ("caption", "vqa")
    record = CaptionExample if info.kind == "caption" else VQAExample
    assert all(isinstance(e, record) for split in ("train", "val", "test") for e in data.split(split))
    assert_disjoint_by_image(data)
    if info.kind == "vqa":
        assert info.metric == "vqa_accuracy"
        assert_answers_cover_train(data)
        assert len({e.question_id for e in data.train + data.val + data.test}) == len(data.train + data.val + data.test)
    else:
        assert info.metric == "cider_d" and data.answers == ()
    json.dumps(data.details)  # JSON-able record
    sizes = data.details["sizes"]
    assert sizes["train"]["examples"] == len(data.train) and sizes["test"]["images"] == len(image_ids(data.test))


@pytest.mark.parametrize("name", BUILT_IN)
def test_images_decode_once_to_read_only_uint8(name, loaded):
    data = loaded(name)
    for example in (data.train[0], data.val[-1], data.test[0]):
        image = data.image(example.image_id)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[:2] == (64, 64)
        assert data.image(example.image_id) is image  # cached
        with pytest.raises(ValueError):
            image[0, 0, 0] = 1  # shared with every caller
    with pytest.raises(KeyError, match="no image with id"):
        data.image("not-an-image")


def test_scenes_splits_are_the_documented_streams(loaded):
    caption, vqa = loaded("scenes-caption"), loaded("scenes-vqa")
    assert (len(caption.train), len(caption.val), len(caption.test)) == (4000, 500, 1000)
    assert caption.train[0].image_id == "val-000000" and caption.val[0].image_id == "val-004000"
    assert caption.test[-1].image_id == "test-000999"
    assert image_ids(vqa.train) == image_ids(caption.train) and image_ids(vqa.test) == image_ids(caption.test)
    scene = generate_scene(4000, seed=0, split="val")
    assert caption.val[0].captions == scene.captions
    assert np.array_equal(caption.image("val-004000"), scene.image)
    assert [e.answers[0] for e in vqa.val if e.image_id == "val-004000"] == [qa.answer for qa in scene.qa]
    assert {e.question_type for e in vqa.train} == {"color", "shape", "count", "existence", "spatial"}
    assert caption.details["scene_seed"] == 0


def test_scene_seed_changes_the_scenes(loaded):
    other, base = load_task("scenes-caption", scene_seed=1), loaded("scenes-caption")
    assert other.details["scene_seed"] == 1 and other.train[0].image_id == base.train[0].image_id
    assert [e.captions for e in other.train[:20]] != [e.captions for e in base.train[:20]]
    assert not np.array_equal(other.image("val-000000"), base.image("val-000000"))


def test_easyvqa_val_is_ten_percent_of_train_images_shared_by_both_tasks(loaded):
    vqa, caption = loaded("easyvqa-vqa"), loaded("easyvqa-caption")
    assert (len(image_ids(vqa.train)), len(image_ids(vqa.val)), len(image_ids(vqa.test))) == (3600, 400, 1000)
    assert len(vqa.train) + len(vqa.val) == 38575 and len(vqa.test) == 9673  # every package question
    assert all(i.startswith("train-") for i in image_ids(vqa.train) | image_ids(vqa.val))
    assert all(i.startswith("test-") for i in image_ids(vqa.test))
    assert image_ids(caption.val) <= image_ids(vqa.val) and image_ids(caption.train) <= image_ids(vqa.train)
    dropped = caption.details["images_without_examples_dropped"]
    assert len(caption.train) + len(caption.val) + len(caption.test) + dropped == 5000
    assert len(vqa.answers) == 13


# --------------------------------------------------------------------------------------------
# COCO Karpathy and VQAv2 from small files in the official formats


def test_coco_caption_from_karpathy_file(tmp_path):
    data = load_task("coco-caption", paths=write_coco(tmp_path))
    assert [e.image_id for e in data.train] == ["1", "2", "3"]  # restval counts as train
    assert [e.image_id for e in data.val] == ["4"] and [e.image_id for e in data.test] == ["5", "6"]
    assert data.test[0].captions == ("Picture number 5.",)
    image = data.image("5")
    assert image.shape == (5, 6, 3) and image.dtype == np.uint8 and abs(int(image[0, 0, 0]) - 200) <= 3
    assert data.answers == ()
    assert_disjoint_by_image(data)


def test_coco_caption_from_lavis_folder(tmp_path):
    root = tmp_path / "coco"
    lavis = tmp_path / "lavis"
    lavis.mkdir()
    for split, ids in {"train": [1, 2], "val": [4], "test": [5]}.items():
        entries = []
        for cocoid in ids:
            image = f"val2014/COCO_val2014_{cocoid:012d}.jpg"
            write_jpg(root / image, (cocoid, 0, 0))
            if split == "train":
                entries += [{"image": image, "caption": c, "image_id": f"coco_{cocoid}"} for c in ("one", "two")]
            else:
                entries.append({"image": image, "caption": ["one", "two"]})
        (lavis / f"coco_karpathy_{split}.json").write_text(json.dumps(entries))
    data = load_task("coco-caption", paths={"karpathy_json": str(lavis), "image_root": str(root)})
    assert [e.image_id for e in data.train] == ["1", "2"] and data.train[0].captions == ("one", "two")
    assert [e.image_id for e in data.test] == ["5"]


def test_vqav2_train_and_official_val_halved_by_image(tmp_path):
    paths, test_questions = write_vqav2(tmp_path)
    data = load_task("vqav2", paths={**paths, "test_questions": test_questions})
    assert image_ids(data.train) == {"1", "2"}
    assert len(image_ids(data.val)) == 2 and len(image_ids(data.test)) == 2
    assert image_ids(data.val) | image_ids(data.test) == {"11", "12", "13", "14"}
    assert_disjoint_by_image(data)
    assert all(len(e.answers) == 10 for e in data.train + data.val + data.test)
    assert data.answers == ("2", "white", "gray", "3")  # "two" counts as "2": 8 per question
    assert [e.question_id for e in data.submission] == ["990"] and data.submission[0].answers == ()
    assert data.image("99").shape == (5, 6, 3) and data.image("11")[0, 0].tolist() == pytest.approx([11] * 3, abs=3)
    again = load_task("vqav2", paths=paths)
    assert image_ids(again.val) == image_ids(data.val) and again.submission == []  # seeded, fixed carve


# --------------------------------------------------------------------------------------------
# Errors


def one_line_error(call, match):
    with pytest.raises(UserError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_task_errors_are_one_line(tmp_path):
    one_line_error(lambda: load_task("easyvqa-vq"), r"unknown task 'easyvqa-vq' \(did you mean \"easyvqa-vqa\"\?\)")
    one_line_error(lambda: load_task("coco-caption"), r"task coco-caption: paths lacks 'karpathy_json'")
    one_line_error(
        lambda: load_task("coco-caption", paths={"karpathy_json": "x.json"}),
        r"task coco-caption: paths lacks 'image_root'"
    )
    one_line_error(
        lambda: load_task("coco-caption", paths={"karpathy_json": "x", "image_rot": "y"}),
        r"unknown path key 'image_rot' \(did you mean \"image_root\"\?\)",
    )
    one_line_error(lambda: load_task("scenes-vqa", paths={"image_root": "x"}), "task scenes-vqa: takes no paths")
    one_line_error(lambda: load_task("scenes-vqa", scene_seed=-1), "scene_seed must be an integer >= 0")
    one_line_error(
        lambda: load_task("coco-caption", paths={"karpathy_json": str(tmp_path / "none.json"), "image_root": "."}),
        "none.json: COCO captions file not found",
    )
    paths, _ = write_vqav2(tmp_path / "one", val_images=(11,))
    one_line_error(lambda: load_task("vqav2", paths=paths), "task vqav2: the val split is empty")


def test_registries_refuse_a_second_task_or_kind_of_the_same_name():
    with pytest.raises(ValueError, match="already registered"):
        register_task(TASKS["scenes-vqa"])
    with pytest.raises(ValueError, match="already registered"):
        register_kind(KINDS["caption"])
    assert list(TASKS) == ["scenes-caption", "scenes-vqa", "easyvqa-caption", "easyvqa-vqa", "coco-caption", "vqav2"]


def test_coco_image_in_two_splits_is_refused(tmp_path):
    paths = write_coco(tmp_path)
    data = json.loads((tmp_path / "dataset_coco.json").read_text())
    leaked = dict(data["images"][4], split="train")  # a test image listed again under train
    data["images"].append(leaked)
    (tmp_path / "dataset_coco.json").write_text(json.dumps(data))
    one_line_error(lambda: load_task("coco-caption", paths=paths), "both the train and the test split")
