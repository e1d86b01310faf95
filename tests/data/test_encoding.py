"""Label masks, windows and prompts, checked turn by turn by decoding the trained tokens: first on
made-up turns and a tokenizer learnt from them in well under a second (each rule pinned exactly:
which tokens carry a label, where a window or a prompt is cut), then on a real dialogue with the
session's tiny tokenizer."""

import pytest

from kokorozoo.backbone import TinyConfig
from kokorozoo.backbone.tiny import train_tokenizer
from kokorozoo.chat_format import LLAMA3_CHAT_TEMPLATE, chat_messages
from kokorozoo.data import Turn, dialogue_turns
from kokorozoo.data.encoding import (
    IGNORE_INDEX,
    dialogue_windows,
    encode_dialogue,
    generation_prompt,
    next_turn_prompt,
    per_turn_samples,
)
from kokorozoo.errors import UsageError

EOT = "<|eot_id|>"


def labelled_runs(tokenizer, labels):
    """Decode each contiguous run of labelled tokens."""
    runs, current = [], []
    for label in labels + [IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs.append(tokenizer.decode(current, skip_special_tokens=False))
            current = []
    return runs


# -- on made-up turns --------------------------------------------------------------------------

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
def turns_encoded(tokenizer):
    return encode_dialogue(tokenizer, TURNS)


def rendering(tokenizer, turns, **kwargs) -> list[int]:
    return list(
        tokenizer.apply_chat_template(chat_messages(turns), tokenize=True, return_dict=True, **kwargs)["input_ids"]
    )


@pytest.mark.mutation
def test_encoding_finds_every_turn_in_one_rendering(tokenizer, turns_encoded):
    ids = rendering(tokenizer, TURNS)
    assert turns_encoded.ids == ids and turns_encoded.targets == TARGETS
    assert (
        turns_encoded.ids[: turns_encoded.prefix] == [tokenizer.bos_token_id]
        and turns_encoded.starts[0] == turns_encoded.prefix
    )
    assert turns_encoded.ends == [*turns_encoded.starts[1:], len(ids)]
    for t, turn in enumerate(TURNS):
        marked = [turns_encoded.assistant_mask[p] for p in range(turns_encoded.starts[t], turns_encoded.ends[t])]
        assert any(marked) == (turn.role == "counselor")
        assert turns_encoded.starts[t] == (len(rendering(tokenizer, TURNS[:t])) if t else turns_encoded.prefix)
        if turn.role == "counselor":  # its text and end-of-turn, from content_starts to its end
            content = tokenizer.decode(
                ids[turns_encoded.content_starts[t] : turns_encoded.ends[t]], skip_special_tokens=False
            )
            assert content == turn.text + EOT


@pytest.mark.mutation
def test_a_system_prompt_moves_the_turns_but_is_never_a_turn(tokenizer, turns_encoded):
    with_system = encode_dialogue(tokenizer, TURNS, system_prompt="あなたはカウンセラーです。")
    assert with_system.prefix > turns_encoded.prefix and len(with_system.starts) == len(TURNS)
    shift = with_system.prefix - turns_encoded.prefix
    assert with_system.starts == [s + shift for s in turns_encoded.starts]
    assert with_system.content_starts == [s + shift for s in turns_encoded.content_starts]
    assert "カウンセラーです" in tokenizer.decode(with_system.ids[: with_system.prefix])


@pytest.mark.mutation
def test_a_dialogue_without_turns_is_all_prefix(tokenizer):
    turns_encoded = encode_dialogue(tokenizer, [], system_prompt="あなたはカウンセラーです。")
    assert turns_encoded.prefix == len(turns_encoded.ids) > 1 and turns_encoded.starts == turns_encoded.targets == []
    assert dialogue_windows(turns_encoded, 4096) == []


def retemplated(old: str, new: str):
    tokenizer = train_tokenizer([t.text for t in TURNS], TinyConfig(vocab_size=300))
    assert old in LLAMA3_CHAT_TEMPLATE
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE.replace(old, new)
    return tokenizer


@pytest.mark.mutation
def test_a_template_without_generation_markers_is_an_error():
    plain = retemplated("{%- endgeneration %}", "")
    plain.chat_template = plain.chat_template.replace("{%- generation %}", "")
    with pytest.raises(
        ValueError, match="^the chat template marks no assistant tokens: it needs {% generation %} markers$"
    ):
        encode_dialogue(plain, TURNS)


@pytest.mark.mutation
def test_a_template_that_loses_a_message_is_an_error():
    dropping = retemplated("for message in messages", "for message in messages[1:]")
    with pytest.raises(ValueError, match="^the chat template produced 6 message headers for 7 messages$"):
        encode_dialogue(dropping, TURNS)


@pytest.mark.mutation
def test_one_window_labels_every_target_and_nothing_else(tokenizer, turns_encoded):
    [(ids, labels)] = dialogue_windows(turns_encoded, 4096)
    assert ids == turns_encoded.ids and len(labels) == len(ids)
    assert labelled_runs(tokenizer, labels) == [TURNS[t].text + EOT for t in TARGETS]
    assert all(labels[p] in (IGNORE_INDEX, ids[p]) for p in range(len(ids)))


def window_tests(tokenizer, turns_encoded, windows, max_length):
    header = tokenizer.convert_tokens_to_ids("<|start_header_id|>")
    trained = []
    for ids, labels in windows:
        assert len(ids) == len(labels) <= max_length
        assert (
            ids[: turns_encoded.prefix] == turns_encoded.ids[: turns_encoded.prefix]
            and ids[turns_encoded.prefix] == header
        )
        trained += labelled_runs(tokenizer, labels)
    assert trained == [TURNS[t].text + EOT for t in TARGETS]  # each target once, in order


@pytest.mark.mutation
def test_windows_cut_long_dialogues_at_turn_boundaries(tokenizer, turns_encoded):
    whole = len(turns_encoded.ids)
    longest = max(turns_encoded.ends[t] - turns_encoded.starts[t] for t in TARGETS)
    for max_length in range(turns_encoded.prefix + 2 * longest, whole + 1):  # every target fits half a window
        windows = dialogue_windows(turns_encoded, max_length)
        window_tests(tokenizer, turns_encoded, windows, max_length)
        assert (len(windows) == 1) == (max_length == whole)
    # a window starts at the earliest turn that keeps its first target within half a window, and
    # takes every further target that ends inside it
    max_length = turns_encoded.prefix + 2 * (turns_encoded.ends[4] - turns_encoded.starts[3])
    windows = dialogue_windows(turns_encoded, max_length)
    assert [ids for ids, _ in windows] == [
        turns_encoded.ids[: turns_encoded.prefix]
        + turns_encoded.ids[turns_encoded.starts[first] : turns_encoded.ends[last]]
        for first, last in [(1, 4), (5, 6)]
    ]
    assert [labelled_runs(tokenizer, labels) for _, labels in windows] == [
        [TURNS[2].text + EOT, TURNS[4].text + EOT],
        [TURNS[6].text + EOT],
    ]


@pytest.mark.mutation
def test_windows_follow_the_half_window_rule_after_a_long_prefix(tokenizer):
    """A window starts at the earliest turn that keeps its first target within half of the room
    left after the prefix (here a long system prompt), so the prefix is not counted twice."""
    turns_encoded = encode_dialogue(tokenizer, TURNS, system_prompt="あなたはカウンセラーです。" * 4)
    assert turns_encoded.prefix > 20
    longest = max(turns_encoded.ends[t] - turns_encoded.starts[t] for t in TARGETS)
    for max_length in range(turns_encoded.prefix + 2 * longest, len(turns_encoded.ids) + 1):
        half = (max_length - turns_encoded.prefix) // 2
        pending, expected = list(TARGETS), []
        while pending:
            end = turns_encoded.ends[pending[0]]
            first = min(i for i, start in enumerate(turns_encoded.starts) if end - start <= half)
            covered = [
                t
                for t in pending
                if turns_encoded.ends[t] - turns_encoded.starts[first] <= max_length - turns_encoded.prefix
            ]
            expected.append(
                turns_encoded.ids[: turns_encoded.prefix]
                + turns_encoded.ids[turns_encoded.starts[first] : turns_encoded.ends[covered[-1]]]
            )
            pending = pending[len(covered) :]
        assert [ids for ids, _ in dialogue_windows(turns_encoded, max_length)] == expected, max_length


@pytest.mark.mutation
def test_a_target_longer_than_half_a_window_is_still_trained(tokenizer, turns_encoded):
    max_length = turns_encoded.prefix + 2 * (turns_encoded.ends[2] - turns_encoded.starts[2]) - 2
    windows = dialogue_windows(turns_encoded, max_length)
    assert labelled_runs(tokenizer, [label for _, labels in windows for label in labels]) == [
        TURNS[t].text + EOT for t in TARGETS
    ]
    # turn 2 with the latest whole turns that fit the whole window
    assert (
        windows[0][0]
        == turns_encoded.ids[: turns_encoded.prefix]
        + turns_encoded.ids[turns_encoded.starts[1] : turns_encoded.ends[2]]
    )


@pytest.mark.mutation
def test_a_target_longer_than_the_window_trains_its_tail_in_either_mode(tokenizer, turns_encoded):
    """A target turn (not the last) whose text does not fit is cut inside the turn: its latest
    tokens are trained, in both modes, and the targets after it are still trained."""
    max_length = turns_encoded.prefix + (turns_encoded.ends[2] - turns_encoded.content_starts[2]) - 2
    tail = turns_encoded.ids[turns_encoded.ends[2] - (max_length - turns_encoded.prefix) : turns_encoded.ends[2]]
    for samples in (dialogue_windows(turns_encoded, max_length), per_turn_samples(turns_encoded, max_length)):
        ids, labels = samples[0]
        assert ids == turns_encoded.ids[: turns_encoded.prefix] + tail
        assert labels == [IGNORE_INDEX] * turns_encoded.prefix + tail
        assert len(samples) == len(TARGETS) and all(labelled_runs(tokenizer, labels) for _, labels in samples)


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


@pytest.mark.mutation
@pytest.mark.parametrize("system_prompt", [None, "あなたはカウンセラーです。"])
@pytest.mark.parametrize("target", ["counselor", "client"])
def test_dialogue_and_per_turn_modes_train_the_same_tokens(tokenizer, system_prompt, target):
    """At every window length: each target's text and end-of-turn, or its latest tokens when they
    do not fit, once, in order, and the same in both modes (ResponseDataModule's promise)."""
    turns_encoded = encode_dialogue(tokenizer, TURNS, system_prompt, target)
    for max_length in range(turns_encoded.prefix + 1, len(turns_encoded.ids) + 2):
        budget = max_length - turns_encoded.prefix
        expected = [
            turns_encoded.ids[
                max(turns_encoded.content_starts[t], turns_encoded.ends[t] - budget) : turns_encoded.ends[t]
            ]
            for t in turns_encoded.targets
        ]
        windows, samples = dialogue_windows(turns_encoded, max_length), per_turn_samples(turns_encoded, max_length)
        assert labelled_tokens(windows) == labelled_tokens(samples) == expected, max_length
        assert all(len(ids) == len(labels) <= max_length for ids, labels in windows + samples), max_length


@pytest.mark.mutation
def test_the_last_turn_longer_than_the_window_trains_its_tail(tokenizer, turns_encoded):
    max_length = (
        turns_encoded.prefix + (turns_encoded.ends[6] - turns_encoded.content_starts[6]) - 2
    )  # not even its text fits
    ids, labels = dialogue_windows(turns_encoded, max_length)[-1]
    tail = turns_encoded.ids[turns_encoded.ends[6] - (max_length - turns_encoded.prefix) : turns_encoded.ends[6]]
    assert ids == turns_encoded.ids[: turns_encoded.prefix] + tail
    assert labels == [IGNORE_INDEX] * turns_encoded.prefix + tail  # all of it is the counselor's text


@pytest.mark.mutation
def test_per_turn_samples_are_the_papers_one_per_target(tokenizer, turns_encoded):
    samples = per_turn_samples(turns_encoded, 4096)
    assert [ids for ids, _ in samples] == [turns_encoded.ids[: turns_encoded.ends[t]] for t in TARGETS]
    assert [labelled_runs(tokenizer, labels) for _, labels in samples] == [[TURNS[t].text + EOT] for t in TARGETS]
    short = per_turn_samples(turns_encoded, turns_encoded.prefix + turns_encoded.ends[6] - turns_encoded.starts[5])
    assert (
        short[-1][0]
        == turns_encoded.ids[: turns_encoded.prefix]
        + turns_encoded.ids[turns_encoded.starts[5] : turns_encoded.ends[6]]
    )
    assert labelled_runs(tokenizer, short[-1][1]) == [TURNS[6].text + EOT]


@pytest.mark.mutation
def test_generation_prompts_are_the_chat_templates(tokenizer, turns_encoded):
    for t in TARGETS:
        prompt, first = generation_prompt(turns_encoded, t, 4096)
        assert prompt == rendering(tokenizer, TURNS[:t], add_generation_prompt=True) and first == 0
    # cut to the latest whole turns that fit: turn 5 and the header of turn 6
    end = turns_encoded.content_starts[6]
    max_length = turns_encoded.prefix + end - turns_encoded.starts[5]
    assert generation_prompt(turns_encoded, 6, max_length) == (
        turns_encoded.ids[: turns_encoded.prefix] + turns_encoded.ids[turns_encoded.starts[5] : end],
        5,
    )
    # no whole history turn fits: the latest tokens of the history, cut inside turn 5
    assert generation_prompt(turns_encoded, 6, max_length - 1) == (
        turns_encoded.ids[: turns_encoded.prefix] + turns_encoded.ids[turns_encoded.starts[5] + 1 : end],
        5,
    )
    # only the header fits: the header alone, the turn itself named as the first one kept
    header = end - turns_encoded.starts[6]
    assert generation_prompt(turns_encoded, 6, turns_encoded.prefix + header) == (
        turns_encoded.ids[: turns_encoded.prefix] + turns_encoded.ids[turns_encoded.starts[6] : end],
        6,
    )


@pytest.mark.mutation
@pytest.mark.parametrize("system_prompt", [None, "あなたはカウンセラーです。"])
@pytest.mark.parametrize("target", ["counselor", "client"])
def test_a_prompt_ends_with_the_turns_header_and_keeps_the_latest_history_that_fits(tokenizer, system_prompt, target):
    """At every prompt length that holds the prefix and the turn's header: the prefix, then the
    latest history, then the header; whole turns when at least one fits, else the latest tokens of
    the history up to the length (never the header alone when there is room for more)."""
    turns_encoded = encode_dialogue(tokenizer, TURNS, system_prompt, target)
    for t in turns_encoded.targets:
        end = turns_encoded.content_starts[t]
        header = turns_encoded.ids[turns_encoded.starts[t] : end]
        for max_length in range(turns_encoded.prefix + len(header), turns_encoded.prefix + end + 2):
            budget = max_length - turns_encoded.prefix
            prompt, first = generation_prompt(turns_encoded, t, max_length)
            kept = len(prompt) - turns_encoded.prefix
            assert prompt[: turns_encoded.prefix] == turns_encoded.ids[: turns_encoded.prefix], max_length
            assert (
                prompt[turns_encoded.prefix :] == turns_encoded.ids[end - kept : end]
                and prompt[-len(header) :] == header
            )
            whole = [i for i in range(t) if end - turns_encoded.starts[i] <= budget]
            if whole:  # cut at the earliest turn boundary that fits
                assert (kept, first) == (end - turns_encoded.starts[whole[0]], whole[0]), max_length
            elif budget > len(header):  # cut inside the turn before
                assert (kept, first) == (budget, t - 1), max_length
            else:  # room for the header alone
                assert (kept, first) == (len(header), t), max_length


@pytest.mark.mutation
@pytest.mark.parametrize("system_prompt", [None, "あなたはカウンセラーです。"])
def test_the_opening_turns_prompt_is_the_prefix_and_its_header(tokenizer, system_prompt):
    """A session's first turn has no history: the prompt is the prefix and the header at any
    length that holds them (nothing of the prefix is repeated to fill the room)."""
    turns_encoded = encode_dialogue(tokenizer, TURNS, system_prompt)
    opening = turns_encoded.ids[: turns_encoded.content_starts[0]]
    for max_length in (len(opening), len(opening) + 1, 4096):
        assert generation_prompt(turns_encoded, 0, max_length) == (opening, 0)
        assert next_turn_prompt(tokenizer, [], "counselor", max_length, system_prompt) == opening


@pytest.mark.mutation
@pytest.mark.parametrize("system_prompt", [None, "あなたはカウンセラーです。"])
def test_a_prompt_length_without_room_for_the_header_is_an_error(tokenizer, system_prompt):
    turns_encoded = encode_dialogue(tokenizer, TURNS, system_prompt)
    for t in TARGETS:
        need = turns_encoded.prefix + turns_encoded.content_starts[t] - turns_encoded.starts[t]
        for max_length in (need - 1, turns_encoded.prefix, turns_encoded.prefix - 1, 1):
            message = (
                f"^a prompt of at most {max_length} tokens cannot hold the {turns_encoded.prefix} tokens before the"
                f" first turn and the {need - turns_encoded.prefix}-token header of turn {t}: it needs at least {need}$"
            )
            with pytest.raises(UsageError, match=message):
                generation_prompt(turns_encoded, t, max_length)
            with pytest.raises(UsageError, match=message):
                next_turn_prompt(tokenizer, TURNS[:t], "counselor", max_length, system_prompt)


@pytest.mark.mutation
def test_a_client_model_learns_and_is_prompted_for_the_client_turns(tokenizer):
    turns_encoded = encode_dialogue(tokenizer, TURNS, target="client")
    assert turns_encoded.targets == [1, 3, 5]
    [(ids, labels)] = dialogue_windows(turns_encoded, 4096)
    assert labelled_runs(tokenizer, labels) == [TURNS[t].text + EOT for t in (1, 3, 5)]
    for t in (1, 3, 5):
        prompt, _ = generation_prompt(turns_encoded, t, 4096)
        assert (
            tokenizer.decode(turns_encoded.ids[len(prompt) : turns_encoded.ends[t]], skip_special_tokens=False)
            == TURNS[t].text + EOT
        )


@pytest.mark.mutation
def test_a_template_without_markers_for_the_client_is_an_error():
    plain = retemplated("{%- endgeneration %}", "")
    plain.chat_template = plain.chat_template.replace("{%- generation %}", "")
    message = (
        r"^the chat template marks no user tokens: it needs {% generation %} markers around the"
        r" target_role's messages \(see kokorozoo.chat_format\)$"
    )
    with pytest.raises(ValueError, match=message):
        encode_dialogue(plain, TURNS, target="client")


@pytest.mark.mutation
@pytest.mark.parametrize("system_prompt", [None, "あなたはカウンセラーです。"])
@pytest.mark.parametrize("target, turns", [("counselor", TARGETS), ("client", [1, 3, 5])])
def test_the_next_turn_prompt_is_the_training_dialogues_prompt(tokenizer, system_prompt, target, turns):
    turns_encoded = encode_dialogue(tokenizer, TURNS, system_prompt, target)
    for t in turns:  # the whole history, the latest turn of it, only the turn's header
        header = turns_encoded.content_starts[t] - turns_encoded.starts[t]
        for max_length in (
            4096,
            turns_encoded.prefix + turns_encoded.content_starts[t] - turns_encoded.starts[t - 1],
            turns_encoded.prefix + header,
        ):
            expected = generation_prompt(turns_encoded, t, max_length)[0]
            assert next_turn_prompt(tokenizer, TURNS[:t], target, max_length, system_prompt) == expected


@pytest.mark.mutation
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
    turns_encoded = encode_dialogue(tokenizer, turns)
    long_target = turns_encoded.ends[2] - turns_encoded.starts[2]
    max_length = (
        turns_encoded.prefix + long_target + (turns_encoded.ends[4] - turns_encoded.starts[3])
    )  # room for turns 2-4
    assert 2 * long_target > max_length - turns_encoded.prefix  # turn 2 is longer than half a window
    assert (
        turns_encoded.ends[2] - turns_encoded.starts[1] > max_length - turns_encoded.prefix
    )  # turn 1 does not fit with it
    [(ids, labels)] = dialogue_windows(turns_encoded, max_length)
    assert (
        ids
        == turns_encoded.ids[: turns_encoded.prefix]
        + turns_encoded.ids[turns_encoded.starts[2] : turns_encoded.ends[4]]
    )
    assert labelled_runs(tokenizer, labels) == [turns[2].text + EOT, turns[4].text + EOT]


# -- on the real data ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dialogue(kokorochat):
    return kokorochat.by_id()["10"]


@pytest.fixture(scope="module")
def encoded(tiny_tokenizer, dialogue):
    return encode_dialogue(tiny_tokenizer, dialogue_turns(dialogue))


def test_only_counselor_text_and_its_end_of_turn_are_trained(tiny_tokenizer, dialogue, encoded):
    turns = dialogue_turns(dialogue)
    [(ids, labels)] = dialogue_windows(encoded, 4096)
    assert ids == encoded.ids[: encoded.ends[encoded.targets[-1]]]  # up to the last counselor turn
    runs = labelled_runs(tiny_tokenizer, labels)
    expected = [turns[t].text + EOT for t in range(1, len(turns)) if turns[t].role == "counselor"]
    assert runs == expected  # turn by turn: the counselor's words and <|eot_id|>, nothing else
    assert turns[0].role == "counselor" and turns[0].text + EOT not in runs[:1]  # no history: no loss
    for t, turn in enumerate(turns):
        span = labels[encoded.starts[t] : encoded.ends[t]]
        if turn.role == "client" or t == 0:
            assert set(span) <= {IGNORE_INDEX}, f"turn {t} ({turn.role}) has trained tokens"


def test_system_prompt_is_context_not_target(tiny_tokenizer, dialogue):
    encoded = encode_dialogue(tiny_tokenizer, dialogue_turns(dialogue), system_prompt="あなたはカウンセラーです。")
    [(ids, labels)] = dialogue_windows(encoded, 4096)
    assert "あなたはカウンセラーです。" in tiny_tokenizer.decode(ids[: encoded.prefix])
    assert all("カウンセラーです" not in r for r in labelled_runs(tiny_tokenizer, labels))


@pytest.mark.parametrize("max_length", [256, 512, 1024])
def test_windows_cover_each_target_once_with_recent_history(tiny_tokenizer, encoded, max_length):
    windows = dialogue_windows(encoded, max_length)
    assert len(windows) > 1
    trained = []
    header = tiny_tokenizer.convert_tokens_to_ids("<|start_header_id|>")
    for ids, labels in windows:
        assert len(ids) <= max_length
        assert ids[: encoded.prefix] == encoded.ids[: encoded.prefix]  # every window starts like the dialogue
        assert ids[encoded.prefix] == header  # ... and then at a turn boundary
        trained += labelled_runs(tiny_tokenizer, labels)
    full = labelled_runs(tiny_tokenizer, dialogue_windows(encoded, 4096)[0][1])
    assert trained == full
    tokens = sum(len(ids) for ids, _ in windows)
    assert tokens < 2.5 * len(encoded.ids)


def test_per_turn_samples_train_the_same_tokens(tiny_tokenizer, encoded):
    samples = per_turn_samples(encoded, 4096)
    assert len(samples) == len(encoded.targets)
    per_turn = [r for _, labels in samples for r in labelled_runs(tiny_tokenizer, labels)]
    assert per_turn == labelled_runs(tiny_tokenizer, dialogue_windows(encoded, 4096)[0][1])
    for (ids, _labels), t in zip(samples, encoded.targets):
        assert ids == encoded.ids[: encoded.ends[t]]  # the whole history, nothing after the turn


def test_generation_prompt_is_the_chat_template_prompt(tiny_tokenizer, dialogue, encoded):
    turns = dialogue_turns(dialogue)
    for t in encoded.targets[:5]:
        prompt, first = generation_prompt(encoded, t, 4096)
        expected = tiny_tokenizer.apply_chat_template(
            chat_messages(turns[:t]), add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        assert prompt == list(expected) and first == 0


def test_generation_prompt_keeps_the_latest_history(encoded):
    t = encoded.targets[-1]
    prompt, first = generation_prompt(encoded, t, 300)
    assert len(prompt) <= 300 and first > 0
    assert (
        prompt[-(encoded.content_starts[t] - encoded.starts[first]) :]
        == encoded.ids[encoded.starts[first] : encoded.content_starts[t]]
    )
