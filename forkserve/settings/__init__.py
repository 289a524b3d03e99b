"""Settings: the table of every setting, and resolving values from all sources.

The bottom layer: imports nothing else from forkserve (only ``forkserve.__version__``), so every
other folder may use it. ``registry`` is the table (name, flags, validator, default, help,
section) that drives the command line, the config file, the environment and the docs;
``resolve`` applies the sources in order; ``configfile`` reads ``forkserve.conf.py``; ``cpus``
works out the default worker count; ``gunicorn_compat`` holds each of gunicorn's settings with
forkserve's answer (same, mapped, different, or what to use instead); ``docs`` regenerates the
docs from the tables (``python -m forkserve.settings.docs --write``).
"""
