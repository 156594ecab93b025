"""Roughly how long a run will take, said before it starts when that is long.

A new user waited 661 s for a null-text inversion on a CPU and 5 minutes for KV Inversion with no
idea how long it would be. A run's time is almost all UNet evaluations, so the estimate counts them
per stage from each method's algorithm and multiplies by the seconds one evaluation of one latent
takes on this machine, timed by the engine when the model loaded (pipeline.speed). Counted as:

- one row = one latent through the UNet once; a guided step of a [source, target] pair is 4 rows;
- an optimisation iteration's backward pass costs about two forwards, so it counts 3 rows;
- optimisations that stop early (null-text, KV tuning, StyleDiffusion's networks) are counted at their
  most iterations, so the figure is an upper bound there ("up to about");
- a stage the project has stored for these settings is not counted: the inversion when an earlier
  edit of the same method, source prompt and inversion parameters exists in the history (another
  model or mask would make a new one: then the run takes longer than said), the tuning likewise with
  the target prompt and tuning parameters.

A GPU evaluates a batch of rows in little more than the time of one, so there the figure is pessimistic;
on a CPU, where time grows with the rows, it is close (the photo's size is taken as the model's own).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LONG_RUN_S = 30.0
"""A run estimated longer than this is announced before it starts."""
OPTIMISED = 3  # rows of one optimisation iteration of one latent: the forward and its backward
PAIR = 4  # rows of one guided step of a [source, target] pair


@dataclass(frozen=True)
class Part:
    """One stage of a run: its label, which stored stage it belongs to, and its UNet rows."""

    label: str
    stage: str  # "inversion", "tuning" or "edit" (pipeline.params.Stage)
    rows: float
    early_stop: bool = False


@dataclass(frozen=True)
class Estimate:
    """The stages a run will compute and their seconds."""

    parts: tuple[tuple[Part, float], ...]

    @property
    def seconds(self) -> float:
        return sum(seconds for _, seconds in self.parts)

    def sentence(self) -> str:
        """One sentence for the artist: "This run takes about 11 min on this machine: ..."."""
        upper = "up to about" if any(part.early_stop for part, _ in self.parts) else "about"
        stages = ", ".join(f"{part.label} {duration(seconds)}" for part, seconds in self.parts)
        return f"This run takes {upper} {duration(self.seconds)} on this machine ({stages}); Esc cancels it."


def duration(seconds: float) -> str:
    """Seconds as a person reads an estimate: 40 s, 3 min, 1 h 10 min."""
    if seconds < 90:
        return f"{max(5, round(seconds / 5) * 5):.0f} s"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def source_inversion(params: Mapping[str, Any]) -> list[Part]:
    """pipeline.inversion.source: DDIM inversion (one row a step), and null-text's per-step optimisation
    (the conditional prediction, up to `inner_steps` iterations, the step with the result)."""
    steps = params["steps"]
    if params.get("inversion") == "null-text":
        rows = steps * (1 + 1 + OPTIMISED * params["inner_steps"] + 1)
        return [Part("null-text inversion", "inversion", rows, params.get("early_stop", True))]
    return [Part("inversion", "inversion", steps)]


def method_parts(method_id: str, params: Mapping[str, Any]) -> list[Part]:
    """Every stage of a run of `method_id` with `params` (the document's, JSON-ready), in its order."""
    steps = params["steps"]
    if method_id == "kv-inversion":  # DDIM inversion guided at 7.5, then psi_t per step through a guided step
        return [Part("inversion", "inversion", 2 * steps),
                Part("KV tuning", "inversion", steps * (params["inner_steps"] + 1) * 2 * OPTIMISED,
                     params["early_stop"]),
                Part("edit", "edit", PAIR * steps)]
    if method_id == "stylediffusion":  # the mapping networks: ~1000 iterations of a guided step at 30 steps
        from pipeline.inversion.value_mapping import inner_iterations

        iterations = sum(inner_iterations(params["inner_steps"], steps))
        return [Part("inversion", "inversion", steps),
                Part("mapping networks", "inversion", steps + OPTIMISED * iterations, params["early_stop"]),
                Part("edit", "edit", PAIR * steps)]
    parts = source_inversion(params)
    if method_id == "toli":  # Imagic's text optimisation: one noised latent per Adam step
        parts.append(Part("text optimisation", "tuning", OPTIMISED * params["text_steps"]))
        alone = params.get("inversion") not in ("direct",)  # the target sampled alone, unless it follows
        parts.append(Part("edit", "edit", (2 if alone else PAIR) * steps))
    elif method_id == "specref":  # the reference is inverted too, and attended to in the edit
        parts += [Part("reference inversion", "tuning", steps), Part("edit", "edit", (PAIR + 2) * steps)]
    else:  # p2p, masactrl: a [source, target] pair
        parts.append(Part("edit", "edit", PAIR * steps))
    return parts


def estimate(method_id: str, params: Mapping[str, Any], stored: Sequence[str], unet_seconds: float) -> Estimate:
    """The stages a run must compute (those in `stored` are reused) times `unet_seconds` a row."""
    return Estimate(tuple((part, part.rows * unet_seconds) for part in method_parts(method_id, params)
                          if part.stage not in stored))


def stored_stages(method_id: str, source: str, target: str, params: Mapping[str, Any],
                  history: Sequence[Any]) -> list[str]:
    """The stages an earlier edit in `history` (gui.project_io.ResultEntry) made with these settings,
    which the project has stored and the run reuses."""
    from pipeline.methods.registry import get_method
    from pipeline.params import param_specs

    specs = param_specs(get_method(method_id).Params)
    inversion = [s.name for s in specs if s.stage == "inversion"]
    tuning = [s.name for s in specs if s.stage == "tuning"]

    def same(entry: Any, names: list[str]) -> bool:
        return all(entry.params.get(name) == params.get(name) for name in names)

    earlier = [e for e in history if e.method == method_id and e.source_prompt == source and same(e, inversion)]
    if not earlier:
        return []
    tuned = any(e.target_prompt == target and same(e, tuning) for e in earlier)
    return ["inversion", "tuning"] if tuned else ["inversion"]
