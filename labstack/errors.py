"""The one error type the tasks turn into a one-line message and a non-zero exit."""


class LabstackError(Exception):
    """A failure the user can act on: `str(err)` says what went wrong and what to do."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
