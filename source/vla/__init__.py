"""vla: the Isaac-free core of vla-isaac (Qwen2.5-VL + LoRA + flow-matching action expert).

Nothing in this package imports Isaac Lab; the `vla_isaac` extension imports it.
"""

__version__ = "0.1.0"
