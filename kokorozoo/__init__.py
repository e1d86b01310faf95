"""kokorozoo: a PyTorch Lightning model zoo for Japanese counseling dialogue models (KokoroChat)."""

__version__ = "0.1.0"
