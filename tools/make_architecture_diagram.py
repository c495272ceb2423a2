#!/usr/bin/env python
"""Draw docs/images/architecture.png (the README's one-picture architecture). Re-run after changes."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "architecture.png"


def box(ax, xy, w, h, text, color, fs=9):
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#333", lw=1.2))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=fs, wrap=True)


def arrow(ax, a, b, text=None):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, lw=1.2, color="#333"))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.12, text, ha="center", fontsize=7.5, color="#444")


def main():
    fig, ax = plt.subplots(figsize=(12, 5.2))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 5.2)
    ax.axis("off")
    # extension (Isaac Lab)
    ax.add_patch(FancyBboxPatch((0.1, 0.1), 3.3, 5.0, boxstyle="round,pad=0.02", fc="#eef5ee", ec="#6a6", lw=1, ls="--"))
    ax.text(1.75, 4.85, "exts/vla_isaac  (Isaac Lab 3.0)", ha="center", fontsize=9, weight="bold", color="#363")
    box(ax, (0.3, 3.6), 2.9, 0.9, "Lift-Cube / Stack-Cube\nManagerBasedRLEnv\nNewton (MuJoCo-C | MJWarp) or PhysX", "#cfe8cf", 8)
    box(ax, (0.3, 2.35), 2.9, 0.9, "obs['policy']: table_cam, wrist_cam,\neef_pos, eef_quat, gripper_pos,\njoint_pos, joint_vel", "#ffffff", 7.5)
    box(ax, (0.3, 1.1), 2.9, 0.9, "VLAPolicy / VLAActionCfg\nkey mapping -> model inputs\nchunk queue, replan every k", "#cfe8cf", 8)
    box(ax, (0.3, 0.25), 2.9, 0.6, "action manager: IK-rel (6) + gripper (1)", "#ffffff", 7.5)
    # core
    ax.add_patch(FancyBboxPatch((3.7, 0.1), 8.2, 5.0, boxstyle="round,pad=0.02", fc="#eef0fa", ec="#66a", lw=1, ls="--"))
    ax.text(7.8, 4.85, "source/vla  (Isaac-free core)", ha="center", fontsize=9, weight="bold", color="#336")
    box(ax, (4.0, 3.0), 2.4, 1.4, "Qwen2.5-VL\n(frozen + LoRA, peft)\nprompt: Context view <img>\nWrist view <img> + instruction", "#d6dcf5", 7.5)
    box(ax, (6.8, 3.2), 1.6, 1.0, "projector\nVLM hidden -> 512", "#d6dcf5", 8)
    box(ax, (8.8, 2.6), 2.9, 1.9, "action expert\n6-layer transformer\n16 action queries\nself-attn + cross-attn to memory\ninputs: noisy actions, flow time,\nproprio (27)", "#d6dcf5", 7.5)
    box(ax, (8.8, 1.1), 2.9, 1.0, "flow matching\nEuler sampler (10 steps)\n-> chunk 16 x 7", "#d6dcf5", 8)
    box(ax, (4.0, 0.2), 4.4, 0.85, "training: HDF5 (Isaac Lab recorder / Cosmos) -> key mapping\n-> DemoDataset (chunks + mask) -> accelerate trainer\n-> checkpoint: LoRA + heads (safetensors) + config + stats + sha256", "#ffffff", 7.5)
    arrow(ax, (1.75, 3.6), (1.75, 3.25))
    arrow(ax, (1.75, 2.35), (1.75, 2.0))
    arrow(ax, (1.75, 1.1), (1.75, 0.85))
    arrow(ax, (3.2, 1.75), (4.0, 3.4), "images + instruction")
    arrow(ax, (6.4, 3.7), (6.8, 3.7), "tokens")
    arrow(ax, (8.4, 3.7), (8.8, 3.7), "memory")
    arrow(ax, (3.2, 1.8), (8.8, 2.9), "proprio")
    arrow(ax, (10.25, 2.6), (10.25, 2.1))
    arrow(ax, (8.8, 1.35), (3.2, 1.35), "chunk -> next k actions")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110, bbox_inches="tight")
    print(OUT)


if __name__ == "__main__":
    main()
