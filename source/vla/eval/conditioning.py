"""Does the policy use its inputs? Swap effect sizes and the blank-image error gap.

The classic failure of this model family is a policy that ignores its images: it reaches a low training
loss from proprio alone and never looks at the cameras. Two measures catch it:

* **Effect ratios.** Give each sample one input of another sample (its context image, its wrist image,
  its instruction or its proprio), keep everything else and the flow-matching noise identical, and
  compare how far the predicted chunk moves with how far the chunks of two different samples are apart::

      effect = mean_i ||pred(x_i with input of x_j) - pred(x_i)|| / mean_i ||pred(x_j) - pred(x_i)||

  ~0 means the input is ignored; a policy whose targets depend on the scene lands around 0.2-0.7 for its
  images. The SAME noise must be used for both predictions, otherwise sampling noise dominates. Chunks
  are compared in the model's normalised action space: in raw units the gripper's +-1 swamps the
  centimetre-sized pose deltas that the images mostly steer.
* **Blank-image error.** The held-out action MSE with the real images next to the same with both views
  replaced by their dataset-mean image. A policy that uses its images is clearly worse blinded.

Chunks and MSEs are in the model's normalised action space (each dimension scaled as the training loss sees
it); MSEs are over the valid steps of each chunk, averaged over a few flow-noise draws.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

INPUTS = ("context_image", "wrist_image", "instruction", "proprio")
# Swapped in for the instruction check when the data has a single instruction (a one-task dataset: another
# sample's would change nothing). With several (Lift-Cube-Color names a colour per demo), each sample gets a
# different instruction of the same task instead: `alternative_instructions`.
ALT_INSTRUCTION = "push the blue cube to the left edge of the table"
IGNORED_IMAGES_THRESHOLD = 0.05
ENCODE_BATCH = 32  # samples per VLM forward of the report  # image_effect_ratio below this: "the policy is ignoring its images"
REPORT_KEYS = (
    "image_effect_ratio",  # context image swapped
    "wrist_effect_ratio",
    "both_images_effect_ratio",
    "instruction_effect_ratio",
    "proprio_effect_ratio",
)


def _inputs(batch: Mapping) -> dict:
    return {
        "context_image": torch.as_tensor(batch["context_image"]),
        "wrist_image": torch.as_tensor(batch["wrist_image"]),
        "instruction": list(batch["instruction"]),
        "proprio": torch.as_tensor(batch["proprio"]).float(),
    }


class _Predictor:
    """Predicts chunks for input variants, encoding each distinct image/text variant once.

    A ``VLAModel`` gets its VLM features computed once per variant and reused for every noise draw and
    proprio swap; any other object with ``predict_action(ctx, wrist, instr, proprio, *, noise, num_steps)``
    (test doubles) is called directly.
    """

    def __init__(self, model, num_steps: int | None):
        self.model, self.num_steps = model, num_steps
        self.encodes = hasattr(model, "compute_vlm_features")
        # a VLAModel's vision tower sees each distinct image once: the variants only permute the same images
        self.caches_vision = all(hasattr(model, a) for a in ("preprocessor", "image_embeds", "vlm_features"))
        self._features: dict[str, tuple] = {}
        self._image_embeds: dict[bytes, torch.Tensor] = {}

    def _encode(self, inp: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """VLM features of every sample, ``ENCODE_BATCH`` samples per forward (a 7B backbone would not take
        hundreds at once), right-padded to a common token count."""
        n = len(inp["instruction"])
        parts = [self._encode_batch(inp["context_image"][i : i + ENCODE_BATCH], inp["wrist_image"][i : i + ENCODE_BATCH],
                                    inp["instruction"][i : i + ENCODE_BATCH])
                 for i in range(0, n, ENCODE_BATCH)]
        width = max(f.shape[1] for f, _ in parts)
        feats = torch.cat([torch.nn.functional.pad(f, (0, 0, 0, width - f.shape[1])) for f, _ in parts])
        mask = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for _, m in parts])
        return feats, mask

    def _encode_batch(self, ctx: torch.Tensor, wrist: torch.Tensor, instructions: list[str]):
        if not self.caches_vision:
            return self.model.compute_vlm_features(ctx, wrist, instructions)
        inputs = self.model.preprocessor(ctx, wrist, instructions)
        inputs["image_embeds"] = self._vision(inputs, ctx, wrist)
        return self.model.vlm_features(inputs)

    def _vision(self, inputs: dict, ctx: torch.Tensor, wrist: torch.Tensor) -> torch.Tensor:
        """The vision tower's output for a processor batch (images in its order: context, wrist per sample),
        run only on images it has not seen yet (by content). The report's variants swap, blank or keep the
        same images, so a six-variant report runs the tower on each image once instead of six times."""
        images = [img for pair in zip(ctx, wrist, strict=True) for img in pair]
        keys = [hashlib.blake2b(np.ascontiguousarray(np.asarray(img)).tobytes(), digest_size=16).digest()
                for img in images]
        grid = inputs["image_grid_thw"]
        patches = grid.prod(-1).tolist()  # pixel_values rows per image
        merge = int(self.model.processor.image_processor.merge_size)
        todo = [k for k in dict.fromkeys(keys) if k not in self._image_embeds]
        if todo:
            first = {k: keys.index(k) for k in todo}
            rows = torch.split(inputs["pixel_values"], patches)
            pix = torch.cat([rows[first[k]] for k in todo])
            out = self.model.image_embeds(pix, grid[[first[k] for k in todo]])
            for k, emb in zip(todo, torch.split(out, [patches[first[k]] // merge**2 for k in todo]), strict=True):
                self._image_embeds[k] = emb
        return torch.cat([self._image_embeds[k] for k in keys])

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw actions -> the model's normalised action space (identity for models without one)."""
        norm = getattr(self.model, "normalizer", None)
        if norm is None:
            return actions.float()
        return norm.normalize("action", actions.to(norm.action_mean.device)).float().cpu()

    def __call__(self, inp: dict, vision_key: str, noise: torch.Tensor) -> torch.Tensor:
        """Normalised chunks (B, Q, A) for the inputs ``inp``; ``vision_key`` names their images/text."""
        kw = {"noise": noise, "num_steps": self.num_steps}
        if not self.encodes:
            raw = self.model.predict_action(inp["context_image"], inp["wrist_image"], inp["instruction"],
                                            inp["proprio"], **kw)
        else:
            if vision_key not in self._features:
                self._features[vision_key] = self._encode(inp)
            feats, mask = self._features[vision_key]
            raw = self.model.predict_action(proprio=inp["proprio"], vlm_features=feats, vlm_mask=mask, **kw)
        return self.normalize(raw.float().cpu())


def partner(n: int) -> torch.Tensor:
    """Whose input sample i receives: the sample half a batch away. Batches taken in demo order (evenly
    spaced val samples) then pair different demos - a neighbour in time has the same cube position, and
    swapping its context image would say nothing about whether the policy looks at the cube."""
    return torch.roll(torch.arange(n), n // 2)


def alternative_instructions(instructions: Sequence[str], pool: Sequence[str] | None = None, *, seed: int = 0,
                             fallback: str | None = ALT_INSTRUCTION) -> list[str]:
    """For each sample, a different valid instruction of the same task: drawn uniformly (seeded) from
    ``pool`` (default: the distinct ``instructions`` themselves) without the sample's own. Where the pool holds
    no other instruction (a one-instruction dataset), ``fallback`` (an instruction of no task here)."""
    pool = list(dict.fromkeys(pool if pool is not None else instructions))
    rng = np.random.default_rng(seed)
    out = []
    for own in instructions:
        others = [p for p in pool if p != own]
        if not others:
            if fallback is None:
                raise ValueError(f"no instruction other than {own!r} to swap in; pass a fallback")
            out.append(fallback)
        else:
            out.append(others[int(rng.integers(len(others)))])
    return out


def keyword_swaps(instructions: Sequence[str], pool: Sequence[str], *, seed: int = 0
                  ) -> tuple[list[str] | None, list[str] | None]:
    """Split the instruction check in two, for a pool of templates x keywords (Lift-Cube-Color: 4 templates x 3
    colours). Per sample: ``swap`` = the same words with the keyword changed (another instruction of the pool
    differing in exactly one word: "lift the red cube" -> "lift the blue cube"), ``paraphrase`` = another wording
    with the same keyword ("pick up the red cube"). Either is None when some sample has none."""
    rng = np.random.default_rng(seed)
    pool = list(dict.fromkeys(pool))
    words = {p: p.split() for p in pool}
    swaps, paraphrases = [], []
    for own in instructions:
        w = own.split()
        near = [p for p in pool if len(words[p]) == len(w) and sum(a != b for a, b in zip(words[p], w)) == 1]
        if not near:
            return None, None
        slot = next(i for i, (a, b) in enumerate(zip(words[near[0]], w)) if a != b)
        keywords = {words[p][slot] for p in near} | {w[slot]}
        para = [p for p in pool if p != own and w[slot] in words[p] and not (keywords - {w[slot]}) & set(words[p])]
        swaps.append(near[int(rng.integers(len(near)))])
        paraphrases.append(para[int(rng.integers(len(para)))] if para else None)
    return swaps, (None if None in paraphrases else paraphrases)


def _swap(x: dict, names: Sequence[str], other: torch.Tensor, alt_instruction: str | Sequence[str] | None) -> dict:
    out = dict(x)
    for name in names:
        if name == "instruction":
            n = len(x[name])
            if isinstance(alt_instruction, str) and alt_instruction:
                out[name] = [alt_instruction] * n
            elif alt_instruction is not None and not isinstance(alt_instruction, str):
                if len(alt_instruction) != n:
                    raise ValueError(f"alt_instruction: {len(alt_instruction)} instructions for {n} samples")
                out[name] = list(alt_instruction)
            else:
                out[name] = [x[name][int(j)] for j in other]
        else:
            out[name] = x[name][other]
    return out


def _noise(cfg, n: int, seed: int, shared: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if shared:  # one noise row for every sample: between-sample differences come from the inputs only
        return torch.randn((1, cfg.num_queries, cfg.action_dim), generator=gen).expand(n, -1, -1).contiguous()
    return torch.randn((n, cfg.num_queries, cfg.action_dim), generator=gen)


def _effect(predict: _Predictor, x: dict, swap: Sequence[str], noise: torch.Tensor, alt_instruction, base):
    n = x["proprio"].shape[0]
    other = partner(n)
    swapped = _swap(x, swap, other, alt_instruction)
    vision_key = "+".join(sorted(s for s in swap if s != "proprio")) or "orig"
    moved = (predict(swapped, vision_key, noise) - base).flatten(1).norm(dim=1).mean()
    between = (base[other] - base).flatten(1).norm(dim=1).mean()  # same noise row for every sample
    return float(moved / between.clamp_min(1e-12))


def _baseline(model, batch: Mapping, num_steps: int | None, seed: int):
    """Inputs, predictor, the shared noise row and the unswapped predictions every effect compares against."""
    x = _inputs(batch)
    n = x["proprio"].shape[0]
    if n < 2:
        raise ValueError("an input effect needs a batch of at least 2 samples")
    predict = _Predictor(model, num_steps)
    noise = _noise(model.cfg, n, seed, shared=True)
    return x, predict, noise, predict(x, "orig", noise)


@torch.no_grad()
def input_effect(model, batch: Mapping, swap: Sequence[str], *, num_steps: int | None = None, seed: int = 0,
                 alt_instruction: str | Sequence[str] | None = None) -> float:
    """Effect size of swapping the inputs named in ``swap`` (a subset of ``INPUTS``) on ``batch``.

    ``batch`` has the dataset's keys (context_image, wrist_image, instruction, proprio; >= 2 samples).
    ``alt_instruction`` replaces every instruction instead of taking another sample's (a dataset of one
    task has one instruction, so another sample's would change nothing); a list gives one per sample
    (:func:`alternative_instructions`: a different valid instruction of the same task).
    """
    bad = sorted(set(swap) - set(INPUTS))
    if bad:
        raise ValueError(f"unknown input(s) {bad}; choose from {INPUTS}")
    x, predict, noise, base = _baseline(model, batch, num_steps, seed)
    return _effect(predict, x, swap, noise, alt_instruction, base)


@torch.no_grad()
def action_error(model, batch: Mapping, predict: _Predictor | None = None, *, vision_key: str = "orig",
                 num_draws: int = 3, seed: int = 0, num_steps: int | None = None) -> float:
    """Mean squared error of sampled chunks vs ``batch["actions"]`` over valid steps (``action_mask``),
    in the model's normalised action space when it has one, averaged over ``num_draws`` noise draws."""
    x = _inputs(batch)
    predict = predict or _Predictor(model, num_steps)
    target = predict.normalize(torch.as_tensor(batch["actions"]).float())
    mask = torch.as_tensor(batch.get("action_mask", torch.ones(target.shape[:2], dtype=torch.bool))).bool()
    errs = []
    for d in range(num_draws):
        pred = predict(x, vision_key, _noise(model.cfg, target.shape[0], seed + 1 + d, shared=False))
        errs.append(float(((pred - target) ** 2)[mask].mean()))
    return float(np.mean(errs))


@torch.no_grad()
def conditioning_report(model, batch: Mapping, *, blank_images: tuple | None = None, num_draws: int = 3,
                        num_steps: int | None = None, seed: int = 0,
                        alt_instruction: str | Sequence[str] | None = None) -> dict:
    """Effect ratios of every input, and (when ``batch`` has actions) the action MSE with real and with
    blanked images. ``blank_images`` = (context, wrist) uint8 (H,W,3) images that replace every sample's
    views for ``blank_image_val_action_mse`` (use :func:`dataset_mean_images`)."""
    x, predict, noise, base = _baseline(model, batch, num_steps, seed)
    n = len(x["instruction"])
    swaps = {
        "image_effect_ratio": ["context_image"],
        "wrist_effect_ratio": ["wrist_image"],
        "both_images_effect_ratio": ["context_image", "wrist_image"],
        "instruction_effect_ratio": ["instruction"],
        "proprio_effect_ratio": ["proprio"],
    }
    report: dict = {"num_samples": int(n)}
    for key, swap in swaps.items():
        report[key] = _effect(predict, x, swap, noise, alt_instruction, base)
    if "actions" in batch:
        kw = {"num_draws": num_draws, "seed": seed}
        report["val_action_mse"] = action_error(model, batch, predict, **kw)
        if blank_images is not None:
            blank = dict(batch)
            for key, img in zip(("context_image", "wrist_image"), blank_images):
                img = torch.as_tensor(np.asarray(img))
                blank[key] = img[None].expand(n, *img.shape).contiguous()
            predict_blank = _Predictor(model, num_steps)
            report["blank_image_val_action_mse"] = action_error(model, blank, predict_blank, **kw)
        report["num_flow_steps"] = int(num_steps or model.cfg.flow_steps)
        report["num_noise_draws"] = int(num_draws)
    return report


def conditioning_effects(model, batch: Mapping, *, seed: int = 0, alt_instruction: str | Sequence[str] | None = None,
                         num_steps: int | None = None) -> dict[str, float]:
    """Effect sizes by input name: context_image, wrist_image, both_images, instruction, proprio."""
    r = conditioning_report(model, {k: batch[k] for k in INPUTS}, seed=seed,
                            alt_instruction=alt_instruction, num_steps=num_steps)
    return {
        "context_image": r["image_effect_ratio"],
        "wrist_image": r["wrist_effect_ratio"],
        "both_images": r["both_images_effect_ratio"],
        "instruction": r["instruction_effect_ratio"],
        "proprio": r["proprio_effect_ratio"],
    }


def ignoring_images_warning(report: Mapping) -> str | None:
    """The warning to print when the context image barely moves the predictions, else None."""
    r = report.get("image_effect_ratio")
    if r is None or r >= IGNORED_IMAGES_THRESHOLD:
        return None
    return (f"the policy is ignoring its images: image_effect_ratio {r:.3f} < {IGNORED_IMAGES_THRESHOLD} "
            "(swapping the context image barely changes the predicted chunk; see docs/training.md)")


def dataset_mean_images(dataset, max_samples: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean (context, wrist) uint8 images over up to ``max_samples`` random samples of a
    ``DemoDataset`` (at its model image size): the 'blank' images of the blank-image error."""
    n = len(dataset)
    if n == 0:
        raise ValueError("dataset_mean_images: the dataset is empty")
    idx = np.random.default_rng(seed).choice(n, size=min(n, max_samples), replace=False)
    ctx = wrist = None
    for i in idx:
        s = dataset[int(i)]
        c, w = np.asarray(s["context_image"], np.float64), np.asarray(s["wrist_image"], np.float64)
        ctx, wrist = (c, w) if ctx is None else (ctx + c, wrist + w)
    return tuple(np.clip(np.round(a / len(idx)), 0, 255).astype(np.uint8) for a in (ctx, wrist))
