"""The methods Retake offers, by id. Later methods add one line here and nothing elsewhere."""

from __future__ import annotations

from typing import Any

from pipeline.errors import ParamError
from pipeline.methods.base import Method
from pipeline.methods.kv_inversion import KVInversion
from pipeline.methods.masactrl import MasaCtrl
from pipeline.methods.p2p import PromptToPrompt
from pipeline.methods.specref import SpecRef
from pipeline.methods.stylediffusion import StyleDiffusion
from pipeline.methods.toli import Toli

_METHODS: tuple[type, ...] = (PromptToPrompt, MasaCtrl, KVInversion, SpecRef, StyleDiffusion, Toli)


def method_ids() -> list[str]:
    return [m.id for m in _METHODS]


def get_method(method_id: str) -> Method[Any]:
    """A fresh instance of the method with this id; unknown ids raise ParamError listing the known ones."""
    for method in _METHODS:
        if method.id == method_id:
            return method()
    raise ParamError(f"Unknown method {method_id!r}; available: {', '.join(method_ids())}.")
