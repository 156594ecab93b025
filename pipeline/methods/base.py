"""The contract every editing method fulfils, so the engine, CLI and GUI need no special cases.

A method has two phases, and may have a third between them. `invert` is expensive: it turns the
photo (and any other inputs its inversion needs) into tensors the project stores. `tune`, when a
method has it, learns what depends on more than the photo and its prompt (the target prompt, a
reference picture) from the inversion; the project stores that too, under its own key, so a new
reference or target re-tunes without re-inverting. `edit` is cheap and repeatable: it samples the
target from those tensors with attention control, as often as the artist likes, and returns an
`EditOutput`. Everything a front end must render comes from the method's Params class: its
parameter specs (pipeline.params) and its named inputs (`INPUTS`: masks by purpose, a reference image
with its prompt), each tagged with the stage it belongs to, so the inversion key follows from the
specs and nobody writes it twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

import torch

from pipeline.params import Stage, param_specs, to_json_value
from pipeline.run import RunContext

Tensors = dict[str, torch.Tensor]
P = TypeVar("P")


@dataclass(frozen=True)
class InputSpec:
    """A named input a method takes besides the photo and its prompts.

    kind "mask": a greyscale image, white where it applies, given to the method at latent size as
    [1, 1, h, w] of 0s and 1s. kind "image": a second picture (a reference), resized to the photo's
    working size and given as its latent [1, C, h, w], with its prompt. `stage` "inversion" or
    "tuning" puts the input's content into that stage's key (and gives it to that stage); every input
    reaches `edit`. `picture` says which picture a mask is drawn on: the name of one of the method's
    image inputs (SpecRef's object mask is drawn on its reference), or None for the photo; a front
    end shows and paints the mask over that picture. `bounds`: the mask bounds what the edit may
    change in the photo (grown as the method says), so the edit can work on a crop around it
    (pipeline.area); a mask that only steers attention bounds nothing.
    """

    name: str
    kind: Literal["mask", "image"]
    label: str
    help: str
    stage: Stage = "edit"
    required: bool = False
    picture: str | None = None
    bounds: bool = False

    def __post_init__(self) -> None:
        if self.picture is not None and self.kind != "mask":
            raise ValueError(f"input {self.name!r}: only a mask is drawn on a picture, not an {self.kind}")
        if self.bounds and (self.kind != "mask" or self.picture is not None):
            raise ValueError(f"input {self.name!r}: only a mask drawn on the photo bounds an edit")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "label": self.label, "help": self.help,
                "stage": self.stage, "required": self.required, "picture": self.picture, "bounds": self.bounds}


EDIT_MASK = InputSpec(
    "edit_mask", "mask", "Edit region",
    "Painted mask: white where the photo may change; everything else stays as the source.", bounds=True,
)


def input_specs(params_type: type) -> tuple[InputSpec, ...]:
    """The named inputs a Params class declares (its INPUTS class attribute; none if absent); a mask
    drawn on a picture the class does not declare as an image input is a mistake in the method."""
    specs = tuple(getattr(params_type, "INPUTS", ()))
    images = {spec.name for spec in specs if spec.kind == "image"}
    for spec in specs:
        if spec.picture is not None and spec.picture not in images:
            raise TypeError(f"{params_type.__name__}: the mask {spec.name!r} is drawn on {spec.picture!r}, "
                            f"which is not one of its image inputs ({', '.join(sorted(images)) or 'none'})")
    return specs


def stage_key_params(params: Any, stage: Stage) -> dict[str, Any]:
    """The JSON-ready values of the parameters of one cached stage ("inversion" or "tuning"): what its
    stored tensors depend on."""
    return {s.name: to_json_value(s.kind, getattr(params, s.name))
            for s in param_specs(type(params)) if s.stage == stage}


@dataclass(frozen=True)
class Prompts:
    """The source prompt (what the photo shows) and the target prompt (what it should become)."""

    source: str
    target: str


@dataclass(frozen=True)
class Inputs:
    """The named inputs of one run, prepared at working size: masks at latent size, images as latents."""

    masks: Mapping[str, torch.Tensor] = field(default_factory=dict)
    images: Mapping[str, torch.Tensor] = field(default_factory=dict)
    prompts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EditOutput:
    """What an edit produced, as latents [1, C, h, w].

    `region` [1, 1, h, w] in 0..1 is where the edit may have changed the photo (a painted mask, a
    local-blend region); None means anywhere. The engine keeps the photo's own pixels outside it
    when it writes the full-resolution result. `region_input` names the mask input `region` is (at
    latent size), when it is exactly one: the engine then pastes the result back along that mask at
    the photo's own resolution rather than along the latent cells.
    """

    target: torch.Tensor
    reconstruction: torch.Tensor | None = None
    region: torch.Tensor | None = None
    region_input: str | None = None


class Method(Protocol, Generic[P]):
    """An editing method: metadata for listings, a Params dataclass, a prompt check, and the two phases."""

    id: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    Params: type[P]
    parts: ClassVar[tuple[str, ...]]
    """Extra model parts the method needs beyond the SD 1.x five (e.g. "image_encoder")."""

    def check(self, tokenizer: Any, prompts: Prompts, params: P) -> None:
        """Raise PromptError for prompts or words the edit cannot use; cheap, runs before any model work."""
        ...

    def invert(self, ctx: RunContext, latent: torch.Tensor, prompts: Prompts, params: P, inputs: Inputs) -> Tensors:
        """Invert the photo's latent [1, C, h, w]; the returned tensors are stored in the project."""
        ...

    def edit(self, ctx: RunContext, inversion: Tensors, prompts: Prompts, params: P, inputs: Inputs) -> EditOutput:
        """Sample the target from a stored inversion (with the tuned tensors merged in, for a method that tunes)."""
        ...


class TuningMethod(Method[P], Protocol):
    """A method with a tuning stage between inversion and edit (see the module docstring).

    `tune_on_target` says whether the tuned tensors depend on the target prompt. The tuned tensors'
    names must differ from the inversion's: `edit` receives both in one dict.
    """

    tune_on_target: ClassVar[bool]

    def tune(self, ctx: RunContext, inversion: Tensors, prompts: Prompts, params: P, inputs: Inputs) -> Tensors:
        """Learn from a stored inversion ("latents" holds z*_0..z*_T) and the tuning inputs."""
        ...


def tunes(method: Method[Any]) -> bool:
    """Whether a method has a tuning stage."""
    return callable(getattr(method, "tune", None))
