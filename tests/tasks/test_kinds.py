"""The two task kinds behind the protocol: batches move to a device whole, VQA evaluation keeps one
chunk of image states alive at a time, predictions do not depend on the chunking, options are
validated by the kind."""

import weakref

import numpy as np
import pytest
import torch

import vlpeft
from vlpeft.errors import UserError
from vlpeft.tasks import TASKS, cached_task, get_kind, task_options


@pytest.fixture(scope="module")
def world(tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    return vlpeft.load_model(str(ckpt)), cached_task("easyvqa-vqa"), cached_task("scenes-caption")


def counting_encoder(model, data, loaded):
    """encode_images that counts the image states still alive each time it is called."""
    from vlpeft.tasks.base import pixel_encoder

    plain, alive, most = pixel_encoder(model, data, loaded), [0], [0]

    def encode(ids):
        states = plain(ids)
        alive[0] += len(ids)
        most[0] = max(most[0], alive[0])
        weakref.finalize(states, lambda n=len(ids): alive.__setitem__(0, alive[0] - n))
        return states

    return encode, most


def test_vqa_evaluation_keeps_one_chunk_of_image_states_alive(world):
    loaded, vqa, _ = world
    kind, opts = get_kind("vqa"), task_options(TASKS["easyvqa-vqa"])
    examples = vqa.test[:300]  # about 30 images
    n_images = len({e.image_id for e in examples})
    encode, most = counting_encoder(loaded.model, vqa, loaded)
    chunked = kind.predict(loaded.model, examples, vqa, loaded, opts, encode_images=encode, batch_size=8)
    assert n_images > 3 * 8 and most[0] <= 8  # every image encoded, never more than one chunk held
    whole = kind.predict(loaded.model, examples, vqa, loaded, opts, batch_size=512)
    assert chunked == whole and len(chunked) == len(examples)


def test_caption_evaluation_is_chunked_too(world):
    loaded, _, scenes = world
    kind, opts = get_kind("caption"), task_options(TASKS["scenes-caption"])
    encode, most = counting_encoder(loaded.model, scenes, loaded)
    out = kind.predict(loaded.model, scenes.test[:20], scenes, loaded, opts, encode_images=encode, batch_size=6)
    assert len(out) == 20 and most[0] <= 6


def test_a_batch_moves_every_tensor(world):
    loaded, vqa, scenes = world
    rng = np.random.default_rng(0)
    for data, name in ((vqa, "easyvqa-vqa"), (scenes, "scenes-caption")):
        kind = get_kind(TASKS[name].kind)
        batch = kind.batch(data.train[:3], data, loaded, task_options(TASKS[name]), 40, rng)
        moved = batch.to("meta")
        tensors = [v for v in vars(moved).values() if isinstance(v, torch.Tensor)]
        assert len(tensors) >= 4 and all(t.device.type == "meta" for t in tensors)
        assert moved.image_ids == batch.image_ids and batch.pixels.device.type == "cpu"


def test_options_are_the_kinds_and_validated_by_it():
    assert task_options(TASKS["coco-caption"]).prompt == "a picture of"  # the task's default
    assert task_options(TASKS["scenes-caption"], {"num_beams": 3}).num_beams == 3
    with pytest.raises(UserError, match=r"unknown option 'inference'"):
        task_options(TASKS["scenes-caption"], {"inference": "rank"})
    with pytest.raises(UserError, match=r"inference 'beam' is not one of rank, generate"):
        task_options(TASKS["scenes-vqa"], {"inference": "beam"})
    with pytest.raises(UserError, match=r"num_beams must be an integer"):
        task_options(TASKS["scenes-caption"], {"num_beams": "3"})
    with pytest.raises(UserError, match=r">= 1"):
        task_options(TASKS["scenes-caption"], {"num_beams": 0})


def test_a_held_out_caption_is_scored_against_the_other_references_of_its_image():
    from vlpeft.data.records import CaptionExample

    kind = get_kind("caption")
    examples = [CaptionExample("a", "a.png", ("a red circle", "a red circle", "there is a red circle")),
                CaptionExample("b", "b.png", ("a blue square", "the image shows a blue square")),
                CaptionExample("c", "c.png", ("only one caption",))]
    predictions, kept = kind.held_out(examples)
    assert predictions == ["a red circle", "a blue square"]  # c has no other reference to be scored against
    assert [ex.captions for ex in kept] == [("a red circle", "there is a red circle"),
                                            ("the image shows a blue square",)]
    assert kind.score(predictions, kept)["cider_d"] > 0 and get_kind("vqa").held_out is None
