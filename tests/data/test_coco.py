"""COCO Karpathy captions in both file formats, and every way the input can be wrong."""

import json

import pytest
from PIL import Image

from vlpeft.data.coco import load_coco_karpathy
from vlpeft.errors import UserError

# (cocoid, folder, karpathy split, captions)
IMAGES = [
    (391895, "val2014", "test", ["A man with a red helmet on a small moped.", "Man riding a motor bike."]),
    (522418, "val2014", "restval", ["A woman cutting a large cake.", "A woman wearing a net on her head."]),
    (184613, "val2014", "val", ["A child holding a flowered umbrella."]),
    (318219, "train2014", "train", ["A young boy standing in front of a computer keyboard."]),
    (554625, "train2014", "train", ["a boy wearing headphones using one computer", "A kid at a desk."]),
]


def filename(cocoid, folder):
    return f"COCO_{folder}_{cocoid:012d}.jpg"


def write_images(root, skip=()):
    for cocoid, folder, _, _ in IMAGES:
        if cocoid in skip:
            continue
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 3), (cocoid % 256, 0, 0)).save(root / folder / filename(cocoid, folder))


def write_karpathy(path):
    images = [
        {
            "filepath": folder,
            "filename": filename(cocoid, folder),
            "imgid": k,
            "split": split,
            "sentences": [
                {"raw": c, "tokens": c.lower().split(), "imgid": k, "sentid": 10 * k + j} for j, c in enumerate(caps)
            ],
            "cocoid": cocoid,
        }
        for k, (cocoid, folder, split, caps) in enumerate(IMAGES)
    ]
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def write_lavis(tmp_path, split):
    if split == "train":  # one entry per caption
        entries = [
            {"caption": c, "image": f"{folder}/{filename(cocoid, folder)}", "image_id": f"coco_{cocoid}"}
            for cocoid, folder, s, caps in IMAGES
            if s in ("train", "restval")
            for c in caps
        ]
    else:  # one entry per image, captions in a list, no image_id
        entries = [
            {"image": f"{folder}/{filename(cocoid, folder)}", "caption": caps}
            for cocoid, folder, s, caps in IMAGES
            if s == split
        ]
    path = tmp_path / f"coco_karpathy_{split}.json"
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture
def root(tmp_path):
    write_images(tmp_path / "images")
    return tmp_path / "images"


def test_karpathy_splits_with_restval_in_train(tmp_path, root):
    path = write_karpathy(tmp_path / "dataset_coco.json")
    train = load_coco_karpathy(path, root, "train")
    assert [e.image_id for e in train] == ["522418", "318219", "554625"]
    assert train[0].captions == ("A woman cutting a large cake.", "A woman wearing a net on her head.")
    assert train[1].image_path == str(root / "train2014" / "COCO_train2014_000000318219.jpg")
    (test,) = load_coco_karpathy(path, root, "test")
    assert test.image_id == "391895" and len(test.captions) == 2
    (val,) = load_coco_karpathy(path, root, "val")
    assert val.captions == ("A child holding a flowered umbrella.",)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_lavis_lists_give_the_same_examples(tmp_path, root, split):
    karpathy = load_coco_karpathy(write_karpathy(tmp_path / "dataset_coco.json"), root, split)
    lavis = load_coco_karpathy(write_lavis(tmp_path, split), root)
    assert lavis == karpathy
    assert load_coco_karpathy(write_lavis(tmp_path, split), root, split) == karpathy


def test_missing_image_named_with_count(tmp_path):
    write_images(tmp_path / "images", skip={522418, 554625})
    path = write_karpathy(tmp_path / "dataset_coco.json")
    with pytest.raises(UserError) as err:
        load_coco_karpathy(path, tmp_path / "images", "train")
    message = str(err.value)
    assert "COCO_val2014_000000522418.jpg: image not found" in message
    assert "2 of 3 images" in message and "dataset_coco.json" in message
    assert len(load_coco_karpathy(path, tmp_path / "images", "train", check_images=False)) == 3


@pytest.mark.parametrize(
    "content,match",
    [
        (None, "not found"),
        ("", "is empty"),
        ("{\"images\": [", "not valid JSON"),
        ("{\"annotations\": []}", "expected key 'images'"),
        ("{\"images\": [{\"filename\": \"a.jpg\", \"split\": \"train\"}]}", r"images\[0\] lacks key 'sentences'"),
        (
            "{\"images\": [{\"filename\": \"a.jpg\", \"split\": \"test\", \"sentences\": [{\"raw\": \"x\"}]}]}",
            r"no images in split 'train' \(splits present: test\)",
        ),
        ("[]", "no images"),
        ("[{\"image\": \"a.jpg\"}]", "entry 0 lacks key 'caption'"),
        ("7", "expected a JSON object"),
    ],
)
def test_bad_files_are_user_errors_naming_the_file(tmp_path, content, match):
    path = tmp_path / "caps.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=match) as err:
        load_coco_karpathy(path, tmp_path, "train")
    assert str(err.value).startswith(str(path))


def test_split_arguments_checked(tmp_path, root):
    with pytest.raises(UserError, match='did you mean "val"'):
        load_coco_karpathy(write_karpathy(tmp_path / "dataset_coco.json"), root, "vall")
    with pytest.raises(UserError, match="name one of"):
        load_coco_karpathy(tmp_path / "dataset_coco.json", root)
    with pytest.raises(UserError, match="holds the 'val' split, not 'test'"):
        load_coco_karpathy(write_lavis(tmp_path, "val"), root, "test")


def test_an_empty_caption_is_refused(tmp_path):
    from fixtures_data import write_coco

    paths = write_coco(tmp_path)
    data = json.loads(open(paths["karpathy_json"]).read())
    data["images"][1]["sentences"][0]["raw"] = " "
    open(paths["karpathy_json"], "w").write(json.dumps(data))
    with pytest.raises(UserError, match=r"images\[1\] has an empty caption"):
        load_coco_karpathy(paths["karpathy_json"], paths["image_root"], "train")
