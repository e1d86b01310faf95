"""Padding-free packing: a batch's samples in one row, positions restarting at each sample, and
the datamodules' ``packing`` option (the same loss on fewer tokens)."""

import torch

from kokorozoo.data.batching import pack_samples
from kokorozoo.data.datamodules import ResponseDataModule, ScoreDataModule
from kokorozoo.data.encoding import IGNORE_INDEX
from kokorozoo.tasks import ScoreTask

X = IGNORE_INDEX


def test_samples_share_one_row_with_positions_restarting_and_no_loss_across_them():
    batch = pack_samples([([1, 2, 3], [X, 2, 3]), ([4, 5], [4, 5]), ([6], [X])])
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention mask: no padding
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0]]
    # a sample's first label is never predicted in a padded batch; packed, it would be by the
    # previous sample's last token
    assert batch["labels"].tolist() == [[X, 2, 3, X, 5, X]]


def datamodule(cls, kokorochat, tokenizer, **settings):
    dm = cls(max_length=768, limit_train=6, limit_val=4, limit_test=2, batch_size=3, eval_batch_size=4, **settings)
    dm._data = kokorochat
    dm.connect(tokenizer)
    return dm


def test_response_datamodule_packs_training_and_validation_batches(kokorochat, tiny_tokenizer):
    dm = datamodule(ResponseDataModule, kokorochat, tiny_tokenizer, packing=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == 3 and starts[0] == 0  # three samples, each from position 0
    val = next(iter(dm.val_dataloader()))
    assert (val["position_ids"][0] == 0).sum() == 4


def test_score_datamodule_packs_the_answer_loss_and_keeps_prompts_left_padded(small_tiny, kokorochat, tiny_tokenizer):
    padded_dm = datamodule(ScoreDataModule, kokorochat, tiny_tokenizer)
    packed_dm = datamodule(ScoreDataModule, kokorochat, tiny_tokenizer, packing=True)
    padded, packed = (next(iter(dm.val_dataloader())) for dm in (padded_dm, packed_dm))
    assert packed["input_ids"].shape == (1, int(padded["attention_mask"].sum()))
    assert packed["dialogue_ids"] == padded["dialogue_ids"] and torch.equal(packed["scores"], padded["scores"])
    assert all(torch.equal(packed["prompt"][k], padded["prompt"][k]) for k in ("input_ids", "attention_mask"))

    task = ScoreTask(tiny=small_tiny, quantization="none", compute_dtype="float32")
    task.configure_model()
    task.eval()
    with torch.no_grad():
        (loss, count), (reference, reference_count) = task.loss(packed), task.loss(padded)
    assert int(count) == int(reference_count) > 100
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=0)


def test_packing_is_off_by_default(kokorochat, tiny_tokenizer):
    dm = datamodule(ResponseDataModule, kokorochat, tiny_tokenizer)
    dm.setup("fit")
    assert "attention_mask" in next(iter(dm.train_dataloader()))
