"""A miniature, dependency-free web framework modelled on Django's request flow.

It exists so the demo application drives a WSGI server through the same
motions a real Django project would: lazy body parsing, middleware chains,
streaming and file responses, and exceptions that escape to the server.
"""
