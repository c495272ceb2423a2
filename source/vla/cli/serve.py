"""Serve a VLA checkpoint over WebSocket in openpi's protocol (any openpi client, or our RemotePolicy).

The ``vla-serve`` command; ``python scripts/serve_policy.py`` and ``isaaclab -p scripts/serve_policy.py`` run the same ``main``.

Examples::

    python scripts/serve_policy.py --checkpoint outputs/lift_tiny_cpu/final                 # ws://127.0.0.1:8000
    python scripts/serve_policy.py --checkpoint CKPT --host 0.0.0.0 --api_key_file ~/.vla_key --device cuda:0
    python scripts/eval_vla.py --task Lift-Cube --policy_server ws://127.0.0.1:8000 --num_episodes 5

Binds 127.0.0.1 unless --host says otherwise; with --api_key_file every client must send
``Authorization: Api-Key <key>``. Stops cleanly on Ctrl-C / SIGTERM. Protocol and security: docs/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder written by scripts/train.py")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    p.add_argument("--api_key_file", default=None, help="file holding the API key every client must present")
    p.add_argument("--device", default=None, help="torch device of the model (default cuda:0 if available, else cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="model dtype (default bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--flow_steps", type=int, default=None,
                   help="Euler steps of the flow sampler (default: checkpoint's)")
    p.add_argument("--compile", default="none", choices=["none", "graphs"],
                   help="graphs: static shapes + CUDA graphs for the LM and the expert step, per batch size")
    p.add_argument("--instruction", default=None, help="default instruction when a client sends no 'prompt'")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise drawn for requests that carry none")
    p.add_argument("--max_batch", type=int, default=16, help="most observations per model call")
    p.add_argument("--batch_wait_ms", type=float, default=1.0,
                   help="after each request, wait this long for another to batch with it (at most 8x in all)")
    p.add_argument("--max_message_mb", type=float, default=8.0, help="larger messages close the connection")
    p.add_argument("--max_connections", type=int, default=64)
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[serve] %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    if not Path(args.checkpoint).is_dir():
        print(f"error: checkpoint folder {args.checkpoint} does not exist", file=sys.stderr)
        return 2

    import torch

    from vla.serving.client import read_api_key
    from vla.serving.runner import ModelRunner
    from vla.serving.server import PolicyServer

    try:
        api_key = read_api_key(args.api_key_file) if args.api_key_file else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if api_key is None and not _is_loopback(args.host):
        print(f"warning: serving on {args.host} without --api_key_file: anyone who reaches this port can use the "
              "policy", file=sys.stderr)
    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
    try:
        runner = ModelRunner.from_checkpoint(args.checkpoint, device=device, dtype=dtype, instruction=args.instruction,
                                             num_flow_steps=args.flow_steps, seed=args.seed, compile=args.compile)
        server = PolicyServer(runner, host=args.host, port=args.port, api_key=api_key,
                              max_message_bytes=int(args.max_message_mb * (1 << 20)),
                              max_connections=args.max_connections, max_batch=args.max_batch,
                              max_wait_s=args.batch_wait_ms / 1e3,
                              metadata_extra={"checkpoint": Path(args.checkpoint).name})
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    async def serve() -> None:
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(s: PolicyServer) -> None:
            spec = s.spec
            print(f"[serve] {args.checkpoint} ({device}, {str(dtype).removeprefix('torch.')}): "
                  f"{spec.chunk}x{spec.action_dim} action chunks, images {spec.image_size[0]}x{spec.image_size[1]}, "
                  f"'{spec.instruction}'", flush=True)
            print(f"[serve] listening on {s.url} ({'API key required' if api_key else 'no API key'}); "
                  f"health check: http://{args.host}:{s.port}/healthz; Ctrl-C to stop", flush=True)

        await server.run(stop, on_ready=ready)

    try:
        asyncio.run(serve())
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e.strerror}); pick another --port", file=sys.stderr)
        return 2
    print(f"[serve] stopped after {server.num_requests} requests ({server.num_errors} refused), "
          f"{server.batcher.num_calls} model calls", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
