"""Bases held together keep one copy of the weights they share, and answer as before."""

from __future__ import annotations

from oppu.shared.llm.weight_sharing import share_identical_weights


def _tiny_llama(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def test_equal_weights_are_shared_and_merged_ones_kept() -> None:
    import torch

    plain = _tiny_llama()
    adapted = _tiny_llama()  # the same base with an adaptation merged into one projection
    with torch.no_grad():
        adapted.model.layers[1].self_attn.q_proj.weight.add_(0.01)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        before = adapted(input_ids=ids).logits, plain(input_ids=ids).logits

    saved = share_identical_weights(adapted, [plain])

    ours, theirs = dict(adapted.named_parameters()), dict(plain.named_parameters())
    changed = "model.layers.1.self_attn.q_proj.weight"
    assert ours[changed].data_ptr() != theirs[changed].data_ptr()
    for name in ours:
        if name != changed:
            assert ours[name].data_ptr() == theirs[name].data_ptr(), name
    assert adapted.lm_head.weight is adapted.model.embed_tokens.weight  # still tied
    assert saved == sum(p.numel() * p.element_size()
                        for n, p in adapted.named_parameters() if n != changed) \
        + sum(b.numel() * b.element_size() for _, b in adapted.named_buffers())
    with torch.no_grad():
        after = adapted(input_ids=ids).logits, plain(input_ids=ids).logits
    for old, new in zip(before, after, strict=True):
        assert torch.equal(old, new)


def test_a_model_alone_shares_nothing_and_unequal_weights_stay_apart() -> None:
    assert share_identical_weights(_tiny_llama(), []) == 0
    one, other = _tiny_llama(seed=1), _tiny_llama(seed=2)
    share_identical_weights(one, [other])
    name = "model.layers.0.mlp.up_proj.weight"  # random init: differs between the seeds
    assert dict(one.named_parameters())[name].data_ptr() != \
        dict(other.named_parameters())[name].data_ptr()
