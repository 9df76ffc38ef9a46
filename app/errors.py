"""Domain errors. No web framework imports here: app/api/errors.py maps these to statuses."""

from __future__ import annotations

import copy


class ServeError(Exception):
    """Base class of every error the service reports to a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def about_image(exc: ServeError, index: int) -> ServeError:
    """A copy of `exc` (same type and fields) whose message says which image of a
    multi-image request it is about: "image <index>: <message>"."""
    out = copy.copy(exc)
    out.message = f"image {index}: {exc.message}"
    out.args = (out.message,)
    return out


class InvalidInput(ServeError):
    """The request or one of its images cannot be used (400)."""


class PayloadTooLarge(ServeError):
    """The body, an image or the number of images is above a configured limit (413)."""


class UnsupportedMediaType(ServeError):
    """The request's Content-Type is not one the endpoint reads (415)."""


class ModelNotFound(ServeError):
    """No model (or version) of that name is served (404)."""


class ModelNotReady(ServeError):
    """The model exists but is not loaded, failed to load, or is shutting down (503)."""


class QueueFull(ServeError):
    """The model's bounded queue is full: retry later (503 + Retry-After)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ServeError):
    """The request's deadline passed before its result was ready (504)."""


class InferenceError(ServeError):
    """The backend failed while running a batch (500); other batches are unaffected."""


class ModelControlDisabled(ServeError):
    """Load / unload asked while the model control mode does not allow them (403)."""


class ModelLoadFailed(ServeError):
    """A load of the model repository failed; what served before still serves (400)."""


class Unauthorized(ServeError):
    """Missing or wrong bearer token (401)."""
