"""Running jobs: what a user can do with them (service.py), the queue protocol (queue.py) and its two
queues, this process's runner (runner.py) and procrastinate's workers (procrastinate_queue.py), the
pipeline that runs a job's steps (pipeline.py), the request a job starts from (request.py) and the
job's public data (public.py).

May import backend.store, backend.events, backend.media, backend.providers, backend.uploads, and the shared
backend.settings, backend.errors, backend.auth and backend.rate_limit."""
