#!/usr/bin/env python
"""Videos of a trained VLA policy: one successful and one failed episode, from a viewer camera beside the
two views the policy sees.

    python scripts/policy_video.py --checkpoint outputs/lift_tiny_cpu/final --task Lift-Cube --output videos/

Adds a viewer camera (``--viewer_size`` px, default 256, a wide view of the table and the arm) to the env;
it renders only here, never in evaluation, and is not part of the policy's observations. Runs episodes
(same seeds and policy options as ``scripts/eval_vla.py``) until it has a success and a failure or
``--max_episodes`` ran, and writes ``policy_success.mp4`` / ``policy_failure.mp4``: each frame is the
viewer image with the context and wrist views (upscaled, nearest) stacked on its right.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VIEWER_EYE = (1.15, -0.6, 0.6)  # [m] env frame: front left of the table, above it
VIEWER_TARGET = (0.4, 0.0, 0.1)  # the workspace between the robot base and the spawn area


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    p.add_argument("--task", default="Lift-Cube")
    p.add_argument("--output", required=True, help="folder for policy_success.mp4 / policy_failure.mp4")
    p.add_argument("--seed", type=int, default=100, help="env and flow-noise seed (eval_vla.py's --seed)")
    p.add_argument("--max_episodes", type=int, default=6, help="stop after this many episodes")
    p.add_argument("--viewer_size", type=int, default=256, help="viewer camera resolution (square)")
    p.add_argument("--replan_every", type=int, default=4)
    p.add_argument("--gripper_hysteresis", type=float, default=0.0)
    p.add_argument("--episode_length_s", type=float, default=None, help="override the task's episode length")
    from vla_isaac.envs import add_sim_args

    add_sim_args(p)  # --device, --backend, --image_size (the policy's cameras) ...
    return p


def viewer_camera_cfg(table_cam, size: int):
    """A copy of the env's (resolved) context camera cfg, moved back for a wide view at ``size`` px."""
    import copy

    import isaaclab.sim as sim_utils
    from isaaclab.sensors import CameraCfg

    from vla_isaac.tasks.common.scene import look_at_ros

    cam = copy.deepcopy(table_cam)
    cam.prim_path = "{ENV_REGEX_NS}/viewer_cam"
    cam.height = cam.width = size
    cam.update_period = 0.0
    cam.spawn = sim_utils.PinholeCameraCfg(focal_length=22.0, focus_distance=400.0, horizontal_aperture=20.955,
                                           clipping_range=(0.05, 5.0))
    cam.offset = CameraCfg.OffsetCfg(pos=VIEWER_EYE, rot=look_at_ros(VIEWER_EYE, VIEWER_TARGET), convention="ros")
    return cam


def compose(viewer, table, wrist):
    """Viewer (S, S, 3) | [table over wrist], each upscaled (nearest) to (S/2, S/2): (S, 1.5 S, 3) uint8."""
    import numpy as np

    s = viewer.shape[0]
    half = s // 2

    def up(im):
        ry, rx = max(1, half // im.shape[0]), max(1, half // im.shape[1])
        im = np.repeat(np.repeat(im, ry, axis=0), rx, axis=1)[:half, :half]
        return np.pad(im, ((0, half - im.shape[0]), (0, half - im.shape[1]), (0, 0)))

    side = np.concatenate([up(table), up(wrist)], axis=0)
    side = np.pad(side, ((0, s - side.shape[0]), (0, 0), (0, 0)))
    return np.concatenate([viewer, side], axis=1).astype(np.uint8)


def _np(x, env_id=0):
    import numpy as np
    import torch

    x = x.torch if hasattr(x, "torch") else x
    return torch.as_tensor(x[env_id]).detach().cpu().numpy().astype(np.uint8)[..., :3] if torch.is_tensor(x) \
        else np.asarray(x[env_id]).astype(np.uint8)[..., :3]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from vla_isaac.envs import make_env, make_env_cfg, resolve_task
    from vla_isaac.evaluation import write_video
    from vla_isaac.policy import VLAPolicy

    task = resolve_task(args.task)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    cfg_kw = {"image_size": tuple(args.image_size)} if args.image_size else {}
    cfg = make_env_cfg(task, num_envs=1, device=getattr(args, "device", None) or "cpu", backend=args.backend,
                       seed=args.seed, **cfg_kw)
    if args.episode_length_s:
        cfg.episode_length_s = args.episode_length_s
    cfg.scene.viewer_cam = viewer_camera_cfg(cfg.scene.table_cam, args.viewer_size)
    env = make_env(cfg, launcher_args=args)
    written: dict[str, dict] = {}
    try:
        policy = VLAPolicy(args.checkpoint, env, seed=args.seed, replan_every=args.replan_every,
                           gripper_hysteresis=args.gripper_hysteresis)
        viewer = env.scene["viewer_cam"]

        def frame(obs):
            group = obs["policy"]
            return compose(_np(viewer.data.output["rgb"]), _np(group["table_cam"]), _np(group["wrist_cam"]))

        with torch.inference_mode():
            obs, _ = env.reset(seed=args.seed)
            policy.reset()
            frames, episode, length = [frame(obs)], 0, 0
            while episode < args.max_episodes and len(written) < 2:
                obs, _, terminated, truncated, _ = env.step(policy(obs))
                length += 1
                if not bool((terminated | truncated)[0]):
                    frames.append(frame(obs))
                    continue
                success = bool(env.termination_manager.get_term("success")[0])
                outcome = "success" if success else "failure"
                if outcome not in written:
                    path = write_video(frames, out / f"policy_{outcome}.mp4")
                    written[outcome] = {"episode": episode, "length": length, "file": path.name}
                    print(f"episode {episode}: {outcome} after {length} steps -> {path}")
                else:
                    print(f"episode {episode}: {outcome} after {length} steps")
                episode, length = episode + 1, 0
                policy.reset()
                frames = [frame(obs)]
    finally:
        env.close()
    (out / "videos.json").write_text(json.dumps(written, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
