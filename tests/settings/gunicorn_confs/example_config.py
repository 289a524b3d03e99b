# gunicorn's documented example configuration (examples/example_config.py in gunicorn's
# repository), setting for setting, with our own comments: forkserve must run it as it is.
# tests/settings/test_gunicorn_configs.py serves with it and checks what each setting became.

# Sockets: one TCP address and gunicorn's default listen queue.
bind = '127.0.0.1:8000'
backlog = 2048

# Workers: one sync worker with gunicorn's defaults for connections, timeout and keep-alive.
workers = 1
worker_class = 'sync'
worker_connections = 1000
timeout = 30
keepalive = 2

# gunicorn's line tracer, off (forkserve has none; off asks for nothing).
spew = False

# Process: stay in the foreground, two environment variables, no pid file, same user and umask.
daemon = False
raw_env = [
    'DJANGO_SECRET_KEY=something',
    'SPAM=eggs',
]
pidfile = None
umask = 0
user = None
group = None
tmp_upload_dir = None

# Logs: errors to stderr, access lines to stdout in the combined format.
errorlog = '-'
loglevel = 'info'
accesslog = '-'
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

# Process titles: the default.
proc_name = None


# Hooks, with the bodies the example gives them.

def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)


def pre_fork(server, worker):
    pass


def pre_exec(server):
    server.log.info("Forked child, re-executing.")


def when_ready(server):
    server.log.info("Server is ready. Spawning workers")


def worker_int(worker):
    worker.log.info("worker received INT or QUIT signal")

    # every thread's stack, to the debug log
    import sys
    import threading
    import traceback
    id2name = {th.ident: th.name for th in threading.enumerate()}
    code = []
    for threadId, stack in sys._current_frames().items():
        code.append(f"\n# Thread: {id2name.get(threadId, '')}({threadId})")
        for filename, lineno, name, line in traceback.extract_stack(stack):
            code.append(f'File: "{filename}", line {lineno}, in {name}')
            if line:
                code.append(f"  {line.strip()}")
    worker.log.debug("\n".join(code))


def worker_abort(worker):
    worker.log.info("worker received SIGABRT signal")


def ssl_context(conf, default_ssl_context_factory):
    import ssl

    # gunicorn's own context (certificates from the TLS settings), then stricter: TLS 1.3 only,
    # and another certificate for one server name.
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_3

    def sni_callback(socket, server_hostname, context):
        if server_hostname == "foo.127.0.0.1.nip.io":
            new_context = default_ssl_context_factory()
            new_context.load_cert_chain(certfile="foo.pem", keyfile="foo-key.pem")
            socket.context = new_context

    context.sni_callback = sni_callback

    return context
