"""GPU leases without GPUs: fake device ids, a tmp lock folder, threads and real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ccafl.gpu_lease import (
    GpuLeaseError,
    GpuLeaseTimeout,
    default_lock_dir,
    lease_gpus,
    visible_devices,
)

REPO = Path(__file__).resolve().parents[1]
DEVICES = [0, 1, 2, 3]


def _holder_script(lock_dir: Path, ready: Path) -> str:
    """A process that leases one fake device, reports it, and sleeps until killed."""
    return (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from ccafl.gpu_lease import lease_gpus\n"
        f"with lease_gpus(1, devices={DEVICES}, lock_dir={str(lock_dir)!r}) as d:\n"
        f"    Path({str(ready)!r}).write_text(str(d[0]))\n"
        "    time.sleep(120)\n"
    )


def _wait_for(path: Path, seconds: float = 20.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} was not written within {seconds} s")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_four_concurrent_holders_get_distinct_devices_and_a_fifth_waits(tmp_path: Path) -> None:
    got: list[int] = []
    lock = threading.Lock()
    all_in = threading.Barrier(5)  # four holders + this thread
    release = threading.Event()

    def holder() -> None:
        with lease_gpus(1, devices=DEVICES, lock_dir=tmp_path) as devices:
            with lock:
                got.extend(devices)
            all_in.wait(timeout=10)
            release.wait(timeout=10)

    threads = [threading.Thread(target=holder) for _ in range(4)]
    for t in threads:
        t.start()
    all_in.wait(timeout=10)
    assert sorted(got) == DEVICES

    fifth: list[int] = []

    def fifth_holder() -> None:
        with lease_gpus(1, devices=DEVICES, lock_dir=tmp_path, timeout=10) as devices:
            fifth.extend(devices)

    waiter = threading.Thread(target=fifth_holder)
    waiter.start()
    time.sleep(0.3)
    assert not fifth, "a fifth lease was granted while four devices were held"
    release.set()
    for t in threads:
        t.join(timeout=10)
    waiter.join(timeout=10)
    assert len(fifth) == 1 and fifth[0] in DEVICES


def test_multi_device_claims_are_all_or_nothing(tmp_path: Path) -> None:
    with lease_gpus(3, devices=DEVICES, lock_dir=tmp_path) as three:
        assert len(set(three)) == 3
        with pytest.raises(GpuLeaseTimeout):
            with lease_gpus(2, devices=DEVICES, lock_dir=tmp_path, timeout=0.2):
                pass
        # The failed claim of two must not have kept the one free device.
        with lease_gpus(1, devices=DEVICES, lock_dir=tmp_path, timeout=1) as one:
            assert one[0] not in three
    with lease_gpus(4, devices=DEVICES, lock_dir=tmp_path, timeout=1) as four:
        assert sorted(four) == DEVICES


def test_holder_killed_with_sigkill_releases_its_device(tmp_path: Path) -> None:
    locks, ready = tmp_path / "locks", tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, "-c", _holder_script(locks, ready)], env=_env(), cwd=tmp_path
    )
    try:
        held = int(_wait_for(ready))
        with pytest.raises(GpuLeaseTimeout):
            with lease_gpus(4, devices=DEVICES, lock_dir=locks, timeout=0.3):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        with lease_gpus(4, devices=DEVICES, lock_dir=locks, timeout=5) as devices:
            assert held in devices
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_timeout_error_names_devices_holders_and_lock_dir(tmp_path: Path) -> None:
    with lease_gpus(2, devices=[0, 1], lock_dir=tmp_path):
        start = time.monotonic()
        with pytest.raises(GpuLeaseTimeout) as error:
            with lease_gpus(1, devices=[0, 1], lock_dir=tmp_path, timeout=0.5):
                pass
        assert 0.4 < time.monotonic() - start < 3
    message = str(error.value)
    assert "timed out after" in message and "1 free GPU" in message
    assert str(tmp_path) in message and f"pid {os.getpid()}" in message


def test_impossible_and_empty_requests(tmp_path: Path) -> None:
    with pytest.raises(GpuLeaseError, match="only 2 visible"):
        with lease_gpus(3, devices=[0, 1], lock_dir=tmp_path):
            pass
    with lease_gpus(0, devices=[], lock_dir=tmp_path) as none:
        assert none == []


def test_visible_devices_and_lock_dir_follow_the_environment(tmp_path: Path) -> None:
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "2,3"}) == [2, 3]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == [1]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-ab12"}) == ["GPU-ab12"]
    assert default_lock_dir({"CCAFL_GPU_LOCK_DIR": str(tmp_path)}) == tmp_path
    assert default_lock_dir({"SLURM_JOB_ID": "42"}).name.endswith("-slurm42")


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ccafl.gpu_lease", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


PRINT_DEVICES = "import os;print(os.environ['CUDA_VISIBLE_DEVICES'])"


def test_cli_sets_cuda_visible_devices_and_returns_the_exit_code(tmp_path: Path) -> None:
    env = dict(_env(), CUDA_VISIBLE_DEVICES="4,5,6", CCAFL_GPU_LOCK_DIR=str(tmp_path))
    done = _cli("--gpus", "2", "--", sys.executable, "-c", PRINT_DEVICES, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4,5"

    failed = _cli("--gpus", "1", "--", sys.executable, "-c", "raise SystemExit(7)", env=env)
    assert failed.returncode == 7

    # --gpus 0 runs the command as it is, CUDA_VISIBLE_DEVICES untouched.
    plain = _cli("--gpus", "0", "--", sys.executable, "-c", PRINT_DEVICES, env=env)
    assert plain.returncode == 0 and plain.stdout.strip() == "4,5,6"
    plain_failed = _cli("--gpus", "0", "--", sys.executable, "-c", "exit(3)", env=env)
    assert plain_failed.returncode == 3


def test_cli_waits_for_a_held_device_and_times_out(tmp_path: Path) -> None:
    env = dict(_env(), CUDA_VISIBLE_DEVICES="0", CCAFL_GPU_LOCK_DIR=str(tmp_path))
    with lease_gpus(1, devices=[0], lock_dir=tmp_path):
        done = _cli("--gpus", "1", "--timeout", "0.3", "--", "true", env=env)
    assert done.returncode == 75
    assert "timed out" in done.stderr
