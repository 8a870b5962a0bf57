"""The encoders' error, importable without torch (the pre-flight checks raise it too)."""

from crossfuse.errors import UserError


class EncoderUnavailable(UserError, RuntimeError):
    """The encoder's model cannot be loaded here; the message says how to provide it."""
