"""Evaluation reports: HTML pages and figures from test runs and from the KokoroChat release."""
