"""The UNet's weights held once in the sampling dtype, for the calls without gradients on the fast path.

The bundle's UNet is fp32 (what is optimised needs it) and sampling runs it under autocast, which casts
each matrix weight to fp16 at every call: in a call replayed as a CUDA graph that is some 700 cast kernels
for an SD 1.x UNet, which the graph cannot cache (on an H100 the copy took a captured p2p edit from 1.43
to 1.28 s, bench/results/speed-nvidia-h100-80gb-hbm3.md). `sampling_copy` makes a
second UNet once per model whose convolution and linear weights and biases are held in the sampling
dtype, and whose other parameters (the norms' scales and shifts) are the fp32 ones, shared. Under the
same autocast, every operation of a call then sees the very values it saw before: autocast's casts of
the held weights are no-ops, and the norms, which autocast runs in fp32, read the same fp32 parameters.
So the copy's results are bit for bit those of the fp32 UNet under autocast (tests/test_held_weights.py
checks it), at the price of the copy's memory (about 1.6 GiB for SD 1.x in fp16).

On CUDA the copy's weights are also laid out channels-last: cuDNN's convolutions work in that layout,
and with the weights in PyTorch's default layout every convolution of a call first transposes its
input (nchwToNhwcKernel: 15% of the GPU time of a captured p2p edit on an H100,
bench/results/speed-nvidia-h100-80gb-hbm3.md). Convolutions then pick other algorithms, so the bits
change: the fast path's gate (40 dB from the eager edit, tests/test_fast_path_cuda.py) applies, not
bit-identity.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import UNet2DConditionModel

from pipeline.control.processor import install
from pipeline.models import ModelBundle

HELD_LAYERS = (torch.nn.Linear, torch.nn.Conv2d)
"""The layers whose weights autocast casts to the sampling dtype at every call (matrix products)."""


def sampling_copy(unet: UNet2DConditionModel, dtype: torch.dtype, *,
                  channels_last: bool = False) -> UNet2DConditionModel:
    """A UNet computing what `unet` computes under autocast to `dtype`, its matrix weights held in `dtype`
    (and laid out channels-last when asked: then the same values, computed in another order)."""
    held = {f"{name}.{key}" for name, module in unet.named_modules() if isinstance(module, HELD_LAYERS)
            for key, _ in module.named_parameters(recurse=False)}
    with torch.device("meta"):
        copy = UNet2DConditionModel.from_config(unet.config)
    state = {name: tensor.to(dtype) if name in held else tensor for name, tensor in unet.state_dict().items()}
    copy.load_state_dict(state, assign=True, strict=True)
    copy.requires_grad_(False)
    copy.eval()
    if channels_last:
        copy.to(memory_format=torch.channels_last)
    install(copy)
    return copy


def release(copy: UNet2DConditionModel) -> None:
    """Give back the memory of a sampling copy's held weights now, while bundles that name the copy live
    on (the callers of a stage that ran out of GPU memory hold them): the copy's matrix layers get
    weights on the meta device, so a call of the released copy fails with an error instead of reading
    freed memory. The norms, whose parameters are the fp32 UNet's, are left as they are."""
    for module in copy.modules():
        if isinstance(module, HELD_LAYERS):
            for name, parameter in list(module.named_parameters(recurse=False)):
                setattr(module, name, torch.nn.Parameter(parameter.to("meta"), requires_grad=False))


def released(copy: UNet2DConditionModel) -> bool:
    """Whether `release` gave back this copy's weights."""
    return any(parameter.is_meta for parameter in copy.parameters())


def with_sampling_unet(bundle: ModelBundle) -> ModelBundle:
    """`bundle` with its sampling copy (ModelBundle.sampling_unet; channels-last on CUDA), made once: the
    same bundle when it has one or samples in fp32 (where there is nothing to hold)."""
    if bundle.sampling_unet is not None or bundle.sample_dtype == torch.float32:
        return bundle
    copy = sampling_copy(bundle.unet, bundle.sample_dtype, channels_last=bundle.device.type == "cuda")
    return dataclasses.replace(bundle, sampling_unet=copy)
