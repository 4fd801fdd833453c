import json

import pytest

from imcap.data.karpathy import DatasetFormatError, load_dataset


def _write(tmp_path, data):
    path = tmp_path / "dataset_x.json"
    path.write_text(json.dumps(data))
    return path


def _image(name, split="train", tokens=("a", "cat")):
    return {"filename": name, "imgid": 0, "split": split, "sentids": [0],
            "sentences": [{"tokens": list(tokens), "raw": "A cat.", "imgid": 0, "sentid": 0}]}


def test_loads_and_maps_restval_to_train(tmp_path):
    path = _write(tmp_path, {"dataset": "coco", "images": [
        _image("a.jpg", "restval"), _image("b.jpg", "val"), _image("c.jpg", "test")]})
    dataset = load_dataset(path)
    assert dataset.name == "coco"
    assert [im.split for im in dataset.images] == ["train", "val", "test"]
    assert dataset.images[0].captions == (("a", "cat"),)
    assert dataset.images[0].raw == ("A cat.",)
    assert [im.filename for im in dataset.split("val")] == ["b.jpg"]


@pytest.mark.parametrize(("images", "message"), [
    ([{"imgid": 0}], r"images\[0\]: missing key 'filename'"),
    ([_image("a.jpg", "holdout")], r"a.jpg.*unknown split 'holdout'"),
    ([_image("a.jpg", tokens=())], r"a.jpg.*sentences\[0\] needs a non-empty 'tokens'"),
    ([_image("a.jpg"), _image("a.jpg")], r"'a.jpg' listed twice"),
    ([], r"no images"),
])
def test_malformed_entries_name_file_and_entry(tmp_path, images, message):
    path = _write(tmp_path, {"images": images})
    with pytest.raises(DatasetFormatError, match=message) as err:
        load_dataset(path)
    assert str(path) in str(err.value)


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(DatasetFormatError, match=r"broken\.json: not valid JSON"):
        load_dataset(path)


def test_a_word_is_one_string_however_often_the_captions_use_it(tmp_path):
    """At COCO's size (7M word uses) a string per use cost the train stage ~0.5 GB and took
    its peak over 3 GB (docs/speed.md)."""
    path = _write(tmp_path, {"images": [_image(f"{i}.jpg", tokens=("a", "red", "cat"))
                                        for i in range(3)]})
    captions = [c for image in load_dataset(path).images for c in image.captions]
    assert captions == [("a", "red", "cat")] * 3
    for position in range(3):
        assert len({id(c[position]) for c in captions}) == 1
