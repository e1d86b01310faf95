"""``kokorozoo chat``: you are the client, a counselor model answers, its reply streaming as it is
generated.

Each reply is prompted with the whole session so far, rendered by the one chat format and cut to
the model's length as its training cut it (:meth:`~kokorozoo.interactive.models.Speaker.prompt`);
the history already computed is reused from the previous turn's key/value cache. On a terminal
the input has a prompt and line editing; without one, each line of stdin is a client turn and each
reply one line of stdout (messages go to stderr), so a chat can be scripted.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TextIO

from kokorozoo.interactive.models import Rater, Speaker
from kokorozoo.interactive.sessions import CHAT_TOPIC, OPENING, Session, total, turn_lines
from kokorozoo.records import ITEM_NAMES

CLIENT_PROMPT, COUNSELOR_PROMPT = "client> ", "counselor> "
COMMANDS = (
    "/retry (a new reply to your last turn), /reset (start over), "
    "/save FILE (write the session as a KokoroChat JSON file), /quit, /help"
)
CTRL_C_HINT = "(Ctrl-C again or /quit to end)"


class TextStreamer:
    """Writes a reply as its text comes, as it will be saved (:func:`turn_lines`: no blank
    lines, no surrounding space). ``escape`` writes line breaks as ``\\n`` (one reply, one line)."""

    def __init__(self, out: TextIO, escape: bool = False):
        self.out, self.escape = out, escape
        self.shown = 0

    def put(self, text: str) -> None:
        """The reply so far."""
        self._show(text)

    def finish(self, text: str) -> None:
        """Show the rest of the final reply and end its line."""
        self._show(text)
        self.out.write("\n")
        self.out.flush()

    def _show(self, text: str) -> None:
        shown = "\n".join(turn_lines(text))
        new = shown[self.shown :]
        self.out.write(new.replace("\\", "\\\\").replace("\n", "\\n") if self.escape else new)
        self.out.flush()
        self.shown = len(shown)


class Chat:
    """One chat session with a counselor model (and a rater for ``/save`` with ``--rate``)."""

    def __init__(
        self,
        counselor: Speaker,
        rater: Rater | None = None,
        opening: str = OPENING,
        out: TextIO | None = None,
        err: TextIO | None = None,
        terminal: bool = False,
    ):
        self.counselor, self.rater, self.opening = counselor, rater, opening
        self.out, self.err, self.terminal = out or sys.stdout, err or sys.stderr, terminal
        self.session = self._new_session()

    def _new_session(self) -> Session:
        session = Session("chat", CHAT_TOPIC)
        if self.opening.strip():
            session.add("counselor", self.opening, _now())
        return session

    def start(self) -> None:
        if self.terminal:
            print(
                f"kokorozoo chat: you are the client; {self.counselor.source} is the counselor.\n{COMMANDS}",
                file=self.err,
            )
        self._show_opening()

    def _show_opening(self) -> None:
        if self.session.utterances:
            self._streamer().finish(self.session.turns()[0].text)

    def _streamer(self) -> TextStreamer:
        """Where the counselor's next turn is shown: after its prompt on a terminal, else one line."""
        if self.terminal:
            self.out.write(COUNSELOR_PROMPT)
        return TextStreamer(self.out, escape=not self.terminal)

    def handle(self, line: str) -> bool:
        """Act on one input line; False when the chat should end."""
        text = line.strip()
        if not text:
            return True
        if text.startswith("/"):
            return self._command(text)
        self.session.add("client", text, _now())
        self.reply()
        return True

    def reply(self) -> str:
        """Generate, stream and keep the counselor's next turn."""
        streamer = self._streamer()
        session = self.session
        [text], [session.caches["counselor"]] = self.counselor.next_turns(
            [session.turns()], [session.caches.get("counselor")], on_text=lambda _, text: streamer.put(text)
        )
        streamer.finish(text or "")
        if text is None:  # a model behind an endpoint whose request failed after its retries
            print("(the request failed after its retries: your turn is kept; write more, or /quit)", file=self.err)
            return ""
        if not session.add("counselor", text, _now()):
            print("(the counselor said nothing)", file=self.err)
        return text

    def retry(self) -> str | None:
        """Drop the counselor's reply to the client's last turn and generate another (the same
        one under greedy decoding, which the chat says)."""
        utterances = self.session.utterances
        replied = [i for i, u in enumerate(utterances) if u.role == "client"]
        if not replied or utterances[-1].role != "counselor":
            print("nothing to retry: /retry replaces the counselor's reply to your last turn", file=self.err)
            return None
        del utterances[replied[-1] + 1 :]
        self.session.caches["counselor"] = None  # it held the dropped reply's history
        if self.counselor.sampling.greedy:
            print("(greedy decoding gives the same reply; --temperature samples another)", file=self.err)
        return self.reply()

    def _command(self, text: str) -> bool:
        command, _, argument = text.partition(" ")
        if command in ("/quit", "/exit"):
            return False
        if command == "/retry":
            self.retry()
        elif command == "/reset":
            self.session = self._new_session()
            print("(a new session)", file=self.err)
            self._show_opening()
        elif command == "/save" and argument.strip():
            self.save(Path(argument.strip()))
        elif command == "/save":
            print("usage: /save FILE", file=self.err)
        elif command == "/help":
            print(COMMANDS, file=self.err)
        else:
            print(f"unknown command {command}: {COMMANDS}", file=self.err)
        return True

    def save(self, path: Path) -> None:
        """Write the session (and, with a rater, its predicted items and total)."""
        if path.suffix != ".json":
            path = path.with_suffix(path.suffix + ".json")
        self.session.id = path.stem
        items = self.rater.rate([self.session.dialogue()])[0] if self.rater else None
        about = {
            "session": "chat",
            "counselor": self.counselor.source,
            **({"scorer": self.rater.source} if self.rater else {}),
        }
        self.session.save(path, about, items)
        print(f"saved {len(self.session.turns())} turns to {path}", file=self.err)
        if items is not None:
            self.out.write(format_rating(items) + "\n")
            self.out.flush()


def format_rating(items: list[int | None]) -> str:
    """The 20 predicted items (D1..D20 with their names) and the total."""
    lines = [f"D{i:<2} {name:40} {'-' if v is None else v}" for i, (name, v) in enumerate(zip(ITEM_NAMES, items), 1)]
    score = total(items)
    lines.append(f"total {'-' if score is None else score}/100 (predicted)")
    return "\n".join(lines)


def run_chat(chat: Chat, stdin: TextIO | None = None) -> int:
    """The chat loop, until ``/quit`` or end of input. At the terminal's prompt Ctrl-C clears the
    line, as in a shell, and a second one in a row ends the chat; during a reply it ends the chat
    (:mod:`kokorozoo.cli.chat`)."""
    stdin = stdin or sys.stdin
    if chat.terminal:
        import readline  # noqa: F401 - line editing for input()
    chat.start()
    interrupted = False
    while True:
        if chat.terminal:
            try:
                line = input(CLIENT_PROMPT)
            except EOFError:
                chat.out.write("\n")
                break
            except KeyboardInterrupt:
                if interrupted:
                    chat.out.write("\n")
                    break
                interrupted = True
                chat.out.write("\n")
                print(CTRL_C_HINT, file=chat.err)
                continue
            interrupted = False
        else:
            line = stdin.readline()
            if not line:
                break
        if not chat.handle(line):
            break
    return 0


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)
