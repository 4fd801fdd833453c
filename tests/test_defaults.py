"""One place for defaults: `params.yaml`. The decoding options of `imcap caption` and
`imcap demo` are left to the model (its recorded params, else `params.yaml`); the served model
records `params.yaml`'s; `DecoderConfig`'s own defaults (for old checkpoints) equal its
`model` section."""

from __future__ import annotations

import dataclasses

import pytest

from imcap import cli
from imcap.evaluation.params import DecodingDefaults
from imcap.model.decoder import DecoderConfig
from imcap.params import REPO_PARAMS, load_params
from imcap.serving import signature

PARAMS = load_params(REPO_PARAMS)
REPO_DEFAULTS = DecodingDefaults(PARAMS.eval.default_beam, PARAMS.eval.length_penalty,
                                 PARAMS.eval.max_length)


@pytest.mark.parametrize("argv", [["caption", "img.png"], ["demo"]])
def test_the_commands_leave_decoding_defaults_to_the_model(argv):
    args = cli.build_parser().parse_args(argv)
    assert {name: getattr(args, name) for name in cli.DEFAULTED} == dict.fromkeys(cli.DEFAULTED)
    filled = cli.with_defaults(args, REPO_DEFAULTS)
    assert {name: getattr(filled, name) for name in cli.DEFAULTED} == dataclasses.asdict(
        REPO_DEFAULTS)


def test_the_defaults_are_params_yamls_eval_section():
    assert DecodingDefaults.from_params_file(REPO_PARAMS) == REPO_DEFAULTS
    assert REPO_DEFAULTS.beam == 3 and 3 in PARAMS.eval.beams  # the seed's beam size
    logged = {f"eval.{k}": str(v) for k, v in PARAMS.eval.model_dump().items()}
    assert DecodingDefaults.from_logged(logged) == REPO_DEFAULTS
    assert DecodingDefaults.from_logged({"encoder": "resnet18"}) is None


def test_the_served_models_params_default_to_the_models_defaults():
    served = {spec.name: spec.default for spec in signature(REPO_DEFAULTS).params.params}
    assert served == dataclasses.asdict(REPO_DEFAULTS) | {"attention": False}


def test_the_default_beam_is_3_when_swept_else_the_largest():
    assert PARAMS.eval.model_copy(update={"beams": [1, 2]}).default_beam == 2
    assert PARAMS.eval.model_copy(update={"beams": [5, 3]}).default_beam == 3


def test_decoder_config_defaults_equal_params_yaml():
    defaults = {f.name: f.default for f in dataclasses.fields(DecoderConfig)
                if f.default is not dataclasses.MISSING}
    model = PARAMS.model
    # A checkpoint without `decoder` in its config was written before the Transformer
    # existed: it is an LSTM, whatever params.yaml's default decoder is now.
    assert defaults == {"init_fc": model.init_fc, "attention_gate": model.attention_gate,
                        "decoder": "lstm",
                        "layers": model.transformer_layers, "heads": model.transformer_heads,
                        "width": model.transformer_width}
