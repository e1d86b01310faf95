"""The paper's evaluation as torchmetrics metrics, correct under DDP.

Response generation (:mod:`.text`): :class:`BLEU`, :class:`ROUGE`, :class:`Distinct` on Japanese
tokenized by :func:`tokenize_ja` (MeCab words by default); :func:`text_metrics` builds the full set.
Score prediction (:mod:`.scores`): :class:`ScoreAccuracy` (ACC / ACC_soft), :class:`ScoreMAE`;
:func:`score_metrics` builds the full set, and :func:`item_modes` with
:func:`constant_predictions` give the per-item-mode baseline every report shows beside a model.
"""

from kokorozoo.metrics.rules import (
    METRIC_RULES,
    distribution_metrics,
    point_figures,
    rule_figures,
    rule_predictions,
    score_figures,
)
from kokorozoo.metrics.scores import (
    SCORE_METRICS,
    ScoreAccuracy,
    ScoreMAE,
    constant_predictions,
    item_modes,
    score_metrics,
)
from kokorozoo.metrics.text import BLEU, ROUGE, TEXT_METRICS, TOKENIZE_MODES, Distinct, text_metrics, tokenize_ja

__all__ = [
    "BLEU",
    "METRIC_RULES",
    "ROUGE",
    "SCORE_METRICS",
    "TEXT_METRICS",
    "TOKENIZE_MODES",
    "Distinct",
    "ScoreAccuracy",
    "ScoreMAE",
    "constant_predictions",
    "distribution_metrics",
    "item_modes",
    "point_figures",
    "rule_figures",
    "rule_predictions",
    "score_figures",
    "score_metrics",
    "text_metrics",
    "tokenize_ja",
]
