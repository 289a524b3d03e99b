"""Side-by-side benchmarks of forkserve against gunicorn's sync worker (``python -m benchmarks``)."""
