"""The error every layer of the listening test raises for a refusal the client must see.

Kept free of Flask and the database so that the flow core (``listening_test.flow``), the
store and the platforms raise the same error the web layer turns into JSON
(``web.security.register_error_handlers``; the shapes are in API.md).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A refusal with an HTTP status and a stable machine-readable code (API.md).

    ``status``: the HTTP status (4xx, or 503); ``code``: e.g. ``"trial_not_found"``;
    ``message``: one line for people; ``extra``: further JSON fields of the error
    object (``fields``, ``stage``, ``retry_after_s``, ...).
    """

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
