"""Readers of users' own tables: one small dataset written in every layout reads back the same, and
every way the input can be wrong is a one-line error naming the file and the line or row."""

import csv
import json
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlpeft.data.files import (
    ImageRef,
    check_image_files,
    decode_image,
    normalise_split,
    read_csv,
    read_hf_disk,
    read_imagefolder,
    read_jsonl,
    read_parquet,
    resolve_image,
)
from vlpeft.errors import UserError

# (split, caption, captions): a caption spanning two lines (a quoted multi-line CSV cell), one with a
# comma, one starting with "[" that is not JSON (it must stay text in CSV), an empty captions list.
ROWS = [
    ("train", "a red square", ["a red square", "red"]),
    ("train", "two lines\nof text", ["x", "y, z"]),
    ("train", "[draft] a blue dot", []),
    ("val", "a green bar", ["green"]),
    ("val", "dots, many", ["dots"]),
    ("test", "nothing", ["empty", "blank"]),
]
SPLIT_FOLDERS = {"train": "train", "val": "validation", "test": "test"}  # the Hub's folder names


def pixels(k):
    return np.random.default_rng(k).integers(0, 256, size=(3 + k, 4, 3), dtype=np.uint8)  # (H, W, 3)


def write_png(path, k):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels(k)).save(path)


def row_values(k, image):
    split, caption, captions = ROWS[k]
    return {"image": image, "caption": caption, "captions": captions, "split": split}


def write_jsonl(path, rows, blank_after=None):
    lines = [json.dumps(r) for r in rows]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n")


def write_csv(path, rows):
    """Rows -> CSV with a byte-order mark, lists as JSON text (quoted by the writer)."""
    with open(path, "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(list(rows[0]))
        for r in rows:
            writer.writerow([json.dumps(v) if isinstance(v, list) else v for v in r.values()])


def write_imagefolder(folder, ext, by_split):
    """by_split: split folders each with a metadata file; else one root metadata file, images in images/."""
    groups = {}
    for k, (split, _, _) in enumerate(ROWS):
        sub = SPLIT_FOLDERS[split] if by_split else "."
        name = f"{k}.png" if by_split else f"images/{k}.png"
        write_png(folder / sub / name, k)
        values = row_values(k, None)
        del values["image"]
        groups.setdefault(sub, []).append({"file_name": name} | values)
    for sub, rows in groups.items():
        (write_jsonl if ext == "jsonl" else write_csv)(folder / sub / f"metadata.{ext}", rows)


def hf_dataset(image_paths, ks, embed=False):
    """A datasets.Dataset with an Image column of file paths, or of the files' bytes (as Hub shards hold them)."""
    if embed:
        images = [{"bytes": image_paths[k].read_bytes(), "path": image_paths[k].name} for k in ks]
    else:
        images = [str(image_paths[k]) for k in ks]
    columns = {"image": images}
    for key in ("caption", "captions", "split"):
        columns[key] = [row_values(k, None)[key] for k in ks]
    return datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The dataset of ROWS written in every layout under one folder."""
    datasets.disable_progress_bars()
    root = tmp_path_factory.mktemp("layouts")
    images = {k: root / "images" / f"{k}.png" for k in range(len(ROWS))}
    for k, path in images.items():
        write_png(path, k)
    rows = [row_values(k, f"images/{k}.png") for k in range(len(ROWS))]
    write_jsonl(root / "data.jsonl", rows, blank_after=2)
    write_csv(root / "data.csv", rows)
    for ext in ("jsonl", "csv"):
        write_imagefolder(root / f"if_split_{ext}", ext, by_split=True)
        write_imagefolder(root / f"if_root_{ext}", ext, by_split=False)
    by_split = {s: [k for k, row in enumerate(ROWS) if row[0] == s] for s in SPLIT_FOLDERS}
    # save_to_disk embeds the files' bytes
    datasets.DatasetDict({SPLIT_FOLDERS[s]: hf_dataset(images, ks) for s, ks in by_split.items()}).save_to_disk(
        str(root / "hf_dict")
    )
    hf_dataset(images, range(len(ROWS))).save_to_disk(str(root / "hf_plain"))
    for s, ks in by_split.items():  # as the Hub names its shards
        shard = root / "pq" / "data" / f"{SPLIT_FOLDERS[s]}-00000-of-00001.parquet"
        hf_dataset(images, ks, embed=True).to_parquet(str(shard))
    pq.write_table(pa.Table.from_pylist(rows), root / "plain.parquet")  # image paths as strings, no split
    return root


SPLIT_SIZES = [("train", 3), ("validation", 2), ("test", 1)]  # rows per split folder, in ROWS order


def per_split(source, row):
    """[(source with {folder} filled in, row(i))] for each split's rows, i counted from 0 in each split."""
    return [(source.format(folder=folder), row(i)) for folder, n in SPLIT_SIZES for i in range(n)]


def every_row(source, row):
    return [(source, row(i)) for i in range(len(ROWS))]


def jsonl_line(i):
    return f"line {i + 1}"


def arrow_row(i):
    return f"row {i}"


CSV_LINES = (2, 3, 5, 6, 7, 8)  # header on line 1; the second row's caption spans lines 3-4

# layout -> (reader, input, [(source relative to root, row)] in order, splits from the layout?, embedded images?)
# imagefolder rows keep their `file_name` column (the task layer maps it); every other layout has `image`.
LAYOUTS = {
    # a blank line 3
    "jsonl": (read_jsonl, "data.jsonl", [("data.jsonl", f"line {n}") for n in (1, 2, 4, 5, 6, 7)], False, False),
    "csv": (read_csv, "data.csv", [("data.csv", f"line {n}") for n in CSV_LINES], False, False),
    "imagefolder split jsonl": (
        read_imagefolder, "if_split_jsonl", per_split("if_split_jsonl/{folder}/metadata.jsonl", jsonl_line), True, False
    ),
    # train's second row spans lines 3-4
    "imagefolder split csv": (
        read_imagefolder,
        "if_split_csv",
        [(f"if_split_csv/{folder}/metadata.csv", f"line {n}")
         for folder, lines in (("train", (2, 3, 5)), ("validation", (2, 3)), ("test", (2,))) for n in lines],
        True,
        False,
    ),
    "imagefolder root jsonl": (
        read_imagefolder, "if_root_jsonl", every_row("if_root_jsonl/metadata.jsonl", jsonl_line), False, False
    ),
    "imagefolder root csv": (
        read_imagefolder, "if_root_csv", [("if_root_csv/metadata.csv", f"line {n}") for n in CSV_LINES], False, False
    ),
    "hf-disk DatasetDict": (read_hf_disk, "hf_dict", per_split("hf_dict/{folder}", arrow_row), True, True),
    "hf-disk Dataset": (read_hf_disk, "hf_plain", every_row("hf_plain", arrow_row), False, True),
    "parquet hub shards": (
        read_parquet, "pq", per_split("pq/data/{folder}-00000-of-00001.parquet", arrow_row), True, True
    ),
    "parquet one file": (read_parquet, "plain.parquet", every_row("plain.parquet", arrow_row), False, False),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_reads_the_same_rows(root, layout):
    reader, name, where, has_split, embedded = LAYOUTS[layout]
    image = "file_name" if reader is read_imagefolder else "image"
    records = reader(root / name)
    assert [(Path(r.source).relative_to(root).as_posix(), r.row) for r in records] == where
    assert [r.split for r in records] == [split if has_split else None for split, _, _ in ROWS]
    assert [(r.values["split"], r.values["caption"], r.values["captions"]) for r in records] == ROWS
    assert all(set(r.values) == {image, "caption", "captions", "split"} for r in records)
    refs = [resolve_image(r.values[image], r.base, r.where) for r in records]
    assert [ref.data is not None for ref in refs] == [embedded] * len(ROWS)
    if not embedded:  # each path is the image beside that layout's table
        assert all(Path(ref.path).is_absolute() and Path(ref.path).is_file() for ref in refs)
        check_image_files([(r.where, ref) for r, ref in zip(records, refs)], name)
    for k, ref in enumerate(refs):
        decoded = decode_image(ref)
        assert decoded.dtype == np.uint8 and np.array_equal(decoded, pixels(k))


def test_imagefolder_base_is_the_metadata_folder(root):
    records = read_imagefolder(root / "if_split_jsonl")
    assert [Path(r.base).name for r in records] == ["train"] * 3 + ["validation"] * 2 + ["test"]
    assert records[3].values["file_name"] == "3.png"  # as written: relative to validation/


def test_csv_reads_lists_and_keeps_other_text(tmp_path):
    (tmp_path / "t.csv").write_text('image,note,tags\na.png,[not json,"[1, 2]"\nb.png,"[""a""]",[]\n'
                                    'c.png,[a] dog,"[\'red\', \'dark red\']"\n'  # as pandas writes lists
                                    'd.png,"[{\'answer\': \'red\'}]",[music playing]\n')
    values = [r.values for r in read_csv(tmp_path / "t.csv")]
    assert values == [
        {"image": "a.png", "note": "[not json", "tags": [1, 2]},
        {"image": "b.png", "note": ["a"], "tags": []},
        {"image": "c.png", "note": "[a] dog", "tags": ["red", "dark red"]},
        {"image": "d.png", "note": [{"answer": "red"}], "tags": "[music playing]"},
    ]


@pytest.mark.parametrize(
    "value,image_root,expected",
    [
        ("img/a.png", None, ImageRef("/data/set/img/a.png", None, "img/a.png")),
        ("img/../b.png", None, ImageRef("/data/set/b.png", None, "img/../b.png")),
        ("img/a.png", "/images", ImageRef("/images/img/a.png", None, "img/a.png")),
        ("file:///abs/my%20a.png", None, ImageRef("/abs/my a.png", None, "/abs/my a.png")),
        ("/abs/a.png", "/images", ImageRef("/abs/a.png", None, "/abs/a.png")),
        ({"bytes": None, "path": "c.png"}, None, ImageRef("/data/set/c.png", None, "c.png")),
        ({"bytes": b"\x89PNG", "path": "c.png"}, None, ImageRef("", b"\x89PNG", "c.png")),
        ({"bytes": b"\x89PNG", "path": None}, None, ImageRef("", b"\x89PNG", "t.parquet: row 4")),
    ],
)
def test_resolve_image(value, image_root, expected):
    assert resolve_image(value, "/data/set", "t.parquet: row 4", image_root) == expected


@pytest.mark.parametrize("value", [None, "", 3, {"bytes": b"", "path": ""}, {"bytes": None, "path": None}, ["a.png"]])
def test_resolve_image_without_an_image(value):
    with pytest.raises(UserError) as err:
        resolve_image(value, "/data", "d.jsonl: line 7")
    assert str(err.value) == f"d.jsonl: line 7: no image (field value {value!r})"


@pytest.mark.parametrize("url", ["http://example.com/a.jpg", "https://x.org/b.png", "s3://bucket/c.jpg",
                                 "gs://bucket/d.png"])
def test_an_image_url_is_refused_saying_images_are_read_offline(url):
    with pytest.raises(UserError) as err:
        resolve_image(url, "/data", "d.jsonl: line 7")
    assert str(err.value).startswith(f"d.jsonl: line 7: image {url!r} is a URL; images are read offline")


@pytest.mark.parametrize(
    "name,split",
    [("train", "train"), ("Training", "train"), ("validation", "val"), ("VALID", "val"), ("val", "val"),
     ("dev", "val"), ("test", "test"), ("testing", "test"), ("eval", "test"), ("evaluation", "test")],
)
def test_normalise_split(name, split):
    assert normalise_split(name, "x") == split


def test_check_image_files_names_the_first_missing_and_its_row(tmp_path):
    write_png(tmp_path / "a.png", 0)
    refs = [resolve_image(n, tmp_path, f"d.jsonl: line {i + 1}") for i, n in enumerate(["a.png", "m1.png", "m2.png"])]
    refs.append(ImageRef("", b"embedded", "e.png"))  # embedded images are never missing
    with pytest.raises(UserError) as err:
        check_image_files([(f"d.jsonl: line {i + 1}", ref) for i, ref in enumerate(refs)], "d.jsonl")
    assert str(err.value) == (
        f"{tmp_path / 'm1.png'}: image not found "
        "(named at d.jsonl: line 2; 2 of 4 images listed in d.jsonl are missing)"
    )
    with pytest.raises(UserError, match=r"m1\.png: image not found \(2 of 4 images listed in d\.jsonl"):
        check_image_files(refs, "d.jsonl")  # bare refs: no row to name
    check_image_files(refs[:1] + refs[3:], "d.jsonl")


def test_decode_image_composites_transparency_onto_white(tmp_path):
    Image.new("RGBA", (2, 1), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    ref = ImageRef("", (tmp_path / "clear.png").read_bytes(), "clear.png")
    assert decode_image(ref).tolist() == [[[255, 255, 255], [255, 255, 255]]]


# --- bad input: each builder writes files under tmp_path and returns the call that must fail ---------


def _jsonl(text):
    def build(tmp):
        (tmp / "d.jsonl").write_text(text)
        return lambda: read_jsonl(tmp / "d.jsonl")
    return build


def _csv(text):
    def build(tmp):
        (tmp / "d.csv").write_text(text)
        return lambda: read_csv(tmp / "d.csv")
    return build


def _imagefolder(files):
    def build(tmp):
        for name, text in files.items():
            (tmp / "f" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "f" / name).write_text(text)
        return lambda: read_imagefolder(tmp / "f")
    return build


def _hf_dict(keys):
    def build(tmp):
        ds = datasets.Dataset.from_dict({"image": ["a.png"], "caption": ["c"]})
        datasets.DatasetDict({key: ds for key in keys}).save_to_disk(str(tmp / "hf"))
        return lambda: read_hf_disk(tmp / "hf")
    return build


def _parquet_files(names):
    def build(tmp):
        for name in names:
            (tmp / "pq" / name).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"image": ["a.png"]}), tmp / "pq" / name)
        return lambda: read_parquet(tmp / "pq")
    return build


def _garbage_parquet(tmp):
    (tmp / "x.parquet").write_bytes(b"PAR1 this is not parquet")
    return lambda: read_parquet(tmp / "x.parquet")


def _not_saved(tmp):
    (tmp / "plain").mkdir()
    (tmp / "plain" / "notes.txt").write_text("hello")
    return lambda: read_hf_disk(tmp / "plain")


def _embedded_junk(tmp):
    pq.write_table(pa.Table.from_pylist([{"image": {"bytes": b"not an image", "path": "junk.png"}}]), tmp / "e.parquet")
    record = read_parquet(tmp / "e.parquet")[0]
    ref = resolve_image(record.values["image"], record.base, record.where)
    return lambda: decode_image(ref)


def _corrupt_file(tmp):
    (tmp / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    ref = resolve_image("bad.png", tmp, "d.jsonl: line 1")
    return lambda: decode_image(ref)


META = '{"file_name": "a.png", "caption": "c"}\n'
BAD = [  # (case, builder, text the message must contain)
    ("invalid JSON line", _jsonl('{"a": 1}\n\n{"a": 2,,}\n'), "d.jsonl: line 3: not valid JSON (Expecting"),
    ("non-object line", _jsonl('{"a": 1}\n[1, 2]\n'), "d.jsonl: line 2: expected a JSON object, got an array"),
    ("empty JSONL", _jsonl("\n\n"), "d.jsonl: no records"),
    ("CSV row with an extra cell", _csv('image,caption\na.png,"two\nlines"\nb.png,c,extra\n'),
     "d.csv: line 4: 3 cells but the header (line 1) has 2 columns"),
    ("CSV row with a missing cell", _csv("image,caption\na.png\n"), "d.csv: line 2: 1 cells but the header"),
    ("CSV header only", _csv("image,caption\n"), "d.csv: no records"),
    ("CSV quote never closed", _csv('image,caption\na.png,b\nc.png,"open\nd.png,e\n'), "d.csv: line 3: not valid CSV"),
    ("CSV list that is not a list", _csv('image,answers\na.png,"[""red"", ""blue""]"\nb.png,"[oops ""x""]"\n'),
     "d.csv: line 3: column 'answers' holds '[oops \"x\"]', in brackets but not a JSON list"),
    ("CSV list without quotes", _csv('image,answers\na.png,"[red, blue]"\n'),
     "d.csv: line 2: column 'answers' holds '[red, blue]', in brackets but not a JSON list"),
    ("CSV repeated column", _csv("image,image\na,b\n"), "d.csv: line 1: header repeats column 'image'"),
    ("imagefolder without metadata", _imagefolder({"images/a.txt": "x"}),
     "f: no imagefolder metadata; expected metadata.jsonl or metadata.csv"),
    ("imagefolder with both metadata files",
     _imagefolder({"metadata.jsonl": META, "metadata.csv": "file_name\na.png\n"}),
     "f: holds both metadata.jsonl and metadata.csv"),
    ("metadata row without file_name", _imagefolder({"train/metadata.jsonl": META + '{"caption": "d"}\n'}),
     "train/metadata.jsonl: line 2: no 'file_name'"),
    ("unknown split folder", _imagefolder({"train/metadata.jsonl": META, "holdout/metadata.jsonl": META}),
     "holdout: unknown split 'holdout'; use train, validation (val) or test"),
    ("split folder without metadata", _imagefolder({"train/metadata.jsonl": META, "test/a.txt": "x"}),
     "test: split folder has no metadata.jsonl or metadata.csv"),
    ("root and split metadata", _imagefolder({"metadata.jsonl": META, "train/metadata.jsonl": META}),
     "f: has both metadata.jsonl and split folders with metadata (train)"),
    ("unknown DatasetDict split", _hf_dict(["train", "extra"]), "hf/extra: unknown split 'extra'"),
    ("not a saved dataset", _not_saved, "plain: not a dataset saved with save_to_disk"),
    ("unreadable parquet", _garbage_parquet, "x.parquet: not a readable Parquet file"),
    ("parquet splits named by some files", _parquet_files(["train-00000-of-00001.parquet", "extra.parquet"]),
     "pq: train-00000-of-00001.parquet names a split but extra.parquet does not"),
    ("undecodable embedded bytes", _embedded_junk, "junk.png: cannot read image"),
    ("corrupt image file", _corrupt_file, "bad.png: cannot read image"),
]


@pytest.mark.parametrize("builder,expected", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_is_a_one_line_user_error(tmp_path, builder, expected):
    call = builder(tmp_path)
    with pytest.raises(UserError) as err:
        call()
    message = str(err.value)
    assert expected in message and "\n" not in message
