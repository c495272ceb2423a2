"""Policy serving over loopback (issue 17): openpi's protocol, safety, batching, and RemotePolicy.

- the real openpi-client ``WebsocketClientPolicy`` reads the metadata and gets (16, 7) float32 actions,
  with openpi's LIBERO keys and with the checkpoint's keys;
- a bad or missing API key gets HTTP 401, an oversized message closes only its own connection, malformed
  messages, wrong shapes, missing keys and NaNs get an error naming the problem on a connection that
  keeps serving; meanwhile another client keeps getting actions; /healthz answers without a key;
- inference runs off the event loop (health checks answer during a slow model call) and requests that
  arrive during a model call are batched into the next one;
- ``RemotePolicy`` gives the same actions as the local ``VLAPolicy`` for the same inputs and seed;
- ``serve_policy.py`` serves a checkpoint and stops cleanly on SIGTERM; an evaluation of Lift-Cube
  episodes through the server gives the same episodes and actions as in-process (slow).

Every server binds 127.0.0.1 on a free port (port 0) and is stopped by its fixture or context manager.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import torch

pytest.importorskip("websockets")
pytest.importorskip("msgpack")

from vla.data.key_mapping import KeyMapping  # noqa: E402
from vla.serving.client import PolicyClient, PolicyServerError, ServerAuthError  # noqa: E402
from vla.serving.codec import CodecError, packb, unpackb  # noqa: E402
from vla.serving.server import PolicyServer, ServerThread  # noqa: E402
from vla.serving.spec import PolicySpec  # noqa: E402

KEY = "s3cret-key-for-tests-0123456789"


def libero_obs(seed=0, side=224):
    rng = np.random.default_rng(seed)
    return {
        "observation/image": rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=27).astype(np.float32),
        "prompt": "lift the red cube",
    }


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def healthz(url: str, timeout=5.0) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port_of(url)}/healthz", timeout=timeout) as r:
        return r.status


# ---------------------------------------------------------------------- a stub model (no torch model needed)
class StubRunner:
    """Answers each sample with its proprio sum in every action; optionally blocks its first call."""

    spec = PolicySpec(16, 7, (32, 32), KeyMapping.load("isaaclab_lift"), "lift the red cube")

    def __init__(self, delay_s=0.0, gate: threading.Event | None = None):
        self.delay_s, self.gate, self.batches = delay_s, gate, []
        self.started = threading.Event()

    def __call__(self, samples):
        self.started.set()
        if self.gate is not None and not self.batches:
            self.gate.wait(30)
        time.sleep(self.delay_s)
        self.batches.append(len(samples))
        return [np.full((16, 7), s.proprio.sum(), np.float32) for s in samples]


# ---------------------------------------------------------------------- codec
def test_codec_speaks_openpi_and_refuses_what_it_must():
    from openpi_client import msgpack_numpy

    obs = libero_obs(side=8)
    ours = unpackb(msgpack_numpy.packb(obs))  # openpi's encoder -> our decoder
    assert ours.keys() == obs.keys() and all(np.array_equal(ours[k], obs[k]) for k in obs if k != "prompt")
    theirs = msgpack_numpy.unpackb(packb({"actions": np.ones((16, 7), np.float32)}))  # ours -> openpi's decoder
    assert theirs["actions"].dtype == np.float32 and theirs["actions"].shape == (16, 7)

    def array(dtype, shape, data):
        return packb({b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape})

    with pytest.raises(CodecError, match="refused"):
        unpackb(array("|O", [1], b"\0" * 8))  # object arrays would unpickle
    with pytest.raises(CodecError, match="refused"):
        unpackb(array("|V8", [1], b"\0" * 8))
    with pytest.raises(CodecError, match="needs 16"):
        unpackb(array("<f4", [4], b"\0" * 15))
    with pytest.raises(CodecError, match="extension type"):
        import msgpack

        unpackb(msgpack.packb(msgpack.ExtType(5, b"x")))
    with pytest.raises(CodecError, match="not a valid msgpack"):
        unpackb(b"\xc1 not msgpack")
    with pytest.raises(CodecError):
        packb({"x": np.array([object()])})
    with pytest.raises(CodecError, match="needs"):  # a shape whose int64 product would wrap around
        unpackb(array("|u1", [2**32, 2**32], b"\0" * 8))


# ---------------------------------------------------------------------- safety and protocol (stub model)
def test_refusals_leave_the_server_and_other_clients_serving():
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server = PolicyServer(StubRunner(), port=0, api_key=KEY, max_message_bytes=256 << 10)
    with ServerThread(server) as url:
        good = PolicyClient(url, api_key=KEY)
        obs = libero_obs(side=64)
        expected = float(obs["observation/state"].sum())

        def served():  # the good client is still served, on its same connection
            out = good.infer(obs)["actions"]
            assert out.shape == (16, 7) and out[0, 0] == pytest.approx(expected, rel=1e-5)

        assert healthz(url) == 200  # no key needed for the health check
        with pytest.raises(ServerAuthError, match="refused the API key"):
            PolicyClient(url, api_key="wrong")
        with pytest.raises(ServerAuthError, match="api_key_file"):
            PolicyClient(url)
        with pytest.raises(InvalidStatus, match="401"):  # openpi's own client is refused too
            WebsocketClientPolicy(url, api_key="wrong")
        served()

        # oversized: that connection is closed (1009), the others go on
        big = PolicyClient(url, api_key=KEY)
        with pytest.raises(PolicyServerError, match="size limit"):
            big.infer(libero_obs(side=400))
        served()

        # malformed / wrong shape / missing key / NaN / text: an error naming the problem, same connection goes on
        oc = WebsocketClientPolicy(url, api_key=KEY)
        assert oc.get_server_metadata()["auth"] == "Api-Key"
        bad_state = dict(obs, **{"observation/state": np.zeros(8, np.float32)})
        nan_state = dict(obs, **{"observation/state": np.full(27, np.nan, np.float32)})
        no_wrist = {k: v for k, v in obs.items() if k != "observation/wrist_image"}
        float_image = dict(obs, **{"observation/image": obs["observation/image"].astype(np.float32)})
        for bad, match in [(bad_state, r"'observation/state': expected shape \(27,\), got \(8,\)"),
                           (nan_state, "NaN"), (no_wrist, "lacks the wrist image"),
                           (float_image, "expected uint8"), ([1, 2, 3], "must be a map")]:
            with pytest.raises(RuntimeError, match=match):
                oc.infer(bad)
            assert oc.infer(obs)["actions"].shape == (16, 7)
        with connect(url, additional_headers={"Authorization": f"Api-Key {KEY}"}) as raw:
            raw.recv()  # metadata
            raw.send(b"\x93\x01")  # truncated msgpack
            assert raw.recv().startswith("error: not a valid msgpack")
            raw.send("hello")
            assert "binary msgpack" in raw.recv()
            raw.send(packb(obs))
            assert unpackb(raw.recv())["actions"].shape == (16, 7)
        served()
        good.close()
    assert server.num_errors >= 7


def test_connection_limit():
    with ServerThread(PolicyServer(StubRunner(), port=0, max_connections=1)) as url:
        with PolicyClient(url) as first:
            with pytest.raises(PolicyServerError, match="HTTP 503"):
                PolicyClient(url)
            assert first.infer(libero_obs(side=32))["actions"].shape == (16, 7)


def test_inference_does_not_block_the_loop_and_requests_are_batched():
    gate = threading.Event()
    runner = StubRunner(gate=gate)
    server = PolicyServer(runner, port=0, max_wait_s=0.0)
    with ServerThread(server) as url:
        clients = [PolicyClient(url) for _ in range(3)]
        results = {}

        def ask(i):
            results[i] = clients[i].infer(libero_obs(seed=i, side=32))

        first = threading.Thread(target=ask, args=(0,))
        first.start()
        assert runner.started.wait(10)  # the model is busy with client 0's request (blocked on the gate)
        t0 = time.perf_counter()
        assert healthz(url) == 200 and time.perf_counter() - t0 < 2.0  # the event loop still answers
        others = [threading.Thread(target=ask, args=(i,)) for i in (1, 2)]
        for t in others:
            t.start()
        deadline = time.time() + 10
        while server.num_requests < 3 and time.time() < deadline:
            time.sleep(0.01)
        gate.set()
        for t in [first, *others]:
            t.join(20)
        for c in clients:
            c.close()
    assert runner.batches == [1, 2]  # the two requests that arrived during the first call: one model call
    assert results[1]["server_timing"]["batch_size"] == 2
    for i in range(3):
        expected = float(libero_obs(seed=i, side=32)["observation/state"].sum())
        assert results[i]["actions"][0, 0] == pytest.approx(expected, rel=1e-5)


def test_unreachable_server_is_one_clear_line():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PolicyServerError, match=f"cannot reach policy server ws://127.0.0.1:{port}.*serve_policy.py"):
        PolicyClient(f"ws://127.0.0.1:{port}", open_timeout_s=5)
    with pytest.raises(ValueError, match="ws://HOST:PORT"):
        PolicyClient("127.0.0.1:8000")


# ---------------------------------------------------------------------- the real tiny model
@pytest.fixture(scope="module")
def tiny_server(tiny_checkpoint):
    from vla.serving.runner import ModelRunner

    runner = ModelRunner.from_checkpoint(tiny_checkpoint, seed=0)
    server = PolicyServer(runner, port=0)
    thread = ServerThread(server)
    url = thread.start()
    yield url, runner, server
    thread.stop()


def test_openpi_client_gets_actions_from_a_checkpoint(tiny_server):
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    url, runner, _ = tiny_server
    assert int(np.__version__.split(".")[0]) >= 2  # openpi-client (declares numpy<2) installed without its deps
    client = WebsocketClientPolicy(url)
    meta = client.get_server_metadata()
    assert meta["action_horizon"] == 16 and meta["action_dim"] == 7 and meta["image_size"] == [64, 64]
    assert meta["instruction"] == "lift the red cube" and meta["key_mapping"]["context_image"] == "table_cam"
    out = client.infer(libero_obs())  # openpi's LIBERO names, 224x224 images resized by the server
    assert out["actions"].dtype == np.float32 and out["actions"].shape == (16, 7)
    assert np.isfinite(out["actions"]).all() and out["server_timing"]["infer_ms"] > 0

    # the checkpoint's own keys + a fixed noise give exactly what predict_action gives in-process
    o = libero_obs(seed=1, side=64)
    state = o["observation/state"]
    own = {"table_cam": o["observation/image"], "wrist_cam": o["observation/wrist_image"], "eef_pos": state[:3],
           "eef_quat": state[3:7], "gripper_pos": state[7:9], "joint_pos": state[9:18], "joint_vel": state[18:]}
    noise = np.random.default_rng(2).normal(size=(16, 7)).astype(np.float32)
    remote = client.infer({**own, "noise": noise})["actions"]
    local = runner.model.predict_action(o["observation/image"][None], o["observation/wrist_image"][None],
                                        ["lift the red cube"], torch.from_numpy(state[None]),
                                        noise=torch.from_numpy(noise[None]))[0].numpy()
    np.testing.assert_allclose(remote, local, rtol=0, atol=1e-5)


def _policy_obs(n=2, step=0):
    g = torch.Generator().manual_seed(step)
    return {"policy": {
        "table_cam": torch.randint(0, 255, (n, 80, 80, 3), dtype=torch.uint8, generator=g),
        "wrist_cam": torch.randint(0, 255, (n, 80, 80, 3), dtype=torch.uint8, generator=g),
        "eef_pos": torch.randn(n, 3, generator=g), "eef_quat": torch.randn(n, 4, generator=g),
        "gripper_pos": torch.randn(n, 2, generator=g), "joint_pos": torch.randn(n, 9, generator=g),
        "joint_vel": torch.randn(n, 9, generator=g),
    }}


@pytest.mark.parametrize("temporal_ensemble", [False, True])
def test_remote_policy_matches_local_policy(tiny_server, tiny_checkpoint, temporal_ensemble):
    from vla_isaac.policy import VLAPolicy
    from vla_isaac.remote_policy import RemotePolicy

    url, _, server = tiny_server
    kw = dict(num_envs=2, replan_every=3, seed=7, temporal_ensemble=temporal_ensemble)
    local = VLAPolicy(tiny_checkpoint, None, **kw)
    remote = RemotePolicy(url, None, **kw)
    calls_before = len(server.batcher.batch_sizes)
    try:
        assert (remote.chunk, remote.action_dim, remote.image_size) == (16, 7, (64, 64))
        assert remote.key_mapping == local.key_mapping and remote.instruction == local.instruction
        for step in range(7):
            if step == 4:
                local.reset([1])
                remote.reset([1])
            obs = _policy_obs(step=step)
            np.testing.assert_allclose(remote(obs).numpy(), local(obs).numpy(), rtol=0, atol=1e-5)
        assert remote.num_model_calls == local.num_model_calls == 4  # steps 0, 3, 4 (env 1 reset), 6
        # the envs that replan together are one model call on the server (their messages announce each other)
        assert server.batcher.batch_sizes[calls_before:] == [2, 2, 1, 1]
    finally:
        remote.close()


def test_remote_policy_checks_the_action_layout(tiny_checkpoint):
    from vla.checkpoint import load_vla_for_inference
    from vla.serving.runner import ModelRunner
    from vla_isaac.policy import ActionLayoutError
    from vla_isaac.remote_policy import RemotePolicy

    model = load_vla_for_inference(tiny_checkpoint)
    spec = PolicySpec(16, 7, (64, 64), KeyMapping.load("isaaclab_lift"), "lift", action_layout="joint_position(7)")
    with ServerThread(PolicyServer(ModelRunner(model, spec), port=0)) as url:
        with pytest.raises(ActionLayoutError, match="joint_position"):
            RemotePolicy(url, None)
        with pytest.raises(ValueError, match="--flow_steps"):
            RemotePolicy(url, None, num_flow_steps=4)


# ---------------------------------------------------------------------- the CLI and Isaac Lab
def _start_script(repo_root, *args):
    cmd = [sys.executable, "scripts/serve_policy.py", "--port", "0", *args]
    proc = subprocess.Popen(cmd, cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "listening on ws://" in line:
            return proc, line.split("listening on ", 1)[1].split()[0], lines
    proc.kill()
    raise AssertionError("serve_policy.py did not start:\n" + "".join(lines))


def _stop_script(proc, sig=signal.SIGTERM):
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return out


@pytest.mark.slow
def test_serve_policy_script_serves_with_a_key_and_stops_on_sigterm(repo_root, tiny_checkpoint, tmp_path):
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    proc, url, _ = _start_script(repo_root, "--checkpoint", str(tiny_checkpoint), "--api_key_file", str(key_file))
    try:
        assert url.startswith("ws://127.0.0.1:")  # loopback by default
        client = WebsocketClientPolicy(url, api_key=KEY)
        assert client.infer(libero_obs())["actions"].shape == (16, 7)
        with pytest.raises(ServerAuthError):
            PolicyClient(url, api_key="nope")
    finally:
        out = _stop_script(proc)
    assert proc.returncode == 0, out
    assert "stopped after 1 requests" in out


@pytest.mark.slow
@pytest.mark.sim
def test_eval_through_the_server_equals_in_process(tiny_server, tiny_checkpoint):
    """Lift-Cube episodes in-process and through the server: the server gives the in-process chunk for every
    observation the local run saw, and closed-loop evaluation through it runs the same episodes.

    Chunks are compared on the same inputs, not along two closed loops: contact dynamics amplify float
    differences of 1e-7 (thread scheduling, CPU kernels) into visibly different trajectories, which made
    a step-by-step comparison of two rollouts flaky on loaded machines.
    """
    pytest.importorskip("isaaclab")
    from conftest import TINY_IMAGE

    from vla_isaac.envs import make_env, make_env_cfg
    from vla_isaac.evaluation import make_controller, run_episodes

    url, *_ = tiny_server
    cfg = make_env_cfg("Lift-Cube", num_envs=1, image_size=TINY_IMAGE, seed=0)
    cfg.episode_length_s = 1.5
    env = make_env(cfg)
    runs, calls = {}, {}
    try:
        for name, source in [("local", dict(checkpoint=tiny_checkpoint)), ("remote", dict(policy_server=url))]:
            ctrl = make_controller("vla", env, seed=0, replan_every=8, **source)
            policy, seen = ctrl.act, []
            inner = policy.source
            policy.source = lambda inputs, noise, inner=inner, seen=seen: seen.append(
                ({k: (v.clone() if torch.is_tensor(v) else list(v)) for k, v in inputs.items()}, noise.clone(),
                 inner(inputs, noise))) or seen[-1][2]
            res = run_episodes(env, ctrl, 3, seed=0, progress=False)
            runs[name], calls[name] = [r.episode for r in res.episodes], seen
            if name == "remote":  # every local chunk, recomputed by the server from the same inputs and noise
                for inputs, noise, chunk in calls["local"]:
                    np.testing.assert_allclose(inner(inputs, noise).numpy(), chunk.numpy(), rtol=0, atol=1e-4)
    finally:
        env.close()
    assert runs["remote"] == runs["local"] == [0, 1, 2]
    assert len(calls["local"]) >= 3 * 2  # at least two replans per 30-step episode
    # the first observation after a seeded reset is the same in both runs, and so is its chunk
    np.testing.assert_allclose(calls["remote"][0][2].numpy(), calls["local"][0][2].numpy(), rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.sim
def test_eval_vla_cli_with_policy_server(repo_root, tiny_server, tmp_path):
    """The user's command: eval_vla.py --policy_server (and a clear error when nothing listens)."""
    import json
    import socket

    url, *_ = tiny_server
    cmd = [sys.executable, "scripts/eval_vla.py", "--task", "Lift-Cube", "--policy_server", url, "--num_episodes", "2",
           "--episode_length_s", "1.0", "--image_size", "64", "64", "--videos", "0", "--no_progress",
           "--output", str(tmp_path / "eval")]
    r = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "VLA_POLICY_API_KEY": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["num_episodes"] == 2 and summary["policy_server"] == url

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{s.getsockname()[1]}"
    r = subprocess.run([*cmd[:5], dead, *cmd[6:]], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and f"error: cannot reach policy server {dead}" in r.stderr
