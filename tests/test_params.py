"""Parameter parsing and validation: every kind of number refuses NaN and infinities in one sentence."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pipeline.errors import ParamError
from pipeline.params import check_params, param, params_from_dict, parse_assignment


@dataclass(frozen=True)
class Params:
    steps: int = param(50, kind="int", minimum=5, maximum=200, help="steps")
    guidance: float = param(7.5, kind="float", minimum=1.0, maximum=20.0, help="guidance")
    blend_threshold: float = param(0.3, kind="float", minimum=0.0, maximum=1.0, help="threshold")
    blend_start: float = param(0.2, kind="step_fraction", minimum=0.0, maximum=1.0, help="start")
    cross_replace: tuple = param((0.0, 0.8), kind="step_range", minimum=0.0, maximum=1.0, help="range")
    reweight: tuple = param((), kind="word_values", minimum=-10.0, maximum=10.0, help="weights")


def _parse(text: str) -> Params:
    name, value = parse_assignment(text)
    return params_from_dict(Params, {name: value})


@pytest.mark.parametrize("text", [
    "guidance=nan", "guidance=NaN", "guidance=inf", "guidance=-inf", "blend_threshold=nan",
    "blend_start=nan", "cross_replace=nan,nan", "cross_replace=0,inf", "reweight=cat:nan",
    "reweight=cat:-Infinity", "steps=nan", "steps=inf",
])
def test_non_finite_numbers_are_refused_in_one_sentence(text):
    with pytest.raises(ParamError) as error:
        _parse(text)
    message = str(error.value)
    name = text.partition("=")[0]
    assert message.startswith(f"Parameter {name} must be a finite number, not ")
    assert "\n" not in message and message.endswith(".")


def test_non_finite_python_floats_are_refused_too():
    with pytest.raises(ParamError, match="finite"):
        params_from_dict(Params, {"guidance": float("nan")})
    with pytest.raises(ParamError, match="finite"):
        params_from_dict(Params, {"reweight": {"cat": float("inf")}})


def test_long_values_are_shortened_in_messages():
    with pytest.raises(ParamError) as error:
        _parse("guidance=" + "9" * 5000)
    assert len(str(error.value)) < 150 and "…" in str(error.value)
    with pytest.raises(ParamError) as error:
        _parse("steps=x" + "1" * 5000)
    assert len(str(error.value)) < 150


def test_finite_values_still_parse():
    params = params_from_dict(Params, {"guidance": "7", "steps": "6", "cross_replace": "0,0.6",
                                       "reweight": "cat:2", "blend_start": 0.5})
    assert (params.guidance, params.steps, params.cross_replace) == (7.0, 6, (0.0, 0.6))
    assert params.reweight == (("cat", 2.0),) and params.blend_start == 0.5
    with pytest.raises(ParamError, match="whole number"):
        _parse("steps=5.5")
    with pytest.raises(ParamError, match="between 1 and 20, not 99"):
        _parse("guidance=99")


@dataclass(frozen=True)
class Words:
    mode: str = param("auto", kind="choice", choices=("auto", "refine"), help="mode")
    blend_words: tuple = param((), kind="words", help="words")
    early_stop: bool = param(True, kind="bool", help="stop")


OUTSIDE = {  # as a tampered result PNG or a project.json of another Retake might hold them
    "steps": 10**30, "guidance": float("nan"), "blend_threshold": "many", "blend_start": [0.5],
    "cross_replace": [0.2, 0.1], "reweight": {"cat": "2", "\ud800": 1},
}


def test_every_outside_value_is_checked_on_its_own():
    checked = check_params(Params, {**OUTSIDE, "guidance": 6, "future_param": 1, 3: 4})
    assert checked.values == {"guidance": 6.0} and checked.json_values() == {"guidance": 6.0}
    assert checked.unknown == ("3", "future_param") and not checked.ok
    assert set(checked.invalid) == set(OUTSIDE) - {"guidance"}
    assert all(name in text and text.endswith(".") and "\n" not in text and len(text) < 200
               for name, text in checked.invalid.items()), checked.invalid
    assert checked.invalid["reweight"].startswith("The reweight parameter is not valid text")
    assert str(checked.first_error()).startswith("Unknown parameter 3, future_param for this method")


@pytest.mark.parametrize("values", [{"blend_words": 5}, {"blend_words": {"cat": 1}},
                                    {"blend_words": ["\udc00"]}, {"mode": ["auto"]}, {"mode": "x" * 5000},
                                    {"early_stop": 1}, {"early_stop": None}])
def test_wrong_types_are_refused_never_raised_past_the_check(values):
    checked = check_params(Words, values)
    assert not checked.ok and list(checked.invalid) == list(values)
    assert len(str(checked.first_error())) < 200
    with pytest.raises(ParamError):
        params_from_dict(Words, values)


def test_valid_values_come_back_as_json_and_as_the_cli_takes_them():
    checked = check_params(Params, {"cross_replace": [0, 0.5], "reweight": {"cat": 2}, "steps": "6"})
    assert checked.ok and checked.first_error() is None
    assert checked.json_values() == {"cross_replace": [0.0, 0.5], "reweight": {"cat": 2.0}, "steps": 6}
    assert params_from_dict(Params, checked.json_values()) == Params(steps=6, cross_replace=(0.0, 0.5),
                                                                     reweight=(("cat", 2.0),))
