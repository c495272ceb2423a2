"""What the Isaac Lab command lines share: torch on one thread, bad input as one ``error:`` line, Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def run_sim_command(
    run: Callable[[argparse.Namespace], int], args: argparse.Namespace, errors: tuple[type[Exception], ...] = ()
) -> int:
    """``run(args)``; an unknown task, a bad env cfg or backend, or one of ``errors`` prints ``error: ...`` and
    returns 2, Ctrl-C prints ``aborted`` and returns 130.

    torch gets one thread first: make_env leaves torch's threads to the caller, and the default ones slow
    env steps (and PPO updates) down on a small CPU.
    """
    import torch

    torch.set_num_threads(1)
    from vla_isaac.envs import EnvConfigError, UnknownTaskError
    from vla_isaac.physics import BackendError

    try:
        return run(args)
    except (UnknownTaskError, EnvConfigError, BackendError, *errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130
