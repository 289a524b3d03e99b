"""HTTP: one request's life on top of h11, and what turns it into a WSGI call.

The rule of this folder: it imports nothing from the process side (``forkserve.process`` and
everything above it: ``worker``, ``stats``, ``master``, ``cli``), only ``forkserve.settings`` and
itself. It logs to the error log by name (``logging.getLogger("forkserve.error")``, set up by
``forkserve.process.logs``), and where it must report to its process (the scoreboard slot) or
know about its listener, it depends on the small protocols in :mod:`.protocols`. Parsing and
framing take bytes and sockets they are handed, never find them.

- :mod:`.head` reads the request head under limits and a deadline, and makes the checks h11 does
  not make; ordinary heads take a one-pass reader first (its fast path, or :mod:`.llhttp_head`
  with ``http_parser = 'httptools'``), and :mod:`.requesthead` is what a checked head is;
- :mod:`.body` is the request body as ``wsgi.input``;
- :mod:`.response` frames and writes the response (the head is built here, not by h11);
- :mod:`.errors` and :mod:`.dates` are the refusals and the Date header;
- :mod:`.environ` is the PEP 3333 environ; :mod:`.proxy` decides whom to believe about the client;
  :mod:`.requestid` gives each request its id; :mod:`.accesslog` formats its access log line;
- :mod:`.connection` ties them together: the keep-alive loop, the app call, error replies.
"""
