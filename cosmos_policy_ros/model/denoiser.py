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

Compilation (``TorchDenoiser.compile``): ``torch.compile`` of ``DenoiserNetwork``,
warmed up with two graphs, batch 1 (dynamo specializes size 1) and batch >= 2 with
the batch dimension dynamic, so changing the number of candidates or the ensemble
size never recompiles. Inductor's cache lives in ``TORCHINDUCTOR_CACHE_DIR`` (default
``~/.cache/cosmos_policy_ros/inductor``) so a restarted node compiles from cache. A
failing compilation (at warm-up or later) falls back to eager with a warning.
"""
from __future__ import annotations

import logging
import math
import os
import time
import types
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch
from torch import nn

log = logging.getLogger(__name__)

COMPILE_DEFAULT = "auto"  # the policy.compile / planning.compile default: on for CUDA, off on CPU
_COMPILE_TRUE = ("true", "on", "yes", "1")
_COMPILE_FALSE = ("false", "off", "no", "0")


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


def _position_embedding_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """diffusers' ``CosmosLearnablePositionalEmbed.forward`` with its RMS scale taken from
    the static width (the same float: ``1 / width``) instead of ``numel()`` ratios, which
    are symbolic under a dynamic-batch ``torch.export`` and break the ONNX export."""
    batch, _, frames, height, width = hidden_states.shape
    size = [frames // self.patch_size[0], height // self.patch_size[1], width // self.patch_size[2]]
    emb_t = self.pos_emb_t[: size[0]][None, :, None, None, :].repeat(batch, 1, size[1], size[2], 1)
    emb_h = self.pos_emb_h[: size[1]][None, None, :, None, :].repeat(batch, size[0], 1, size[2], 1)
    emb_w = self.pos_emb_w[: size[2]][None, None, None, :, :].repeat(batch, size[0], size[1], 1, 1)
    emb = (emb_t + emb_h + emb_w).flatten(1, 3)
    norm = torch.linalg.vector_norm(emb, dim=-1, keepdim=True, dtype=torch.float32)
    norm = torch.add(self.eps, norm, alpha=math.sqrt(1.0 / emb.shape[-1]))
    return (emb / norm).type_as(hidden_states)


def _traceable_position_embedding(transformer: nn.Module) -> None:
    """Give a learnable position embedding (``extra_pos_embed_type="learnable"``) the
    export-friendly forward above; the numbers are unchanged."""
    embed = getattr(transformer, "learnable_pos_embed", None)
    if embed is not None:
        embed.forward = types.MethodType(_position_embedding_forward, embed)


class DenoiserNetwork(nn.Module):
    """Preconditioning + ``CosmosTransformer3DModel``: the module an exporter exports."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        _install_padding_mask_resize()
        _traceable_position_embedding(transformer)
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


def compile_enabled(setting: bool | str, device: str | torch.device, where: str = "compile") -> bool:
    """``"auto"`` (compile on CUDA only), true or false -> whether to compile."""
    text = str(setting).strip().lower()
    if text == "auto":
        return torch.device(device).type == "cuda"
    if text in _COMPILE_TRUE:
        return True
    if text in _COMPILE_FALSE:
        return False
    raise ValueError(f"{where}: expected 'auto', true or false, got {setting!r}")


def inductor_cache_dir() -> Path:
    """Inductor's cache folder; sets ``TORCHINDUCTOR_CACHE_DIR`` when unset (read lazily by inductor)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    from .hub import cache_root

    path = cache_root() / "inductor"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def _describe(err: BaseException) -> str:
    """One line: the exception and, for a wrapped compiler error, its root cause."""
    cause = err
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = f"{type(err).__name__}: {err}" if cause is err else f"{type(err).__name__} <- {type(cause).__name__}: {cause}"
    return " ".join(text.split())[:500]


# batch size -> the four network inputs at that batch size (for warm-up)
ExampleInputs = Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


class TorchDenoiser:
    """``Denoiser`` backed by a diffusers ``CosmosTransformer3DModel`` in torch, eager or compiled."""

    def __init__(self, transformer: nn.Module) -> None:
        self.network = DenoiserNetwork(transformer).eval()
        self._forward: Callable[..., torch.Tensor] = self.network
        self.compiled = False
        self.compile_seconds: float | None = None
        self.compile_error: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def compile(self, example_inputs: ExampleInputs, backend: str | Callable = "inductor",
                mode: str | None = None) -> bool:
        """Compile and warm up (batch 2 with a dynamic batch dimension, then batch 1).

        Returns True when the compiled network is in use; on any failure logs a
        warning, keeps the eager network and returns False.
        """
        cache = inductor_cache_dir() if backend == "inductor" else None
        start = time.perf_counter()
        try:
            compiled = torch.compile(self.network, backend=backend, mode=mode, dynamic=None)
            with torch.no_grad():
                batch2 = self._prepare(*example_inputs(2))
                for tensor in batch2:
                    torch._dynamo.mark_dynamic(tensor, 0)
                compiled(*batch2)
                compiled(*self._prepare(*example_inputs(1)))
        except Exception as err:  # noqa: BLE001 - any compiler failure: run eager instead of stopping
            self.compile_error = _describe(err)
            log.warning("torch.compile of the denoiser failed after %.1f s (%s); running eager",
                        time.perf_counter() - start, self.compile_error)
            self._forward, self.compiled = self.network, False
            return False
        self._forward, self.compiled = compiled, True
        self.compile_seconds = time.perf_counter() - start
        log.info("denoiser compiled and warmed up in %.1f s (backend %s, inductor cache %s)",
                 self.compile_seconds, backend if isinstance(backend, str) else getattr(backend, "__name__", backend),
                 cache)
        return True

    def _prepare(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Contiguous inputs on the network's device: the sampler passes an expanded
        # (stride 0) text embedding, and strides are part of a compiled graph's guards.
        device = self.device
        return tuple(tensor.to(device).contiguous() for tensor in inputs)

    @torch.no_grad()
    def __call__(
        self,
        noisy_latents: torch.Tensor,
        sigma: torch.Tensor,
        condition_frames: torch.Tensor,
        text_embedding: torch.Tensor,
    ) -> torch.Tensor:
        inputs = self._prepare(noisy_latents, sigma, condition_frames, text_embedding)
        if not self.compiled:
            return self.network(*inputs)
        try:
            return self._forward(*inputs)
        except Exception as err:  # noqa: BLE001 - e.g. a recompilation failing at run time
            output = self.network(*inputs)  # bad input raises here too, and keeps the compiled network
            self.compile_error = _describe(err)
            log.warning("compiled denoiser failed where eager works (%s); switching to eager", self.compile_error)
            self._forward, self.compiled = self.network, False
            return output
