"""SDPA attention that lets the kernel share key/value heads instead of copying them.

Grouped-query models (SmolLM2: 9 query heads over 3 key/value heads; Llama-3, Mistral)
reach transformers' SDPA path with a padding mask while training, and with a mask it copies
every key/value head once per query head (``repeat_kv``) and sums the copies back in the
backward pass. On CPU, torch's SDPA shares the heads itself (``enable_gqa``) with a mask as
well: same output, 26% less time per attention forward+backward here. transformers only asks
for it on CUDA without a mask, where its kernels need that.

Under bf16 autocast on CPU, attention runs in fp32: torch's CPU flash-attention backward in
bf16 took 3.5x the fp32 one here (5.0 s vs 1.4 s of a 7-step LaMP-2N benchmark on an AMX
Xeon, 28% of the step), while its forward gains little from bf16.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

GQA_SDPA = "oppu_gqa_sdpa"
"""The name this attention is registered under with transformers."""


def gqa_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                       scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """transformers' SDPA attention, with ``enable_gqa`` where transformers would copy heads;
    in fp32 on CPU whatever the autocast dtype."""
    import torch

    on_cpu = query.device.type == "cpu"
    autocast = on_cpu and torch.is_autocast_enabled("cpu")
    if autocast or (on_cpu and query.dtype != torch.float32):
        # RoPE hands over fp32 queries and keys with bf16 values; autocast would cast all three
        dtype = torch.get_autocast_dtype("cpu") if autocast else query.dtype
        if attention_mask is not None and attention_mask.is_floating_point():
            attention_mask = attention_mask.float()
        with torch.autocast("cpu", enabled=False):
            out, weights = gqa_sdpa_attention(
                module, query.float(), key.float(), value.float(), attention_mask,
                dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)
        return out.to(dtype), weights
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    q_length, kv_length = query.shape[2], key.shape[2]
    plain = (groups == 1 or query.device.type != "cpu" or q_length == 1
             or kwargs.get("position_bias") is not None or kwargs.get("cache") is not None
             or kwargs.get("softcap") is not None or kwargs.get("output_attentions", False))
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is None and causal and kv_length != q_length:
        plain = True  # transformers crops keys for this case; leave it to transformers
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        is_causal=attention_mask is None and causal, enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(GQA_SDPA, gqa_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(GQA_SDPA, sdpa_mask)


def _shares_heads(config) -> bool:
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return bool(heads and kv_heads and kv_heads < heads)


@contextmanager
def gqa_sdpa(model) -> Iterator[bool]:
    """Use ``gqa_sdpa_attention`` while training a CPU model that runs SDPA with GQA.

    Any other model (CUDA, eager or flash attention, no head sharing) is left as it is.
    Yields whether the attention was switched; the previous one is restored on exit.
    """
    config = getattr(model, "config", None)
    device = next(model.parameters()).device
    switch = (config is not None and device.type == "cpu"
              and getattr(config, "_attn_implementation", None) == "sdpa"
              and _shares_heads(config))
    if not switch:
        yield False
        return
    _register()
    config._attn_implementation = GQA_SDPA
    try:
        yield True
    finally:
        config._attn_implementation = "sdpa"
