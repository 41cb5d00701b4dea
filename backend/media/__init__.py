"""Generated images and videos: the `MediaStore` interface (store.py), the local disk (local.py) and
S3 (s3.py) stores, the checks a file passes before it is decoded (checks.py), and the retention
that deletes old media (retention.py).

May import backend.store, backend.events, backend.settings and backend.jobs.public (retention announces what it
removed); the choice of store from the settings is the wiring's (backend/system.py)."""
