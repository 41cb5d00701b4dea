"""What an operator sees: JSON log lines (logs.py), Prometheus metrics (metrics.py), a line per HTTP
request (request_log.py) and per job transition (job_observer.py).

May import backend.store, backend.events and the queue protocol (backend.jobs.queue); it is handed the services it
watches (never the System)."""
