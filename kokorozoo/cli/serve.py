"""``kokorozoo serve MODEL``: a trained response model behind an OpenAI-compatible API
(:mod:`kokorozoo.serving`). The model loads only when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kokorozoo.cli.common import USAGE_ERROR, at_least, interruptible


def _serve(args: argparse.Namespace) -> int:
    from kokorozoo.serving import build_server, vllm_check

    name = args.name or Path(args.model).stem
    if args.vllm:
        problems, command = vllm_check(args.model, name)
        for problem in problems:
            print(f"kokorozoo: vLLM cannot serve {args.model}: {problem}", file=sys.stderr)
        if problems:
            return USAGE_ERROR
        print(command)
        return 0
    server = build_server(args.model, name, timeout=args.timeout)  # the model checked before anything starts
    print(
        f"serving {name} at http://{args.host}:{args.port}/v1 (POST /v1/chat/completions, streamed or not;"
        " GET /v1/models); Ctrl-C stops it",
        flush=True,
    )
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve a response model over an OpenAI-compatible API (chat front-ends, kokorozoo chat/simulate)",
        description="Serve an exported response model (or its .ckpt) over an OpenAI-compatible API on LitServe: "
        "POST /v1/chat/completions (streamed or not) and GET /v1/models. A request is answered as kokorozoo chat "
        "answers the same history: assistant messages are the model's own turns, user messages the other side's, "
        "prompted as the model was trained (a system message replaces its system prompt), greedy with the model's "
        "max_new_tokens unless the request sets temperature or max_tokens. Tools, response_format, stop and n > 1 "
        "are refused (400); another model's name is 404. Use it from kokorozoo: `kokorozoo chat NAME@http://HOST:PORT/v1`.",
    )
    serve.add_argument("model", help="an exported response model (kokorozoo export) or a .ckpt of one")
    serve.add_argument("--name", help="the model's name in the API (default: the folder's or file's name)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1, this machine)"
    )
    serve.add_argument("--port", type=at_least(1, int), default=8000, help="the port (default: 8000)")
    serve.add_argument(
        "--timeout",
        type=at_least(1.0, float),
        default=600.0,
        metavar="SECONDS",
        help="the longest a request may wait and generate (default: 600)",
    )
    serve.add_argument(
        "--vllm",
        action="store_true",
        help="instead of serving: check that vLLM's LoRA loader accepts this export folder and print the command that"
        " serves it there (the base model with the adapter, the export's chat template); exit 2 with the reasons if not",
    )
    serve.set_defaults(handler=interruptible(_serve))
