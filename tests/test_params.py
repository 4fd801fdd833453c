from pathlib import Path

import pytest
import yaml
from params_overrides import DEFAULTS, merged

from imcap.data.params import DATASETS
from imcap.features.params import ENCODERS
from imcap.model.params import ATTENTIONS
from imcap.params import REPO_PARAMS, ParamError, Params, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_file_is_valid_and_matches_the_documented_defaults():
    params = load_params(REPO / "params.yaml")
    assert (params.dataset, params.encoder, params.embeddings, params.attention) == (
        "shapes", "resnet18", "glove.6B.50d-offline", "I")
    assert params.features.weights == "none"


def test_params_file_is_the_one_place_of_defaults(tmp_path):
    """A missing key fails naming it instead of falling back to a default kept in code."""
    path = tmp_path / "params.yaml"
    path.write_text("")
    with pytest.raises(ParamError, match=r"dataset is missing"):
        load_params(path)
    raw = merged({})
    del raw["train"]["patience"]
    with pytest.raises(ParamError, match=r"train\.patience is missing"):
        parse_params(raw)


@pytest.mark.parametrize(("raw", "named"), [
    ({"encoder": "vgg16"}, ENCODERS),
    ({"attention": "III"}, ATTENTIONS),
    ({"dataset": "imagenet"}, DATASETS),
])
def test_unknown_choice_names_the_valid_ones(raw, named):
    with pytest.raises(ParamError) as err:
        parse_params(merged(raw))
    message = str(err.value)
    assert repr(next(iter(raw.values()))) in message
    assert all(choice in message for choice in named)


def test_choice_message_reads_as_before():
    with pytest.raises(ParamError, match=r"attention: unknown value 'III'; valid choices: "
                                         r"none, I, II$"):
        parse_params(merged({"attention": "III"}))


@pytest.mark.parametrize("raw", [
    {"train": {"batch_size": -1}},
    {"train": {"batch_size": 0}},
    {"features": {"num_workers": -2}},
    {"model": {"dropout": 1.5}},
    {"shapes": {"val_fraction": 0.6, "test_fraction": 0.5}},
])
def test_out_of_range_values_fail(raw):
    with pytest.raises(ParamError, match=r"must be"):
        parse_params(merged(raw))


def test_unknown_keys_and_wrong_types_fail():
    message = r"unknown key 'epoch' in section 'train'; valid keys: .*\bepochs\b"
    with pytest.raises(ParamError, match=message):
        parse_params(merged({"train": {"epoch": 3}}))
    with pytest.raises(ParamError, match=r"unknown key 'atention' in the top level"):
        parse_params(merged({"atention": "I"}))
    with pytest.raises(ParamError, match=r"train.epochs must be int"):
        parse_params(merged({"train": {"epochs": "ten"}}))
    with pytest.raises(ParamError, match=r"train.epochs must be int"):
        parse_params(merged({"train": {"epochs": True}}))
    with pytest.raises(ParamError, match=r"train must be a section"):
        parse_params(merged({"train": 3}))


def test_ints_are_accepted_for_floats_and_flat_dict_uses_dotted_keys():
    params = parse_params(merged({"train": {"learning_rate": 1}}))
    assert params.train.learning_rate == 1.0
    flat = params.as_flat_dict()
    assert flat["train.learning_rate"] == 1.0 and flat["attention"] == "I"
    assert flat["download.karpathy.json"] == DEFAULTS["download"]["karpathy"]["json"]


def test_broken_yaml_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("encoder: [unclosed\n")
    with pytest.raises(ParamError, match=r"params\.yaml: not valid YAML"):
        load_params(path)


def test_flat_keys_are_the_params_file_keys():
    """What MLflow logs and `dvc exp run -S` sets are the same dotted keys."""
    def leaves(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, prefix + key + ".")
            else:
                yield prefix + key

    assert set(load_params(REPO / "params.yaml").as_flat_dict()) == set(leaves(DEFAULTS))
    assert yaml.safe_load((REPO / "params.yaml").read_text()) == DEFAULTS


@pytest.mark.parametrize(("raw", "message"), [
    ({"train": {"processes": 1000}}, "train.processes must be <= 64, got 1000"),
    ({"features": {"processes": 1000}}, "features.processes must be <= 64, got 1000"),
    ({"train": {"num_workers": 1000}}, "train.num_workers must be <= 64, got 1000"),
    ({"features": {"num_workers": 1000}}, "features.num_workers must be <= 64, got 1000"),
    ({"shapes": {"image_size": 100_000}}, "shapes.image_size must be <= 1024, got 100000"),
    ({"features": {"image_size": 100_000}}, "features.image_size must be <= 1024, got 100000"),
    ({"shapes": {"num_images": 10**9}}, "shapes.num_images must be <= 1000000, got 1000000000"),
    ({"train": {"scst_samples": 10**9}}, "train.scst_samples must be <= 100, got 1000000000"),
    ({"train": {"batch_size": 10**9}}, "train.batch_size must be <= 65536, got 1000000000"),
    ({"eval": {"beams": [3, 10**6]}}, "eval.beams[1] must be <= 100, got 1000000"),
    ({"eval": {"max_length": 10**6}}, "eval.max_length must be <= 500, got 1000000"),
    ({"train": {"learning_rate": 1e30}}, "train.learning_rate must be <= 1.0, got 1e+30"),
])
def test_sizes_that_would_take_the_machine_down_are_refused_naming_the_bound(raw, message):
    with pytest.raises(ParamError) as err:
        parse_params(merged(raw))
    assert str(err.value) == f"params: {message}"


@pytest.mark.parametrize(("shapes", "message"), [
    ({"num_images": 3}, "shapes.num_images 3 leaves the val split without an image; at least 6 "
                        "give every split one"),
    ({"num_images": 2, "val_fraction": 0.45, "test_fraction": 0.45},
     "shapes.num_images 2 leaves the train split without an image; at least 3 give every split "
     "one"),
    ({"test_fraction": 0.0}, "shapes.test_fraction is 0: the test split would have no image "
                             "(train validates on val, evaluate scores test)"),
])
def test_a_split_without_an_image_is_refused_before_any_stage_runs(shapes, message):
    """Train failed on it (`split 'val' has no images`) after download, vocab and features."""
    with pytest.raises(ParamError) as err:
        parse_params(merged({"shapes": shapes}))
    assert str(err.value) == f"params: {message}"


@pytest.mark.parametrize(("raw", "message"), [
    ({"eval": {"diversity_lambda": 0.5}}, r"eval\.diversity_lambda needs eval\.beam_groups > 1"),
    ({"eval": {"beam_groups": 2}},
     r"eval\.beam_groups \(2\) must divide every beam size in eval\.beams; it does not divide "
     r"\[1, 3, 5\]"),
])
def test_diverse_beam_search_params_are_refused_in_one_line(raw, message):
    with pytest.raises(ParamError, match=message) as err:
        parse_params(merged(raw))
    assert "\n" not in str(err.value)
    parse_params(merged({"eval": {"beams": [2, 4], "beam_groups": 2, "diversity_lambda": 0.5}}))


def test_each_section_has_a_model_named_after_it_in_the_file_the_docs_name():
    """Section `word_vectors` -> `WordVectorsParams`, in the file docs/architecture.md's table
    gives for it: a param's model is found from its section."""
    table = (REPO_PARAMS.parent / "docs" / "architecture.md").read_text()
    sections = [key for key, value in yaml.safe_load(REPO_PARAMS.read_text()).items()
                if isinstance(value, dict)]
    assert len(sections) == 9
    for section in sections:
        model = Params.model_fields[section].annotation
        assert model.__name__ == "".join(w.capitalize() for w in section.split("_")) + "Params"
        path = model.__module__.replace(".", "/") + ".py"
        assert f"| `{section}` | `{model.__name__}` | `{path}` |" in table, section
