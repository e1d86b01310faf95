"""Evaluation: reports (HTML pages and figures from test runs and from the KokoroChat release) and
the non-neural baselines every model is compared with (:mod:`.baselines`)."""
