"""The progress bar: silent in logs, a bar with rate and time left on a terminal."""


def test_progress_is_silent_off_a_terminal_and_a_bar_on_one(monkeypatch):
    import io

    from kokorozoo.progress import progress

    items = [1, 2, 3]
    assert progress(items, "off a terminal") is items  # logs get nothing
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    monkeypatch.setattr("sys.stderr", terminal)
    assert list(progress(items, "on a terminal", unit="run")) == items
    shown = terminal.getvalue()
    assert "on a terminal" in shown and "3/3" in shown and "run/s" in shown and "<" in shown  # rate, time left
