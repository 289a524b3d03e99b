"""One connection's HTTP/1.1 life on top of h11.

- :mod:`.head` reads the request head under limits and a deadline, and makes the checks h11 does
  not make;
- :mod:`.body` is the request body as ``wsgi.input``;
- :mod:`.response` frames and writes the response (the head is built here, not by h11);
- :mod:`.connection` ties them together: the keep-alive loop, the app call, error replies.
"""
