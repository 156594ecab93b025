"""A model choice takes effect only once it has loaded.

The settings record the model, device and precision of the last model that loaded; every run uses
those. A new choice (the Models dialog, Settings, the welcome view's download) is tried first: it is
`pending` while the engine downloads or loads it, and only when the engine says it loaded are its
values written into the settings. A folder that is not a model, a download that fails offline, a
device this machine has not got: the choice is dropped, the settings keep the model that worked, and
the artist is told in one sentence why. A new user once chose a model that never loaded and every
later Run failed until they found Settings > Demo; this is what keeps that from happening.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gui.settings import AppSettings
from gui.worker import model_key

LOAD_SETTINGS = ("model", "device", "precision")
"""The settings that decide which model the engine holds (gui.worker.model_key)."""


def model_name(spec: str) -> str:
    """A model as the status bar names it: a file or folder's name, a hub id's last part, or demo."""
    return Path(spec).name or spec or "demo"


class ModelChoice:
    """The load settings being tried (`pending`), and what to do when the engine has tried them."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self.pending: dict[str, Any] | None = None

    def choose(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Try `values` (of LOAD_SETTINGS; the others are the settings'): the request options to preload."""
        self.pending = {name: values[name] for name in LOAD_SETTINGS if name in values}
        return self.settings.request_options(self.pending)

    def pending_name(self) -> str:
        return model_name(self.pending.get("model", self.settings.get("model"))) if self.pending else ""

    def settle(self, options: Mapping[str, Any], error: str) -> str | None:
        """The engine finished loading `options` (`error` says why it failed, "" when it loaded).

        None when that was not the choice being tried (the recorded model, or a choice since replaced);
        "" when it was and it loaded: the settings now record it; else the sentence that says it was
        not kept, and why."""
        if self.pending is None or model_key(dict(options)) != model_key(self.settings.request_options(self.pending)):
            return None
        chosen, self.pending = self.pending, None
        if not error:
            for name, value in chosen.items():
                self.settings.set(name, value)
            return ""
        tried = model_name(chosen.get("model", self.settings.get("model")))
        return f"{tried} was not loaded, so {model_name(self.settings.get('model'))} is still the model: {error}"
