"""Which GPUs a job may use: a file-lock lease shared by the jobs of one machine.

Snakemake counts the ``gpu`` resource (``snakemake --resources gpu=4`` runs at most four
one-GPU jobs at a time) but does not tell a job *which* devices are its own, so without help
every job would start on device 0. A lease picks the devices: one lock file per device in a
lock folder, held with ``fcntl.flock`` for as long as the job runs. The kernel drops a flock
when its holder dies, so a job killed with SIGKILL (or a crashed node process) never leaves a
stale lease behind. A claim is all-or-nothing: a job asking for two devices never holds one
while waiting for the other, so two multi-GPU jobs cannot block each other.

Library use::

    with lease_gpus(1) as devices:  # e.g. [2]
        ...

Command-line use (what the GPU rules run)::

    python -m ccafl.gpu_lease --gpus 1 -- python -m ccafl intra ...

leases the devices, runs the command with ``CUDA_VISIBLE_DEVICES`` set to them, releases them
and exits with the command's exit status. With ``--gpus 0`` it simply execs the command.

Device ids are the entries of ``CUDA_VISIBLE_DEVICES`` when it is set (so a lease made under
``CUDA_VISIBLE_DEVICES=2,3`` hands out 2 or 3, and the child sees that physical device), else
``0..n-1`` for the n GPUs ``nvidia-smi -L`` lists. Jobs share leases through the lock folder:
``$CCAFL_GPU_LOCK_DIR``, else ``<tmp>/ccafl-gpu-locks-<uid>``; inside a SLURM job the folder
also names the job id, because SLURM renumbers each allocation's devices from 0 and two jobs on
one node must not mistake each other's device 0 for their own.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["GpuLeaseError", "GpuLeaseTimeout", "default_lock_dir", "lease_gpus", "visible_devices"]

DeviceId = int | str

# Backoff while every device is taken: short first (a job that just finished frees its device
# within milliseconds), capped so that a waiting job notices a free device within seconds.
_FIRST_WAIT_S = 0.05
_MAX_WAIT_S = 2.0


class GpuLeaseError(RuntimeError):
    """A lease that can never be granted (more devices asked for than exist)."""


class GpuLeaseTimeout(GpuLeaseError, TimeoutError):
    """The devices did not become free within the timeout."""


def _parse_visible(value: str) -> list[DeviceId]:
    """``CUDA_VISIBLE_DEVICES`` entries, as CUDA reads them: up to the first invalid one.

    Integers stay integers; ``GPU-<uuid>`` and ``MIG-...`` entries are kept as strings.
    """
    devices: list[DeviceId] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            break
        if re.fullmatch(r"-?\d+", entry):
            if int(entry) < 0:
                break
            devices.append(int(entry))
        else:
            devices.append(entry)
    return devices


def _count_with_nvidia_smi() -> int | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    # One "GPU i: ..." line per physical device; MIG instances are indented below it.
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _count_with_torch() -> int:
    try:
        import torch
    except ImportError:
        return 0
    # Uses NVML where available, which does not initialise a CUDA context in this process.
    return torch.cuda.device_count()


def visible_devices(environ: dict[str, str] | None = None) -> list[DeviceId]:
    """The devices a lease chooses from: ``CUDA_VISIBLE_DEVICES`` if set, else every GPU."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return _parse_visible(environ["CUDA_VISIBLE_DEVICES"])
    count = _count_with_nvidia_smi()
    if count is None:
        count = _count_with_torch()
    return list(range(count))


def default_lock_dir(environ: dict[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if environ.get("CCAFL_GPU_LOCK_DIR"):
        return Path(environ["CCAFL_GPU_LOCK_DIR"])
    name = f"ccafl-gpu-locks-{os.getuid()}"
    if environ.get("SLURM_JOB_ID"):
        name += f"-slurm{environ['SLURM_JOB_ID']}"
    return Path(tempfile.gettempdir()) / name


def _lock_path(lock_dir: Path, device: DeviceId) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(device))
    return lock_dir / f"gpu-{safe}.lock"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    # The holder's pid, for the timeout message and for people looking at the folder.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _try_claim(n: int, devices: Sequence[DeviceId], lock_dir: Path) -> dict[DeviceId, int] | None:
    """All-or-nothing: n free devices with their lock fds, or None without holding any.

    Claims are serialised by a short-lived folder lock so that two claimants never each take
    part of what the other needs.
    """
    guard = os.open(lock_dir / "claim.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        held: dict[DeviceId, int] = {}
        for device in devices:
            fd = _try_lock(_lock_path(lock_dir, device))
            if fd is not None:
                held[device] = fd
                if len(held) == n:
                    return held
        _release(list(held.values()))
        return None
    finally:
        os.close(guard)  # closing drops the flock


def _holders(devices: Sequence[DeviceId], lock_dir: Path) -> str:
    parts = []
    for device in devices:
        try:
            pid = _lock_path(lock_dir, device).read_text().strip()
        except OSError:
            pid = ""
        parts.append(f"{device} (pid {pid or '?'})")
    return ", ".join(parts)


@contextlib.contextmanager
def lease_gpus(
    n: int,
    *,
    devices: Sequence[DeviceId] | None = None,
    lock_dir: str | Path | None = None,
    timeout: float | None = None,
) -> Iterator[list[DeviceId]]:
    """Hold ``n`` devices for the duration of the ``with`` block; yields their ids.

    Args:
        n: how many devices; 0 yields ``[]`` at once.
        devices: the ids to choose from (default: :func:`visible_devices`).
        lock_dir: folder of the lock files, shared by every job of the machine
            (default: :func:`default_lock_dir`).
        timeout: seconds to wait for free devices; None waits as long as it takes.

    Raises:
        GpuLeaseError: ``n`` exceeds the number of devices (the lease could never be granted).
        GpuLeaseTimeout: the devices stayed taken for ``timeout`` seconds.
    """
    if n < 0:
        raise ValueError(f"cannot lease a negative number of GPUs ({n})")
    if n == 0:
        yield []
        return
    devices = list(visible_devices() if devices is None else devices)
    if len(set(devices)) != len(devices):
        raise ValueError(f"duplicate device ids in {devices}")
    if n > len(devices):
        raise GpuLeaseError(
            f"asked for {n} GPU(s) but only {len(devices)} visible ({devices}); "
            "lower resources.gpus_per_job or run on a machine with more GPUs"
        )
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    start = time.monotonic()
    wait = _FIRST_WAIT_S
    while (held := _try_claim(n, devices, lock_dir)) is None:
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            raise GpuLeaseTimeout(
                f"timed out after {waited:.1f} s waiting for {n} free GPU(s) of {devices}; "
                f"held now: {_holders(devices, lock_dir)} (lock files in {lock_dir}). "
                "Another job is using them; a killed job releases its lease by itself."
            )
        pause = wait * random.uniform(0.5, 1.0)  # jitter keeps waiters from polling in step
        if timeout is not None:
            pause = min(pause, max(0.0, timeout - waited))
        time.sleep(pause)
        wait = min(wait * 2, _MAX_WAIT_S)
    try:
        yield list(held)
    finally:
        _release(list(held.values()))


def _exit_status(returncode: int) -> int:
    """The shell's convention: a child killed by signal s exits the wrapper with 128 + s."""
    return 128 - returncode if returncode < 0 else returncode


def run_with_lease(
    command: Sequence[str],
    n: int,
    *,
    lock_dir: str | Path | None = None,
    timeout: float | None = None,
) -> int:
    """Run ``command`` on ``n`` leased devices; returns its exit status."""
    with lease_gpus(n, lock_dir=lock_dir, timeout=timeout) as devices:
        visible = ",".join(map(str, devices))
        print(f"ccafl.gpu_lease: CUDA_VISIBLE_DEVICES={visible}", file=sys.stderr, flush=True)
        # Snakemake stops a job with SIGTERM/SIGINT: pass it on and keep the lease until the
        # child has really exited, so no other job gets a device that is still in use. The
        # handlers go in before the child starts so that no signal is lost in between.
        pending: list[int] = []
        child: subprocess.Popen | None = None

        def forward(signum: int, _frame) -> None:
            if child is None:
                pending.append(signum)
            else:
                child.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            child = subprocess.Popen(
                list(command), env=dict(os.environ, CUDA_VISIBLE_DEVICES=visible)
            )
            for signum in pending:
                child.send_signal(signum)
            returncode = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return _exit_status(returncode)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ccafl.gpu_lease",
        description=(
            "Lease GPUs for one command: wait until N devices are free, run the command with "
            "CUDA_VISIBLE_DEVICES set to them, release them and exit with the command's status. "
            "Devices are shared with every other lease on this machine through lock files."
        ),
        epilog="example: python -m ccafl.gpu_lease --gpus 1 -- python -m ccafl intra ...",
    )
    parser.add_argument("--gpus", type=int, required=True, help="devices to lease (0: none)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="give up after this many seconds of waiting (default: wait as long as it takes)",
    )
    parser.add_argument(
        "--lock-dir",
        type=Path,
        default=None,
        help="lock folder shared by the jobs (default: $CCAFL_GPU_LOCK_DIR or a per-user tmp dir)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    if args.gpus < 0:
        parser.error("--gpus must be >= 0")
    if args.gpus == 0:
        try:
            os.execvp(command[0], command)
        except OSError as error:
            print(f"ccafl.gpu_lease: cannot run {command[0]}: {error}", file=sys.stderr)
            return 127
    try:
        return run_with_lease(command, args.gpus, lock_dir=args.lock_dir, timeout=args.timeout)
    except GpuLeaseTimeout as error:
        print(f"ccafl.gpu_lease: {error}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: worth retrying later
    except GpuLeaseError as error:
        print(f"ccafl.gpu_lease: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"ccafl.gpu_lease: cannot run {command[0]}: {error}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
