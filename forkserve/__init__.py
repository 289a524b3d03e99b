"""forkserve: a preforking WSGI server — a master process and N synchronous h11 workers."""

__version__ = "0.1.0"
