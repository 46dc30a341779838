"""The sandboxed worker process: runs one untrusted program at a time for the host.

Started by ``builder.executor.sandbox`` with an empty environment. Before it reads any
program it imports all it needs, then locks itself down: resource limits (address space,
no file writes, no core dumps, few descriptors) and, where libseccomp is available, a
seccomp filter that makes fork/exec/socket/open and other file-system calls fail with EPERM.
Programs see only the tool API, safe builtins and a captured ``print``; every tool call is a
request to the host over the pipe, answered with plain data.
"""

from __future__ import annotations

import builtins as _builtins
import errno
import io
import math
import os
import resource
import sys
from typing import Any

from builder.executor.protocol import HEADER, encode, read_frame, write_frame
from builder.executor.validate import SAFE_BUILTINS, ValidationError, validate
from builder.tools import api

IN_FD, OUT_FD = 0, 1
MAX_DEPTH = 32
MAX_PRINT_CHARS = 10_000
RECURSION_LIMIT = 300

# System calls a program never needs; denied with EPERM after start-up.
DENIED_SYSCALLS = (
    "fork", "vfork", "clone", "clone3", "execve", "execveat", "socket", "socketpair", "connect", "bind",
    "listen", "accept", "accept4", "sendto", "sendmsg", "open", "openat", "openat2", "creat", "truncate",
    "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "link", "linkat",
    "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat",
    "kill", "tkill", "tgkill", "ptrace", "mount", "umount2", "chroot", "pivot_root", "unshare", "setns",
    "process_vm_readv", "process_vm_writev", "memfd_create", "io_uring_setup", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "personality", "setuid", "setgid", "setreuid", "setregid",
    "mknod", "mknodat", "utimensat", "chdir", "fchdir",
    # root-only escapes and ways to undo the limits above or reach other processes
    "open_by_handle_at", "name_to_handle_at", "setrlimit", "prlimit64", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "syslog", "acct",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
    "quotactl", "userfaultfd", "fanotify_init", "inotify_init", "inotify_init1", "fsopen", "fsmount",
    "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr", "lookup_dcookie", "setfsuid",
    "setfsgid", "setresuid", "setresgid", "setgroups", "capset", "seccomp",
)


class ToolCallError(Exception):
    """A tool call the host refused or failed; the message comes from the host."""


class OutputError(Exception):
    """The program's return value cannot be sent back as plain data."""


class _Link:
    """The state of the tool connection during the current run.

    ``broken`` is set when a tool call was interrupted between sending its request and reading
    the whole reply (out of memory, recursion limit): the pipe may then hold a stale reply, so
    neither this run nor any later one can trust it. The worker reports and exits instead.
    """

    run = 0
    seq = 0
    broken: str | None = None


def apply_limits(memory_mb: int, use_seccomp: bool = True) -> list[str]:
    """Lock the process down; returns the layers that are active (for the host to report)."""
    layers = []
    limits = [
        (resource.RLIMIT_AS, memory_mb * 1024 * 1024),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, 8),
        (resource.RLIMIT_NPROC, 0),  # ignored for root; seccomp covers fork there
    ]
    for which, value in limits:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass
    layers.append("rlimits")
    if not use_seccomp:
        return layers
    try:
        import pyseccomp as seccomp  # imported before the filter forbids opening files
    except ImportError:
        return layers
    filt = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            filt.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError, OSError):
            pass  # a call this architecture does not have
    filt.load()
    layers.append("seccomp")
    return layers


def to_plain(value, budget: int = 1_000_000, n_images: int | None = None):
    """Convert a program's return value into JSON-able plain data, or raise OutputError.

    ``budget`` bounds the approximate encoded size, checked while converting so that a huge
    value is refused before a second copy of it is made. With ``n_images``, a returned patch
    must refer to one of the example's images (programs can construct ``ImagePatch`` freely).
    """
    return _PlainConverter(budget, n_images).conv(value, 0)


class _PlainConverter:
    """One conversion by ``to_plain``: the size budget left and the number of images a patch may name."""

    def __init__(self, budget: int, n_images: int | None):
        self.budget, self.left, self.n_images = budget, budget, n_images

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise OutputError(f"the return value is larger than the {self.budget}-byte limit")

    def conv(self, v, depth: int):
        # The order of the type checks matters (bool before int); each group keeps it.
        if depth > MAX_DEPTH:
            raise OutputError("the return value is nested too deeply (or refers to itself)")
        self.spend(8)
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, (int, str, float)):
            return self.scalar(v)
        if isinstance(v, (api.ImagePatch, api.Track, api.VideoSegment)):
            return self.tool_value(v, depth)
        if isinstance(v, (list, tuple, set, frozenset, dict)):
            return self.container(v, depth)
        raise OutputError(f"cannot return a {type(v).__name__}; return text, numbers, lists, dicts or patches")

    def scalar(self, v):
        if isinstance(v, int):
            if abs(v) > 2**63:
                raise OutputError("the return value holds an integer too large to send")
            return v
        if isinstance(v, str):
            self.spend(len(v))
            return v
        if not math.isfinite(v):
            raise OutputError(f"the return value holds a non-finite number ({v})")
        return v

    def tool_value(self, v, depth: int):
        if isinstance(v, api.ImagePatch):
            if self.n_images is not None and not 0 <= v._image < self.n_images:
                raise OutputError(f"the return value holds a patch of image {v._image}, "
                                  f"but the example has {self.n_images} image(s)")
            out = {"box": self.conv(v.box, depth + 1), "image": v._image, "score": self.conv(v.score, depth + 1)}
            if v._frame is not None:
                out["frame"] = v._frame
            return out
        if isinstance(v, api.Track):
            return self.conv({"label": v.label, "frames": v.frames, "boxes": v.boxes}, depth + 1)
        return {"video": v._video, "start": v.start, "stop": v.stop}

    def container(self, v, depth: int):
        if isinstance(v, (list, tuple)):
            return [self.conv(x, depth + 1) for x in v]
        if isinstance(v, (set, frozenset)):
            items = [self.conv(x, depth + 1) for x in v]
            try:
                return sorted(items)
            except TypeError:
                return items
        out = {}
        for k, x in v.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise OutputError(f"dictionary keys in the return value must be text, got {type(k).__name__}")
            out[str(k)] = self.conv(x, depth + 1)
        return out


def _transport(tool, ref, args):
    if _Link.broken:
        raise ToolCallError(f"{tool}: the tool connection was lost earlier in this run ({_Link.broken})")
    seq = _Link.seq + 1
    # Encoding first: a failure here has sent nothing, so the connection stays usable.
    frame = encode({"op": "call", "run": _Link.run, "seq": seq, "tool": tool, "ref": ref, "args": args})
    _Link.seq = seq
    try:
        _write_all(frame)
        reply = read_frame(IN_FD)
    except BaseException as e:  # noqa: BLE001 - any interruption leaves the pipe out of step
        _Link.broken = type(e).__name__
        raise ToolCallError(f"{tool}: the tool call was interrupted ({type(e).__name__})") from None
    if reply.get("seq") != seq:
        _Link.broken = "replies out of step"
        raise ToolCallError(f"{tool}: the tool connection is out of step")
    if reply.get("ok"):
        return reply.get("value")
    raise ToolCallError(str(reply.get("error", "tool call failed")))


def _program_line(tb) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<program>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def run_one(request: dict) -> dict:
    """Run one program request and return the 'done' message."""
    printed = io.StringIO()
    dropped = [False]

    def safe_print(*args, sep=" ", end="\n"):
        if printed.tell() < MAX_PRINT_CHARS:
            printed.write(str(sep).join(str(a) for a in args) + str(end))
        else:
            dropped[0] = True

    def done(ok, value=None, kind=None, message=None, line=None):
        out = printed.getvalue()
        if len(out) > MAX_PRINT_CHARS or dropped[0]:
            out = out[:MAX_PRINT_CHARS] + "\n[printed output truncated]"
        # "retire" asks the host to replace this worker (it exits after answering).
        msg = {"op": "done", "run": _Link.run, "ok": ok, "stdout": out, "retire": bool(_Link.broken)}
        if ok:
            msg["value"] = value
        else:
            msg["error"] = {"kind": kind, "message": message, "line": line}
        return msg

    source, entry = request["source"], request.get("entry", "execute")
    _Link.run, _Link.seq = request.get("run", 0), 0
    try:
        tree = validate(source, entry)
        code = compile(tree, "<program>", "exec")
    except ValidationError as e:
        return done(False, kind=e.kind, message=e.message, line=e.line)
    builtins = {name: getattr(_builtins, name) for name in SAFE_BUILTINS if name not in ("True", "False", "None")}
    builtins["print"] = safe_print
    namespace: dict[str, Any] = {"__builtins__": builtins, **api.PROGRAM_API}
    videos = request.get("videos") or [None] * len(request["images"])
    patches = [api.ImagePatch(i, (0, 0, w, h)) if vid is None else api.VideoSegment(i, 0, int(vid[0]), float(vid[1]), w, h)
               for i, ((w, h), vid) in enumerate(zip(request["images"], videos, strict=False))]
    if not patches:
        return done(False, kind="validation", message="the example has no image")
    image_arg = patches if request.get("multi") else patches[0]
    try:
        exec(code, namespace)  # defines functions only (checked by validate)
        fn = namespace[entry]
        params = fn.__code__.co_varnames[: fn.__code__.co_argcount]
        kwargs = {name: request.get(name) for name in ("query", "choices") if name in params}
        value = fn(image_arg, **kwargs)
        if _Link.broken:  # the program swallowed the interrupted call's error: its result is suspect
            return done(False, kind="tool", message=f"a tool call was interrupted ({_Link.broken})")
        return done(True, value=to_plain(value, int(request.get("max_output_bytes", 1_000_000)), len(patches)))
    except ToolCallError as e:
        return done(False, kind="tool", message=str(e), line=_program_line(e.__traceback__))
    except OutputError as e:
        return done(False, kind="output", message=str(e))
    except MemoryError:
        return done(False, kind="memory", message="the program ran out of memory",
                    line=_program_line(sys.exc_info()[2]))
    except RecursionError:
        return done(False, kind="runtime", message="RecursionError: maximum recursion depth exceeded",
                    line=_program_line(sys.exc_info()[2]))
    except Exception as e:
        text = str(e)[:500]
        return done(False, kind="runtime", message=f"{type(e).__name__}: {text}" if text else type(e).__name__,
                    line=_program_line(e.__traceback__))


def _die_with_parent() -> None:
    """Ask the kernel to kill this worker when the host thread that started it goes away."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass  # not Linux: the closed pipe still ends an idle worker


def main() -> None:
    """Serve run requests from the host until the pipe closes."""
    # argv: package root, memory limit in MiB, "1"/"0" for the seccomp layer (set by the host)
    memory_mb = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 512
    use_seccomp = not (len(sys.argv) > 3 and sys.argv[3] == "0")
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the host went away before the request took effect
        return
    os.environ.clear()
    layers = apply_limits(memory_mb, use_seccomp)
    sys.setrecursionlimit(RECURSION_LIMIT)
    write_frame(OUT_FD, {"op": "ready", "layers": layers, "pid": os.getpid()})
    api._transport = _transport
    while True:
        try:
            request = read_frame(IN_FD)
        except Exception:
            return  # host closed the pipe or sent garbage: exit quietly
        if request.get("op") != "run":
            return  # out of step with the host: let it start a fresh worker
        max_bytes = int(request.get("max_output_bytes", 1_000_000))
        try:
            frame = encode(run_one(request))
            if len(frame) - HEADER.size > max_bytes:
                frame = _error_frame("output", f"the result is {len(frame)} bytes; the limit is {max_bytes}")
        except MemoryError:
            frame = _error_frame("memory", "the program ran out of memory")
        except Exception as e:  # e.g. a value that cannot be encoded
            frame = _error_frame("output", f"cannot send the result: {e}"[:300])
        _write_all(frame)
        if _Link.broken:
            return  # the pipe may hold a stale tool reply: never serve another run on it


def _error_frame(kind: str, message: str) -> bytes:
    return encode({"op": "done", "run": _Link.run, "ok": False, "stdout": "", "retire": bool(_Link.broken),
                   "error": {"kind": kind, "message": message, "line": None}})


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(OUT_FD, view):]


if __name__ == "__main__":
    main()
