"""Adapters encrypted at rest: round trip, refusals, no plaintext left, a real peft adapter."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from oppu.client.crypto import (
    MANIFEST,
    SCRYPT_N,
    DecryptionError,
    decrypted_copy,
    encrypt_dir,
    is_encrypted,
    passphrase_from_env,
    read_decrypted,
)
from oppu.shared.errors import OppuError

PASS = "correct horse battery staple"
FAST_N = 2**14  # cheap scrypt for tests; the default cost is checked once below


def make_plain(root: Path) -> dict[str, bytes]:
    """A small adapter-like directory with binary, text, empty and nested files."""
    files = {
        "adapter_config.json": json.dumps({"r": 8, "target_modules": ["q_proj", "v_proj"],
                                           "note": "distinctive config text " * 4}).encode(),
        "adapter_model.safetensors": os.urandom(5000),
        "oppu_adapter.json": b'{"trained_item_keys": ["abcdef0123456789", "0123456789abcdef"]}',
        "empty.txt": b"",
        "sub/inner.bin": bytes(range(256)) * 3,
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def all_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def encrypted(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    files = make_plain(adapter)
    encrypt_dir(adapter, PASS, scrypt_n=FAST_N)
    return adapter, files


def test_round_trip_is_byte_identical_and_the_copy_is_removed(encrypted):
    adapter, files = encrypted
    assert is_encrypted(adapter)
    with decrypted_copy(adapter, PASS) as plain:
        assert all_bytes(plain) == files
        assert oct(plain.stat().st_mode & 0o777) == "0o700"
    assert not plain.exists()


def test_no_plain_file_remains_and_no_plaintext_bytes_leak(encrypted):
    adapter, files = encrypted
    names = set(all_bytes(adapter))
    assert names == {f"{rel}.enc" for rel in files} | {MANIFEST}
    blobs = list(all_bytes(adapter).values())
    for rel, data in files.items():
        if len(data) < 32:
            continue
        for start in (0, len(data) // 2 - 16, len(data) - 32):
            window = data[start:start + 32]
            assert not any(window in blob for blob in blobs), (rel, start)


def test_wrong_passphrase_is_refused_without_echoing_it(encrypted, caplog):
    adapter, _ = encrypted
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DecryptionError, match="wrong passphrase") as err, \
            decrypted_copy(adapter, "Tr0ub4dor&3"):
        pass
    assert isinstance(err.value, OppuError)
    assert "Tr0ub4dor" not in str(err.value) and "Tr0ub4dor" not in caplog.text
    assert PASS not in caplog.text


def test_one_flipped_byte_is_refused_and_the_file_named(encrypted, tmp_path: Path):
    adapter, _ = encrypted
    target = adapter / "adapter_model.safetensors.enc"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(DecryptionError, match=r"adapter_model\.safetensors\.enc was modified"), \
            decrypted_copy(adapter, PASS, scratch_root=scratch):
        pass
    assert list(scratch.iterdir()) == []  # the partial plain copy was removed too


def test_swapped_or_missing_files_are_refused(encrypted):
    adapter, _ = encrypted
    a, b = adapter / "adapter_config.json.enc", adapter / "oppu_adapter.json.enc"
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    with pytest.raises(DecryptionError, match=r"adapter_config\.json\.enc"):
        read_decrypted(adapter, "adapter_config.json", PASS)
    a.write_bytes(a_bytes)
    b.write_bytes(b_bytes)
    (adapter / "sub" / "inner.bin.enc").unlink()
    with pytest.raises(DecryptionError, match=r"inner\.bin\.enc is missing"), \
            decrypted_copy(adapter, PASS):
        pass


def test_an_edited_manifest_is_refused(encrypted):
    adapter, _ = encrypted
    manifest = json.loads((adapter / MANIFEST).read_text())
    manifest["files"].remove("sub/inner.bin")  # hide a file: the key check covers the list
    (adapter / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DecryptionError, match="was changed"):
        read_decrypted(adapter, "oppu_adapter.json", PASS)


def test_read_decrypted_gives_one_file_without_a_temp_copy(encrypted):
    adapter, files = encrypted
    assert read_decrypted(adapter, "oppu_adapter.json", PASS) == files["oppu_adapter.json"]


def test_copy_is_removed_when_the_caller_fails(encrypted):
    adapter, _ = encrypted
    with pytest.raises(RuntimeError), decrypted_copy(adapter, PASS) as plain:
        raise RuntimeError("loading failed")
    assert not plain.exists()


def test_refusals_before_any_work(tmp_path: Path, encrypted):
    adapter, _ = encrypted
    with pytest.raises(OppuError, match="already encrypted"):
        encrypt_dir(adapter, PASS)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x").write_text("x")
    with pytest.raises(OppuError, match="empty"):
        encrypt_dir(plain, "")
    with pytest.raises(OppuError, match="not an encrypted adapter"), decrypted_copy(plain, PASS):
        pass


def test_default_cost_and_separate_destination(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    files = make_plain(src)
    out = encrypt_dir(src, PASS, dest=tmp_path / "out")
    kdf = json.loads((out / MANIFEST).read_text())["kdf"]
    assert kdf["name"] == "scrypt" and kdf["n"] == SCRYPT_N and len(kdf["salt"]) > 16
    assert all_bytes(src) == files  # the source is left alone when a dest is given
    with decrypted_copy(out, PASS) as plain:
        assert all_bytes(plain) == files


def test_passphrase_from_env(monkeypatch):
    monkeypatch.delenv("OPPU_TEST_PASSPHRASE", raising=False)
    with pytest.raises(OppuError, match="OPPU_TEST_PASSPHRASE is not set"):
        passphrase_from_env("OPPU_TEST_PASSPHRASE")
    monkeypatch.setenv("OPPU_TEST_PASSPHRASE", PASS)
    assert passphrase_from_env("OPPU_TEST_PASSPHRASE") == PASS


def tiny_llama():
    """A 2-layer Llama with tiny dims, same weights every call: no model files needed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def test_real_peft_adapter_survives_encryption(tmp_path: Path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict

    # init_lora_weights=False: B is random too, so a lost weight would change the output.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)
    trained = get_peft_model(tiny_llama(), config).eval()
    path = tmp_path / "adapters" / "LaMP_2N"
    trained.save_pretrained(path)
    encrypt_dir(path, PASS, scrypt_n=FAST_N)
    assert not (path / "adapter_model.safetensors").exists()

    with decrypted_copy(path, PASS) as plain:
        loaded = PeftModel.from_pretrained(tiny_llama(), plain).eval()
    assert not plain.exists()  # weights were read into memory before the copy went away

    want, got = get_peft_model_state_dict(trained), get_peft_model_state_dict(loaded)
    assert want.keys() == got.keys() and len(want) == 8
    assert all(torch.equal(want[k], got[k]) for k in want)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.inference_mode():
        assert torch.equal(trained(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_a_stores_choice_and_label_prior_are_encrypted_with_its_adapters(tmp_path: Path):
    """The choice file holds the user's answer frequencies: with a passphrase, never plain."""
    from oppu.client.adapter_store import AdapterStore
    from oppu.shared.personal.label_prior import MAJORITY, LabelPrior

    prior = LabelPrior.of(["zebra-label"] * 3 + ["other"], ["zebra-label", "other"], MAJORITY)
    choice = {"chosen": "base", "prior": prior.to_dict(), "labels": ["zebra-label", "other"]}
    sealed = AdapterStore(tmp_path / "sealed", PASS)
    sealed.record_choice("t", choice)
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "sealed").rglob("*") if p.is_file())
    assert b"zebra-label" not in on_disk and b"chosen" not in on_disk
    assert sealed.choice("t") == choice and sealed.uses_base("t")
    assert sealed.label_prior("t") == prior
    with pytest.raises(OppuError, match="passphrase"):
        AdapterStore(tmp_path / "sealed").choice("t")  # no passphrase: refused, not ignored
    plain = AdapterStore(tmp_path / "plain")
    plain.record_choice("t", choice)
    assert plain.label_prior("t") == prior and b"zebra-label" in plain.choice_path(
        "t").read_bytes()
