"""A model folder's configs read against its weights before any network is built.

A diffusers folder describes each network twice: config.json says how to build it, the weights say
what it holds. diffusers and transformers build the network from the config first and compare the
weights after, so a config saying `layers_per_block: 100000` makes hundreds of thousands of layers
(gigabytes of Python objects, minutes) before the first weight is looked at, and a wide
`max_position_embeddings` allocates a buffer of that length for real. Here every config value that
sets how many blocks and layers a network has, or how wide they are, is compared with the tensor
names and shapes of its weights (safetensors headers: no tensor data is read), so the network that
is then built is no larger than the weights on disk. Values of the wrong type are refused as well.
Anything else a config says changes how a network computes, not its size, and is left to the
libraries (and to `models._check_sd1_configs`). A value the config leaves out is the class's default.

Every refusal is one ModelError sentence naming the config file and the key.
"""

from __future__ import annotations

import inspect
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig

from pipeline.errors import ModelError, shorten
from pipeline.token_table import ROWS_FILE
from pipeline.tokenizer import CLIP_VOCAB_SIZE

Shape = tuple[int, ...]
NOT_ONLY_TENSORS = ("holds Python objects besides tensors, which Retake will not unpickle even with --allow-pickle; "
                    "convert it to .safetensors with a tool you trust")
"""What is said of a pickle that torch.load(weights_only=True) refuses (PyTorch's own text suggests the unsafe way)."""


class _Weights:
    """The tensor names and shapes of one network's weight files."""

    def __init__(self, files: Iterable[Path], folder: Path) -> None:
        self.shapes: dict[str, Shape] = {}
        for file in files:
            if file.name.endswith(".index.json"):  # a shard index: its shards follow
                continue
            self.shapes.update(_shapes(file))
        self.label = ", ".join(f.relative_to(folder).as_posix() for f in files if not f.name.endswith(".json"))

    def shape(self, name: str) -> Shape | None:
        """The shape of the tensor `name` (its name may carry a prefix, e.g. `text_model.`); None if absent."""
        if name in self.shapes:
            return self.shapes[name]
        return next((shape for key, shape in self.shapes.items() if key.endswith(f".{name}")), None)

    def count(self, prefix: str) -> int:
        """How many numbered children `prefix.0`, `prefix.1`, ... the weights hold (one past the highest)."""
        pattern = re.compile(rf"(?:^|\.){re.escape(prefix)}\.(\d+)\.")
        found = [int(m.group(1)) for key in self.shapes if (m := pattern.search(key))]
        return max(found) + 1 if found else 0


def _shapes(file: Path) -> dict[str, Shape]:
    try:
        if file.suffix == ".safetensors":
            with safetensors.safe_open(file, framework="pt") as handle:
                return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
        # A pickle (only with --allow-pickle): mapped, not read, where its format allows.
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(f"'{file}' {NOT_ONLY_TENSORS}.") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file makes a reader raise whatever its bytes provoke
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"'{file}' is not a readable weights file ({shorten(first, 160)}).") from exc
    if not isinstance(state, Mapping):
        raise ModelError(f"'{file}' does not hold a state dict of tensors.")
    return {name: tuple(t.shape) for name, t in state.items() if isinstance(t, torch.Tensor)}


class _Config:
    """One network's config.json: its values (the class's defaults where it is silent), checked for type."""

    def __init__(self, values: Mapping[str, Any], defaults: Mapping[str, Any], file: Path, weights: _Weights) -> None:
        self.values, self.defaults, self.file, self.weights = values, defaults, file, weights

    def refuse(self, key: str, said: Any, problem: str, *, count: bool = False, unfit: bool = True) -> ModelError:
        says = f"gives {shorten(said)} {key}" if count else f"says {key} is {shorten(said)}"
        end = "; Retake refuses a config that does not describe its weights" if unfit else ""
        return ModelError(f"'{self.file}' {says}, but {problem}{end}.")

    def get(self, key: str) -> Any:
        return self.values.get(key, self.defaults.get(key))

    def number(self, key: str) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.refuse(key, value, "it must be a positive whole number", unfit=False)
        return value

    def numbers(self, key: str, length: int) -> list[int]:
        """An int, or a list of `length` ints, as a list (diffusers takes either for per-block values)."""
        value = self.get(key)
        items = [value] * length if isinstance(value, int) and not isinstance(value, bool) else value
        if (not isinstance(items, (list, tuple)) or len(items) != length
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items)):
            raise self.refuse(key, value, f"it must be a positive whole number or a list of {length} of them",
                               unfit=False)
        return list(items)

    def names(self, key: str) -> list[Any]:
        value = self.get(key)
        if not isinstance(value, (list, tuple)) or not value:
            raise self.refuse(key, value, "it must be a list", unfit=False)
        return list(value)

    def agree(self, key: str, said: Any, held: int | None, where: str, *, count: bool = False) -> None:
        """`said` (what the config's `key` implies here; with `count`, the length of its list) must be `held`
        (from the weights: `where`). The refusal quotes the config's own value."""
        if said == held:
            return
        shown = said if count else self.get(key) if key in self.values else f"not set (so {said})"
        problem = f"have no {where}" if held is None else f"hold {held} ({where})"
        raise self.refuse(key, shown, f"its weights ({self.weights.label}) {problem}", count=count)

    def dim(self, key: str, said: Any, name: str, axis: int) -> None:
        """`said` must be the size of axis `axis` of the tensor `name`."""
        shape = self.weights.shape(name)
        self.agree(key, said, None if shape is None or len(shape) <= axis else shape[axis], name)


def _defaults(cls: type) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _check_unet(c: _Config) -> None:
    blocks = len(c.names("block_out_channels"))
    for key, where in (("block_out_channels", "down_blocks"), ("down_block_types", "down_blocks"),
                       ("up_block_types", "up_blocks")):
        c.agree(key, len(c.names(key)), c.weights.count(where), f"blocks in {where}", count=True)
    widths = c.numbers("block_out_channels", blocks)
    for i, width in enumerate(widths):
        c.dim("block_out_channels", width, f"down_blocks.{i}.resnets.0.conv1.weight", 0)
    layers = c.numbers("layers_per_block", blocks)
    transformers = c.numbers("transformer_layers_per_block", blocks)
    reverse = (c.numbers("reverse_transformer_layers_per_block", blocks)
               if c.get("reverse_transformer_layers_per_block") is not None else transformers[::-1])
    for i in range(blocks):
        c.agree("layers_per_block", layers[i], c.weights.count(f"down_blocks.{i}.resnets"), f"down_blocks.{i}.resnets")
    for i in range(blocks):
        c.agree("layers_per_block", layers[::-1][i] + 1, c.weights.count(f"up_blocks.{i}.resnets"),
                f"up_blocks.{i}.resnets, which has one more")
        if c.weights.count(f"down_blocks.{i}.attentions"):
            c.agree("transformer_layers_per_block", transformers[i],
                    c.weights.count(f"down_blocks.{i}.attentions.0.transformer_blocks"),
                    f"down_blocks.{i}.attentions.0.transformer_blocks")
        if c.weights.count(f"up_blocks.{i}.attentions"):
            c.agree("transformer_layers_per_block", reverse[i],
                    c.weights.count(f"up_blocks.{i}.attentions.0.transformer_blocks"),
                    f"up_blocks.{i}.attentions.0.transformer_blocks")
    if c.weights.count("mid_block.attentions"):
        c.agree("transformer_layers_per_block", transformers[-1],
                c.weights.count("mid_block.attentions.0.transformer_blocks"), "mid_block.attentions.0.transformer_blocks")
    c.dim("in_channels", c.number("in_channels"), "conv_in.weight", 1)
    c.dim("out_channels", c.number("out_channels"), "conv_out.weight", 0)
    c.dim("conv_in_kernel", c.number("conv_in_kernel"), "conv_in.weight", 2)
    c.dim("conv_out_kernel", c.number("conv_out_kernel"), "conv_out.weight", 2)
    time_width = c.number("time_embedding_dim") if c.get("time_embedding_dim") is not None else 4 * widths[0]
    c.dim("time_embedding_dim", time_width, "time_embedding.linear_1.weight", 0)
    cross = next((name for name in c.weights.shapes if name.endswith("attn2.to_k.weight")), None)
    if cross is not None:
        c.dim("cross_attention_dim", c.number("cross_attention_dim"), cross, 1)


def _check_vae(c: _Config) -> None:
    blocks = len(c.names("block_out_channels"))
    for key, where in (("block_out_channels", "encoder.down_blocks"), ("down_block_types", "encoder.down_blocks"),
                       ("block_out_channels", "decoder.up_blocks"), ("up_block_types", "decoder.up_blocks")):
        c.agree(key, len(c.names(key)), c.weights.count(where), f"blocks in {where}", count=True)
    for i, width in enumerate(c.numbers("block_out_channels", blocks)):
        c.dim("block_out_channels", width, f"encoder.down_blocks.{i}.resnets.0.conv1.weight", 0)
    layers = c.number("layers_per_block")
    for i in range(blocks):
        c.agree("layers_per_block", layers, c.weights.count(f"encoder.down_blocks.{i}.resnets"),
                f"encoder.down_blocks.{i}.resnets")
        c.agree("layers_per_block", layers + 1, c.weights.count(f"decoder.up_blocks.{i}.resnets"),
                f"decoder.up_blocks.{i}.resnets, which has one more")
    c.dim("in_channels", c.number("in_channels"), "encoder.conv_in.weight", 1)
    c.dim("out_channels", c.number("out_channels"), "decoder.conv_out.weight", 0)
    c.dim("latent_channels", c.number("latent_channels"), "decoder.conv_in.weight", 1)


def _check_text_encoder(c: _Config, packed: Path | None) -> None:
    c.agree("num_hidden_layers", c.number("num_hidden_layers"), c.weights.count("encoder.layers"), "encoder.layers")
    c.dim("max_position_embeddings", c.number("max_position_embeddings"), "embeddings.position_embedding.weight", 0)
    c.dim("hidden_size", c.number("hidden_size"), "embeddings.position_embedding.weight", 1)
    c.dim("intermediate_size", c.number("intermediate_size"), "encoder.layers.0.mlp.fc1.weight", 0)
    if packed is None:
        c.dim("vocab_size", c.number("vocab_size"), "embeddings.token_embedding.weight", 0)
    elif c.number("vocab_size") != CLIP_VOCAB_SIZE:  # the table is rebuilt at this size for SD 1.x's tokenizer
        raise c.refuse("vocab_size", c.get("vocab_size"), f"its token table ({packed.name}) is packed, which "
                        f"Retake does for SD 1.x's CLIP tokenizer of {CLIP_VOCAB_SIZE} tokens only")


def check_configs_fit_weights(folder: Path, configs: Sequence[Mapping[str, Any]],
                              weights: Sequence[Sequence[Path]]) -> None:
    """Refuse, in one ModelError sentence naming the file and key, a diffusers folder whose unet, vae or
    text_encoder config (in that order in `configs`, with their weight files in `weights`) does not
    describe its weights; reads only the weights' headers."""
    unet, vae, text = configs
    packed = folder / "text_encoder" / ROWS_FILE
    checks = (
        ("unet", unet, weights[0], _defaults(UNet2DConditionModel), _check_unet),
        ("vae", vae, weights[1], _defaults(AutoencoderKL), _check_vae),
        ("text_encoder", text, weights[2], CLIPTextConfig().to_dict(),
         lambda c: _check_text_encoder(c, packed if packed.is_file() else None)),
    )
    for component, values, files, defaults, check in checks:
        check(_Config(values, defaults, folder / component / "config.json", _Weights(files, folder)))
