"""Talking to trained models: ``kokorozoo chat`` (you are the client, a counselor model answers)
and ``kokorozoo simulate`` (a counselor model and a client model hold whole sessions, a score model
rates them).

- :mod:`~kokorozoo.interactive.models`: an exported model (or a checkpoint) as a speaker that
  gives the next turn of many conversations at once, and a score model as a rater;
- :mod:`~kokorozoo.interactive.sessions`: a conversation as a KokoroChat record, how a counselor
  closes, and the file it is saved as;
- :mod:`~kokorozoo.interactive.chat` and :mod:`~kokorozoo.interactive.simulate`: the two commands;
  :mod:`kokorozoo.cli.chat` and :mod:`kokorozoo.cli.simulate` wire them into ``kokorozoo``.

Nothing here renders a dialogue or decodes on its own: prompts come from
:func:`kokorozoo.data.encoding.next_turn_prompt` (the one chat format, cut as training cut it) and
tokens from :func:`kokorozoo.generation.generate_continuing`.
"""
