"""The denoiser interface shared by every backend, and its torch implementation.

A ``Denoiser`` maps noisy latents to the x0 (clean latent) prediction. It takes only
tensors, so a second backend (ONNX Runtime, ``cosmos_policy_ros/model/onnx_backend.py``)
implements the same call and reuses ``MultistepSampler`` unchanged::

    x0 = denoiser(noisy_latents, sigma, condition_frames, text_embedding)

    noisy_latents    float32 [B, 16, T, h, w]  x_t = x0 + sigma * eps (EDM sigma space);
                                               condition frames hold their clean latents
    sigma            float32 [B, T]            noise level per frame (condition frames:
                                               the checkpoint's sigma_conditional, 0.0)
    condition_frames float32 [B, T]            1.0 for clean condition frames, else 0.0
    text_embedding   [B, L, D]                 precomputed T5 embedding (D = 1024 at 2B)
    -> x0            float32 [B, 16, T, h, w]

The network module to export is ``DenoiserNetwork`` (``TorchDenoiser.network``): it
has exactly that signature and contains the rectified-flow preconditioning and the
diffusers ``CosmosTransformer3DModel``. Export it with those four inputs (dynamic B;
T, h, w and L fixed per checkpoint: ALOHA 11 x 28 x 28, L 512); the padding mask is
built inside as zeros ``[1, 1, h, w]`` (no padding in robot images).

Preconditioning (Cosmos-Predict2 ``RectifiedFlowScaling``, sigma_data 1,
t_scaling_factor 1), per frame, with t = sigma / (sigma + 1):

    network input  = x_t * (1 - t)   (condition frames: x_t unchanged = clean latent)
    timestep       = t               (shape [B, 1, T, 1, 1], in the network's dtype:
                                      bf16 on a GPU, as the official code feeds it)
    x0             = (1 - t) * x_t - t * network_output   (computed in float32)

The transformer is called with ``fps=None``: an fps switches on temporal RoPE
rescaling that these checkpoints were not trained with.
"""
from __future__ import annotations

import types
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Denoiser(Protocol):
    """x0 prediction from noisy latents; see the module docstring for shapes."""

    def __call__(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        condition_frames: torch.Tensor,
        text_embedding: torch.Tensor,
    ) -> torch.Tensor: ...


def _install_padding_mask_resize() -> None:
    """diffusers resizes the padding mask with torchvision's nearest resize; when
    torchvision is absent (it is not a dependency here) give it the same operation."""
    from diffusers.models.transformers import transformer_cosmos

    if hasattr(transformer_cosmos, "transforms"):
        return

    def resize(mask: torch.Tensor, size: list[int], interpolation: str = "nearest") -> torch.Tensor:
        if list(mask.shape[-2:]) == list(size):
            return mask
        return nn.functional.interpolate(mask, size=size, mode="nearest")

    transformer_cosmos.transforms = types.SimpleNamespace(  # type: ignore[attr-defined]
        functional=types.SimpleNamespace(resize=resize),
        InterpolationMode=types.SimpleNamespace(NEAREST="nearest"),
    )


class DenoiserNetwork(nn.Module):
    """Preconditioning + ``CosmosTransformer3DModel``: the module an exporter exports."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        _install_padding_mask_resize()
        self.transformer = transformer

    def forward(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        condition_frames: torch.Tensor,
        text_embedding: torch.Tensor,
    ) -> torch.Tensor:
        dtype = next(self.transformer.parameters()).dtype
        x_t = noisy_latents.float()
        cond = condition_frames.float()[:, None, :, None, None]  # [B, 1, T, 1, 1]
        t = (sigma.float() / (sigma.float() + 1.0))[:, None, :, None, None]
        c_in = cond + (1.0 - cond) * (1.0 - t)
        batch, _, frames, height, width = x_t.shape
        condition_mask = cond.expand(batch, 1, frames, height, width)
        padding_mask = x_t.new_zeros(1, 1, height, width)
        out = self.transformer(
            hidden_states=(x_t * c_in).to(dtype),
            timestep=t.to(dtype),  # official: c_noise cast to the model dtype (no fp32 timestep strategy)
            encoder_hidden_states=text_embedding.to(dtype),
            condition_mask=condition_mask.to(dtype),
            padding_mask=padding_mask.to(dtype),
            fps=None,
            return_dict=False,
        )[0].float()
        return (1.0 - t) * x_t - t * out


class TorchDenoiser:
    """``Denoiser`` backed by a diffusers ``CosmosTransformer3DModel`` in torch."""

    def __init__(self, transformer: nn.Module) -> None:
        self.network = DenoiserNetwork(transformer).eval()

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @torch.no_grad()
    def __call__(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        condition_frames: torch.Tensor,
        text_embedding: torch.Tensor,
    ) -> torch.Tensor:
        device = self.device
        return self.network(
            noisy_latents.to(device), sigma.to(device), condition_frames.to(device), text_embedding.to(device)
        )
