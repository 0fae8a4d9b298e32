"""Child-process entry point of the embedded engine: `python -m gpufleet.engines.llamacpp_server ...`.

Starts xllamacpp's embedded llama.cpp HTTP server (OpenAI routes, continuous batching) on 127.0.0.1 and
waits for SIGTERM/SIGINT. Exits on its own if the parent gateway dies (PR_SET_PDEATHSIG is also set by
the supervisor; the ppid watch covers platforms without it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpufleet-llamacpp")
    parser.add_argument("--model", required=True, help="path to a .gguf file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--alias", default="model")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="set any xllamacpp CommonParams field"
    )
    return parser.parse_args(argv)


def _coerce(value: str) -> object:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    import xllamacpp  # imported here so `--help` works without loading the native library

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.port = args.port
    params.model_alias = args.alias
    params.endpoint_metrics = True
    # The gateway's per-start key (from the environment: an argv is readable by every local user).
    if key := os.environ.pop("GPUFLEET_ENGINE_API_KEY", ""):
        params.api_keys = [key]
    for item in args.set:
        key, _, value = item.partition("=")
        if not hasattr(params, key):
            print(f"gpufleet-llamacpp: unknown parameter {key!r}", file=sys.stderr)
            return 2
        setattr(params, key, _coerce(value))

    # The handler only appends to a list: no lock. It used to call threading.Event.set, and a second signal landing
    # while the first handler held the Event's lock deadlocked the process forever (seen: a SIGKILLed gateway's
    # engine, which gets PR_SET_PDEATHSIG's SIGTERM, and the group's, lived on as an orphan).
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    parent = os.getppid()
    server = xllamacpp.Server(params)
    print(f"gpufleet-llamacpp: serving {args.model} as {args.alias!r} on {server.listening_address}", flush=True)
    while not received:
        time.sleep(0.25)  # a signal runs its handler and the loop sees it within a quarter second
        if os.getppid() != parent:  # the gateway died without telling us: do not linger as an orphan
            break
    # llama.cpp's shutdown can hang on its HTTP threads; nothing needs saving, so never outlive 3 s of it.
    threading.Timer(3.0, os._exit, (0,)).start()
    del server
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
