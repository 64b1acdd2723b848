"""Interruptions, full disks, unwritable folders and planted pickles lose nothing (issue 6).

The training command runs in child processes and is killed at chosen moments. Most
children are forked from this process, where torch is already imported, so one starts in
a fraction of a second instead of ~5 s of imports; each runs the real entry point,
``diffusion_lib.cli.main(argv)``, after the test has patched (in the child only) the
function where it must stop: a step, the write of a checkpoint's bytes, its rename, the
deletion of an old one, a line of metrics.jsonl, config.json. The slow test does the
same with fresh interpreters (``python -m diffusion_lib train``).

After every interruption: each checkpoint in the run folder loads, config.json parses,
the re-run resumes from the latest checkpoint and repeats at most one checkpoint
interval; the run finally ends with the weights, EMA, optimizer state and loss curve of
a run never interrupted, bit for bit.
"""

import json
import os
import pathlib
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import pytest
import torch

from diffusion_lib.cli import main
from diffusion_lib.training import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)

STEPS, EVERY = 120, 5          # the run of the interruption chain, and its checkpoint interval
TIMEOUT = 60                   # seconds any child may take; a hang fails the test
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks children (POSIX only)")


def train_argv(run, steps=STEPS, every=EVERY):
    return ["train", "--dataset", "swissroll", "--out", str(run), "--model", "mlp",
            "--model-override", "hidden=32", "--model-override", "depth=1",
            "--model-override", "time_embed_dim=16", "--num-timesteps", "50",
            "--batch-size", "32", "--steps", str(steps), "--checkpoint-every", str(every),
            "--log-every", "1", "--sample-every", "0", "--threads", "1", "--no-progress"]


def tensors_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_same_run(run, reference):
    """The final checkpoints hold the same weights, EMA, optimizer state; metrics the same
    losses, one row per step."""
    a, b = load_checkpoint(latest_checkpoint(run)), load_checkpoint(latest_checkpoint(reference))
    assert a.step == b.step
    assert tensors_equal(a.model_state, b.model_state)
    assert tensors_equal(a.ema_state, b.ema_state)
    sa, sb = a.optimizer_state["state"], b.optimizer_state["state"]
    assert sa.keys() == sb.keys() and all(tensors_equal(sa[i], sb[i]) for i in sa)
    rows, ref = metrics(run), metrics(reference)
    assert [r["step"] for r in rows] == list(range(1, b.step + 1))
    assert [(r["step"], r["loss"]) for r in rows] == [(r["step"], r["loss"]) for r in ref]


def metrics(run):
    """The rows of metrics.jsonl that parse (a crash may have torn the last one)."""
    path = pathlib.Path(run) / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


def temporaries(run):
    return sorted(p.name for p in pathlib.Path(run).rglob(".*.tmp-*"))


def assert_nothing_corrupt(run):
    """Every checkpoint loads (none is half written) and config.json parses."""
    for path in list_checkpoints(run):
        load_checkpoint(path)
    if (pathlib.Path(run) / "config.json").exists():
        json.loads((pathlib.Path(run) / "config.json").read_text())


def latest_step(run):
    path = latest_checkpoint(run)
    return load_checkpoint(path).step if path else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run never interrupted, trained in this process."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(train_argv(run)) == 0
    return run


# ---------------------------------------------------------------- forked children

class Child:
    """``cli.main(argv)`` in a forked process; ``patch`` (kind, value) stops or slows it."""

    def __init__(self, folder, argv, patch=None, setup=None):
        self.folder = pathlib.Path(folder)
        self.ready, self.go = self.folder / "ready", self.folder / "go"
        self.handled = self.folder / "handled"
        for f in (self.ready, self.go, self.handled):
            f.unlink(missing_ok=True)
        self.stderr_path = self.folder / "stderr"
        self.pid = os.fork()
        if self.pid == 0:                  # the child: never returns into pytest
            code = 99
            try:
                for fd, name in ((1, "stdout"), (2, "stderr")):
                    out = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                    os.dup2(out, fd)
                    os.close(out)
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if setup:
                    setup()
                if patch:
                    _apply(patch, self)
                code = main(argv)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.status = None

    def pause(self):
        """In the child: say where we are, then wait for the test (a kill, or ``go``)."""
        self.ready.write_text("")
        deadline = time.monotonic() + TIMEOUT
        while not self.go.exists():
            if time.monotonic() > deadline:
                os._exit(98)
            time.sleep(0.005)

    def wait_ready(self):
        deadline = time.monotonic() + TIMEOUT
        while not self.ready.exists():
            if self.poll() is not None:
                raise AssertionError(f"the child ended ({self.status}) before its stop: "
                                     f"{self.stderr()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("the child never reached its stop")
            time.sleep(0.005)

    def poll(self):
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def wait(self):
        deadline = time.monotonic() + TIMEOUT
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("the child did not finish")
            time.sleep(0.005)
        return self.status

    def wait_handled(self):
        """Until the child's signal handler has run (two pending signals count as one)."""
        deadline = time.monotonic() + TIMEOUT
        while not self.handled.exists():
            assert time.monotonic() < deadline, "the signal was never handled"
            time.sleep(0.005)

    def kill(self, signum=signal.SIGKILL):
        if self.poll() is None:
            os.kill(self.pid, signum)
        if signum == signal.SIGKILL:
            return self.wait()

    def stderr(self):
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""


def _apply(patch, child):
    """Patch the child's library where it must stop (test-side monkeypatching only)."""
    from diffusion_lib.training import checkpoint, engine, run_folder
    real_handle = run_folder.StopSignals._handle

    def handle(self, signum, frame):          # tell the test, then the library's handler
        child.handled.write_text(str(signum))
        return real_handle(self, signum, frame)
    run_folder.StopSignals._handle = handle
    kind, value = patch
    if kind in ("step", "slow"):              # step_seeds(seed, step, rank) opens each step
        real_seeds = engine.step_seeds

        def step_seeds(seed, step, rank):
            if kind == "slow":
                time.sleep(value)
            elif step == value:
                child.pause()
            return real_seeds(seed, step, rank)
        engine.step_seeds = step_seeds
    elif kind in ("write", "config"):         # half the bytes of a file written, then stop
        prefix = f".step-{value:08d}.safetensors.tmp-" if kind == "write" else ".config.json.tmp-"

        def open_slowly(path, mode="r", *args, **kwargs):
            f = open(path, mode, *args, **kwargs)
            return _HalfWriter(f, child) if pathlib.Path(path).name.startswith(prefix) else f
        checkpoint.open = open_slowly
    elif kind == "metrics":                   # half of the line of step ``value``
        def open_metrics(path, mode="r", *args, **kwargs):
            f = open(path, mode, *args, **kwargs)
            return _HalfWriter(f, child, when=f'"step": {value},') if "a" in mode else f
        engine.open = open_metrics
    elif kind == "rename":                    # the whole file written, not yet renamed
        real_replace = os.replace

        def replace(src, dst):
            if pathlib.Path(dst).name == f"step-{value:08d}.safetensors":
                child.pause()
            return real_replace(src, dst)
        os.replace = replace
    elif kind == "prune":                     # deleting an old checkpoint after a new one
        real_unlink = pathlib.Path.unlink

        def unlink(self, missing_ok=False):
            if self.name.startswith("step-"):
                child.pause()
            return real_unlink(self, missing_ok=missing_ok)
        pathlib.Path.unlink = unlink


class _HalfWriter:
    """A file whose write(data) writes half of data, flushes it to disk and stops."""

    def __init__(self, f, child, when=None):
        self.f, self.child, self.when = f, child, when

    def write(self, data):
        if self.when is None or self.when in str(data):
            self.f.write(data[:len(data) // 2])
            self.f.flush()
            os.fsync(self.f.fileno())
            self.child.pause()
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@needs_fork
def test_killed_anywhere_resumes_and_ends_bitwise_equal(reference, tmp_path):
    """SIGKILL at random moments and at every stage of a save; SIGTERM and SIGINT save a
    checkpoint first; a second signal stops at once. Then the run completes, bitwise equal
    to the uninterrupted one."""
    rng = random.Random(6)
    run, folder = tmp_path / "run", tmp_path / "child"
    folder.mkdir()
    argv = train_argv(run)
    survived = []

    def ahead():
        """A step past the next save: every launch moves the run on by a checkpoint."""
        return latest_step(run) + rng.randint(EVERY + 1, 2 * EVERY - 1)

    def second_save():
        return latest_step(run) + 2 * EVERY

    def launch(patch, stop=None):
        """Run the same command again, interrupted as ``stop`` says; check the aftermath."""
        resumes_from = latest_checkpoint(run)
        c = Child(folder, argv, patch)
        if stop == "kill-at-random":
            time.sleep(rng.uniform(0.02, 0.4))
            status = c.kill()
            assert status in (-signal.SIGKILL, 0), c.stderr()
            if status == 0:                              # it ended first: only if nearly done
                assert latest_step(run) == STEPS
        else:
            c.wait_ready()
            if stop in ("SIGTERM", "SIGINT", "twice"):
                signum = signal.SIGINT if stop == "SIGINT" else signal.SIGTERM
                reached = max([r["step"] for r in metrics(run)] + [0])
                c.kill(signum)
                if stop == "twice":
                    c.wait_handled()
                    c.kill(signum)
                c.go.write_text("")
                status = c.wait()
                lines = c.stderr().strip().splitlines()
                assert len(lines) == 1 + (resumes_from is not None), c.stderr()
                if stop == "twice":                  # stopped at once: no save of its own
                    assert status == 130 and lines[-1].startswith("error: interrupted"), lines
                    assert latest_step(run) == reached // EVERY * EVERY
                else:                                # the step in flight ends, then a save
                    assert status == 128 + signum, c.stderr()
                    assert lines[-1].startswith(f"interrupted: {signum.name}: training "
                                                f"stopped at step {reached + 1} of {STEPS}")
                    assert latest_step(run) == reached + 1
                    assert "Traceback" not in c.stderr()
            else:
                assert c.kill() == -signal.SIGKILL
        if resumes_from is not None and stop != "kill-at-random":
            assert f"resuming from {resumes_from} (step" in c.stderr(), c.stderr()
        # the aftermath: nothing corrupt, at most one interval to repeat
        assert_nothing_corrupt(run)
        reached = max([r["step"] for r in metrics(run)] + [0])
        assert reached - latest_step(run) <= EVERY, (reached, latest_step(run))
        survived.append((patch, stop, reached, latest_step(run)))

    slow = ("slow", 0.02)                         # 20 ms a step: a random kill lands anywhere
    launch(slow, "kill-at-random")
    launch(("step", ahead()), "kill")
    launch(("write", second_save()), "kill")       # half of a checkpoint's bytes written
    launch(("rename", second_save()), "kill")      # all written, not yet renamed
    assert temporaries(run)                        # what the kills left behind ...
    launch(slow, "kill-at-random")
    launch(("prune", None), "kill")                # a new one saved, deleting an old one
    launch(("metrics", ahead()), "kill")           # a line of metrics.jsonl torn
    launch(("config", None), "kill")               # config.json half rewritten at start
    launch(("step", ahead()), "SIGTERM")
    launch(("step", ahead()), "SIGINT")
    launch(("step", ahead()), "twice")
    launch(slow, "kill-at-random")
    assert latest_step(run) < STEPS - 10           # the chain left work to resume

    resumes_from = latest_checkpoint(run)
    c = Child(folder, argv)
    assert c.wait() == 0, c.stderr()
    assert f"resuming from {resumes_from} (step" in c.stderr()
    assert f"trained swissroll to step {STEPS}" in (folder / "stdout").read_text()
    assert temporaries(run) == []                 # ... is cleaned up on resume
    assert_same_run(run, reference)
    assert len(survived) == 12


# ---------------------------------------------------------------- fresh interpreters

SLOW_WRAPPER = """
import pathlib, sys, time
from diffusion_lib.training import engine
real = engine.step_seeds
def step_seeds(seed, step, rank):
    pathlib.Path(sys.argv[1]).touch()     # training has begun
    time.sleep(0.02)
    return real(seed, step, rank)
engine.step_seeds = step_seeds
from diffusion_lib.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@needs_fork
def test_real_processes_killed_then_resumed(tmp_path):
    """The command in fresh interpreters (``python -c`` calling ``cli.main``, steps slowed
    to 20 ms): SIGKILL, then SIGTERM, at random moments of training; then the command
    resumes and ends with the weights of a run never stopped."""
    rng = random.Random(7)
    steps = 40
    run, ref = tmp_path / "run", tmp_path / "ref"
    assert main(train_argv(ref, steps=steps)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for signum in (signal.SIGKILL, signal.SIGTERM):
        began = tmp_path / f"began-{signum.name}"
        p = subprocess.Popen([sys.executable, "-c", SLOW_WRAPPER, began, *train_argv(run, steps)],
                             stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 120
        while not began.exists():
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.2))
        p.send_signal(signum)
        err = p.communicate(timeout=120)[1]
        assert_nothing_corrupt(run)
        if signum == signal.SIGKILL:
            assert p.returncode == -signal.SIGKILL
            reached = max(r["step"] for r in metrics(run))
            assert reached - latest_step(run) <= EVERY
        else:
            assert p.returncode == 143, err
            assert err.strip().splitlines()[-1].startswith("interrupted: SIGTERM: training "
                                                           "stopped at step")
            assert latest_step(run) == max(r["step"] for r in metrics(run))
    assert 0 < latest_step(run) < steps
    resumes_from = latest_checkpoint(run)
    c = Child(tmp_path, train_argv(run, steps))        # forked: saves an interpreter start
    assert c.wait() == 0, c.stderr()
    assert f"resuming from {resumes_from}" in c.stderr()
    assert_same_run(run, ref)


# ---------------------------------------------------------------- full disk, no access

def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def snapshot(run):
    return {p.name: p.read_bytes() for p in list_checkpoints(run)}


@needs_fork
def test_full_disk_at_a_save_keeps_the_previous_checkpoint(tmp_path):
    """Files may not grow past 20 kB (RLIMIT_FSIZE; a checkpoint is ~90 kB): the first save
    fails with EFBIG, like a full disk. One line, exit 1, the old checkpoints intact."""
    resource = pytest.importorskip("resource")
    run = tmp_path / "run"
    assert main(train_argv(run, steps=10)) == 0
    before = snapshot(run)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    c = Child(tmp_path, train_argv(run, steps=20), setup=limit_file_size)
    assert c.wait() == 1, c.stderr()
    line = one_line(c.stderr().split("\n", 1)[1])           # after the "resuming" line
    assert line.startswith(f"error: cannot write {run / 'checkpoints'}/step-00000015.safetensors")
    assert "File too large" in line and str(run / "checkpoints" / "step-00000010") in line
    assert snapshot(run) == before and temporaries(run) == []
    assert_nothing_corrupt(run)


def test_too_little_free_space_is_refused_before_training(tmp_path, monkeypatch, capsys):
    free = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: free._replace(free=50_000))
    assert main(train_argv(tmp_path / "run", steps=10)) == 2
    line = one_line(capsys.readouterr().err)
    assert "KiB free on its disk, but checkpoints need about" in line
    assert not (tmp_path / "run").exists()


@pytest.fixture
def shared_tmp():
    """A folder another user may enter (pytest's own are private to their owner)."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="reliability-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@needs_fork
@pytest.mark.parametrize("unwritable", ["run folder", "checkpoints folder", "folder above"])
def test_unwritable_run_folder_is_refused_before_training(shared_tmp, unwritable):
    """Root ignores file modes, so as root the child runs as user nobody instead."""
    run = shared_tmp / "above" / "run"
    assert main(train_argv(run, steps=10)) == 0
    before, rows = snapshot(run), (run / "metrics.jsonl").read_text()
    locked = {"run folder": run, "checkpoints folder": run / "checkpoints",
              "folder above": run.parent}[unwritable]
    if unwritable == "checkpoints folder":
        run.chmod(0o777)                      # the run folder itself stays writable
    as_root = os.geteuid() == 0
    if not as_root or unwritable == "folder above":
        locked.chmod(0o000 if unwritable == "folder above" else 0o555)

    def drop_root():
        if as_root:
            os.setgid(65534)
            os.setuid(65534)
    try:
        c = Child(shared_tmp, train_argv(run, steps=20), setup=drop_root)
        assert c.wait() == 2, c.stderr()
    finally:
        locked.chmod(0o755)
    line = one_line(c.stderr().splitlines()[-1])
    assert line.startswith("error: ") and "Permission denied" in line and str(run) in line
    assert "resuming" not in c.stderr() or unwritable == "checkpoints folder"
    assert snapshot(run) == before
    assert (run / "metrics.jsonl").read_text() == rows          # not one step trained


def test_signal_handlers_are_restored_and_other_threads_left_alone(tmp_path):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert main(train_argv(tmp_path / "a", steps=2)) == 0
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    codes = []           # Python sets signal handlers in the main thread only
    thread = threading.Thread(target=lambda: codes.append(main(train_argv(tmp_path / "b", 2))))
    thread.start()
    thread.join(TIMEOUT)
    assert codes == [0] and latest_step(tmp_path / "b") == 2


# ---------------------------------------------------------------- planted pickles

class Payload:
    """Unpickling this creates ``marker``: code run by loading a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def planted_bytes(how, marker, tmp_path):
    if how == "torch.save":
        path = tmp_path / "planted.pt"
        torch.save({"model": Payload(marker), "step": 10**6}, path)
        return path.read_bytes()
    return pickle.dumps(Payload(marker), protocol=int(how.split()[-1]))


@pytest.mark.parametrize("how", ["torch.save", "pickle protocol 2", "pickle protocol 5"])
def test_a_planted_pickle_checkpoint_is_refused_unopened(how, tmp_path, capsys):
    # the payload is live: loading it the unsafe way does run its code
    canary = tmp_path / "canary"
    raw = planted_bytes(how, canary, tmp_path)
    if how == "torch.save":
        (tmp_path / "canary.pt").write_bytes(raw)
        torch.load(tmp_path / "canary.pt", weights_only=False)
    else:
        pickle.loads(raw)
    assert canary.exists()

    marker = tmp_path / "marker"
    run = tmp_path / "run"
    assert main(train_argv(run, steps=5)) == 0
    planted = run / "checkpoints" / "step-99999999.safetensors"    # the latest
    planted.write_bytes(planted_bytes(how, marker, tmp_path))
    capsys.readouterr()

    with pytest.raises(CheckpointError, match="pickle or torch.save file.*refused unopened"):
        load_checkpoint(planted)
    assert main(["sample", "--run", str(run), "--num-samples", "2",
                 "--out", str(tmp_path / "s.npy"), "--no-progress"]) == 2
    assert "refused unopened" in one_line(capsys.readouterr().err)
    assert main(train_argv(run, steps=10**8)) == 2
    assert "refused unopened" in one_line(capsys.readouterr().err)
    assert not marker.exists() and not (tmp_path / "s.npy").exists()
