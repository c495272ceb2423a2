"""Demo recording and replay through Isaac Lab's recorder (robomimic / Isaac Lab Mimic HDF5 layout).

    env_cfg = make_env_cfg("Stack-Cube", num_envs=4, image_size=(128, 128))
    success = configure_recording(env_cfg, "demos/stack.hdf5", env_name="Stack-Cube")
    env = make_env(env_cfg)
    stats = record_demos(env, ScriptedExpert(env), num_demos=50, success_term=success)
    env.close()

Recording follows Isaac Lab's ``scripts/tools/record_demos.py``: the ``success`` term is taken out of the
env's terminations (so the env never auto-resets a successful episode behind our back) and evaluated here
after every step; a finished env is exported with ``record_pre_reset(force_export_or_skip=False)``,
``set_success_to_episodes`` and ``export_episodes``, then reset on its own while the others keep running.
Time-outs and failure terminations still auto-reset inside ``env.step``; the recorder then exports them
as failed (kept only with ``keep_failed``). Exactly ``num_demos`` successful demos are written.

File safety (see docs/recording.md): a new file is written under a hidden temp name beside the output and
renamed onto the output path once its first demo is flushed, so the output path never holds an empty or
half-initialised file and ``overwrite`` only replaces an old file once a new demo exists. Every exported
demo is flushed before the next step; a demo that fails half-way through its write is removed again.
:func:`graceful_interrupt` turns the first SIGINT/SIGTERM into "stop after this step", so an interrupted
recording closes the file normally with every completed demo in it.

Modules, one job each:

- :mod:`.files`: the HDF5 layout, :class:`DemoFileHandler` (writes it) and :func:`read_dataset_info` (reads it)
- :mod:`.terms`: the recorder terms, :func:`configure_recording` and :class:`SuccessCheck`
- :mod:`.loop`: :func:`record_demos` and its signal handling (:func:`graceful_interrupt`)
- :mod:`.replay`: :func:`replay_demos` (a determinism check of recorded demos)
- :mod:`.teleop`: :class:`KeyboardExpert` (keyboard teleoperation through Isaac Sim's window)
"""

from .files import (
    EXECUTED_ACTIONS_KEY,
    FILE_MODES,
    INSTRUCTION_KEY,
    LABEL_ACTIONS_KEY,
    LABEL_VALID_KEY,
    DatasetInfo,
    DemoFileHandler,
    FileMode,
    RecordingError,
    check_output_path,
    decode_text,
    demo_file_handler,
    encode_texts,
    read_dataset_info,
    sorted_demo_names,
)
from .loop import RecordingStats, StopFlag, graceful_interrupt, record_demos
from .replay import ReplayResult, ReplayStats, configure_replay, replay_demos
from .teleop import KeyboardExpert, check_keyboard_available
from .terms import (
    LABEL_ATTR,
    LABEL_VALID_ATTR,
    DemoRecorderManagerCfg,
    InstructionRecorder,
    InstructionRecorderCfg,
    LabelActionRecorder,
    LabelActionRecorderCfg,
    LabelValidRecorder,
    LabelValidRecorderCfg,
    SuccessCheck,
    configure_recording,
    episode_instructions,
)

__all__ = [
    "EXECUTED_ACTIONS_KEY",
    "FILE_MODES",
    "INSTRUCTION_KEY",
    "LABEL_ACTIONS_KEY",
    "LABEL_ATTR",
    "LABEL_VALID_ATTR",
    "LABEL_VALID_KEY",
    "LabelValidRecorder",
    "LabelValidRecorderCfg",
    "DatasetInfo",
    "DemoFileHandler",
    "DemoRecorderManagerCfg",
    "FileMode",
    "InstructionRecorder",
    "InstructionRecorderCfg",
    "KeyboardExpert",
    "LabelActionRecorder",
    "LabelActionRecorderCfg",
    "RecordingError",
    "RecordingStats",
    "ReplayResult",
    "ReplayStats",
    "StopFlag",
    "SuccessCheck",
    "check_keyboard_available",
    "check_output_path",
    "configure_recording",
    "configure_replay",
    "decode_text",
    "demo_file_handler",
    "encode_texts",
    "episode_instructions",
    "graceful_interrupt",
    "read_dataset_info",
    "record_demos",
    "replay_demos",
    "sorted_demo_names",
]
