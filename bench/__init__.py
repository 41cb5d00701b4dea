"""The benchmarks, run from the repository's root as modules: `python -m bench.<name>` (`--help`
for each), or all of them with `python -m bench.run` (scripts/bench). `harness` holds what they
share (fixed-latency fake providers, result lines), `proc_cpu` CPU readings from /proc; the
servers under test come from tests/support. docs/BENCHMARKS.md has the method of each."""
