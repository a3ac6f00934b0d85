"""Task-adapted bases held together share the weights their adaptation did not change.

A simulation worker keeps every base of its run loaded (plain, retrieval-augmented,
profile-augmented). Each is the same base model with a LoRA merged into its attention
projections, so most tensors (embeddings, MLPs, norms: ~480 of the embedded model's 540 MB)
are equal bit for bit across them. Pointing a newly loaded base at the copies already held
keeps one of each. The weights are frozen and nothing writes them in place (private adapters
sit beside them, peft style), so sharing changes no result.
"""

from __future__ import annotations

from collections.abc import Iterable


def share_identical_weights(model, loaded: Iterable) -> int:
    """Point ``model``'s parameters and buffers at equal ones of ``loaded`` models (same name,
    shape, dtype, device and values); returns the bytes no longer held twice."""
    import torch

    if not hasattr(model, "named_parameters"):
        return 0  # not a torch model (a stand-in): nothing to share
    saved = 0
    mine = dict(model.named_parameters())
    mine.update(model.named_buffers())
    others = [other for other in loaded
              if other is not model and hasattr(other, "named_parameters")]
    if not others:
        return 0
    shared: set[str] = set()
    for other in others:
        theirs = dict(other.named_parameters())
        theirs.update(other.named_buffers())
        for name, tensor in mine.items():
            twin = theirs.get(name)
            if (name in shared or twin is None or twin.shape != tensor.shape
                    or twin.dtype != tensor.dtype or twin.device != tensor.device
                    or not torch.equal(twin, tensor)):
                continue
            if twin.data_ptr() != tensor.data_ptr():
                tensor.data = twin.data
                saved += tensor.numel() * tensor.element_size()
            shared.add(name)
    # What stays this model's own is copied out of the loaded file: safetensors maps the file,
    # and one tensor still viewing the mapping keeps every page of it that was ever read.
    for name, tensor in mine.items():
        if name not in shared:
            tensor.data = tensor.data.clone()
    return saved
