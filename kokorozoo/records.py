"""The KokoroChat records: a dialogue, its utterances, topic and client review, the 20 feedback
items, the speakers' roles, and a merged turn. Plain types that import nothing of kokorozoo, so
every layer (the chat format included) can name them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple


class FeedbackItem(NamedTuple):
    """One of the 20 client-feedback items (0-5), under its English and Japanese keys."""

    en: str
    jp: str


#: The 20 feedback items D1..D20 in the paper's order. The English key ``clarified_issues_cleraly``
#: keeps the upstream typo because that is how the files spell it.
FEEDBACK_ITEMS: tuple[FeedbackItem, ...] = (
    FeedbackItem("felt_heard_and_understood", "聴いてもらえた、わかってもらえたと感じた"),
    FeedbackItem("felt_respected", "尊重されたと感じた"),
    FeedbackItem("gained_new_insights", "新しい気づきや体験があった"),
    FeedbackItem("felt_hopeful_or_expectant", "希望や期待を感じられた"),
    FeedbackItem("concerns_were_addressed", "取り組みたかったことを扱えた"),
    FeedbackItem("thought_through_concerns_together", "一緒に考えながら取り組めた"),
    FeedbackItem("conversation_had_good_rhythm", "やりとりのリズムがあっていた"),
    FeedbackItem("conversation_felt_comfortable", "居心地のよいやりとりだった"),
    FeedbackItem("felt_appropriate_and_satisfying", "全体として適切でよかった"),
    FeedbackItem("conversation_was_valuable", "今回の相談は価値があった"),
    FeedbackItem("conversation_started_smoothly", "相談開始の円滑さ"),
    FeedbackItem("conversation_ended_well", "相談終了のタイミング（不必要に聴きすぎていないか）、円滑さ"),
    FeedbackItem("showed_acceptance_and_empathy", "受容・共感"),
    FeedbackItem("provided_acknowledgment_and_affirmation", "肯定・承認"),
    FeedbackItem("asked_effective_questions", "的確な質問による会話の促進"),
    FeedbackItem("summarized_key_points_effectively", "要約"),
    FeedbackItem("clarified_issues_cleraly", "問題の明確化"),
    FeedbackItem("helped_identify_goals", "この相談での目標の明確化"),
    FeedbackItem("offered_actionable_suggestions", "次の行動につながる提案"),
    FeedbackItem("encouraged_and_instilled_hope", "勇気づけ・希望の喚起"),
)
ITEM_NAMES: tuple[str, ...] = tuple(item.en for item in FEEDBACK_ITEMS)
NUM_ITEMS = len(FEEDBACK_ITEMS)
ITEM_MAX = 5
SCORE_MAX = NUM_ITEMS * ITEM_MAX

#: Screening flags: English key -> Japanese key. A flag is checked when its value is "チェックあり".
SCREENING_FLAGS: dict[str, str] = {
    "harmful_due_to_ignorance": "無理解と軽率さによる傷つけ発言",
    "other_potentially_unethical": "その他の倫理違反が疑われる発言",
    "unwilling_to_continue": "離脱",
}
ROLES = ("counselor", "client")
Role = Literal["counselor", "client"]


class Utterance(NamedTuple):
    role: Role
    time: datetime
    text: str


@dataclass(frozen=True, slots=True)
class Topic:
    main_jp: str
    main_en: str
    sub: str


@dataclass(frozen=True, slots=True)
class Feedback:
    """The client's review: total score (0-100), 20 items (0-5) and the screening flags."""

    evaluation_id: int
    created_at: datetime
    client_id: int
    counselor_id: int
    score: int
    items: tuple[int, ...]
    harmful_due_to_ignorance: bool
    other_potentially_unethical: bool
    unwilling_to_continue: bool


@dataclass(frozen=True, slots=True)
class Dialogue:
    id: str
    utterances: tuple[Utterance, ...]
    topic: Topic
    feedback: Feedback

    @property
    def score(self) -> int:
        return self.feedback.score


def expected_total(items: Iterable[int], harmful: bool, unethical: bool, unwilling: bool) -> int:
    """The total the release computes: the item sum, halved (rounded down) when the client was
    unwilling to continue, zero when a harmful or unethical remark was flagged."""
    if harmful or unethical:
        return 0
    total = sum(items)
    return total // 2 if unwilling else total


class Turn(NamedTuple):
    """Consecutive utterances of one speaker, merged."""

    role: Role
    text: str
    n_utterances: int
