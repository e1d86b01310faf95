"""Constructed metric inputs shared by the metric tests: every rule is exercised by them."""

from __future__ import annotations

import torch

NAN = float("nan")


def score_case():
    """Gold [6, 20] and integer predictions off by 0, 1, 2 and 3, with NaN entries; row 4 is
    marked invalid as a whole."""
    gold = torch.tensor([[(i + d) % 6 for i in range(20)] for d in range(6)])
    offsets = torch.tensor([[(i * 7 + d * 3) % 7 - 3 for i in range(20)] for d in range(6)])
    preds = (gold + offsets).clamp(0, 5).float()
    preds[1, 3] = preds[2, 19] = NAN
    valid = torch.tensor([True, True, True, True, False, True])
    return preds, gold, valid


#: (generation, reference): word 4-grams in common, a repeated n-gram (clipping), one pair with nothing
#: in common; BLEU-1..4 all differ.
PAIRS = [
    (
        "お仕事が大変だったのですね。よく頑張ってこられましたね。",
        "お仕事が大変だったのですね。今日はどんなことをお話ししたいですか？",
    ),
    (
        "ご家族とのことで悩んでいらっしゃるのですね。",
        "ご家族とのことで悩んでいらっしゃるのですね。詳しく教えていただけますか。",
    ),
    ("そうですね、そうですね、そうですね。", "そうですね。"),
    ("ありがとうございます。", "明日も来てください。"),
    ("今日はどんなことをお話ししたいですか？", "今日はどんなことをお話ししたいですか？少しずつで大丈夫ですよ。"),
]
