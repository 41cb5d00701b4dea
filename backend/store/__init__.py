"""The database: the tables (models.py), the engine and its migrations (database.py, migrations/),
and the job store (jobs.py), every read and write of jobs and steps.

Imports nothing from the rest of backend: everything else builds on it."""
