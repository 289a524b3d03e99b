"""An app module whose import fails in the user's own code."""

def helper():
    raise RuntimeError("the app's own import-time bug")


helper()
