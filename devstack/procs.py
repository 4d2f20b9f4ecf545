"""Start detached processes with a log file and a pid file; stop them by pid file; wait with clear errors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.layout import Layout

# Popen handles of processes this interpreter started, so stop() can reap them (no zombies, and no
# "subprocess still running" ResourceWarning in a pytest run that treats warnings as errors).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """The stack could not start or be configured; the message names the process and shows its log."""


@dataclass(frozen=True)
class Running:
    name: str
    pid: int
    argv0: str


def log_path(layout: Layout, name: str) -> Path:
    return layout.logs / f"{name}.log"


def _pid_path(layout: Layout, name: str) -> Path:
    return layout.pids / f"{name}.pid"


def start(
    layout: Layout,
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Running:
    """Start ``argv`` in its own session (so it outlives ``python -m devstack up``) and record it."""
    args = [os.fspath(a) for a in argv]
    log = log_path(layout, name)
    with log.open("ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(args)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    running = Running(name, proc.pid, args[0])
    _pid_path(layout, name).write_text(json.dumps({"pid": proc.pid, "argv0": args[0]}))
    return running


def detach(running: Running) -> None:
    """Leave a process started by this interpreter running past its exit (no "still running" warning);
    ``stop`` still reaps it by pid."""
    child = _CHILDREN.pop(running.pid, None)
    if child is not None:
        child.returncode = 0  # Popen.__del__ only warns about children it believes still run


def recorded(layout: Layout) -> list[Running]:
    """Every process with a pid file, alive or not."""
    out = []
    for path in sorted(layout.pids.glob("*.pid")) if layout.pids.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            out.append(Running(path.stem, int(data["pid"]), str(data["argv0"])))
        except (ValueError, KeyError, OSError):
            path.unlink(missing_ok=True)
    return out


def find(layout: Layout, name: str) -> Running | None:
    return next((r for r in recorded(layout) if r.name == name), None)


def alive(running: Running) -> bool:
    """True when the pid is alive, not a zombie, and still runs the binary we started (no pid reuse)."""
    child = _CHILDREN.get(running.pid)
    if child is not None:  # our own child: its Popen handle knows for sure
        return child.poll() is None
    proc = Path(f"/proc/{running.pid}")
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and os.fsdecode(cmdline[0]) == running.argv0


def stop(layout: Layout, running: Running, grace: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds, reap it, drop its pid file."""
    if alive(running):
        _signal_group(running.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(running) and time.monotonic() < deadline:
            _reap(running.pid)
            time.sleep(0.1)
        if alive(running):
            _signal_group(running.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while alive(running) and time.monotonic() < deadline:
                _reap(running.pid)
                time.sleep(0.05)
    # children left in the group (bao's plugin processes) go too, even if the leader already exited;
    # skipped when the pid now belongs to some other live process
    if not _pid_taken_by_other(running):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(running.pid, signal.SIGKILL)
    child = _CHILDREN.pop(running.pid, None)
    if child is not None:  # our own child: wait for it, so it neither lingers as a zombie nor warns
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=10)
    _reap(running.pid)
    _pid_path(layout, running.name).unlink(missing_ok=True)


def _pid_taken_by_other(running: Running) -> bool:
    try:
        cmdline = Path(f"/proc/{running.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline[0]) and os.fsdecode(cmdline[0]) != running.argv0


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def failure(layout: Layout, name: str, what: str) -> StackError:
    log = log_path(layout, name)
    return StackError(f"{name}: {what}\n--- last 30 lines of {log} ---\n{tail(log)}")


def wait_for(
    layout: Layout,
    name: str,
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.2,
) -> float:
    """Poll ``check`` until true; fail early if the process died. Returns the seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    last_error = ""
    while True:
        try:
            if check():
                return time.monotonic() - started
        except Exception as exc:  # any failure of a probe just means "not yet"
            last_error = f" (last probe error: {type(exc).__name__}: {exc})"
        running = find(layout, name)
        if running is not None and not alive(running):
            raise failure(layout, name, f"exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise failure(layout, name, f"not {what} after {timeout:.0f}s{last_error}")
        time.sleep(interval)
