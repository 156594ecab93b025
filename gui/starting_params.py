"""What a method starts with on this machine: on a machine without a GPU, its fastest faithful option.

A new user's TOLI form switched to null-text inversion, its paper's default, which took 661 s on a
2-core CPU, though demo projects start with direct inversion. Direct inversion (PnP Inversion, Ju et
al.; the option the TOLI and MasaCtrl authors' code offers, and MasaCtrl's and SpecRef's default here)
keeps the source branch exactly on the photo's inversion trajectory and costs what DDIM inversion
costs, a fraction of null-text's per-step optimisation (pipeline.inversion.source). So without a GPU
every method that offers it starts with it, when it is chosen, reset, or a new project is made; with
a GPU each method keeps its paper's default. Nothing else is changed: KV Inversion's tuning and
StyleDiffusion's mapping networks are the methods themselves, and their defaults (KV's low-rank form
with early stop; StyleDiffusion's early stop) are already their cheapest faithful settings; the
window says before a run how long they will take (gui.estimate). A project keeps what it was saved
with.
"""

from __future__ import annotations

from typing import Any

from gui.document import method_defaults

FAST_WITHOUT_GPU: dict[str, Any] = {"inversion": "direct"}


def fast_options(method_id: str) -> dict[str, Any]:
    """The FAST_WITHOUT_GPU values `method_id` has the parameter and the choice for."""
    from pipeline.methods.registry import get_method
    from pipeline.params import param_specs

    specs = {spec.name: spec for spec in param_specs(get_method(method_id).Params)}
    return {name: value for name, value in FAST_WITHOUT_GPU.items()
            if name in specs and (not specs[name].choices or value in specs[name].choices)}


def starting_params(method_id: str, gpu: bool) -> dict[str, Any]:
    """The method's defaults, with its fastest faithful options where this machine has no GPU."""
    return {**method_defaults(method_id), **({} if gpu else fast_options(method_id))}
