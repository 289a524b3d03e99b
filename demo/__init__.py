"""A Django-shaped demo application used to exercise the forkserve WSGI server.

Run it with ``forkserve demo.wsgi:application``.
"""
