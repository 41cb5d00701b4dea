"""What the tests (and the benchmarks) share, apart from pytest's fixtures (tests/conftest.py):

- `server`: the server under test (`python -m app serve` in a subprocess), process helpers, `ROOT`;
- `streams`: /ws clients that await events; `jobs`: job bodies and comparisons;
- `browser`: how Chromium is launched; `postgres`: a throwaway PostgreSQL and a database per test;
- `cluster`: API instances and workers on one database; `s3`: a real S3 emulator (moto);
- `gated_providers`: providers whose timing a test controls (the lifecycle fuzzer).

The fake OpenAI, Replicate and Runway servers are a package of their own, `tests.fakes`, because
they also run on their own for a demo (`python -m tests.fakes`).
"""
