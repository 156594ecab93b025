"""A recipe: one edit written once and applied to many photos (`retake batch`, Project > Apply to a folder).

A recipe is a JSON object. `model`, `method`, `params`, `max_side`, `area`, `area_padding` and
`feather` are what `retake edit` takes as --model, --method, --param, --max-side, --area,
--area-padding and --feather, and are checked by the very functions that check those
(pipeline.methods.registry, pipeline.params, pipeline.preflight, pipeline.request), so a recipe the
command line would refuse is refused here, in the same words, before any work starts. An area value
left out is left to each edit as the command line leaves it: the project's, else the default (a crop
around the region a mask bounds when the photo is larger than the working size; 32 and 4 pixels). `source`,
`target`, `mask`, `inputs` and `input_prompts` are the per-photo text and files, written as
templates whose `{field}`s are filled for each photo (`{stem}`, `{name}`, `{folder}`, and any extra
column of a manifest, pipeline.batch.manifest). Unknown keys are refused: a misspelt `trget` must
not silently edit a thousand photos with no target.

    {"model": "demo-tiny", "method": "p2p", "source": "a photo of a {stem}",
     "target": "a watercolour of a {stem}", "params": {"inversion": "direct", "steps": 5}, "max_side": 64}
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import RetakeError, shorten
from pipeline.files import write_atomically
from pipeline.methods.registry import get_method
from pipeline.models import SAMPLE_DTYPES, native_side
from pipeline.params import params_from_dict, params_to_dict
from pipeline.preflight import check_max_side
from pipeline.request import DEFAULT_MODEL, DEFAULT_METHOD, check_area_mode, check_input_names, check_pixels

RECIPE_FORMAT = "retake-recipe-1"
_MAX_RECIPE_BYTES = 1 << 20
_KEYS = ("format", "model", "method", "params", "max_side", "source", "target", "mask", "inputs",
         "input_prompts", "seed", "dtype", "image_encoder", "area", "area_padding", "feather")


class RecipeError(RetakeError):
    """A recipe or manifest that cannot be used as written; the message is one sentence."""


@dataclass(frozen=True)
class Template:
    """Text with `{field}`s filled per photo; `{{` and `}}` are literal braces."""

    text: str
    fields: frozenset[str]

    @classmethod
    def parse(cls, text: Any, where: str) -> Template:
        """Check `text` (a string whose fields are plain names) or raise RecipeError naming `where`."""
        if not isinstance(text, str):
            raise RecipeError(f"{where} must be text, not {shorten(json.dumps(text))}.")
        fields = set()
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError:
            raise RecipeError(f"{where} has an unmatched brace in {shorten(text)!r}; write {{{{ and }}}} for a "
                              "literal brace.") from None
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise RecipeError(f"{where} has a field {{{shorten(name + (':' + spec if spec else ''))}}} that is not "
                                  "a plain name such as {stem}.")
            fields.add(name)
        return cls(text, frozenset(fields))

    def fill(self, values: Mapping[str, str]) -> str:
        """The text with every field replaced (the caller has checked that `values` has them all)."""
        return self.text.format_map(values)


@dataclass(frozen=True)
class Recipe:
    """A checked recipe. `params` holds every parameter of the method, defaults included, as JSON values."""

    model: str
    method: str
    params: dict[str, Any]
    max_side: int
    source: Template | None
    target: Template | None
    inputs: dict[str, Template] = field(default_factory=dict)
    """Named inputs of the method (a mask by purpose, a reference picture) as file templates."""
    input_prompts: dict[str, Template] = field(default_factory=dict)
    seed: int | None = None
    dtype: str | None = None
    image_encoder: str = ""
    given_params: dict[str, Any] = field(default_factory=dict)
    """The parameters as the recipe wrote them (what a saved copy repeats)."""
    given_max_side: int | None = None
    area: str | None = None
    """"whole" or "region" (`--area`); None: each edit's project's choice, else automatic."""
    area_padding: int | None = None
    """Pixels of context around the region in the crop (`--area-padding`); None: the project's, else 32."""
    feather: int | None = None
    """Pixels over which the result fades into the photo (`--feather`); None: the project's, else 4."""

    def given_area(self) -> dict[str, Any]:
        """The area choices the recipe gives (`area`, `area_padding`, `feather`), without those it leaves
        to each edit."""
        return {name: value for name in ("area", "area_padding", "feather")
                if (value := getattr(self, name)) is not None}

    def template_fields(self) -> frozenset[str]:
        """Every field any of the recipe's templates names."""
        templates = [self.source, self.target, *self.inputs.values(), *self.input_prompts.values()]
        return frozenset().union(*(t.fields for t in templates if t is not None))

    def to_json(self) -> dict[str, Any]:
        """The recipe as written (a file `read_recipe` reads back to an equal recipe)."""
        data: dict[str, Any] = {"format": RECIPE_FORMAT, "model": self.model, "method": self.method,
                                "params": self.given_params}
        if self.given_max_side is not None:
            data["max_side"] = self.given_max_side
        for name, template in (("source", self.source), ("target", self.target)):
            if template is not None:
                data[name] = template.text
        if self.inputs:
            data["inputs"] = {name: t.text for name, t in self.inputs.items()}
        if self.input_prompts:
            data["input_prompts"] = {name: t.text for name, t in self.input_prompts.items()}
        for name in ("seed", "dtype"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.image_encoder:
            data["image_encoder"] = self.image_encoder
        data.update(self.given_area())
        return data


def read_recipe(path: Path) -> Recipe:
    """Read and check the recipe file `path` (RecipeError, or the CLI's own error, says what is wrong)."""
    try:
        raw = path.read_bytes()[: _MAX_RECIPE_BYTES + 1]
    except OSError as error:
        raise RecipeError(f"Cannot read the recipe {shorten(path)}: {error.strerror or error}.") from None
    if len(raw) > _MAX_RECIPE_BYTES:
        raise RecipeError(f"The recipe {shorten(path)} is larger than 1 MB; a recipe is a small JSON object.")
    try:
        data = strict_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise RecipeError(f"The recipe {shorten(path)} is not JSON ({shorten(error, 80)}).") from None
    return recipe_from_json(data, f"The recipe {shorten(path)}")


def recipe_from_json(data: Any, where: str = "The recipe") -> Recipe:
    """Check a recipe's JSON object; every error is one sentence that starts with `where`."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where} must be a JSON object such as {{\"method\": \"p2p\", \"target\": \"...\"}}.")
    unknown = [key for key in data if key not in _KEYS]
    if unknown:
        raise RecipeError(f"{where} has an unknown key {shorten(unknown[0])!r} (known: {', '.join(_KEYS)}).")
    if data.get("format", RECIPE_FORMAT) != RECIPE_FORMAT:
        raise RecipeError(f"{where} is of format {shorten(data['format'])!r}; this Retake reads {RECIPE_FORMAT}.")
    model = _text(data, "model", where, DEFAULT_MODEL)
    if not model.strip():
        raise RecipeError(f"{where} names no model; give a model folder, a checkpoint file, a hub id or demo.")
    method_id = _text(data, "method", where, DEFAULT_METHOD)
    given = data.get("params", {})
    if not isinstance(given, dict):
        raise RecipeError(f"{where}'s params must be an object of NAME: VALUE, as --param NAME=VALUE gives them.")
    try:
        method = get_method(method_id)
        params = params_to_dict(params_from_dict(method.Params, given))
        given_side = data.get("max_side")
        if isinstance(given_side, str):
            raise RecipeError(f"{where}'s max_side must be a number such as 512, not the text {shorten(given_side)!r}.")
        max_side = check_max_side(native_side(model) if given_side is None else given_side)
        inputs = _templates(data, "inputs", where)
        if "mask" in data:
            inputs = {"edit_mask": Template.parse(data["mask"], f"{where}'s mask"), **inputs}
        input_prompts = _templates(data, "input_prompts", where)
        check_input_names(method_id, method, [*inputs, *input_prompts])
        area = check_area_mode(data.get("area"))
        padding, feather = (None if data.get(name) is None else check_pixels(name, data[name])
                            for name in ("area_padding", "feather"))
    except RecipeError:
        raise
    except RetakeError as error:
        raise RecipeError(f"{where}: {error}") from None
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise RecipeError(f"{where}'s seed must be a whole number from 0, not {shorten(json.dumps(seed))}.")
    dtype = data.get("dtype")
    if dtype is not None and dtype not in SAMPLE_DTYPES:
        raise RecipeError(f"{where}'s dtype must be one of {', '.join(SAMPLE_DTYPES)}, not {shorten(json.dumps(dtype))}.")
    return Recipe(
        model=model, method=method_id, params=params, max_side=max_side,
        source=Template.parse(data["source"], f"{where}'s source") if "source" in data else None,
        target=Template.parse(data["target"], f"{where}'s target") if "target" in data else None,
        inputs=inputs, input_prompts=input_prompts, seed=seed, dtype=dtype,
        image_encoder=_text(data, "image_encoder", where, ""), given_params=dict(given), given_max_side=given_side,
        area=area, area_padding=padding, feather=feather,
    )


def write_recipe(recipe: Recipe, path: Path) -> None:
    """Save a recipe as the JSON `read_recipe` reads back (atomically)."""
    write_atomically(path, (json.dumps(recipe.to_json(), indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _text(data: dict[str, Any], key: str, where: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise RecipeError(f"{where}'s {key} must be text, not {shorten(json.dumps(value))}.")
    return value


def _templates(data: dict[str, Any], key: str, where: str) -> dict[str, Template]:
    given = data.get(key, {})
    if not isinstance(given, dict):
        raise RecipeError(f"{where}'s {key} must be an object of input name: file template.")
    return {str(name): Template.parse(text, f"{where}'s {key}.{name}") for name, text in given.items()}


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity, which Python's reader lets through, are refused (ValueError)."""
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")
