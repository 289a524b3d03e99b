"""WSGI entry point: ``forkserve demo.wsgi:application``."""

from demo.framework.wsgi import get_wsgi_application

application = get_wsgi_application()
