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


def test_the_training_bar_shows_seconds_a_step_when_a_step_takes_longer_than_one(monkeypatch):
    import io

    from kokorozoo.cli.lightning import StepsProgressBar

    monkeypatch.setattr("sys.stdout", io.StringIO())  # where Lightning's bars write
    bar = StepsProgressBar().init_train_tqdm()
    bar.reset(total=10)
    bar.start_t -= 30  # two steps in 30 seconds
    bar.update(2)
    shown = str(bar)
    bar.close()
    assert "15.00s/it" in shown and "0.07it/s" not in shown, shown
