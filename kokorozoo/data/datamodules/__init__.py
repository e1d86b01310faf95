"""LightningDataModules: the paper's splits, tokenized, masked and batched. The base
(:mod:`~kokorozoo.data.datamodules.base`) owns setup and the loaders; each task's datamodule
gives its split, its samples and a collate."""

from kokorozoo.data.datamodules.base import STAGE_PARTS, KokoroChatDataModule, Part
from kokorozoo.data.datamodules.response import GenerationRequest, ResponseDataModule
from kokorozoo.data.datamodules.score import ScoreDataModule, ScoreSample, collate_scores

__all__ = [
    "STAGE_PARTS",
    "GenerationRequest",
    "KokoroChatDataModule",
    "Part",
    "ResponseDataModule",
    "ScoreDataModule",
    "ScoreSample",
    "collate_scores",
]
