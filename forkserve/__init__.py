"""forkserve: a preforking WSGI server — a master process and N synchronous h11 workers.

One folder per role, each importing only those below it: ``cli`` > ``master`` > ``worker`` |
``stats`` > ``process`` > ``http`` > ``settings`` (README "Architecture"; pyproject.toml's
import contracts check it). Package ``__init__`` files import nothing.
"""

__version__ = "0.1.0"
