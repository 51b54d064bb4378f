"""Serve trained models over OpenAI's API and a chat page: `python -m gptjax.serve --workdir runs/x`."""

from __future__ import annotations

import argparse
import sys

from gptjax.cli import guarded

EXAMPLE = """example:
  python -m gptjax.serve --workdir runs/shakespeare --port 8000
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "shakespeare", "messages": [{"role": "user", "content": "Hello"}]}'
  then open http://127.0.0.1:8000/ for the chat page."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gptjax.serve", epilog=EXAMPLE,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Serve trained models with an OpenAI-compatible API and a chat page; "
                                            "each workdir is a model named after its folder, and each LoRA "
                                            "adapter in its adapters/ a model named <workdir>:<adapter>.")
    p.add_argument("--workdir", action="append", required=True, help="directory of a trained model (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api_key", default=None, help="require `Authorization: Bearer KEY` on /v1")
    p.add_argument("--max_batch", type=int, default=8, help="rows decoded together (one per choice)")
    p.add_argument("--max_queue", type=int, default=128, help="requests that may wait; more get 429")
    p.add_argument("--max_tokens", type=int, default=512, help="largest max_tokens a request may ask for")
    p.add_argument("--overflow", choices=("error", "sliding"), default="error",
                   help="a prompt plus reply longer than the context: refuse (400) or slide the window")
    p.add_argument("--max_body", type=int, default=1 << 20, help="largest request body in bytes (more: 413)")
    p.add_argument("--quantize", default="none", help="none or int8 (weight-only, per-channel scales)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def run() -> None:
        import uvicorn

        from gptjax.errors import UserError
        from gptjax.serve.app import create_app
        from gptjax.serve.engine import load_engines

        for name in ("max_batch", "max_queue", "max_tokens", "max_body"):
            if getattr(args, name) < 1:
                raise UserError(f"--{name}={getattr(args, name)}; use a positive number")
        engines = load_engines(args.workdir, max_batch=args.max_batch, max_queue=args.max_queue,
                               max_tokens=args.max_tokens, overflow=args.overflow, quantize=args.quantize)
        app = create_app(engines, api_key=args.api_key, max_body=args.max_body)
        print(f"serving {', '.join(engines)} on http://{args.host}:{args.port}/", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")

    guarded(run)


if __name__ == "__main__":
    main()
