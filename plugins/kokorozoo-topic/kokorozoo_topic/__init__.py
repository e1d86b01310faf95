"""kokorozoo-topic: classify a KokoroChat dialogue into its main topic (``topic.main_en``, 11 classes).

An example kokorozoo task plugin. The entry point ``topic = kokorozoo_topic:TopicTask`` imports
this package, which brings :class:`TopicDataModule` along, so a config can name both by class.
"""

from kokorozoo_topic.data import NUM_TOPICS, TOPICS, TOPICS_JP, TopicDataModule, topic_index
from kokorozoo_topic.task import TopicTask

__all__ = ["NUM_TOPICS", "TOPICS", "TOPICS_JP", "TopicDataModule", "TopicTask", "topic_index"]
