"""VQAv2 official format: questions + annotations + COCO-named images."""

import json

import pytest
from PIL import Image

from vlpeft.data.vqav2 import load_vqav2
from vlpeft.errors import UserError

QUESTIONS = [  # (image_id, question_id, question)
    (458752, 458752000, "What is this photo taken looking through?"),
    (458752, 458752001, "What position is this man playing?"),
    (262146, 262146000, "What color is the snow?"),
]
ANSWERS = {
    458752000: ["net"] * 8 + ["netting", "mesh"],
    458752001: ["pitcher"] * 9 + ["catcher"],
    262146000: ["white"] * 10,
}


def write_questions(path, subtype="val2014", questions=QUESTIONS):
    data = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "questions": [
        {"image_id": i, "question": q, "question_id": qid} for i, qid, q in questions
    ]}
    if subtype is not None:
        data["data_subtype"] = subtype
    path.write_text(json.dumps(data))
    return path


def write_annotations(path, skip=()):
    annotations = [
        {
            "question_id": qid,
            "image_id": i,
            "question_type": "what color is the" if "color" in q else "what is this",
            "answer_type": "other",
            "multiple_choice_answer": ANSWERS[qid][0],
            "answers": [
                {"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(ANSWERS[qid])
            ],
        }
        for i, qid, q in QUESTIONS
        if qid not in skip
    ]
    path.write_text(json.dumps({"info": {}, "license": {}, "data_subtype": "val2014", "annotations": annotations}))
    return path


def write_images(folder, subset="val2014", ids=(458752, 262146)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        Image.new("RGB", (5, 4), (i % 256, 9, 9)).save(folder / f"COCO_{subset}_{i:012d}.jpg")


def test_loads_all_ten_answers(tmp_path):
    write_images(tmp_path / "coco" / "val2014")  # images under image_root/<subset>/
    examples = load_vqav2(
        write_questions(tmp_path / "q.json"), tmp_path / "coco", write_annotations(tmp_path / "a.json")
    )
    assert [e.question_id for e in examples] == ["458752000", "458752001", "262146000"]
    first = examples[0]
    assert first.answers == tuple(ANSWERS[458752000]) and len(first.answers) == 10
    assert first.image_id == "458752" and first.question == "What is this photo taken looking through?"
    assert first.image_path == str(tmp_path / "coco" / "val2014" / "COCO_val2014_000000458752.jpg")
    assert examples[2].question_type == "what color is the" and examples[2].answer_type == "other"


def test_images_directly_in_root_and_subset_override(tmp_path):
    write_images(tmp_path / "flat", subset="train2014")
    examples = load_vqav2(write_questions(tmp_path / "q.json", subtype=None), tmp_path / "flat", subset="train2014")
    assert examples[0].image_path == str(tmp_path / "flat" / "COCO_train2014_000000458752.jpg")
    assert all(e.answers == () for e in examples)


def test_test_dev_without_annotations_uses_test2015_images(tmp_path):
    write_images(tmp_path / "test2015", subset="test2015")
    examples = load_vqav2(write_questions(tmp_path / "q.json", subtype="test-dev2015"), tmp_path)
    assert examples[0].image_path.endswith("test2015/COCO_test2015_000000458752.jpg")
    assert examples[0].answers == ()


def test_question_without_answers(tmp_path):
    write_images(tmp_path / "val2014")
    annotations = write_annotations(tmp_path / "a.json", skip={458752001})
    with pytest.raises(UserError, match=rf"question 458752001 has no answers in {annotations}"):
        load_vqav2(write_questions(tmp_path / "q.json"), tmp_path, annotations)


def test_missing_image(tmp_path):
    write_images(tmp_path / "val2014", ids=(458752,))
    questions = write_questions(tmp_path / "q.json")
    with pytest.raises(UserError) as err:
        load_vqav2(questions, tmp_path, write_annotations(tmp_path / "a.json"))
    assert "COCO_val2014_000000262146.jpg: image not found (1 of 2 images listed in" in str(err.value)
    assert str(questions) in str(err.value)


@pytest.mark.parametrize(
    "which,content,match",
    [
        ("questions", "", "is empty"),
        ("questions", '{"questions": [', "not valid JSON"),
        ("questions", '{"data_subtype": "val2014", "questions": []}', "'questions' is empty"),
        ("questions", '{"data_subtype": "val2014"}', "expected key 'questions'"),
        ("questions", '{"questions": [{"image_id": 1, "question": "q?", "question_id": 2}]}', "no 'data_subtype'"),
        (
            "questions",
            '{"data_subtype": "val2014", "questions": [{"image_id": 1}]}',
            r"questions\[0\] lacks key 'question'",
        ),
        ("annotations", "", "is empty"),
        ("annotations", '{"annotations": []}', "'annotations' is empty"),
        ("annotations", "nope", "not valid JSON"),
    ],
)
def test_bad_files_are_user_errors_naming_the_file(tmp_path, which, content, match):
    write_images(tmp_path / "val2014")
    paths = {"questions": tmp_path / "q.json", "annotations": tmp_path / "a.json"}
    write_questions(paths["questions"])
    write_annotations(paths["annotations"])
    paths[which].write_text(content)
    with pytest.raises(UserError, match=match) as err:
        load_vqav2(paths["questions"], tmp_path, paths["annotations"])
    assert str(err.value).startswith(str(paths[which]))


def test_annotation_about_another_image(tmp_path):
    write_images(tmp_path / "val2014")
    annotations = write_annotations(tmp_path / "a.json")
    data = json.loads(annotations.read_text())
    data["annotations"][0]["image_id"] = 999
    annotations.write_text(json.dumps(data))
    with pytest.raises(UserError, match="question 458752000 is about image 999"):
        load_vqav2(write_questions(tmp_path / "q.json"), tmp_path, annotations)


def test_duplicate_question_ids_and_empty_questions_are_refused(tmp_path):
    from fixtures_data import write_vqav2

    paths, _ = write_vqav2(tmp_path)
    data = json.loads(open(paths["val_questions"]).read())
    data["questions"][3]["question_id"] = data["questions"][0]["question_id"]
    open(paths["val_questions"], "w").write(json.dumps(data))
    with pytest.raises(UserError, match=r"questions\[3\]: question_id 110 appears twice \(also questions\[0\]\)"):
        load_vqav2(paths["val_questions"], paths["image_root"])
    data["questions"][3]["question_id"] = 999
    data["questions"][2]["question"] = "  "
    open(paths["val_questions"], "w").write(json.dumps(data))
    with pytest.raises(UserError, match=r"questions\[2\] \(question_id 120\): empty question"):
        load_vqav2(paths["val_questions"], paths["image_root"])
