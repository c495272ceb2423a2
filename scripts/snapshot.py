"""Save what the robot sees: the table camera and the wrist camera side by side, as one PNG.

    python scripts/snapshot.py --task Lift-Cube                # -> docs/images/lift-cube.png
    isaaclab -p scripts/snapshot.py --task Stack-Cube --output docs/images/

The scripted expert runs ``--steps`` steps first, so the arm is on its way to a cube.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None):
    from vla_isaac.envs import add_sim_args

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="Lift-Cube", help="task id (Lift-Cube, Stack-Cube, ...)")
    parser.add_argument("--output", default="docs/images", help="folder (or .png path) to write")
    parser.add_argument("--steps", type=int, default=20, help="scripted-expert steps before the picture")
    parser.add_argument("--seed", type=int, default=0, help="reset seed (cube layout)")
    parser.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscale of the saved picture")
    add_sim_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(1)  # make_env leaves torch's threads to us; its default ones slow env steps on a small CPU
    from PIL import Image
    from tqdm import trange

    from vla.utils.io import atomic_write_bytes
    from vla_isaac.envs import make_env, resolve_task, sim_kwargs
    from vla_isaac.experts import ScriptedExpert

    try:
        task = resolve_task(args.task)
        env = make_env(task, num_envs=1, cameras=True, seed=args.seed, **sim_kwargs(args))
    except ValueError as e:  # unknown task, bad backend/device/image size
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        out = out / f"{task.lower()}.png"
    try:
        obs, _ = env.reset(seed=args.seed)
        expert = ScriptedExpert(env)
        for _ in trange(args.steps, desc="steps", leave=False):
            obs, *_ = env.step(expert(obs))
        policy = obs["policy"]
        table, wrist = policy["table_cam"][0].cpu().numpy(), policy["wrist_cam"][0].cpu().numpy()
    finally:
        env.close()
    gap = np.full((table.shape[0], 4, 3), 255, dtype=np.uint8)
    picture = np.concatenate([table, gap, wrist], axis=1)
    if args.scale > 1:
        picture = picture.repeat(args.scale, axis=0).repeat(args.scale, axis=1)
    import io

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", optimize=True)
    atomic_write_bytes(out, buffer.getvalue())
    print(f"wrote {out} (left: table_cam, right: wrist_cam, {table.shape[1]}x{table.shape[0]} each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
