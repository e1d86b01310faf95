"""The splits and the label masks on small synthetic data, in milliseconds (issue 17).

tests/data/test_splits.py and tests/data/test_encoding.py check the same on the real KokoroChat
files and the session's tiny tokenizer; these use made-up dialogues with scores at every subset
boundary and a tokenizer learnt from a few sentences, so that the mutation session can run them
for every mutant, and they pin each rule exactly: which scores go where, how many dialogues each
part gets, which tokens carry a label, where a window or a prompt is cut.
"""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from kokorozoo.backbone import TinyConfig
from kokorozoo.backbone.tiny import train_tokenizer
from kokorozoo.chat_format import LLAMA3_CHAT_TEMPLATE, chat_messages
from kokorozoo.data.dialogue import Turn
from kokorozoo.data.encoding import (
    IGNORE_INDEX,
    dialogue_windows,
    encode_dialogue,
    generation_prompt,
    next_turn_prompt,
    per_turn_samples,
)
from kokorozoo.data.records import Dialogue, Feedback, Topic, Utterance
from kokorozoo.data.score_format import format_scores
from kokorozoo.errors import UsageError
from kokorozoo.data.splits import (
    in_subset,
    response_split,
    score_split,
    tokenizer_texts,
    training_dialogues,
)

# -- splits ---------------------------------------------------------------------------------------

#: The subset each score belongs to: test >= 99; low < 70; high 70-98; full <= 98; all.
MEMBERSHIP = {
    0: {"low", "full", "all"},
    69: {"low", "full", "all"},
    70: {"high", "full", "all"},
    98: {"high", "full", "all"},
    99: {"test", "all"},
    100: {"test", "all"},
}


def make_dialogue(dialogue_id: str, score: int, text: str = "", client: int = 1, counselor: int = 2) -> Dialogue:
    when = datetime(2024, 1, 1)
    feedback = Feedback(int(dialogue_id), when, client, counselor, score, (3,) * 20, False, False, False)
    utterances = (Utterance("counselor", when, f"{dialogue_id}-a{text}"), Utterance("client", when, f"{dialogue_id}-b"))
    return Dialogue(dialogue_id, utterances, Topic("", "", ""), feedback)


def corpus(n: int = 200) -> list[Dialogue]:
    """``n`` dialogues, ids 1..n, scores cycling over every subset boundary, in shuffled order;
    clients with 1 to 7 sessions each; the test dialogues (scored 99 or more) with counselors
    50-53, who also held a few other sessions, the rest with counselors 1-28."""
    scores = sorted(MEMBERSHIP)

    def counselor(i: int) -> int:
        if i % 6 in (4, 5) or i % 29 == 0:  # the test sessions, and a few others of the same counselors
            return 50 + i % 4
        return 1 + i % 28

    dialogues = [
        make_dialogue(str(i), scores[i % len(scores)], client=i // 4 + i % 3, counselor=counselor(i))
        for i in range(1, n + 1)
    ]
    random.Random(3).shuffle(dialogues)
    return dialogues


def ids(dialogues) -> list[str]:
    return [d.id for d in dialogues]


def in_id_order(dialogues) -> bool:
    return ids(dialogues) == sorted(ids(dialogues), key=int)


@pytest.mark.parametrize("score", sorted(MEMBERSHIP))
def test_in_subset_at_every_boundary(score):
    assert {s for s in ("test", "low", "high", "full", "all") if in_subset(score, s)} == MEMBERSHIP[score]


def test_unknown_subsets_are_errors():
    with pytest.raises(ValueError, match="unknown subset 'mid': expected one of all, low, high, full, test"):
        in_subset(50, "mid")
    with pytest.raises(ValueError, match="unknown response subset 'all': expected low, high or full"):
        response_split(corpus(), "all")


@pytest.mark.parametrize("subset", ["low", "high", "full"])
def test_response_split_parts(subset):
    dialogues = corpus()
    split = response_split(dialogues, subset, seed=5)
    pool = {d.id for d in dialogues if subset in MEMBERSHIP[d.score]}
    assert set(ids(split.train)) | set(ids(split.val)) == pool and not set(ids(split.train)) & set(ids(split.val))
    assert len(split.val) == round(len(pool) * 0.1)
    assert ids(split.test) == sorted((d.id for d in dialogues if d.score >= 99), key=int)
    assert all(in_id_order(part) for part in (split.train, split.val, split.test))
    assert split.sizes() == {"train": len(split.train), "val": len(split.val), "test": len(split.test)}


def test_response_split_depends_on_the_seed_only():
    dialogues = corpus()
    a = response_split(dialogues, "full", seed=5)
    assert ids(response_split(list(reversed(dialogues)), "full", seed=5).val) == ids(a.val)
    assert ids(response_split(dialogues, "full", seed=6).val) != ids(a.val)
    # the seed draws the validation part: a shuffle of the id-sorted pool by random.Random(seed)
    pool = sorted((d.id for d in dialogues if d.score < 99), key=int)
    random.Random(5).shuffle(pool)
    assert set(ids(a.val)) == set(pool[: len(a.val)])


def test_split_defaults_are_the_papers():
    """Kokoro-High and seed 0 for response generation, seed 0 for score prediction and the tokenizer."""
    dialogues = corpus()
    a, b = response_split(dialogues), response_split(dialogues, "high", 0)
    assert (ids(a.train), ids(a.val), ids(a.test)) == (ids(b.train), ids(b.val), ids(b.test))
    c, d = score_split(dialogues), score_split(dialogues, 0)
    assert (ids(c.train), ids(c.val), ids(c.test)) == (ids(d.train), ids(d.val), ids(d.test))
    assert tokenizer_texts(dialogues, n_dialogues=5) == tokenizer_texts(dialogues, n_dialogues=5, seed=0)


@pytest.mark.parametrize("n, sizes", [(200, (160, 20, 20)), (95, (75, 10, 10)), (104, (84, 10, 10))])
def test_score_split_is_8_1_1_of_everything(n, sizes):
    dialogues = corpus(n)
    split = score_split(dialogues, seed=2)
    assert (len(split.train), len(split.val), len(split.test)) == sizes
    parts = [set(ids(split.train)), set(ids(split.val)), set(ids(split.test))]
    assert set.union(*parts) == set(ids(dialogues)) and sum(map(len, parts)) == n
    assert all(in_id_order(part) for part in (split.train, split.val, split.test))


def test_score_split_test_part_is_fixed_and_the_seed_draws_validation():
    dialogues = corpus()
    a, b = score_split(dialogues, seed=0), score_split(list(reversed(dialogues)), seed=0)
    assert (ids(a.train), ids(a.val), ids(a.test)) == (ids(b.train), ids(b.val), ids(b.test))
    others = [score_split(dialogues, seed) for seed in (1, 2)]
    assert all(ids(s.test) == ids(a.test) for s in others)
    assert len({tuple(ids(s.val)) for s in [a, *others]}) == 3
    # the test tenth: the id-sorted dialogues shuffled by the fixed seed 20250601, then the first 20
    everything = sorted(ids(dialogues), key=int)
    random.Random(20250601).shuffle(everything)
    assert set(ids(a.test)) == set(everything[:20])
    rest = sorted(everything[20:], key=int)
    random.Random(1).shuffle(rest)
    assert set(ids(others[0].val)) == set(rest[:20])


def test_training_dialogues_leave_out_both_test_sets():
    dialogues = corpus()
    pool = training_dialogues(dialogues)
    held_out = set(ids(score_split(dialogues).test)) | {d.id for d in dialogues if d.score >= 99}
    assert ids(pool) == sorted(set(ids(dialogues)) - held_out, key=int)


def test_tokenizer_texts_sample_training_dialogues():
    dialogues = corpus()
    pool = training_dialogues(dialogues)
    assert tokenizer_texts(dialogues) == [u.text for d in pool for u in d.utterances]
    texts = tokenizer_texts(dialogues, n_dialogues=5, seed=4)
    chosen = sorted(random.Random(4).sample(pool, 5), key=lambda d: int(d.id))
    assert texts == [u.text for d in chosen for u in d.utterances]
    assert texts == tokenizer_texts(list(reversed(dialogues)), n_dialogues=5, seed=4)
    assert tokenizer_texts(dialogues, n_dialogues=len(pool), seed=4) == tokenizer_texts(dialogues)


def reference_group_take(dialogues, speaker, seed, n_target):
    """Whole speakers in a seeded order (speakers sorted, then shuffled), each taken when that
    brings the count closer to ``n_target``: the rule speaker-disjoint splits promise."""
    speakers = sorted({speaker(d) for d in dialogues})
    random.Random(seed).shuffle(speakers)
    taken = []
    for key in speakers:
        group = [d.id for d in dialogues if speaker(d) == key]
        if abs(n_target - len(taken) - len(group)) < n_target - len(taken):
            taken += group
    return set(taken)


def client(d):
    return d.feedback.client_id


def counselor(d):
    return d.feedback.counselor_id


@pytest.mark.parametrize("seed", [0, 3])
def test_client_disjoint_score_split(seed):
    dialogues = corpus()
    split = score_split(dialogues, seed, split="client_disjoint")
    parts = [split.train, split.val, split.test]
    assert sorted(i for part in parts for i in ids(part)) == sorted(ids(dialogues)) and all(map(in_id_order, parts))
    clients = [{client(d) for d in part} for part in parts]
    assert not (clients[0] & clients[1] or clients[0] & clients[2] or clients[1] & clients[2])
    assert set(ids(split.test)) == reference_group_take(dialogues, client, 20250601, 20)
    rest = [d for d in dialogues if d.id not in set(ids(split.test))]
    assert set(ids(split.val)) == reference_group_take(rest, client, seed, 20)
    assert abs(len(split.test) - 20) <= 3 and abs(len(split.val) - 20) <= 3  # groups of up to 7
    same = score_split(list(reversed(dialogues)), seed, split="client_disjoint")
    assert (ids(same.train), ids(same.val), ids(same.test)) == (ids(split.train), ids(split.val), ids(split.test))


def test_a_speaker_that_would_overshoot_as_far_as_it_falls_short_is_not_taken():
    """Five clients of four sessions and a part of 2: taking one leaves the part 2 off, as not
    taking it does, so none is taken (a speaker is taken only when that brings the part closer)."""
    dialogues = [make_dialogue(str(i), 50, client=i % 5) for i in range(1, 21)]
    split = score_split(dialogues, 0, split="client_disjoint")
    assert (split.test, split.val, len(split.train)) == ([], [], 20)


def test_client_disjoint_test_part_is_fixed_across_seeds():
    dialogues = corpus()
    a, b = score_split(dialogues, 0, split="client_disjoint"), score_split(dialogues, 1, split="client_disjoint")
    assert ids(a.test) == ids(b.test) and ids(a.val) != ids(b.val)


@pytest.mark.parametrize("subset", ["high", "full"])
def test_counselor_disjoint_response_split(subset):
    dialogues = corpus()
    split = response_split(dialogues, subset, seed=2, split="counselor_disjoint")
    assert ids(split.test) == ids(response_split(dialogues, subset, seed=2).test)
    test_counselors = {counselor(d) for d in split.test}
    pool = [d for d in dialogues if subset in MEMBERSHIP[d.score] and counselor(d) not in test_counselors]
    assert len(pool) < sum(subset in MEMBERSHIP[d.score] for d in dialogues)  # test counselors' other sessions
    assert sorted(ids(split.train) + ids(split.val)) == sorted(ids(pool)) and split.val
    assert set(ids(split.val)) == reference_group_take(pool, counselor, 2, round(len(pool) * 0.1))
    assert not {counselor(d) for d in split.val} & {counselor(d) for d in split.train}
    assert in_id_order(split.train) and in_id_order(split.val)


def test_the_random_split_is_the_default_and_unknown_kinds_are_errors():
    dialogues = corpus()
    a, b = score_split(dialogues, 1), score_split(dialogues, 1, split="random")
    assert (ids(a.train), ids(a.val)) == (ids(b.train), ids(b.val))
    c, d = response_split(dialogues, "full", 1), response_split(dialogues, "full", 1, split="random")
    assert (ids(c.train), ids(c.val)) == (ids(d.train), ids(d.val))
    with pytest.raises(ValueError, match="^unknown score split 'client': expected random or client_disjoint$"):
        score_split(dialogues, split="client")
    with pytest.raises(ValueError, match="^unknown response split 'client_disjoint': expected random or counselor_disjoint$"):
        response_split(dialogues, split="client_disjoint")


# -- the score answer format ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 19, 21])
def test_an_answer_needs_exactly_20_scores(n):
    with pytest.raises(ValueError, match=f"^expected 20 scores, got {n}$"):
        format_scores([3] * n)


# -- label masks, windows and prompts ------------------------------------------------------------

EOT = "<|eot_id|>"
TURNS = [
    Turn("counselor", "こんにちは。今日はどうされましたか？", 1),
    Turn("client", "仕事のことで悩んでいます。", 1),
    Turn("counselor", "お仕事のことで悩んでいらっしゃるのですね。", 1),
    Turn("client", "上司との関係がうまくいきません。\n毎日がつらいです。", 2),
    Turn("counselor", "毎日つらい思いをされているのですね。", 1),
    Turn("client", "はい。", 1),
    Turn("counselor", "もう少し詳しく教えていただけますか？", 1),
]
TARGETS = [2, 4, 6]  # counselor turns with history


@pytest.fixture(scope="module")
def tokenizer():
    """A tokenizer with the Llama-3 chat template, learnt from the turns in well under a second."""
    return train_tokenizer([t.text for t in TURNS] * 3, TinyConfig(vocab_size=400))


@pytest.fixture(scope="module")
def encoded(tokenizer):
    return encode_dialogue(tokenizer, TURNS)


def runs(tokenizer, labels: list[int]) -> list[str]:
    """Each contiguous run of labelled tokens, decoded."""
    found, current = [], []
    for label in [*labels, IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            found.append(tokenizer.decode(current, skip_special_tokens=False))
            current = []
    return found


def rendering(tokenizer, turns, **kwargs) -> list[int]:
    return list(tokenizer.apply_chat_template(chat_messages(turns), tokenize=True, return_dict=True, **kwargs)["input_ids"])


def test_encoding_finds_every_turn_in_one_rendering(tokenizer, encoded):
    ids = rendering(tokenizer, TURNS)
    assert encoded.ids == ids and encoded.targets == TARGETS
    assert encoded.ids[: encoded.prefix] == [tokenizer.bos_token_id] and encoded.starts[0] == encoded.prefix
    assert encoded.ends == [*encoded.starts[1:], len(ids)]
    for t, turn in enumerate(TURNS):
        marked = [encoded.assistant_mask[p] for p in range(encoded.starts[t], encoded.ends[t])]
        assert any(marked) == (turn.role == "counselor")
        assert encoded.starts[t] == (len(rendering(tokenizer, TURNS[:t])) if t else encoded.prefix)
        if turn.role == "counselor":  # its text and end-of-turn, from content_starts to its end
            content = tokenizer.decode(ids[encoded.content_starts[t] : encoded.ends[t]], skip_special_tokens=False)
            assert content == turn.text + EOT


def test_a_system_prompt_moves_the_turns_but_is_never_a_turn(tokenizer, encoded):
    with_system = encode_dialogue(tokenizer, TURNS, system_prompt="あなたはカウンセラーです。")
    assert with_system.prefix > encoded.prefix and len(with_system.starts) == len(TURNS)
    shift = with_system.prefix - encoded.prefix
    assert with_system.starts == [s + shift for s in encoded.starts]
    assert with_system.content_starts == [s + shift for s in encoded.content_starts]
    assert "カウンセラーです" in tokenizer.decode(with_system.ids[: with_system.prefix])


def test_a_dialogue_without_turns_is_all_prefix(tokenizer):
    encoded = encode_dialogue(tokenizer, [], system_prompt="あなたはカウンセラーです。")
    assert encoded.prefix == len(encoded.ids) > 1 and encoded.starts == encoded.targets == []
    assert dialogue_windows(encoded, 4096) == []


def retemplated(old: str, new: str):
    tokenizer = train_tokenizer([t.text for t in TURNS], TinyConfig(vocab_size=300))
    assert old in LLAMA3_CHAT_TEMPLATE
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE.replace(old, new)
    return tokenizer


def test_a_template_without_generation_markers_is_an_error():
    plain = retemplated("{%- endgeneration %}", "")
    plain.chat_template = plain.chat_template.replace("{%- generation %}", "")
    with pytest.raises(ValueError, match="^the chat template marks no assistant tokens: it needs {% generation %} markers$"):
        encode_dialogue(plain, TURNS)


def test_a_template_that_loses_a_message_is_an_error():
    dropping = retemplated("for message in messages", "for message in messages[1:]")
    with pytest.raises(ValueError, match="^the chat template produced 6 message headers for 7 messages$"):
        encode_dialogue(dropping, TURNS)


def test_one_window_labels_every_target_and_nothing_else(tokenizer, encoded):
    [(ids, labels)] = dialogue_windows(encoded, 4096)
    assert ids == encoded.ids and len(labels) == len(ids)
    assert runs(tokenizer, labels) == [TURNS[t].text + EOT for t in TARGETS]
    assert all(labels[p] in (IGNORE_INDEX, ids[p]) for p in range(len(ids)))


def window_tests(tokenizer, encoded, windows, max_length):
    header = tokenizer.convert_tokens_to_ids("<|start_header_id|>")
    trained = []
    for ids, labels in windows:
        assert len(ids) == len(labels) <= max_length
        assert ids[: encoded.prefix] == encoded.ids[: encoded.prefix] and ids[encoded.prefix] == header
        trained += runs(tokenizer, labels)
    assert trained == [TURNS[t].text + EOT for t in TARGETS]  # each target once, in order


def test_windows_cut_long_dialogues_at_turn_boundaries(tokenizer, encoded):
    whole = len(encoded.ids)
    longest = max(encoded.ends[t] - encoded.starts[t] for t in TARGETS)
    for max_length in range(encoded.prefix + 2 * longest, whole + 1):  # every target fits half a window
        windows = dialogue_windows(encoded, max_length)
        window_tests(tokenizer, encoded, windows, max_length)
        assert (len(windows) == 1) == (max_length == whole)
    # a window starts at the earliest turn that keeps its first target within half a window, and
    # takes every further target that ends inside it
    max_length = encoded.prefix + 2 * (encoded.ends[4] - encoded.starts[3])
    windows = dialogue_windows(encoded, max_length)
    assert [ids for ids, _ in windows] == [
        encoded.ids[: encoded.prefix] + encoded.ids[encoded.starts[first] : encoded.ends[last]]
        for first, last in [(1, 4), (5, 6)]
    ]
    assert [runs(tokenizer, labels) for _, labels in windows] == [
        [TURNS[2].text + EOT, TURNS[4].text + EOT],
        [TURNS[6].text + EOT],
    ]


def test_windows_follow_the_half_window_rule_after_a_long_prefix(tokenizer):
    """A window starts at the earliest turn that keeps its first target within half of the room
    left after the prefix (here a long system prompt), so the prefix is not counted twice."""
    encoded = encode_dialogue(tokenizer, TURNS, system_prompt="あなたはカウンセラーです。" * 4)
    assert encoded.prefix > 20
    longest = max(encoded.ends[t] - encoded.starts[t] for t in TARGETS)
    for max_length in range(encoded.prefix + 2 * longest, len(encoded.ids) + 1):
        half = (max_length - encoded.prefix) // 2
        pending, expected = list(TARGETS), []
        while pending:
            end = encoded.ends[pending[0]]
            first = min(i for i, start in enumerate(encoded.starts) if end - start <= half)
            covered = [t for t in pending if encoded.ends[t] - encoded.starts[first] <= max_length - encoded.prefix]
            expected.append(encoded.ids[: encoded.prefix] + encoded.ids[encoded.starts[first] : encoded.ends[covered[-1]]])
            pending = pending[len(covered) :]
        assert [ids for ids, _ in dialogue_windows(encoded, max_length)] == expected, max_length


def test_a_target_longer_than_half_a_window_is_still_trained(tokenizer, encoded):
    max_length = encoded.prefix + 2 * (encoded.ends[2] - encoded.starts[2]) - 2
    windows = dialogue_windows(encoded, max_length)
    assert runs(tokenizer, [l for _, labels in windows for l in labels]) == [TURNS[t].text + EOT for t in TARGETS]
    # turn 2 with the latest whole turns that fit the whole window
    assert windows[0][0] == encoded.ids[: encoded.prefix] + encoded.ids[encoded.starts[1] : encoded.ends[2]]


def test_a_target_longer_than_the_window_trains_its_tail_in_either_mode(tokenizer, encoded):
    """A target turn (not the last) whose text does not fit is cut inside the turn: its latest
    tokens are trained, in both modes, and the targets after it are still trained."""
    max_length = encoded.prefix + (encoded.ends[2] - encoded.content_starts[2]) - 2
    tail = encoded.ids[encoded.ends[2] - (max_length - encoded.prefix) : encoded.ends[2]]
    for samples in (dialogue_windows(encoded, max_length), per_turn_samples(encoded, max_length)):
        ids, labels = samples[0]
        assert ids == encoded.ids[: encoded.prefix] + tail
        assert labels == [IGNORE_INDEX] * encoded.prefix + tail
        assert len(samples) == len(TARGETS) and all(runs(tokenizer, labels) for _, labels in samples)


def labelled_tokens(samples) -> list[list[int]]:
    """Each contiguous run of labelled tokens, as ids."""
    found = []
    for _, labels in samples:
        current = []
        for label in [*labels, IGNORE_INDEX]:
            if label != IGNORE_INDEX:
                current.append(label)
            elif current:
                found.append(current)
                current = []
    return found


@pytest.mark.parametrize("system_prompt", [None, "あなたはカウンセラーです。"])
@pytest.mark.parametrize("target", ["counselor", "client"])
def test_dialogue_and_per_turn_modes_train_the_same_tokens(tokenizer, system_prompt, target):
    """At every window length: each target's text and end-of-turn, or its latest tokens when they
    do not fit, once, in order, and the same in both modes (ResponseDataModule's promise)."""
    encoded = encode_dialogue(tokenizer, TURNS, system_prompt, target)
    for max_length in range(encoded.prefix + 1, len(encoded.ids) + 2):
        budget = max_length - encoded.prefix
        expected = [encoded.ids[max(encoded.content_starts[t], encoded.ends[t] - budget) : encoded.ends[t]]
                    for t in encoded.targets]
        windows, samples = dialogue_windows(encoded, max_length), per_turn_samples(encoded, max_length)
        assert labelled_tokens(windows) == labelled_tokens(samples) == expected, max_length
        assert all(len(ids) == len(labels) <= max_length for ids, labels in windows + samples), max_length


def test_the_last_turn_longer_than_the_window_trains_its_tail(tokenizer, encoded):
    max_length = encoded.prefix + (encoded.ends[6] - encoded.content_starts[6]) - 2  # not even its text fits
    ids, labels = dialogue_windows(encoded, max_length)[-1]
    tail = encoded.ids[encoded.ends[6] - (max_length - encoded.prefix) : encoded.ends[6]]
    assert ids == encoded.ids[: encoded.prefix] + tail
    assert labels == [IGNORE_INDEX] * encoded.prefix + tail  # all of it is the counselor's text


def test_per_turn_samples_are_the_papers_one_per_target(tokenizer, encoded):
    samples = per_turn_samples(encoded, 4096)
    assert [ids for ids, _ in samples] == [encoded.ids[: encoded.ends[t]] for t in TARGETS]
    assert [runs(tokenizer, labels) for _, labels in samples] == [[TURNS[t].text + EOT] for t in TARGETS]
    short = per_turn_samples(encoded, encoded.prefix + encoded.ends[6] - encoded.starts[5])
    assert short[-1][0] == encoded.ids[: encoded.prefix] + encoded.ids[encoded.starts[5] : encoded.ends[6]]
    assert runs(tokenizer, short[-1][1]) == [TURNS[6].text + EOT]


def test_generation_prompts_are_the_chat_templates(tokenizer, encoded):
    for t in TARGETS:
        prompt, first = generation_prompt(encoded, t, 4096)
        assert prompt == rendering(tokenizer, TURNS[:t], add_generation_prompt=True) and first == 0
    # cut to the latest whole turns that fit: turn 5 and the header of turn 6
    end = encoded.content_starts[6]
    max_length = encoded.prefix + end - encoded.starts[5]
    assert generation_prompt(encoded, 6, max_length) == (
        encoded.ids[: encoded.prefix] + encoded.ids[encoded.starts[5] : end], 5
    )
    # no whole history turn fits: the latest tokens of the history, cut inside turn 5
    assert generation_prompt(encoded, 6, max_length - 1) == (
        encoded.ids[: encoded.prefix] + encoded.ids[encoded.starts[5] + 1 : end], 5
    )
    # only the header fits: the header alone, the turn itself named as the first one kept
    header = end - encoded.starts[6]
    assert generation_prompt(encoded, 6, encoded.prefix + header) == (
        encoded.ids[: encoded.prefix] + encoded.ids[encoded.starts[6] : end], 6
    )


@pytest.mark.parametrize("system_prompt", [None, "あなたはカウンセラーです。"])
@pytest.mark.parametrize("target", ["counselor", "client"])
def test_a_prompt_ends_with_the_turns_header_and_keeps_the_latest_history_that_fits(tokenizer, system_prompt, target):
    """At every prompt length that holds the prefix and the turn's header: the prefix, then the
    latest history, then the header; whole turns when at least one fits, else the latest tokens of
    the history up to the length (never the header alone when there is room for more)."""
    encoded = encode_dialogue(tokenizer, TURNS, system_prompt, target)
    for t in encoded.targets:
        end = encoded.content_starts[t]
        header = encoded.ids[encoded.starts[t] : end]
        for max_length in range(encoded.prefix + len(header), encoded.prefix + end + 2):
            budget = max_length - encoded.prefix
            prompt, first = generation_prompt(encoded, t, max_length)
            kept = len(prompt) - encoded.prefix
            assert prompt[: encoded.prefix] == encoded.ids[: encoded.prefix], max_length
            assert prompt[encoded.prefix :] == encoded.ids[end - kept : end] and prompt[-len(header) :] == header
            whole = [i for i in range(t) if end - encoded.starts[i] <= budget]
            if whole:  # cut at the earliest turn boundary that fits
                assert (kept, first) == (end - encoded.starts[whole[0]], whole[0]), max_length
            elif budget > len(header):  # cut inside the turn before
                assert (kept, first) == (budget, t - 1), max_length
            else:  # room for the header alone
                assert (kept, first) == (len(header), t), max_length


@pytest.mark.parametrize("system_prompt", [None, "あなたはカウンセラーです。"])
def test_the_opening_turns_prompt_is_the_prefix_and_its_header(tokenizer, system_prompt):
    """A session's first turn has no history: the prompt is the prefix and the header at any
    length that holds them (nothing of the prefix is repeated to fill the room)."""
    encoded = encode_dialogue(tokenizer, TURNS, system_prompt)
    opening = encoded.ids[: encoded.content_starts[0]]
    for max_length in (len(opening), len(opening) + 1, 4096):
        assert generation_prompt(encoded, 0, max_length) == (opening, 0)
        assert next_turn_prompt(tokenizer, [], "counselor", max_length, system_prompt) == opening


@pytest.mark.parametrize("system_prompt", [None, "あなたはカウンセラーです。"])
def test_a_prompt_length_without_room_for_the_header_is_an_error(tokenizer, system_prompt):
    encoded = encode_dialogue(tokenizer, TURNS, system_prompt)
    for t in TARGETS:
        need = encoded.prefix + encoded.content_starts[t] - encoded.starts[t]
        for max_length in (need - 1, encoded.prefix, encoded.prefix - 1, 1):
            message = (f"^a prompt of at most {max_length} tokens cannot hold the {encoded.prefix} tokens before the"
                       f" first turn and the {need - encoded.prefix}-token header of turn {t}: it needs at least {need}$")
            with pytest.raises(UsageError, match=message):
                generation_prompt(encoded, t, max_length)
            with pytest.raises(UsageError, match=message):
                next_turn_prompt(tokenizer, TURNS[:t], "counselor", max_length, system_prompt)


def test_a_client_model_learns_and_is_prompted_for_the_client_turns(tokenizer):
    encoded = encode_dialogue(tokenizer, TURNS, target="client")
    assert encoded.targets == [1, 3, 5]
    [(ids, labels)] = dialogue_windows(encoded, 4096)
    assert runs(tokenizer, labels) == [TURNS[t].text + EOT for t in (1, 3, 5)]
    for t in (1, 3, 5):
        prompt, _ = generation_prompt(encoded, t, 4096)
        assert tokenizer.decode(encoded.ids[len(prompt) : encoded.ends[t]], skip_special_tokens=False) == TURNS[t].text + EOT


def test_a_template_without_markers_for_the_client_is_an_error():
    plain = retemplated("{%- endgeneration %}", "")
    plain.chat_template = plain.chat_template.replace("{%- generation %}", "")
    message = (r"^the chat template marks no user tokens: it needs {% generation %} markers around the"
               r" target_role's messages \(see kokorozoo.chat_format\)$")
    with pytest.raises(ValueError, match=message):
        encode_dialogue(plain, TURNS, target="client")


@pytest.mark.parametrize("system_prompt", [None, "あなたはカウンセラーです。"])
@pytest.mark.parametrize("target, turns", [("counselor", TARGETS), ("client", [1, 3, 5])])
def test_the_next_turn_prompt_is_the_training_dialogues_prompt(tokenizer, system_prompt, target, turns):
    encoded = encode_dialogue(tokenizer, TURNS, system_prompt, target)
    for t in turns:  # the whole history, the latest turn of it, only the turn's header
        header = encoded.content_starts[t] - encoded.starts[t]
        for max_length in (4096, encoded.prefix + encoded.content_starts[t] - encoded.starts[t - 1], encoded.prefix + header):
            expected = generation_prompt(encoded, t, max_length)[0]
            assert next_turn_prompt(tokenizer, TURNS[:t], target, max_length, system_prompt) == expected


def test_a_long_targets_window_also_takes_the_short_targets_after_it(tokenizer):
    """A target longer than half a window gets the latest whole turns that fit the whole window,
    and, like any window, every further target that ends inside it: not a window of its own."""
    turns = [
        Turn("counselor", "こんにちは。", 1),
        Turn("client", "上司との関係がうまくいきません。毎日がつらいです。" * 3, 1),
        Turn("counselor", "毎日つらい思いをされているのですね。お仕事のことで悩んでいらっしゃるのですね。" * 2, 1),
        Turn("client", "はい。", 1),
        Turn("counselor", "はい。", 1),
    ]
    encoded = encode_dialogue(tokenizer, turns)
    long_target = encoded.ends[2] - encoded.starts[2]
    max_length = encoded.prefix + long_target + (encoded.ends[4] - encoded.starts[3])  # room for turns 2-4
    assert 2 * long_target > max_length - encoded.prefix  # turn 2 is longer than half a window
    assert encoded.ends[2] - encoded.starts[1] > max_length - encoded.prefix  # turn 1 does not fit with it
    [(ids, labels)] = dialogue_windows(encoded, max_length)
    assert ids == encoded.ids[: encoded.prefix] + encoded.ids[encoded.starts[2] : encoded.ends[4]]
    assert runs(tokenizer, labels) == [turns[2].text + EOT, turns[4].text + EOT]
