"""Signed webhooks (docs/api.md#webhooks): which URLs may be called (urls.py), the Standard Webhooks
signature and its secret (signing.py), and the durable outbox that turns a job's stored events into
deliveries and sends them, retried, from whichever serving process is alive (outbox.py).

May import backend.store, backend.jobs.public, backend.providers.output_urls, and the shared backend.settings,
backend.errors and backend.auth."""
