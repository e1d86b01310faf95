"""What a task plugin may import: the one stable surface of kokorozoo for code outside it.

A plugin is a task (:class:`Task`: its steps and its metrics; :class:`ClassificationTask` when it
labels whole dialogues, which leaves it only its labels to name) and usually a datamodule
(:class:`KokoroChatDataModule`: a split, a sample per dialogue, a collate); both get everything
else from their base classes (the backbone, optimizer, checkpoints, output files and export; the
data, setup and loaders). The data helpers below are the ones the core tasks use, so a plugin
renders, cuts and pads dialogues exactly as they do. Everything else in kokorozoo may change
between versions; these names keep their meaning.
"""

from kokorozoo.backbone import Backbone
from kokorozoo.chat_format import chat_messages
from kokorozoo.data.batching import pad_ids, pad_samples
from kokorozoo.data.datamodules import STAGE_PARTS, KokoroChatDataModule, Part
from kokorozoo.data.dialogue import Turn, dialogue_turns
from kokorozoo.data.encoding import IGNORE_INDEX, EncodedDialogue, encode_dialogue
from kokorozoo.data.loader import load_kokorochat
from kokorozoo.data.splits import Split, response_split, score_split
from kokorozoo.progress import progress
from kokorozoo.records import Dialogue
from kokorozoo.tasks.base import Task
from kokorozoo.tasks.classification import ClassificationTask, classification_metrics
from kokorozoo.tasks.model_files import load_task

__all__ = [
    "IGNORE_INDEX",
    "STAGE_PARTS",
    "Backbone",
    "ClassificationTask",
    "Dialogue",
    "EncodedDialogue",
    "KokoroChatDataModule",
    "Part",
    "Split",
    "Task",
    "Turn",
    "chat_messages",
    "classification_metrics",
    "dialogue_turns",
    "encode_dialogue",
    "load_kokorochat",
    "load_task",
    "pad_ids",
    "pad_samples",
    "progress",
    "response_split",
    "score_split",
]
