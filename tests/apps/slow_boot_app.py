"""An app whose import takes SLOW_BOOT_SECONDS (default 1), then leaves a marker file named after
the worker's pid in SLOW_BOOT_MARKERS (when set): readiness must wait for the import to finish."""

import os
import time

from simple_apps import hello as application

time.sleep(float(os.environ.get("SLOW_BOOT_SECONDS", "1")))
if os.environ.get("SLOW_BOOT_MARKERS"):
    with open(os.path.join(os.environ["SLOW_BOOT_MARKERS"], str(os.getpid())), "w"):
        pass

__all__ = ["application"]
