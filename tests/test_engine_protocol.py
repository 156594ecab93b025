"""The engine's interface is one typed Protocol (pipeline.engine.EditEngine): the real Engine and the
GUI tests' FakeEngine both implement it, signature for signature, so the window is tested against what
it will drive."""

from __future__ import annotations

import inspect

import pytest

from pipeline.engine import EditEngine, Engine
from tests.gui.fakes import FakeEngine

MEMBERS = [name for name, value in vars(EditEngine).items() if callable(value) and not name.startswith("_")]


def shape(function) -> list[tuple[str, object, bool]]:
    """What a caller relies on: each parameter's name, kind and whether it has a default."""
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty)
            for p in inspect.signature(function).parameters.values()]


def test_the_protocol_names_what_the_window_drives():
    assert sorted(MEMBERS) == ["decode", "draft", "forget", "preload", "run"]


@pytest.mark.parametrize("implementation", [Engine, FakeEngine])
@pytest.mark.parametrize("member", MEMBERS)
def test_each_engine_implements_the_protocol_signature_for_signature(implementation, member):
    assert shape(getattr(implementation, member)) == shape(getattr(EditEngine, member))


@pytest.mark.parametrize("implementation", [Engine, FakeEngine])
def test_each_engine_is_an_instance_of_the_protocol(implementation):
    assert isinstance(implementation(), EditEngine)


def test_the_check_fails_for_an_engine_that_drifts():
    class Drifted(FakeEngine):
        def run(self, request, emit):  # no cancel token
            return super().run(request, emit)

    assert shape(Drifted.run) != shape(EditEngine.run)
