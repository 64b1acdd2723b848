"""DistributedDataParallel on two CPU processes (gloo): both ranks end with the same
weights, rank 0's checkpoint holds them, and a re-run resumes a run folder exactly."""

import hashlib
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from diffusion_lib.training import latest_checkpoint, load_checkpoint

# Each rank trains, then writes a hash of its weights and EMA weights (a test-only script).
SCRIPT = textwrap.dedent("""
    import hashlib, os, sys
    import torch
    from diffusion_lib.training import TrainConfig, train

    torch.set_num_threads(1)
    out, steps = sys.argv[1], int(sys.argv[2])
    result = train(TrainConfig(
        dataset="swissroll", out=out, steps=steps, batch_size=16, checkpoint_every=3,
        log_every=3, num_timesteps=20, device="cpu", progress=False,
        model_overrides={"hidden": 16, "depth": 1, "time_embed_dim": 8, "dropout": 0.1}))
    h = hashlib.sha256()
    for state in (result.model.state_dict(), result.ema_model.state_dict()):
        for key in sorted(state):
            h.update(key.encode())
            h.update(state[key].numpy().tobytes())
    with open(os.path.join(out, "hash-rank%s.txt" % os.environ["RANK"]), "w") as f:
        f.write(h.hexdigest())
""")

CLI_ARGS = ["--dataset", "swissroll", "--batch-size", "16", "--checkpoint-every", "3",
            "--log-every", "3", "--num-timesteps", "20", "--device", "cpu", "--no-progress",
            "--model-override", "hidden=16", "--model-override", "depth=1",
            "--model-override", "time_embed_dim=8", "--model-override", "dropout=0.1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def checkpoint_hash(run) -> str:
    ckpt = load_checkpoint(latest_checkpoint(run))
    h = hashlib.sha256()
    for state in (ckpt.model_state, ckpt.ema_state):
        for key in sorted(state):
            h.update(key.encode())
            h.update(state[key].numpy().tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_two_cpu_processes_agree_and_resume(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    a, b = tmp_path / "a", tmp_path / "b"

    # 1. six steps in one go: both ranks hold the same weights, and rank 0 saved them
    torchrun(script, a, 6)
    hash_a = [(a / f"hash-rank{r}.txt").read_text() for r in (0, 1)]
    assert hash_a[0] == hash_a[1]
    assert checkpoint_hash(a) == hash_a[0]
    assert latest_checkpoint(a).name == "step-00000006.safetensors"

    # 2. three steps through the command line, then a re-run of the script to six
    p = torchrun("-m", "diffusion_lib", "train", "--out", b, "--steps", "3", *CLI_ARGS)
    assert latest_checkpoint(b).name == "step-00000003.safetensors"
    p = torchrun(script, b, 6)
    assert "resuming" in p.stderr and p.stderr.count("resuming") == 1     # rank 0 only
    hash_b = [(b / f"hash-rank{r}.txt").read_text() for r in (0, 1)]
    assert hash_b[0] == hash_b[1] == hash_a[0]          # resumed == uninterrupted, bitwise
