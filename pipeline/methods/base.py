"""The contract every editing method fulfils, so the engine, CLI and GUI need no special cases.

A method has two phases. `invert` is expensive: it turns the photo's latent into tensors (a latent
trajectory, learned embeddings, ...) that the project stores. `edit` is cheap and repeatable: it
samples the target from those tensors with attention control, as often as the artist likes.
`inversion_key_params` names the parameters the inversion depends on, so the engine knows when a
stored inversion can be reused.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch

from pipeline.run import RunContext

Tensors = dict[str, torch.Tensor]


class Method(Protocol):
    """An editing method: metadata for listings, a Params dataclass, and the two phases."""

    id: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type]

    def inversion_key_params(self, params: Any) -> dict[str, Any]:
        """The JSON-ready subset of params (and nothing else) that the inversion result depends on."""
        ...

    def invert(self, ctx: RunContext, latent: torch.Tensor, source_prompt: str, params: Any) -> Tensors:
        """Invert the image latent [1, C, h, w]; the returned tensors are stored in the project."""
        ...

    def check(self, tokenizer: Any, source_prompt: str, target_prompt: str, params: Any) -> None:
        """Raise PromptError for prompts or words the edit cannot use; cheap, runs before inverting."""
        ...

    def edit(
        self,
        ctx: RunContext,
        inversion: Tensors,
        source_prompt: str,
        target_prompt: str,
        params: Any,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Sample [source reconstruction, target] latents [2, C, h, w]; `mask` [1, 1, h, w] or None."""
        ...
