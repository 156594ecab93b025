"""What one save of a project writes: its settings, its named inputs and, after a run, a new edit.

`Project.save_state` takes these and writes them in one commit, so a save is either all there or not
there at all: a process killed in the middle of saving a new prompt and a new mask reopens with both
or with neither. Everything that writes a project's settings or inputs goes through it (the app's
Save and autosave, the engine's commit of a run); the single-purpose methods of `Project`
(`update_settings`, `set_input`, `remove_input`, `add_edit`) are that same commit with one part.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from pipeline.project.records import AreaSettings, Crop, InputKind, Json, ModelRecord, Settings


class Keep(enum.Enum):
    """The marker of a settings field a save leaves as the project has it."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class SettingsUpdate:
    """The settings a save writes. `model`, `max_side`, `image_encoder` and `area` left as KEEP keep what the
    project holds when the save commits (read under the lock, so a run that recorded its model meanwhile
    is not undone by a Save that never knew it); None records "none" (for `image_encoder`: looked for
    beside the model)."""

    source_prompt: str
    method: str | None
    params: Mapping[str, Any]
    model: ModelRecord | None | Keep = KEEP
    max_side: int | None | Keep = KEEP
    image_encoder: str | None | Keep = KEEP
    area: AreaSettings | None | Keep = KEEP

    @staticmethod
    def named_encoder(option: str | None) -> str | None | Keep:
        """The `image_encoder` field for an encoder option as users give it: None keeps the project's,
        "" forgets it, a name is recorded."""
        return KEEP if option is None else option or None

    def resolve(self, stored: Settings, params: dict[str, Json]) -> Settings:
        """The settings to write over `stored`, with `params` (already checked and copied)."""
        return Settings(
            model=stored.model if self.model is KEEP else self.model,
            source_prompt=self.source_prompt, method=self.method, params=params,
            max_side=stored.max_side if self.max_side is KEEP else self.max_side,
            image_encoder=stored.image_encoder if self.image_encoder is KEEP else self.image_encoder,
            area=stored.area if self.area is KEEP else self.area,
        )


@dataclass(frozen=True)
class InputValue:
    """A named input to store: a picture (PIL, or a tensor: an image in [-1, 1], a mask in 0..1), its
    kind and, for an image, the prompt that describes it."""

    kind: InputKind
    picture: Image.Image | torch.Tensor
    prompt: str | None = None


@dataclass(frozen=True)
class NewEdit:
    """An edit to append to the history (see `Project.add_edit` for each field)."""

    target_prompt: str
    source_prompt: str
    model: ModelRecord
    method: str
    params: Mapping[str, Any]
    seed: int | None
    inversion_key: str | None
    result: Image.Image
    mask: torch.Tensor | Image.Image | None = None
    png_metadata: Mapping[str, Any] | None = None
    tuning_key: str | None = None
    crop: Crop | None = None
    feather: int | None = None
