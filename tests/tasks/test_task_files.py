"""Task files: a user's own captions and QA pairs in every format load to the same examples, splits
are carved by image and reproducibly, `vlpeft tasks check` says what was read, and bad data is one
line naming the file and row, exit 2, nothing written."""

import json
import shutil

import numpy as np
import pytest

from fixtures_data import (
    USER_COLOURS,
    USER_FORMATS,
    user_rows,
    write_coco,
    write_task_file,
    write_user_images,
    write_user_task,
    write_vqav2,
)
from vlpeft.cli import main
from vlpeft.errors import UserError
from vlpeft.tasks import get_task, load_task
from vlpeft.tasks.splits import image_ids


def content(data):
    """What a task holds, independent of where its images lie."""
    out = {}
    for split in ("train", "val", "test"):
        out[split] = [(e.image_id, e.captions) if hasattr(e, "captions") else
                      (e.question_id, e.image_id, e.question, e.answers) for e in data.split(split)]
    return out


@pytest.mark.parametrize("kind", ["caption", "vqa"])
def test_every_format_reads_the_same_examples(kind, tmp_path):
    loaded = {fmt: load_task(str(write_user_task(tmp_path, fmt, kind))) for fmt in USER_FORMATS}
    first = loaded["jsonl"]
    assert first.task.kind == kind and first.task.name == f"mine-jsonl-{kind}"
    n_images = len(USER_COLOURS)
    assert sum(len(image_ids(first.split(s))) for s in ("train", "val", "test")) == n_images
    assert (len(image_ids(first.val)), len(image_ids(first.test))) == (1, 1)  # 10 % of 12 images, at least one
    for fmt, data in loaded.items():
        assert content(data) == content(first), fmt
        for image_id in ("im00", "im07"):
            assert np.array_equal(data.image(image_id), first.image(image_id)), fmt
        assert data.image("im07").shape == (10, 19, 3) and tuple(data.image("im07")[5, 5]) == USER_COLOURS["im07"][1]
        assert data.answers == first.answers and data.details["sizes"] == first.details["sizes"]
    assert loaded["parquet"].details["embedded_images"] == n_images and first.details["embedded_images"] == 0
    if kind == "caption":
        assert first.train[0].captions == ("a red square", "the square is red") and first.answers == ()
    else:
        assert set(first.answers) >= {"yes", "no", "red", "dark"} and first.answers[0] == "no"
        assert len(first.train) == 2 * len(image_ids(first.train))


def test_carved_splits_are_disjoint_by_image_recorded_and_identical_across_reruns(tmp_path):
    task_file = write_user_task(tmp_path, "jsonl", "vqa")
    a, b = load_task(str(task_file)), load_task(str(task_file))
    assert content(a) == content(b)
    train, val, test = image_ids(a.train), image_ids(a.val), image_ids(a.test)
    assert not (train & val or train & test or val & test) and len(train | val | test) == 12
    assert a.details["split_seed"] == 0 and "seed 0" in a.details["splits"]["val"]
    spec = json.loads(json.dumps(a.details))  # JSON-able record
    assert spec["task_file_sha1"] and spec["source"].startswith("jsonl ")
    other = write_task_file(
        task_file.parent / "other.yaml",
        name="other",
        kind="vqa",
        format="jsonl",
        path="data.jsonl",
        splits={"val": 0.25, "test": 0.25, "seed": 3},
    )
    c = load_task(str(other))
    assert (len(image_ids(c.val)), len(image_ids(c.test))) == (3, 3) and image_ids(c.test) != test


def test_splits_given_in_the_data_are_kept_and_a_missing_one_is_carved_from_train(tmp_path):
    write_user_images(tmp_path / "images")
    rows = [
        {"image": f"images/{i}.png", "caption": f"{c} thing", "split": "test" if i in ("im10", "im11") else "training"}
        for i, (c, _) in USER_COLOURS.items()
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_task(str(write_task_file(tmp_path / "t.yaml", name="given", kind="caption", format="jsonl",
                                         path="d.jsonl")))
    assert [e.image_id for e in data.test] == ["images/im10.png", "images/im11.png"]  # ids: the paths as written
    assert len(data.val) == 1 and len(data.train) == 9
    assert data.details["splits"]["test"] == "given in the data" and "train images" in data.details["splits"]["val"]


def test_fields_are_remapped_and_image_root_is_honoured(tmp_path):
    write_user_images(tmp_path / "pictures")
    lines = ["pic,text,kind"] + [f"{i}.png,{c} square,x" for i, (c, _) in USER_COLOURS.items()]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "caps.csv").write_text("\n".join(lines) + "\n")
    task_file = write_task_file(tmp_path / "tasks" / "t.yaml", name="remapped", kind="caption", format="csv",
                                path="../data/caps.csv", image_root="../pictures",
                                fields={"image": "pic", "caption": "text"}, options={"prompt": "a photo of"})
    task = get_task(str(task_file))
    assert task.options == {"prompt": "a photo of"} and task.file == str(task_file.resolve())
    data = load_task(str(task_file))
    assert data.image("im03.png").shape == (10, 15, 3) and data.train[0].captions[0].endswith("square")


def test_imagefolder_split_folders_give_the_splits(tmp_path):
    root = tmp_path / "folder"
    for split, ids in {
        "train": ["im00", "im01", "im02", "im03"],
        "validation": ["im04"],
        "test": ["im05", "im06"],
    }.items():
        write_user_images(root / split)
        for image_id in USER_COLOURS:
            if image_id not in ids:
                (root / split / f"{image_id}.png").unlink()
        (root / split / "metadata.csv").write_text("file_name,caption\n" + "".join(
            f"{i}.png,a {USER_COLOURS[i][0]} one\n" for i in ids))
    data = load_task(str(write_task_file(tmp_path / "t.yaml", name="folders", kind="caption", format="imagefolder",
                                         path="folder")))
    assert [e.image_id for e in data.val] == ["im04.png"] and [e.image_id for e in data.test] == [
        "im05.png",
        "im06.png",
    ]
    assert data.details["splits"] == {
        "train": "given in the data",
        "val": "given in the data",
        "test": "given in the data",
    }


def test_coco_karpathy_and_vqav2_task_files_equal_the_built_in_tasks(tmp_path):
    paths = write_coco(tmp_path / "c")
    coco = write_task_file(tmp_path / "coco.yaml", name="my-coco", kind="caption", format="coco-karpathy",
                           path=paths["karpathy_json"], image_root=paths["image_root"])
    assert content(load_task(str(coco))) == content(load_task("coco-caption", paths=paths))
    vqa_paths, _ = write_vqav2(tmp_path / "v")  # official names in one folder; images in v/images
    vqa = write_task_file(tmp_path / "vqa.yaml", name="my-vqa", kind="vqa", format="vqav2", path="v",
                          image_root="v/images")
    mine, builtin = load_task(str(vqa)), load_task("vqav2", paths=vqa_paths)
    assert content(mine) == content(builtin) and mine.answers == builtin.answers
    assert len(mine.submission) == 1  # the test-dev questions in the folder are found by their official name


def test_tasks_check_prints_what_was_read(tmp_path, capsys):
    task_file = write_user_task(tmp_path, "csv", "vqa")
    assert main(["tasks", "check", str(task_file)]) == 0
    out = capsys.readouterr().out
    assert "task mine-csv-vqa: vqa (vqa_accuracy), source csv" in out
    assert "train         20       10  1-3" in out and "test           2        1" in out
    assert (
        "every image decoded; height 10-10 px, width 12-23 px" in out
        and "candidate answers: 14 (most frequent: no, dark, yes" in out
    )
    assert main(["tasks", "check", str(task_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["splits"]["val"]["images"] == 1 and report["images_checked"] == 12
    assert main(["tasks"]) == 0 and "easyvqa-vqa" in capsys.readouterr().out


def test_one_file_named_three_ways_is_one_image_and_never_in_two_splits(tmp_path):
    """`images/x.png`, `./images//x.png` and a symbolic link to it are one image: carving by image
    keeps every spelling on one side (before, 40 files became 64/8/8 images, 6 of 7 test files also in train)."""
    write_user_images(tmp_path / "images")
    (tmp_path / "links").mkdir()
    rows = []
    for i, (c, _) in USER_COLOURS.items():
        (tmp_path / "links" / f"{i}.png").symlink_to(tmp_path / "images" / f"{i}.png")
        for written in (f"images/{i}.png", f"./images//{i}.png", f"links/{i}.png"):
            rows.append({"image": written, "caption": f"a {c} square"})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_task(str(write_task_file(tmp_path / "t.yaml", name="three-ways", kind="caption", format="jsonl",
                                         path="d.jsonl")))
    train, val, test = image_ids(data.train), image_ids(data.val), image_ids(data.test)
    assert len(train | val | test) == len(USER_COLOURS) and not (train & val or train & test or val & test)
    assert all(i.startswith("images/") for i in train | val | test)  # the first spelling names the image
    assert {len(e.captions) for e in data.train} == {3}  # each image's three rows, one example


def test_two_image_ids_for_one_file_are_refused_naming_both_rows(tmp_path):
    rows = [dict(r, image_id=r["image"].split("/")[1][:-4]) for r in caption_rows()]
    rows.append({"image": "./images/im03.png", "image_id": "another", "caption": "again"})
    task_file = jsonl_task(tmp_path, rows)
    with pytest.raises(UserError, match=r"d.jsonl: line 13: image id 'another' names ./images/im03.png, the file "
                                        r"that .*d.jsonl: line 4 calls 'im03'; one file is one image"):
        load_task(str(task_file))


# ---------------------------------------------------------------------------------------------
# Bad data: one line naming the file and row, exit 2, nothing written


def jsonl_task(root, rows, kind="caption", **keys):
    write_user_images(root / "images")
    (root / "d.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return write_task_file(
        root / "t.yaml", **{"name": "bad", "kind": kind, "format": "jsonl", "path": "d.jsonl", **keys}
    )


def caption_rows(n=12, **change):
    rows = [{"image": f"images/{i}.png", "caption": f"a {c} square"} for i, (c, _) in list(USER_COLOURS.items())[:n]]
    for k, v in change.items():
        rows[int(k[1:])] = v
    return rows


def vqa_rows(**change):
    rows = [dict(r, image=f"images/{r['image_id']}.png") for r in user_rows("vqa")]
    for k, v in change.items():
        rows[int(k[1:])] = {**rows[int(k[1:])], **v} if isinstance(v, dict) else v
    return rows


def corrupt(root):
    task_file = jsonl_task(root, caption_rows())
    (root / "images" / "im04.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return task_file


BAD = {  # name -> (build(root) -> task file, what the one line says)
    "missing image": (
        lambda r: jsonl_task(r, caption_rows(r3={"image": "images/nope.png", "caption": "x"})),
        "nope.png: image not found (named at {d}: line 4",
    ),
    "undecodable image": (corrupt, "im04.png: cannot read image"),
    "empty caption": (
        lambda r: jsonl_task(r, caption_rows(r2={"image": "images/im02.png", "caption": "  "})),
        "{d}: line 3: empty caption",
    ),
    "no answer": (
        lambda r: jsonl_task(r, vqa_rows(r5={"answers": []}), kind="vqa"),
        "{d}: line 6: the question has no answer",
    ),
    "answer that normalises to nothing": (
        lambda r: jsonl_task(r, vqa_rows(r3={"answers": ["A"]}, r9={"answers": ["the"]}), kind="vqa"),
        "{d}: line 4: answer 'A' is empty after VQA answer normalisation (articles and punctuation are dropped), "
        "so it could never be predicted nor trained on (2 answers in all)",
    ),
    "duplicate id": (
        lambda r: jsonl_task(r, vqa_rows(r7={"question_id": "im00-c"}), kind="vqa"),
        "{d}: line 8: question id 'im00-c' appears twice (also at {d}: line 1)",
    ),
    "image in two splits": (
        lambda r: jsonl_task(
            r,
            [dict(x, split="train") for x in caption_rows()]
            + [{"image": "images/im01.png", "caption": "again", "split": "test"}],
        ),
        "{d}: line 13: image 'images/im01.png' is in split test here but in train",
    ),
    "missing field": (
        lambda r: jsonl_task(r, caption_rows(r1={"image": "images/im01.png", "text": "x"})),
        "{d}: line 2: no field 'caption'",
    ),
    "unknown format": (lambda r: jsonl_task(r, caption_rows(), format="tsv"), "format 'tsv' is not one of"),
    "invalid json": (
        lambda r: jsonl_task(r, caption_rows(r1='{"image": "images/im01.png", caption}')),
        "{d}: line 2: not valid JSON",
    ),
    "NaN caption": (
        lambda r: jsonl_task(r, caption_rows(r2='{"image": "images/im02.png", "caption": NaN}')),
        "{d}: line 3: NaN is not JSON",
    ),
    "key given twice": (
        lambda r: jsonl_task(r, caption_rows(r5='{"image": "images/im05.png", "caption": "a", "caption": "b"}')),
        "{d}: line 6: key 'caption' given twice in one object",
    ),
    "unknown key": (lambda r: jsonl_task(r, caption_rows(), patth="x"), "unknown key 'patth'"),
    "built-in name": (lambda r: jsonl_task(r, caption_rows(), name="scenes-caption"), "is a built-in task"),
    "bad fraction": (lambda r: jsonl_task(r, caption_rows(), splits={"val": 1.5}), "splits.val must be a fraction"),
    "unknown option": (
        lambda r: jsonl_task(r, caption_rows(), options={"beams": 3}),
        "unknown option 'beams' (did you mean \"num_beams\"?)",
    ),
    "unknown split": (
        lambda r: jsonl_task(r, [dict(x, split="holdout") for x in caption_rows()]),
        "{d}: line 1: unknown split 'holdout'",
    ),
    "too few images": (lambda r: jsonl_task(r, caption_rows(n=2)), "2 images cannot be split into train and val, test"),
    "no task file": (lambda r: r / "absent.yaml", "absent.yaml: task file not found"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_one_line_exit_2_and_nothing_is_written(case, tiny_checkpoint, tmp_path, capsys):
    ckpt, _ = tiny_checkpoint
    build, says = BAD[case]
    task_file = build(tmp_path / "data")
    says = says.format(d=tmp_path / "data" / "d.jsonl")
    for argv in (["finetune", "--model", str(ckpt), "--task", str(task_file), "--method", "lora", "--steps", "2",
                  "--length-policy", "steps", "--out", str(tmp_path / "run")],
                 ["tasks", "check", str(task_file)]):
        assert main(argv) == 2, case
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err
    assert not (tmp_path / "run").exists()


def test_there_are_at_least_10_bad_data_cases():
    assert len(BAD) >= 10


def test_a_task_file_runs_from_any_folder_with_paths_relative_to_itself(tmp_path, monkeypatch):
    task_file = write_user_task(tmp_path / "a", "jsonl", "caption")
    moved = tmp_path / "b"
    shutil.copytree(task_file.parent, moved)
    monkeypatch.chdir(tmp_path)
    assert content(load_task(str(moved / "task.yaml"))) == content(load_task(str(task_file)))
    with pytest.raises(UserError, match="unknown task 'my-task'"):
        get_task("my-task")


def test_letter_answers_are_kept_with_keep_articles_and_scored_as_letters(tmp_path):
    """Multiple-choice answers 'A'..'D': the official normalisation empties 'A' (an article) and such a
    task file is refused; with answer_normalisation: keep-articles 'A' is a candidate, a training
    target and a right answer like the others."""
    from vlpeft.tasks import get_kind

    letters = "ABCD"
    rows = [dict(r, answers=[letters[k % 4]]) for k, r in enumerate(vqa_rows())]
    with pytest.raises(UserError, match="or set answer_normalisation: keep-articles in the task file"):
        load_task(str(jsonl_task(tmp_path / "a", rows, kind="vqa")))
    data = load_task(str(jsonl_task(tmp_path / "b", rows, kind="vqa", answer_normalisation="keep-articles")))
    assert set(data.answers) == {"a", "b", "c", "d"}
    kind = get_kind("vqa")
    examples = data.train + data.val + data.test
    right = [ex.answers[0] for ex in examples]
    assert kind.score(right, examples)["vqa_accuracy"] == 100.0
    assert kind.score(["B" if a == "A" else "A" for a in right], examples)["vqa_accuracy"] == 0.0
    assert {kind.stratum(ex) for ex in examples} == {"a", "b", "c", "d"}
    with pytest.raises(UserError, match="answer_normalisation 'exact' is not one of vqa, keep-articles"):
        load_task(str(jsonl_task(tmp_path / "c", rows, kind="vqa", answer_normalisation="exact")))
