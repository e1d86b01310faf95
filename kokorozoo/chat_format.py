"""The Llama-3 chat format, the one place it is spelled: special tokens, the chat template with its
generation markers, how turns become messages, and the header and stop token ids.

Training, validation and generation all render a dialogue through :func:`chat_messages` and the
tokenizer's :data:`LLAMA3_CHAT_TEMPLATE`, and cut prompts at the headers found by
:func:`header_ids`; generation stops at :func:`stop_token_ids`. Nothing else in kokorozoo types a
special token, so a model trained here is prompted at test time with exactly the tokens it saw.
(Like a litgpt prompt style: the rendering and its stop tokens in one place.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from kokorozoo.records import Role, Turn

log = logging.getLogger(__name__)

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
END_OF_TURN = "<|eot_id|>"
#: Llama 3.1's end of a turn that hands over to a tool (ipython); kokorozoo never writes one, so
#: the tiny tokenizer lacks it, but a Llama 3.1 model (Swallow-8B) may end a reply with it.
END_OF_MESSAGE = "<|eom_id|>"
PAD = "<|finetune_right_pad_id|>"
#: The special tokens every kokorozoo tokenizer has (the tiny one is trained with exactly these).
SPECIAL_TOKENS = (BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, END_OF_TURN, PAD)
#: The tokens that end an assistant turn: Llama 3.1 ends a turn with ``<|eot_id|>`` or
#: ``<|eom_id|>``, and a text with ``<|end_of_text|>`` (Swallow-8B's generation config stops at all
#: three). A tokenizer that lacks one stops at the others (:func:`stop_token_ids`).
STOP_TOKENS = (END_OF_TURN, END_OF_MESSAGE, END_OF_TEXT)

#: The template variable naming the chat role a model speaks (default ``assistant``).
TARGET_ROLE_VARIABLE = "target_role"

#: The Llama-3 chat format with ``{% generation %}`` around each reply of the target role (the
#: ``assistant`` unless ``target_role`` says ``user``) and its ``<|eot_id|>``: what
#: ``apply_chat_template(return_assistant_tokens_mask=True)`` needs to mark the tokens a response
#: model is trained on. The roles' places never change; only which messages are marked, and which
#: header a generation prompt opens, follow the target.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- set target = " + TARGET_ROLE_VARIABLE + " | default('assistant') %}"
    "{%- for message in messages %}"
    "{{- '" + START_HEADER + "' + message['role'] + '" + END_HEADER + "\\n\\n' }}"
    "{%- if message['role'] == target %}"
    "{%- generation %}{{- message['content'] | trim + '" + END_OF_TURN + "' }}{%- endgeneration %}"
    "{%- else %}{{- message['content'] | trim + '" + END_OF_TURN + "' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '" + START_HEADER + "' + target + '" + END_HEADER + "\\n\\n' }}{%- endif %}"
)

#: KokoroChat's speakers as chat roles: the client is the ``user``, the counselor the ``assistant``.
CHAT_ROLE: dict[str, str] = {"client": "user", "counselor": "assistant"}


def chat_messages(turns: Sequence[Turn], system_prompt: str | None = None) -> list[dict[str, str]]:
    """The chat-template messages for ``turns``: client -> ``user``, counselor -> ``assistant``.

    This is the only place turns become messages; pass a prefix ``turns[:t]`` for a generation
    prompt and the whole list for training.
    """
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": CHAT_ROLE[turn.role], "content": turn.text} for turn in turns]
    return messages


def render(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], target: Role = "counselor"
) -> tuple[list[int], list[int]]:
    """The token ids of ``messages`` through the tokenizer's chat template, and the mask of the
    tokens the template marks as the ``target`` speaker's output (its text and ``<|eot_id|>``).
    ``target`` is a KokoroChat role: a client model learns the ``user`` messages."""
    encoded = tokenizer.apply_chat_template(
        messages,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        **{TARGET_ROLE_VARIABLE: CHAT_ROLE[target]},
    )
    return list(encoded["input_ids"]), list(encoded["assistant_masks"])


def header_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """The ids of the tokens around a message's role name (``<|start_header_id|>``,
    ``<|end_header_id|>``): where each message starts, and where its content starts."""
    return tokenizer.convert_tokens_to_ids(START_HEADER), tokenizer.convert_tokens_to_ids(END_HEADER)


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids of the :data:`STOP_TOKENS` the tokenizer has (Llama-3.1's ``<|eot_id|>``,
    ``<|eom_id|>`` and ``<|end_of_text|>``; a token it lacks, which it maps to None or its unknown
    token, is left out); the tokenizer's EOS for a model with none of them."""
    stop = [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]
    return [t for t in stop if t is not None and t != tokenizer.unk_token_id] or [tokenizer.eos_token_id]


def ensure_assistant_mask_template(tokenizer: PreTrainedTokenizerBase, model: str) -> None:
    """Training masks come from ``{% generation %}`` in the chat template; the Llama-3 templates
    shipped with hub models (Swallow's included) lack it, so a Llama-3 tokenizer gets
    :data:`LLAMA3_CHAT_TEMPLATE` (the same rendering, with the markers). So does one whose
    template marks only the assistant (no ``target_role``, e.g. a model cached by an older
    kokorozoo): the rendering is the same, and it can also mark a client model's turns."""
    template = tokenizer.chat_template
    if isinstance(template, str) and "endgeneration" in template and TARGET_ROLE_VARIABLE in template:
        return
    vocab = tokenizer.get_vocab()
    if all(token in vocab for token in (START_HEADER, END_HEADER, END_OF_TURN)):
        log.info("Using the Llama-3 chat template with assistant-mask markers for %s", model)
        tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    else:
        log.warning("The chat template of %s cannot mark assistant tokens (no {%% generation %%})", model)
