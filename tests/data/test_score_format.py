"""The score answer format (the 20 scores the score tasks learn to write); its parser and the
answer forms of tokenizers are tested with the score tasks (tests/tasks/test_score.py)."""

import pytest

from kokorozoo.data.score_format import format_scores


@pytest.mark.mutation
@pytest.mark.parametrize("n", [0, 19, 21])
def test_an_answer_needs_exactly_20_scores(n):
    with pytest.raises(ValueError, match=f"^expected 20 scores, got {n}$"):
        format_scores([3] * n)
