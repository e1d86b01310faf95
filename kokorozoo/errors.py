"""The error a user's mistake raises anywhere in kokorozoo (a setting that cannot work, a file
that cannot be used): the CLI reports it in one line and exits 2, never with a traceback."""


class UsageError(ValueError):
    """A user's mistake that the CLI reports in one line."""
