"""The demo's URL configuration (``settings.ROOT_URLCONF``)."""

from . import views
from .framework.urls import path

urlpatterns = [
    path("", views.index, name="index"),
    path("hello", views.hello, name="hello"),
    path("hello/<str:name>", views.hello_name, name="hello-name"),
    path("json", views.json_view, name="json"),
    path("echo", views.echo, name="echo"),
    path("upload", views.upload, name="upload"),
    path("stream", views.stream, name="stream"),
    path("download", views.download, name="download"),
    path("cookies", views.cookies, name="cookies"),
    path("sleep", views.slow_view_sleeping, name="sleep"),
    path("redirect", views.redirect_view, name="redirect"),
    path("error", views.error, name="error"),
    path("crash", views.crash, name="crash"),
    path("environ", views.environ_view, name="environ"),
]
