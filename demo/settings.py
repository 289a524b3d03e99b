"""Settings for the demo application.

The framework reads these through ``demo.framework.conf.settings`` on every
access, so tests can monkeypatch values on this module directly.
"""

DEBUG = False

# Outermost first: each entry wraps everything listed after it.
MIDDLEWARE = [
    "demo.middleware.TimingMiddleware",
    "demo.middleware.SecurityHeadersMiddleware",
]

ROOT_URLCONF = "demo.urls"

DEFAULT_CHARSET = "utf-8"

# Largest request body accepted at all (declared or streamed); larger -> 413.
MAX_UPLOAD_SIZE = 256 * 1024 * 1024

# Largest body that may be read into memory via request.body / form fields.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# Uploaded files bigger than this are spooled from memory to a temp file.
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
