"""One epoch of kokorozoo's dialogue-level training against TRL's SFTTrainer, same model, same dialogues.

The target: against TRL's ``SFTTrainer`` training the same model on the same dialogues with
the loss on assistant turns (``assistant_only_loss=True``), our epoch must not be slower. The two
medians come from the same run; the TRL test asserts their ratio (``trl_over_kokorozoo``).

Made equal, because TRL's defaults differ from ours in each:
- model: a fresh default tiny backbone (NF4 + LoRA, ``ResponseTask.configure_model``) per side and
  round, so neither trains the other's weights; LoRA weights in float32 on both (SFTTrainer casts a
  quantized model's adapters to bfloat16; that is undone before training);
- compute: no gradient checkpointing (SFTConfig turns it on by default, kokorozoo off) and no autocast
  (SFTConfig defaults to ``bf16=True``; our Lightning runs are ``32-true``; the 4-bit layers compute
  in bfloat16 on both sides either way);
- batches: 4 dialogues a batch, in the order our seeded loader shuffles them (TRL gets that order and
  samples sequentially), right-padded to the longest, no packing, nothing truncated;
- optimizer: torch AdamW, not fused (SFTConfig's default is fused), the same learning rate, warm-up
  and linear decay, no weight decay, no gradient clipping (SFTConfig clips at 1.0, our runs do not).

Not equal, by design of each: TRL trains every assistant token of the whole rendering; kokorozoo
leaves out a counselor turn that opens a dialogue (it has no history) and does not feed a client
turn that ends one (no trained token follows it). TRL also computes its loss with a chunked fused LM
head and computes entropy and token accuracy every step. ``extra_info`` holds both sides' token counts.

Timed: ``trainer.fit`` / ``trainer.train()`` only (optimizer set-up included); loading the model,
our datamodule's encoding and TRL's dataset tokenization happen in the untimed set-up.
"""

import math
import os

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from kokorozoo.chat_format import chat_messages
from kokorozoo.data import dialogue_turns
from kokorozoo.data.batching import pad_samples
from kokorozoo.data.datamodules import ResponseDataModule
from kokorozoo.data.encoding import IGNORE_INDEX, encode_dialogue
from kokorozoo.tasks import ResponseTask

DIALOGUES = 8
BATCH = 4
MAX_LENGTH = 4096
STEPS = math.ceil(DIALOGUES / BATCH)

#: Median epoch time per side, filled by the two benchmarks (kokorozoo first) for the final ratio.
MEDIANS: dict[str, float] = {}


def record_median(benchmark, side: str) -> None:
    if benchmark.stats is not None:  # None under --benchmark-disable (one untimed call)
        MEDIANS[side] = benchmark.stats.stats.median


def fresh_task() -> ResponseTask:
    task = ResponseTask(optimizer="adamw")
    task.configure_model()
    return task


def token_counts(batches) -> dict:
    """Real tokens, tokens with padding, loss terms (labels after the one-token shift), batch widths."""
    batches = list(batches)
    return {
        "batch_widths": [b["input_ids"].shape[1] for b in batches],
        "tokens_through_model": sum(int(b["attention_mask"].sum()) for b in batches),
        "padded_tokens": sum(b["input_ids"].numel() for b in batches),
        "loss_tokens": sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches),
    }


@pytest.fixture(scope="module")
def datamodule():
    """The product's datamodule on the first DIALOGUES training dialogues of Kokoro-High, encoded."""
    dm = ResponseDataModule(
        subset="high", seed=0, batch_size=BATCH, max_length=MAX_LENGTH, limit_train=DIALOGUES, limit_val=0, limit_test=0
    )
    dm.connect(ResponseTask(optimizer="adamw").tokenizer)
    dm.setup("fit")
    for d in dm.split.train:  # whole renderings that fit: TRL truncates nothing, we window nothing
        assert len(encode_dialogue(dm.tokenizer, dialogue_turns(d)).ids) <= MAX_LENGTH, d.id
    assert len(dm.train_dataloader().dataset) == DIALOGUES  # one sample per dialogue
    return dm


class BatchWidths(Callback):
    """Records the widths of the batches Lightning trains on: proof that TRL gets the same batches."""

    def __init__(self):
        self.widths = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.widths.append(batch["input_ids"].shape[1])


def test_kokorozoo_epoch(benchmark, datamodule):
    """The product path: Lightning fits ResponseTask (its own training_step) on the datamodule."""

    def setup():
        trainer = Trainer(
            max_epochs=1,
            accelerator="cpu",
            precision="32-true",
            logger=False,
            enable_checkpointing=False,
            limit_val_batches=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[BatchWidths()],
        )
        return (trainer, fresh_task()), {}

    def fit(trainer, task):
        trainer.fit(task, datamodule=datamodule)  # its setup("fit") finds the samples already encoded
        return trainer, task

    trainer, task = benchmark.pedantic(fit, setup=setup, rounds=3, iterations=1)
    counts = token_counts(datamodule.train_dataloader())
    assert trainer.global_step == STEPS and not task.model.is_activation_checkpointing
    (seen,) = [c.widths for c in trainer.callbacks if isinstance(c, BatchWidths)]
    assert seen == counts["batch_widths"]  # so epoch_order() replays the order this epoch trained in
    benchmark.extra_info.update(side="kokorozoo", dialogues=DIALOGUES, load_average=os.getloadavg()[0], **counts)
    record_median(benchmark, "kokorozoo")


def sft_trainer(dialogues, tokenizer, output_dir):
    """SFTTrainer on a fresh copy of our model, set up as the module docstring says."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    task = fresh_task()
    hp = task.hparams
    args = SFTConfig(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        assistant_only_loss=True,
        max_length=MAX_LENGTH,
        packing=False,
        per_device_train_batch_size=BATCH,
        num_train_epochs=1,
        train_sampling_strategy="sequential",
        activation_checkpointing=False,
        bf16=False,
        fp16=False,
        optim="adamw_torch",
        learning_rate=hp.lr,
        lr_scheduler_type="linear",
        warmup_steps=min(hp.warmup_steps, STEPS),
        weight_decay=hp.weight_decay,
        max_grad_norm=0.0,
    )
    data = Dataset.from_list([{"messages": chat_messages(dialogue_turns(d))} for d in dialogues])
    trainer = SFTTrainer(model=task.model, processing_class=task.tokenizer, train_dataset=data, args=args)
    for param in task.model.parameters():
        if param.requires_grad:  # TRL made them bfloat16 (its QLoRA recipe); ours train in float32
            param.data = param.data.float()
    for row, d in zip(trainer.train_dataset, dialogues):  # TRL renders and masks exactly as we do
        encoded = encode_dialogue(tokenizer, dialogue_turns(d))
        assert row["input_ids"] == encoded.ids
        assert [label != IGNORE_INDEX for label in row["labels"]] == [bool(m) for m in encoded.assistant_mask]
    return trainer


def epoch_order(datamodule) -> list[int]:
    """The dialogues in the order our epoch sees them: a fresh loader replays the seeded shuffle (read
    from the batches, since the loader draws its worker seed from the same generator first)."""
    loader = datamodule.train_dataloader()
    index = {tuple(ids): i for i, (ids, _) in enumerate(loader.dataset)}
    rows = [row[mask.bool()] for b in loader for row, mask in zip(b["input_ids"], b["attention_mask"])]
    return [index[tuple(row.tolist())] for row in rows]


def test_trl_sft_epoch(benchmark, datamodule, tmp_path):
    """SFTTrainer on the same dialogues in the same order; then the ratio of the two medians."""
    try:
        import trl  # noqa: F401
    except ImportError:
        pytest.fail("TRL is missing: pip install -c constraints.txt -r benchmarks/requirements.txt")
    dialogues = [datamodule.split.train[i] for i in epoch_order(datamodule)]

    def train(trainer):
        trainer.train()
        return trainer

    def setup():
        return (sft_trainer(dialogues, datamodule.tokenizer, tmp_path),), {}

    trainer = benchmark.pedantic(train, setup=setup, rounds=3, iterations=1)
    assert trainer.state.global_step == STEPS and not trainer.model.is_activation_checkpointing
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters() if p.requires_grad)
    rows = trainer.train_dataset
    batches = [
        pad_samples([(r["input_ids"], r["labels"]) for r in rows.select(range(i, min(i + BATCH, len(rows))))], 0)
        for i in range(0, len(rows), BATCH)
    ]
    counts = token_counts(batches)
    benchmark.extra_info.update(side="trl", dialogues=DIALOGUES, load_average=os.getloadavg()[0], **counts)
    record_median(benchmark, "trl")

    # the target, from this run's medians (checked here: --benchmark-only skips tests without a benchmark)
    if set(MEDIANS) != {"kokorozoo", "trl"}:
        pytest.skip("the ratio needs both benchmarks timed in this session")
    ratio = MEDIANS["trl"] / MEDIANS["kokorozoo"]
    benchmark.extra_info["trl_over_kokorozoo"] = round(ratio, 3)
    print(
        f"\nepoch median: kokorozoo {MEDIANS['kokorozoo']:.2f} s, TRL SFTTrainer {MEDIANS['trl']:.2f} s,"
        f" TRL / kokorozoo = {ratio:.2f}"
    )
    assert ratio >= 1.0, f"our epoch is slower than TRL's SFTTrainer ({ratio:.2f}x)"
