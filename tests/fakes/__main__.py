"""Run the three fake providers for a demo without keys: `python -m tests.fakes`.

Serves fake OpenAI, Replicate and Runway APIs on loopback (ports 8101, 8102 and 8103 unless told
otherwise), prints the environment variables that point promptreel at them, and serves until
Ctrl-C. In a second shell, export those lines (or `. <file>` with `--env-file <file>`), then run
`promptreel serve`: DALL-E 3, FLUX.1 and Runway all work, with real PNGs and MP4s and the real
prices, and no key or network access.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import threading
from pathlib import Path

from . import FakeOpenAI, FakeReplicate, FakeRunway, provider_env


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8101,
        help="fake OpenAI's port; Replicate gets the next one, Runway the one after (default 8101)",
    )
    parser.add_argument("--poll-interval", type=float, default=0.5, help="PROMPTREEL_POLL_INTERVAL to suggest (default 0.5 s)")
    parser.add_argument("--env-file", type=Path, help="also write the export lines to this file, to source it")
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    openai, replicate, runway = FakeOpenAI(), FakeReplicate(), FakeRunway()
    for offset, fake in enumerate((openai, replicate, runway)):
        fake.start(args.port + offset)
    variables = {**provider_env(openai, replicate, runway), "PROMPTREEL_POLL_INTERVAL": f"{args.poll_interval:g}"}
    lines = [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
    print("\n".join(lines), flush=True)
    if args.env_file:
        args.env_file.write_text("\n".join(lines) + "\n")
    print("# fake OpenAI, Replicate and Runway are serving; Ctrl-C stops them", flush=True)
    stop.wait()
    for fake in (openai, replicate, runway):
        fake.stop()


if __name__ == "__main__":
    main()
