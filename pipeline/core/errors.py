"""affectflow's exception types: every bad input names the item and the cause."""


class AffectflowError(Exception):
    """Base class of affectflow's own errors."""


class MediaError(AffectflowError):
    """A media file that cannot be decoded (missing, empty, truncated, not media, no such stream)."""

    def __init__(self, path, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{path}: {cause}")
