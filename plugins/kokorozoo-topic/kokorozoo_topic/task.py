"""Topic classification: a dialogue's main topic (``topic.main_en``, 11 classes) read from the
whole dialogue by kokorozoo's classification task (a linear head on the last token's state,
accuracy and macro-F1 beside the majority-topic baseline). The plugin says what the labels are;
the data module (:mod:`kokorozoo_topic.data`) says where they come from."""

from __future__ import annotations

from kokorozoo.api import ClassificationTask
from kokorozoo_topic.data import TOPICS

#: The head's file in an exported folder (beside the PEFT adapter).
HEAD_FILE = "topic_head.safetensors"


class TopicTask(ClassificationTask):
    """Classify a dialogue's main topic with a QLoRA backbone and a linear head.

    Args:
        head_dropout: dropout on the pooled hidden state before the head.
        **kwargs: backbone and optimizer settings, see :class:`kokorozoo.tasks.base.Task`.
    """

    labels = TOPICS
    label_field = "topic"
    task_name = "topic"
    head_file = HEAD_FILE
