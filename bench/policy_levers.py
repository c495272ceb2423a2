#!/usr/bin/env python
"""Closed-loop levers of the tiny Lift-Cube policy (issue 15): what bounds its success, what lifts it.

Each lever is one row: demos (recorded once per setting and cached), a training run
(``config/training/lift_tiny_cpu.yaml`` plus the lever's overrides), ``scripts/diagnose_vla.py`` on every
held-out sample (image effect, offline error) and ``scripts/eval_vla.py`` closed loop on the SAME episodes
(``--seed 100``, one process, ``--replan_every 4`` unless the lever changes it). Eval-only levers reuse
another row's checkpoint.

    python bench/policy_levers.py run privileged          # one row (record if needed, train, diagnose, eval)
    python bench/policy_levers.py run dart --episodes 20  # screening with fewer episodes (the table says so)
    python bench/policy_levers.py table                   # markdown table of every finished row

Rows land in ``outputs/levers/<name>/result.json``; the table is copied into docs/benchmarks.md by hand.
On the shared 2-core machine a row costs ~3 min of recording (cached across rows), ~5 min of training
and ~4 min of evaluation for 50 episodes.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
OUT = ROOT / "outputs" / "levers"

# demo sets: name -> (num_demos, expert noise std [m, rad per step], seed[, share of staged grasp misses])
DEMOS = {
    "clean100": (100, 0.0, 0),
    "dart100": (100, 0.03, 0),
    "dart100b": (100, 0.03, 1000),  # a second recording process: 200 DART demos in the wall time of 100
    "dartmiss100": (100, 0.03, 0, 0.3),  # 30% of the demos miss their first grasp on purpose and recover
}
# Rows before the state head (the config's default since it lifted DART success 17/50 -> 25/50) turn it off and
# keep the training-only context-view probe they were measured with.
PROBE = ["model_overrides.state_dim=0", "aux_state.keys=[cube_positions]"]
NO_LEVERS = ["levers.wrist_dropout=0.0", "levers.proprio_dropout=0.0", "model_overrides.state_dim=0", "aux_state.keys=[]"]
NO_WRIST = [*PROBE, "levers.wrist_dropout=0.0"]
GATE = [*PROBE, "levers.wrist_dropout=0.7"]  # the image-effect gate recipe (wrist dropout was its default then)
PRIVILEGED = ["data.key_mapping=isaaclab_lift_privileged", "model_overrides.proprio_dim=34", *NO_LEVERS]
# the model's state head: the cube pose estimated from the images (+ proprio) and fed to the expert as a token
STATE_HEAD = ["levers.wrist_dropout=0.0", "model_overrides.state_dim=7",
              "aux_state.keys=[cube_positions,cube_orientations]"]

# name -> dict(demos=[demo sets], train=[overrides] or base=<row whose checkpoint is reused>, eval=[flags])
LEVERS: dict[str, dict] = {
    "gate_recipe": dict(label="gate recipe (wrist dropout 0.7, proprio dropout 0.5, probe), clean demos",
                        demos=["clean100"], train=GATE),
    "no_levers": dict(label="no conditioning levers, clean demos", demos=["clean100"], train=NO_LEVERS),
    "privileged": dict(label="privileged state: cube pose in the proprio, no levers (images still given)",
                       demos=["clean100"], train=PRIVILEGED),
    "privileged_hyst": dict(label="privileged state + gripper hysteresis 0.5", base="privileged",
                            eval=["--gripper_hysteresis", "0.5"]),
    "dart": dict(label="DART demos (noise 0.03, clean labels), gate recipe", demos=["dart100"], train=GATE),
    "dart_nowrist": dict(label="DART demos, proprio dropout 0.5 + probe, no wrist dropout", demos=["dart100"],
                         train=NO_WRIST),
    "dart_nolevers": dict(label="DART demos, no conditioning levers", demos=["dart100"], train=NO_LEVERS),
    "clean_nowrist": dict(label="clean demos, proprio dropout 0.5 + probe, no wrist dropout", demos=["clean100"],
                          train=NO_WRIST),
    "dart200_nowrist": dict(label="200 DART demos (2 recording processes), no wrist dropout",
                            demos=["dart100", "dart100b"], train=NO_WRIST),
    "gate_hyst": dict(label="gate recipe + gripper hysteresis 0.5", base="gate_recipe",
                      eval=["--gripper_hysteresis", "0.5"]),
    "no_levers_hyst": dict(label="no levers + gripper hysteresis 0.5", base="no_levers",
                           eval=["--gripper_hysteresis", "0.5"]),
    "dart_nowrist_hyst": dict(label="DART, no wrist dropout + gripper hysteresis 0.5", base="dart_nowrist",
                              eval=["--gripper_hysteresis", "0.5"]),
    "dart_state": dict(label="DART demos, proprio dropout 0.5, state head (cube pose from the images, fed to the "
                       "expert), no wrist dropout", demos=["dart100"], train=STATE_HEAD),
    "dart_state_noproprio_drop": dict(label="DART demos, state head, no proprio dropout", demos=["dart100"],
                                      train=[*STATE_HEAD, "levers.proprio_dropout=0.0"]),
    "clean_state_noproprio_drop": dict(label="clean demos, state head, no proprio dropout", demos=["clean100"],
                                       train=[*STATE_HEAD, "levers.proprio_dropout=0.0"]),
    "dartmiss_state": dict(label="DART demos, 30% with a staged grasp miss and its recovery (miss steps masked "
                           "out of the loss), state head", demos=["dartmiss100"], train=STATE_HEAD),
    "dartmiss_state_pd07": dict(label="recovery demos, state head, proprio dropout 0.7 (more of the arm state "
                                "and phase must come from the images)", demos=["dartmiss100"],
                                train=[*STATE_HEAD, "levers.proprio_dropout=0.7"]),
    "dartmiss_state_seed1": dict(label="recovery demos, state head, training seed 1 (run-to-run spread)",
                                 demos=["dartmiss100"], train=[*STATE_HEAD, "seed=1"]),
    "dartmiss_ctxhead": dict(label="recovery demos, state head reading the context view only "
                             "(model_overrides.state_head_views=context)", demos=["dartmiss100"],
                             train=[*STATE_HEAD, "model_overrides.state_head_views=context"]),
    "dartmiss_ctxhead_seed1": dict(label="recovery demos, context-view state head, training seed 1",
                                   demos=["dartmiss100"],
                                   train=[*STATE_HEAD, "model_overrides.state_head_views=context", "seed=1"]),
    "dartmiss_ctxhead_wd02": dict(label="recovery demos, context-view state head, wrist-token dropout 0.2 (the expert "
                                  "must act from the context view and the state estimate on a fifth of the samples)",
                                  demos=["dartmiss100"],
                                  train=[*STATE_HEAD, "model_overrides.state_head_views=context",
                                         "levers.wrist_dropout=0.2"]),
    "dartmiss_ctxhead_wd03": dict(label="recovery demos, context-view state head, wrist-token dropout 0.3",
                                  demos=["dartmiss100"],
                                  train=[*STATE_HEAD, "model_overrides.state_head_views=context",
                                         "levers.wrist_dropout=0.3"]),
    "dartmiss_ctxhead_tf05": dict(label="recovery demos, context-view state head, state teacher forcing 0.5 (half "
                                  "the samples' expert reads the recorded cube pose instead of the estimate)",
                                  demos=["dartmiss100"],
                                  train=[*STATE_HEAD, "model_overrides.state_head_views=context",
                                         "levers.state_teacher_forcing=0.5"]),
    "dartmiss_ctxhead_tf02": dict(label="recovery demos, context-view state head, state teacher forcing 0.2",
                                  demos=["dartmiss100"],
                                  train=[*STATE_HEAD, "model_overrides.state_head_views=context",
                                         "levers.state_teacher_forcing=0.2"]),
    "dart200_state": dict(label="200 DART demos (2 recording processes), state head, proprio dropout 0.5",
                          demos=["dart100", "dart100b"], train=STATE_HEAD),
    "dart_state_te": dict(label="state head + temporal ensembling, replan 2", base="dart_state",
                          eval=["--temporal_ensemble", "--replan_every", "2"]),
    "dart_state_replan2": dict(label="state head, replan every 2 steps", base="dart_state",
                               eval=["--replan_every", "2"]),
    "dart_state_noise0": dict(label="state head, flow sampling from zero noise (--noise_scale 0)", base="dart_state",
                              eval=["--noise_scale", "0"]),
    "dart_state_seed1": dict(label="the state-head recipe, training seed 1 (run-to-run spread)", demos=["dart100"],
                             train=[*STATE_HEAD, "seed=1"]),
    "dart_state_168": dict(label="state head, 168 px model input (36 tokens per view instead of 16)", demos=["dart100"],
                           train=[*STATE_HEAD, "model_overrides.image_size=[168,168]"]),
    "dart_state_deep": dict(label="state head with 3 looks at the memory (model_overrides.state_head_layers=3)",
                            demos=["dart100"], train=[*STATE_HEAD, "model_overrides.state_head_layers=3"]),
    "dart_state_w2": dict(label="state head, state loss weight 2.0 (aux_state.weight=2.0)", demos=["dart100"],
                          train=[*STATE_HEAD, "aux_state.weight=2.0"]),
    "dart_nowrist_te": dict(label="DART, no wrist dropout + temporal ensembling, replan 2", base="dart_nowrist",
                            eval=["--temporal_ensemble", "--replan_every", "2"]),
}


def demos_path(name: str) -> Path:
    return OUT / f"demos_{name}.hdf5"


def run(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"error: {' '.join(cmd[:3])} failed (exit {rc}); log: {log}")
    return time.perf_counter() - t0


def record(name: str) -> Path:
    path = demos_path(name)
    if path.exists():
        return path
    n, noise, seed, *miss = DEMOS[name]
    OUT.mkdir(parents=True, exist_ok=True)
    run([PY, "scripts/record_demos.py", "--task", "Lift-Cube", "--num_demos", str(n), "--image_size", "64", "64",
         "--seed", str(seed), "--noise", str(noise), *(["--miss_prob", str(miss[0])] if miss else []),
         "--output", str(path), "--overwrite"], OUT / f"record_{name}.log")
    return path


def run_lever(name: str, episodes: int, steps: int) -> dict:
    lever = LEVERS[name]
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    res = {"name": name, "label": lever["label"], "episodes": episodes}
    base = lever.get("base")
    if base:
        ckpt = OUT / base / "train" / "final"
        if not (ckpt / "manifest.json").exists():
            raise SystemExit(f"{name}: row {base} has no checkpoint yet; run it first")
        base_res = json.loads((OUT / base / "result.json").read_text())
        res.update({k: base_res.get(k) for k in ("demos", "train_overrides", "train", "diagnosis")})
    else:
        files = [str(record(d)) for d in lever["demos"]]
        res["demos"] = lever["demos"]
        res["train_overrides"] = lever["train"]
        ckpt = folder / "train" / "final"
        if not (ckpt / "manifest.json").exists():
            res["train_s"] = run([PY, "scripts/train.py", "--config", "lift_tiny_cpu", f"data.files=[{','.join(files)}]",
                                  f"output_dir={folder / 'train'}", f"max_steps={steps}", "seed=0", *lever["train"]],
                                 folder / "train.log")
        summary = folder / "train" / "summary.json"
        res["train"] = json.loads(summary.read_text()) if summary.exists() else {}
    ev = folder / f"eval{episodes}"
    eval_flags = lever.get("eval", [])
    if "--replan_every" not in eval_flags:
        eval_flags = ["--replan_every", "4", *eval_flags]
    res["eval_flags"] = eval_flags
    evaluation = None
    if not (ev / "summary.json").exists():  # closed loop and the offline diagnosis side by side (2 cores)
        cmd = [PY, "scripts/eval_vla.py", "--task", "Lift-Cube", "--checkpoint", str(ckpt), "--num_episodes",
               str(episodes), "--seed", "100", "--image_size", "64", "64", "--videos", "0", "--no_progress",
               "--output", str(ev), *eval_flags]
        log = open(folder / f"eval{episodes}.log", "w")
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        t0 = time.perf_counter()
        evaluation = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if not base:
        diag = folder / "diagnosis"
        if not (diag / "diagnosis.json").exists():
            run([PY, "scripts/diagnose_vla.py", "--checkpoint", str(ckpt), "--dataset", *files, "--num_samples", "0",
                 "--seed", "0", "--output", str(diag)], folder / "diagnose.log")
        res["diagnosis"] = json.loads((diag / "diagnosis.json").read_text())
    if evaluation is not None:
        if evaluation.wait() != 0:
            raise SystemExit(f"error: eval_vla.py failed (exit {evaluation.returncode}); log: {log.name}")
        res["eval_s"] = time.perf_counter() - t0
    res["eval"] = json.loads((ev / "summary.json").read_text())
    (folder / f"result{episodes}.json").write_text(json.dumps(res, indent=2, default=str))
    (folder / "result.json").write_text(json.dumps(res, indent=2, default=str))
    return res


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def first_episodes(name: str, n: int) -> list[dict] | None:
    """The first ``n`` episodes of a row's 50-episode evaluation, also while it is still running (eval_vla.py
    writes episodes.jsonl.tmp as they finish, in order): rows compared on the same episodes."""
    for f in (OUT / name / "eval50" / "episodes.jsonl", OUT / name / "eval50" / "episodes.jsonl.tmp",
              OUT / name / "eval50_partial_episodes.jsonl"):  # an evaluation stopped early: what it finished
        if f.exists():
            eps = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            return eps[:n] if len(eps) >= n else None
    return None


def table_first(n: int) -> str:
    rows = [f"| lever | success, first {n} episodes | 95% CI | image_effect_ratio | wrist_effect_ratio "
            "| val MSE (blank) | MSE / blank |", "|---|---|---|---|---|---|---|"]
    for name, lever in LEVERS.items():
        eps = first_episodes(name, n)
        if eps is None:
            continue
        k = sum(e["success"] for e in eps)
        lo, hi = wilson(k, n)
        base = lever.get("base", name)
        diag = OUT / base / "diagnosis" / "diagnosis.json"
        d = json.loads(diag.read_text()) if diag.exists() else {}
        mse, blank = d.get("val_action_mse"), d.get("blank_image_val_action_mse")
        cond = (f"{d['image_effect_ratio']:.3f} | {d['wrist_effect_ratio']:.3f} | {mse:.3f} ({blank:.3f}) | "
                f"{mse / blank:.2f}") if d else "- | - | - | -"
        rows.append(f"| {lever['label']} | {k}/{n} ({k / n:.0%}) | {lo:.0%}-{hi:.0%} | {cond} |")
    return "\n".join(rows)


def table() -> str:
    rows = ["| lever | demos | success | 95% CI | mean length | image_effect_ratio | wrist_effect_ratio "
            "| val MSE (blank) | MSE / blank |", "|---|---|---|---|---|---|---|---|---|"]
    for name in LEVERS:
        for f in sorted((OUT / name).glob("result*.json")) if (OUT / name).exists() else []:
            if f.name == "result.json":
                continue
            r = json.loads(f.read_text())
            e, d = r["eval"], r.get("diagnosis") or {}
            k, n = e["num_success"], e["num_episodes"]
            lo, hi = wilson(k, n)
            mse, blank = d.get("val_action_mse"), d.get("blank_image_val_action_mse")
            ratio = f"{mse / blank:.2f}" if mse and blank else "-"
            rows.append(f"| {r['label']} | {'+'.join(r.get('demos') or [])} | {k}/{n} ({k / n:.0%}) | {lo:.0%}-{hi:.0%} "
                        f"| {e['mean_episode_length']:.0f} | {d.get('image_effect_ratio', float('nan')):.3f} "
                        f"| {d.get('wrist_effect_ratio', float('nan')):.3f} | {mse:.3f} ({blank:.3f}) | {ratio} |")
    return "\n".join(rows)


def analyse(name: str, episodes: int, out: Path) -> dict:
    """Where the hand is when a row's policy first closes the gripper, and how often it flips it, per episode
    (same env, policy options and seeds as the row's evaluation; privileged state read from the scene)."""
    import torch

    from vla_isaac.envs import make_env, make_env_cfg
    from vla_isaac.policy import VLAPolicy

    lever = LEVERS[name]
    ckpt = OUT / lever.get("base", name) / "train" / "final"
    flags = lever.get("eval", [])
    kw = {"replan_every": int(flags[flags.index("--replan_every") + 1]) if "--replan_every" in flags else 4,
          "gripper_hysteresis": float(flags[flags.index("--gripper_hysteresis") + 1])
          if "--gripper_hysteresis" in flags else 0.0,
          "temporal_ensemble": "--temporal_ensemble" in flags}
    env = make_env(make_env_cfg("Lift-Cube", num_envs=1, image_size=(64, 64), seed=100))
    rows = []
    try:
        policy = VLAPolicy(ckpt, env, seed=100, **kw)
        cube, ee = env.scene["cube_1"], env.scene["ee_frame"]
        with torch.inference_mode():
            obs, _ = env.reset(seed=100)
            policy.reset()
            first_close, flips, last, t = None, 0, 1.0, 0
            while len(rows) < episodes:
                act = policy(obs)
                g = 1.0 if float(act[0, -1]) >= 0 else -1.0
                if g != last:
                    flips += 1
                    if g < 0 and first_close is None:
                        rel = (cube.data.root_pos_w.torch[0] - ee.data.target_pos_w.torch[0, 0]).tolist()
                        first_close = {"step": t, "xy_cm": 100 * math.hypot(rel[0], rel[1]), "dz_cm": -100 * rel[2]}
                last = g
                obs, _, term, trunc, _ = env.step(act)
                t += 1
                if bool((term | trunc)[0]):
                    ok = bool(env.termination_manager.get_term("success")[0])
                    rows.append({"success": ok, "length": t, "first_close": first_close, "gripper_flips": flips})
                    print(rows[-1], flush=True)
                    policy.reset()
                    first_close, flips, last, t = None, 0, 1.0, 0
    finally:
        env.close()
    out.write_text(json.dumps(rows, indent=2))
    return {"episodes": rows}


def state_error(name: str, samples: int = 320) -> dict:
    """The state head's cube-position error [cm] on a row's own demos, held-out (val) and training split
    (``samples`` evenly spaced samples each): whether the estimator generalises beyond its 90 training cube placements."""
    import numpy as np
    import torch

    from vla.checkpoint import load_vla
    from vla.data.dataset import DemoDataset, collate

    torch.set_num_threads(1)
    lever = LEVERS[name]
    base = lever.get("base", name)
    model = load_vla(OUT / base / "train" / "final").eval()
    if model.state_head is None:
        raise SystemExit(f"{name}: the checkpoint has no state head")
    files = [str(demos_path(d)) for d in LEVERS[base]["demos"]]
    res = {"name": name}
    for split in ("val", "train"):
        ds = DemoDataset(files, "isaaclab_lift", split=split, chunk=16, image_size=tuple(model.cfg.image_size),
                         aux_keys=("cube_positions",))
        idx = np.linspace(0, len(ds) - 1, min(len(ds), samples)).astype(int)
        errs = []
        for s in range(0, len(idx), 32):
            b = collate([ds[int(i)] for i in idx[s:s + 32]])
            with torch.no_grad():
                memory, mask = model.encode(torch.as_tensor(b["context_image"]), torch.as_tensor(b["wrist_image"]),
                                            b["instruction"])
                est = model.estimate_state(memory, mask, torch.as_tensor(b["proprio"]).float())
            errs.append((est[:, :3] - torch.as_tensor(b["aux_state"]).float()).norm(dim=1))
        e = torch.cat(errs) * 100
        res[split] = {"samples": len(idx), "median_cm": float(e.median()), "mean_cm": float(e.mean()),
                      "p90_cm": float(e.quantile(0.9))}
        print(f"{name} {split}: n {len(idx)}, cube position error median {res[split]['median_cm']:.2f} cm, "
              f"mean {res[split]['mean_cm']:.2f}, p90 {res[split]['p90_cm']:.2f}", flush=True)
    (OUT / name / "state_error.json").write_text(json.dumps(res, indent=2))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("names", nargs="+", choices=sorted(LEVERS))
    r.add_argument("--episodes", type=int, default=50)
    r.add_argument("--steps", type=int, default=6000)
    sub.add_parser("record").add_argument("names", nargs="+", choices=sorted(DEMOS))
    sub.add_parser("table").add_argument("--first", type=int, default=None,
                                         help="compare the rows on their first N evaluation episodes")
    a = sub.add_parser("analyse", help="first gripper close: hand-cube offset, and gripper flips, per episode")
    a.add_argument("name", choices=sorted(LEVERS))
    a.add_argument("--episodes", type=int, default=10)
    se = sub.add_parser("state_error", help="the state head's held-out cube-position error [cm]")
    se.add_argument("names", nargs="+", choices=sorted(LEVERS))
    args = ap.parse_args(argv)
    if args.cmd == "state_error":
        for n in args.names:
            state_error(n)
        return 0
    if args.cmd == "analyse":
        analyse(args.name, args.episodes, OUT / args.name / f"analysis{args.episodes}.json")
        return 0
    if args.cmd == "record":
        for n in args.names:
            print(record(n))
    elif args.cmd == "run":
        for n in args.names:
            res = run_lever(n, args.episodes, args.steps)
            e = res["eval"]
            print(f"{n}: {e['num_success']}/{e['num_episodes']} image_effect {res['diagnosis'].get('image_effect_ratio')}")
    else:
        print(table_first(args.first) if args.first else table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
