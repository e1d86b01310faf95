"""The backbone loader on CPU, with a tiny model built once per session in a temporary cache."""

from __future__ import annotations

import dataclasses
import os
import sys
import unicodedata
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer

import kokorozoo.backbone.tiny as tiny_module
from kokorozoo.backbone import (
    COMPUTE_DTYPES,
    LORA_TARGETS,
    BackboneError,
    LoraSettings,
    TinyConfig,
    build_tiny,
    disable_cpu_weight_repacking,
    load_backbone,
    load_tokenizer,
    train_tokenizer,
    trainable_state_dict,
)
from kokorozoo.backbone.hardware import resolve_compute_dtype
from kokorozoo.chat_format import END_OF_TURN, LLAMA3_CHAT_TEMPLATE, chat_messages
from kokorozoo.data import merge_utterances
from kokorozoo.data.loader import read_dialogue_file

bnb = pytest.importorskip("bitsandbytes")

DIALOGUES = Path(__file__).resolve().parents[3] / "shared" / "kokorochat" / "kokorochat_dialogues"
SMALL = TinyConfig(
    vocab_size=2000,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=128,
    max_position_embeddings=512,
    tokenizer_dialogues=200,
)
NO_DROPOUT = LoraSettings(dropout=0.0)  # so that two forwards of one batch give the same gradients


def _dialogues(n: int):
    """The first ``n`` dialogues by id that are not in the response test split (score >= 99)."""
    paths = sorted(DIALOGUES.glob("*.json"), key=lambda p: int(p.stem))
    found = []
    for path in paths:
        dialogue = read_dialogue_file(path)
        if dialogue.score < 99:
            found.append(dialogue)
        if len(found) == n:
            return found
    raise AssertionError(f"fewer than {n} dialogues in {DIALOGUES}")


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return [u.text for d in _dialogues(SMALL.tokenizer_dialogues) for u in d.utterances]


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory, texts) -> Path:
    return build_tiny(SMALL, texts=texts, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tokenizer(tiny_path):
    return load_tokenizer(str(tiny_path))


def _batch(tokenizer, length: int = 64) -> dict[str, torch.Tensor]:
    ids = tokenizer("こんにちは。相談員です。今日はどのようなご相談でしょうか。" * 8).input_ids[:length]
    ids = torch.tensor([ids, ids[::-1]])
    return {"input_ids": ids, "labels": ids}


def _lora_gradients(model, batch) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(**batch).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------
# The tiny model: built once, reused, never half-written


def test_tiny_is_built_once_and_reused(tiny_path, texts, monkeypatch):
    config_mtime = (tiny_path / "config.json").stat().st_mtime_ns

    def no_retraining(*args, **kwargs):
        raise AssertionError("the cached tiny model was rebuilt")

    monkeypatch.setattr(tiny_module, "train_tokenizer", no_retraining)
    assert build_tiny(SMALL, texts=texts, cache_dir=tiny_path.parent) == tiny_path
    assert (tiny_path / "config.json").stat().st_mtime_ns == config_mtime
    assert [p.name for p in tiny_path.parent.iterdir()] == [tiny_path.name]  # no temporary folder left


def test_tiny_by_name_trains_on_the_training_split_texts_once(tmp_path, texts, monkeypatch):
    calls = []

    def training_split_texts(cfg):
        calls.append(cfg)
        return texts[:300]

    monkeypatch.setattr(tiny_module, "_training_split_texts", training_split_texts)
    monkeypatch.setenv("KOKOROZOO_CACHE", str(tmp_path))
    cfg = TinyConfig(vocab_size=500, hidden_size=32, num_layers=1, intermediate_size=64, max_position_embeddings=128)
    first = load_tokenizer("tiny", tiny=cfg)
    second = load_tokenizer("tiny", tiny=cfg)
    assert calls == [cfg]
    assert first.get_vocab() == second.get_vocab()
    assert [p.name for p in tmp_path.iterdir()] == [f"tiny-{tiny_module._tiny_key(cfg, None)}"]


def test_default_tokenizer_texts_come_from_the_training_split(kokorochat, monkeypatch):
    from kokorozoo.data import loader as loader_module
    from kokorozoo.data.splits import tokenizer_texts

    monkeypatch.setattr(loader_module, "load_kokorochat", lambda root=None: kokorochat)  # loaded once per session
    cfg = TinyConfig(tokenizer_dialogues=20, seed=3)
    texts = tiny_module._training_split_texts(cfg)
    assert texts and texts == tokenizer_texts(kokorochat, n_dialogues=20, seed=3)


def test_settings_and_texts_are_part_of_the_cache_key(texts):
    assert tiny_module._tiny_key(SMALL, texts) == tiny_module._tiny_key(dataclasses.replace(SMALL), list(texts))
    assert tiny_module._tiny_key(SMALL, texts) != tiny_module._tiny_key(SMALL, texts[:-1])
    assert tiny_module._tiny_key(SMALL, texts) != tiny_module._tiny_key(dataclasses.replace(SMALL, seed=1), texts)
    assert tiny_module._tiny_key(SMALL, None) != tiny_module._tiny_key(SMALL, [])


def test_a_failed_build_leaves_no_half_model(tmp_path, texts, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny_module, "_save_tiny_model", killed)
    with pytest.raises(KeyboardInterrupt):
        build_tiny(TinyConfig(vocab_size=500), texts=texts[:200], cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_tiny_is_a_llama_in_the_hugging_face_format(tiny_path, tokenizer):
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(tiny_path)
    assert config.model_type == "llama"
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == (64, 2, 2)
    assert config.vocab_size == len(tokenizer) == SMALL.vocab_size
    stop_ids = tokenizer.convert_tokens_to_ids([END_OF_TURN, "<|end_of_text|>"])
    generation = GenerationConfig.from_pretrained(tiny_path)
    assert generation.eos_token_id == stop_ids
    pad_id = tokenizer.convert_tokens_to_ids("<|finetune_right_pad_id|>")
    assert generation.pad_token_id == tokenizer.pad_token_id == config.pad_token_id == pad_id


# ---------------------------------------------------------------------------------------------
# Tokenizer and chat template


def test_tokenizer_round_trips_japanese(tokenizer, texts):
    text = "こんにちは。相談員です。\n最近、仕事のことで眠れない日が続いていて…\nABC 123 ｶﾀｶﾅ　大丈夫ですか？"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # byte for byte, like Llama-3's
    for utterance in texts[:500]:
        assert tokenizer.decode(tokenizer(utterance, add_special_tokens=False).input_ids) == utterance
    characters = sum(len(t) for t in texts[:500])
    tokens = sum(len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts[:500])
    assert characters / tokens > 1.5  # a BPE that learnt Japanese, not bytes


def test_nfkc_normalizer_folds_full_width_forms(texts):
    folded = train_tokenizer(texts[:2000], TinyConfig(vocab_size=1000, normalizer="nfkc"))
    for text in ["大丈夫ですか？　ゆっくりで構いません…！", *texts[:300]]:
        expected = unicodedata.normalize("NFKC", text)
        assert folded.decode(folded(text, add_special_tokens=False).input_ids) == expected


def test_chat_template_masks_exactly_each_assistant_reply_and_its_end_of_turn(tokenizer):
    dialogue = _dialogues(1)[0]
    messages = chat_messages(merge_utterances(dialogue.utterances[:8]), system_prompt="あなたはカウンセラーです。")
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = rendered["input_ids"], rendered["assistant_masks"]

    spans, current = [], []
    for token, masked in zip(ids, mask):
        if masked:
            current.append(token)
        elif current:
            spans, current = spans + [current], []
    spans += [current] if current else []
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    assert assistant and [tokenizer.decode(span) for span in spans] == [text + END_OF_TURN for text in assistant]
    assert tokenizer.decode(ids).startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")


def test_generation_prompt_opens_an_assistant_turn(tokenizer):
    messages = [{"role": "user", "content": "眠れません。"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n眠れません。<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    for role in ("system", "user", "assistant"):  # one token each, as in Llama 3: headers stay short
        assert len(tokenizer(role, add_special_tokens=False).input_ids) == 1


def test_llama3_tokenizer_without_mask_markers_gets_them(tiny_path, tmp_path):
    """Hub Llama-3 templates (Swallow's) lack {% generation %}: the loader supplies it, and a pad."""
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tiny_path)
    plain.chat_template = LLAMA3_CHAT_TEMPLATE.replace("{%- generation %}", "").replace("{%- endgeneration %}", "")
    plain.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.chat_template == LLAMA3_CHAT_TEMPLATE
    assert loaded.pad_token == "<|finetune_right_pad_id|>"


# ---------------------------------------------------------------------------------------------
# Loading: NF4 + LoRA on CPU, the bitsandbytes repacking fix, plain weights


def test_nf4_load_quantizes_every_projection_and_trains_only_lora(tiny_path):
    loaded = load_backbone(str(tiny_path))
    model = loaded.model
    assert model.training
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(quantized) == len(LORA_TARGETS) * SMALL.num_layers
    assert all(not m.support_avx512bf16_for_cpu for m in quantized.values())
    native = COMPUTE_DTYPES[resolve_compute_dtype("auto", "cpu").name]  # the default, auto, on this CPU
    assert all(m.weight.quant_type == "nf4" and m.compute_dtype == native for m in quantized.values())
    adapted = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert {name.rsplit(".", 1)[-1] for name in adapted} == set(LORA_TARGETS)
    assert all(isinstance(m.base_layer, bnb.nn.Linear4bit) for m in adapted.values())
    assert len(adapted) == len(quantized)
    trainable = trainable_state_dict(model)
    assert trainable and all(".lora_A." in k or ".lora_B." in k for k in trainable)
    assert model.peft_config["default"].r == 8 and model.peft_config["default"].lora_alpha == 16


def test_a_training_step_changes_lora_weights(tiny_path, tokenizer):
    model = load_backbone(str(tiny_path)).model
    before = {k: v.clone() for k, v in trainable_state_dict(model).items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(**_batch(tokenizer)).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    after = trainable_state_dict(model)
    assert all(not torch.equal(before[k], after[k]) for k in before if ".lora_B." in k)


def _gradients_around_generate(model, tokenizer) -> tuple[dict, dict]:
    batch = _batch(tokenizer)
    before = _lora_gradients(model, batch)
    model.eval()
    with torch.no_grad():
        model.generate(input_ids=batch["input_ids"][:1, :8], max_new_tokens=4, do_sample=False)
    model.train()
    return before, _lora_gradients(model, batch)


def test_generate_between_training_steps_leaves_gradients_unchanged(tiny_path, tokenizer):
    # bfloat16: the compute dtype whose CPU kernels repack (auto may choose float32 on this CPU)
    model = load_backbone(str(tiny_path), compute_dtype="bfloat16", lora=NO_DROPOUT).model
    before, after = _gradients_around_generate(model, tokenizer)
    for name in before:
        torch.testing.assert_close(after[name], before[name], msg=name)


@pytest.mark.skipif(not bnb.functional.has_avx512bf16(), reason="the repacking bug needs an AVX512-BF16 CPU")
def test_without_the_fix_generate_corrupts_gradients(tiny_path, tokenizer):
    """Shows the test above can fail: if this one starts failing, bitsandbytes fixed its bug."""
    model = load_backbone(str(tiny_path), compute_dtype="bfloat16", lora=NO_DROPOUT).model
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = True
    before, after = _gradients_around_generate(model, tokenizer)
    assert any(not torch.allclose(after[name], before[name]) for name in before)
    with pytest.raises(BackboneError, match="already repacked"):  # too late to fix: say so
        disable_cpu_weight_repacking(model)


def test_unquantized_load_with_gradient_checkpointing(tiny_path, tokenizer):
    loaded = load_backbone(str(tiny_path), quantization="none", compute_dtype="float32", gradient_checkpointing=True)
    model = loaded.model
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert model.base_model.model.is_activation_checkpointing
    gradients = _lora_gradients(model, _batch(tokenizer))
    assert gradients and all(torch.isfinite(g).all() for g in gradients.values())
    assert all(".lora_" in name for name in gradients)


def test_without_lora_nothing_is_trainable(tiny_path):
    loaded = load_backbone(str(tiny_path), lora=None)
    assert trainable_state_dict(loaded.model) == {}
    assert loaded.model.training


# ---------------------------------------------------------------------------------------------
# User mistakes end in one clear line


def test_missing_hub_model_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError) as error:
        load_backbone("no-such-org/no-such-model-kokorozoo")
    message = str(error.value)
    assert "\n" not in message and "no-such-org/no-such-model-kokorozoo" in message
    assert "local Hugging Face cache" in message and "offline" in message


def test_missing_local_folder_is_one_line(tmp_path):
    with pytest.raises(BackboneError, match=r"is not a directory") as error:
        load_tokenizer(str(tmp_path / "no-such-model"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("setting", "message"),
    [({"quantization": "int8"}, "quantization must be one of nf4, none"), ({"compute_dtype": "fp8"}, "compute_dtype")],
)
def test_unknown_setting_is_one_line(setting, message):
    with pytest.raises(BackboneError, match=message):
        load_backbone("no-such-org/never-reached", **setting)


def test_missing_bitsandbytes_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    with pytest.raises(BackboneError, match="needs bitsandbytes"):
        load_backbone("no-such-org/never-reached")


def test_cache_location_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("KOKOROZOO_CACHE", str(tmp_path))
    assert tiny_module.default_cache_dir() == tmp_path
    monkeypatch.delenv("KOKOROZOO_CACHE")
    assert tiny_module.default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "kokorozoo"
