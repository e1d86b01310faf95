"""A pytest plugin for the mutation session only (``-p tests.mutation.lightning_frames`` in
pyproject.toml ``[tool.mutmut] pytest_add_cli_args``): Lightning's ``save_hyperparameters`` finds a
task's init arguments by walking the stack for frames whose code is named ``__init__``; mutmut
runs every mutated ``__init__`` as a copy named ``xǁClassǁ__init____mutmut_orig`` (or ``_N``),
called from a trampoline function, so without this a mutated task would lose its own arguments
from ``hparams`` (``max_new_tokens``, ``scoring`` ...) and every test of it would fail for that
reason alone. The copy's frame is shown to Lightning under its real name, and the trampolines'
frames between a subclass's ``__init__`` and its parent's are stepped over; nothing else changes.
"""

from __future__ import annotations

import re
import types

from lightning.pytorch.utilities import parsing
from mutmut.mutation import trampoline

_MUTMUT_INIT = re.compile(r"__init____mutmut_(orig|\d+)$")
_get_init_args = parsing._get_init_args
_collect_init_args = parsing.collect_init_args
_TRAMPOLINE_FILE = trampoline.__file__


def _get_init_args_of_mutants(frame: types.FrameType):
    if _MUTMUT_INIT.search(frame.f_code.co_name):
        frame = types.SimpleNamespace(
            f_code=frame.f_code.replace(co_name="__init__"), f_locals=frame.f_locals, f_back=frame.f_back
        )
    return _get_init_args(frame)


parsing._get_init_args = _get_init_args_of_mutants


def _collect_init_args_past_trampolines(frame: types.FrameType, path_args, inside=False, classes=()):
    while frame is not None and frame.f_code.co_filename == _TRAMPOLINE_FILE:
        frame = frame.f_back
    return _collect_init_args(frame, path_args, inside=inside, classes=classes)


# collect_init_args recurses through this module attribute, so every step skips the trampolines
parsing.collect_init_args = _collect_init_args_past_trampolines
