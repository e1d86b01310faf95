"""The backbone's one error type, shared by loading and the tiny model."""


class BackboneError(ValueError):
    """A backbone setting that cannot work (unknown model, quantization, dtype): one clear line."""
