"""A tiny, randomly initialised Qwen2.5-VL of the real transformers classes, built offline.

Tests and the CPU demo need the same code path as the 7B model (`AutoModelForImageTextToText` /
`AutoProcessor.from_pretrained`) without the hub, so this module trains a small byte-level BPE with
Qwen's pre-tokenizer, Qwen's special tokens and chat template, builds a `Qwen2_5_VLProcessor`, and
saves a 2-layer `Qwen2_5_VLForConditionalGeneration` with random weights. The folder is cached under
`<cache>/models/tiny-qwen2.5-vl-<hash>`, keyed by the build parameters and the library versions, and
written atomically, so every process sees either no folder or a complete one.

    python -m vla.backbone.tiny        # builds (once) and prints the folder
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

TINY_NAME = "tiny"

QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
# Qwen2.5-VL chat template as shipped with Qwen/Qwen2.5-VL-*-Instruct.
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Text the BPE is trained on: the prompt scaffolding and the project's instructions get short encodings.
_CORPUS = [
    "You are a helpful assistant.", "system", "user", "assistant", "Context view:", "Wrist view:",
    "lift the red cube", "lift the cube", "pick up the red cube", "pick up the cube and lift it",
    "stack the red cube on the blue cube", "stack the cubes", "place the cube on the other cube",
    "push the blue block to the left", "open the drawer", "close the drawer", "grasp the object",
    "move the gripper up", "What action should the robot take?", "The robot arm moves towards the target.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
]

# Everything that determines the built folder; its hash names the cache entry.
BUILD_PARAMS = {
    "format": 1,
    "seed": 0,
    "bpe_vocab": 496,
    "text": dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}),
    "vision": dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, in_channels=3, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, window_size=112, out_hidden_size=128,
                   fullatt_block_indexes=[1], tokens_per_second=2),
    # min / max pixels of the image processor: up to 224x224 inputs keep their size (112 -> 16 tokens per
    # image, 168 -> 36, 224 -> 64).
    "image_pixels": {"shortest_edge": 3136, "longest_edge": 50176},
    "corpus": _CORPUS,
}


def build_hash(params: dict | None = None) -> str:
    import tokenizers
    import torch
    import transformers

    blob = json.dumps({"params": params or BUILD_PARAMS, "transformers": transformers.__version__,
                       "tokenizers": tokenizers.__version__, "torch": torch.__version__.split("+")[0]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def tiny_model_dir() -> Path:
    from vla.utils.io import cache_dir

    return cache_dir("models") / f"tiny-qwen2.5-vl-{build_hash()}"


def _build_tokenizer(params: dict):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=params["bpe_vocab"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.train_from_iterator(params["corpus"] * 20, trainer=trainer)
    with tempfile.TemporaryDirectory() as d:
        bpe.model.save(d)  # vocab.json + merges.txt
        vocab = json.loads(Path(d, "vocab.json").read_text(encoding="utf-8"))
        merges = [tuple(line.split(" ")) for line in Path(d, "merges.txt").read_text(encoding="utf-8").splitlines()
                  if line.strip() and not line.startswith("#version")]
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", errors="replace", extra_special_tokens={})
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    tok.add_tokens(["<|endoftext|>"], special_tokens=True)
    tok.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tok


def _build_processor(tok, params: dict):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    kw = dict(patch_size=14, temporal_patch_size=2, merge_size=2)
    # Sizes go through `size=`; min_pixels/max_pixels are not honoured by these constructors.
    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(size=dict(params["image_pixels"]), **kw),
                               video_processor=Qwen2VLVideoProcessor(size=dict(params["image_pixels"]), **kw),
                               tokenizer=tok, chat_template=QWEN_VL_CHAT_TEMPLATE)


def _build_config(tok, params: dict):
    from transformers import Qwen2_5_VLConfig

    text = dict(params["text"])
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    if max(ids.values()) >= text["vocab_size"]:
        raise RuntimeError(f"tiny tokenizer ids {max(ids.values())} exceed the model vocab {text['vocab_size']}")
    text.update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"], use_cache=False)
    return Qwen2_5_VLConfig(text_config=text, vision_config=dict(params["vision"]),
                            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                            tie_word_embeddings=False)


def build_tiny_qwen_vl(out_dir: str | os.PathLike | None = None) -> Path:
    """Build (or reuse) the tiny Qwen2.5-VL folder and return its path.

    Deterministic: the same build parameters and library versions give the same weights, so a
    checkpoint trained on "tiny" loads on another machine (checkpoints also record the weights' sha256).
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vla.utils.io import atomic_dir

    path = Path(out_dir) if out_dir is not None else tiny_model_dir()
    if (path / "build.json").is_file():
        return path
    params = BUILD_PARAMS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params["seed"])
        tok = _build_tokenizer(params)
        processor = _build_processor(tok, params)
        model = Qwen2_5_VLForConditionalGeneration(_build_config(tok, params)).eval()
    try:
        with atomic_dir(path, overwrite=False) as tmp:
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            (tmp / "build.json").write_text(json.dumps({"hash": build_hash(), "params": params}, indent=1))
    except FileExistsError:
        if not (path / "build.json").is_file():  # another process won the race; its folder is complete
            raise
    return path


def main() -> None:
    print(build_tiny_qwen_vl())


if __name__ == "__main__":
    main()
