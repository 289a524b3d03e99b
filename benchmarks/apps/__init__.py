"""WSGI apps the benchmark serves, identical for every server it compares."""
