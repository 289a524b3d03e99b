"""A small Django site for the sizing sheet: what a typical view costs a forkserve worker.

``/`` renders a template (a page with a table of 20 rows) through Django's URL routing and the
usual middleware stack — the CPU a plain Django page costs. ``/wait`` first waits 20 ms, as a
view waits on its database or an API, then renders the same page: the case where a worker's
core idles and more workers or ``--threads`` pay off. Settings are made here (no project
directory, no database), so ``benchmarks.apps.django_site:application`` is all a server needs.
"""

from __future__ import annotations

import time

import django
from django.conf import settings

WAIT_SECONDS = 0.020

settings.configure(
    DEBUG=False,
    SECRET_KEY="benchmark-only-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.contenttypes"],
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ],
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [], "APP_DIRS": False,
                "OPTIONS": {"loaders": [("django.template.loaders.locmem.Loader", {"page.html": """<!doctype html>
<html><head><title>{{ title }}</title></head><body><h1>{{ title }}</h1>
<table>{% for row in rows %}<tr><td>{{ row.id }}</td><td>{{ row.name|title }}</td><td>{{ row.price|floatformat:2 }}</td></tr>{% endfor %}</table>
</body></html>"""})]}}],
    USE_TZ=True,
)
django.setup()

from django.shortcuts import render  # after settings.configure: Django needs its settings first
from django.urls import path

ROWS = [{"id": number, "name": f"item number {number}", "price": number * 1.25} for number in range(20)]


def page(request):
    """A page rendered from a template: routing, middleware, template engine."""
    return render(request, "page.html", {"title": "Sizing", "rows": ROWS})


def waiting_page(request):
    """The same page after a 20 ms wait (a database query, an API call)."""
    time.sleep(WAIT_SECONDS)
    return page(request)


urlpatterns = [path("", page), path("wait", waiting_page)]

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
