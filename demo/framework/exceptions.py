"""Exceptions that views and the framework raise to ask for an error page.

Each carries the HTTP status the handler should answer with, so the handler
needs a single rule ("HttpError -> its status page") instead of a table.
"""


class HttpError(Exception):
    """Base for errors that map straight onto an HTTP error response."""

    status_code = 500


class Http404(HttpError):
    """The requested resource does not exist."""

    status_code = 404


class BadRequest(HttpError):
    """The request was malformed (bad query parameter, broken multipart...)."""

    status_code = 400


class RequestTooLarge(HttpError):
    """The request body exceeds a configured size limit."""

    status_code = 413
