"""The KokoroChat data layer: records, validation and loading, splits and utterance merging."""

from kokorozoo.data.dialogue import (
    counselor_turn_indices,
    dialogue_turns,
    merge_utterances,
    target_turn_indices,
)
from kokorozoo.data.hub import load_kokorochat_hub
from kokorozoo.data.loader import (
    KokoroChat,
    dialogues_from_rows,
    find_root,
    load_kokorochat,
    read_dialogue_file,
)
from kokorozoo.data.splits import Split, in_subset, response_split, score_split, tokenizer_texts, training_dialogues
from kokorozoo.data.stats import dataset_stats, format_stats
from kokorozoo.data.validation import DataError, parse_dialogue
from kokorozoo.records import (
    FEEDBACK_ITEMS,
    ITEM_MAX,
    ITEM_NAMES,
    NUM_ITEMS,
    SCREENING_FLAGS,
    Dialogue,
    Feedback,
    FeedbackItem,
    Topic,
    Turn,
    Utterance,
)

__all__ = [
    "FEEDBACK_ITEMS",
    "ITEM_MAX",
    "ITEM_NAMES",
    "NUM_ITEMS",
    "SCREENING_FLAGS",
    "DataError",
    "Dialogue",
    "Feedback",
    "FeedbackItem",
    "KokoroChat",
    "Split",
    "Topic",
    "Turn",
    "Utterance",
    "counselor_turn_indices",
    "dataset_stats",
    "dialogue_turns",
    "dialogues_from_rows",
    "find_root",
    "format_stats",
    "in_subset",
    "load_kokorochat",
    "load_kokorochat_hub",
    "merge_utterances",
    "parse_dialogue",
    "read_dialogue_file",
    "response_split",
    "score_split",
    "target_turn_indices",
    "tokenizer_texts",
    "training_dialogues",
]
