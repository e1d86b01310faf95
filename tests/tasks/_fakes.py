"""Small stand-ins for the tasks' test paths in seconds: a tiny in-memory Llama, datamodules of
given samples (real Score/ResponseDataModule subclasses, so the evaluation layer treats them as it
treats the real ones) and a Trainer with the result writer the CLI gives every trainer."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from kokorozoo.data.datamodules import ResponseDataModule, ScoreDataModule
from kokorozoo.evaluation.writer import ResultWriter

PAD = 0
TOL = 1e-6


def tiny_llama(dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         pad_token_id=PAD)  # fmt: skip
    return LlamaForCausalLM(config).to(dtype).eval()


SEED = 7


class _Data:
    """A test part of ``samples`` in batches of 2, a training part of ``train`` gold scores (for
    the mode baseline) and split ``seed``; ``data`` and ``whole_split`` name the samples'
    dialogues for the baselines that read them (stubbed in these tests)."""

    def __init__(self, samples, collate, train=None, seed=SEED, **settings):
        super().__init__(seed=seed, **settings)
        self.test_samples, self.collate_batch, self.train = samples, collate, train
        self.dialogues = [SimpleNamespace(id=s.dialogue_id) for s in samples]

    @property
    def data(self):
        return SimpleNamespace(dialogues=self.dialogues, by_id=lambda: {d.id: d for d in self.dialogues})

    def whole_split(self):
        return SimpleNamespace(train=self.dialogues[:1], val=self.dialogues[1:2], test=self.dialogues)

    def train_labels(self):
        return None if self.train is None else torch.tensor(self.train)

    def setup(self, stage=None):
        pass

    def test_dataloader(self):
        return DataLoader(self.test_samples, batch_size=2, collate_fn=self.collate_batch)

    predict_dataloader = test_dataloader


class ScoreData(_Data, ScoreDataModule):
    pass


class ResponseData(_Data, ResponseDataModule):
    pass


def trainer(tmp_path, accelerator="cpu") -> Trainer:
    return Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                   callbacks=[ResultWriter()])  # fmt: skip


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
