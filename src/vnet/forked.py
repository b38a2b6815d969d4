"""Work done on the machine's other core, by a forked child, for vnet to take later.

A no-op apply at a thousand endpoints reads five hundred namespaces, and works out the desired
state and reads the host, which need nothing from those namespaces. One process does all of it
one piece after another on one core. A thread cannot overlap them: the GIL runs one thread's
Python at a time, and a thread that waits in syscalls (thousands, to read namespaces) waits for
the GIL again after each. A forked child can: it is a copy of vnet at the moment of the fork, it
computes, writes its result back through a pipe as plain values (marshal: data only, never code,
and from a copy of vnet, never from a file), closes the pipe and exits without running anything
of vnet's at exit. (Working out the desired state in a second child as well was slower on two
cores: the children and vnet then share two cores three ways, and the copy-on-write faults of a
fork after the host is read cost more than it saved.)

Whoever forks must be able to do without the result: `take()` raises Unavailable when the child
failed, died, or returned what marshal cannot write, and the caller then does the work itself,
errors and all. So a child's work is an accelerator, never a second way to get an answer.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import struct
from types import GeneratorType

TYPE_CHECKING = False  # as typing's, without importing typing before the head start's fork (values.py)
if TYPE_CHECKING:
    from typing import Any, Callable


_LEN = struct.Struct("=Q")  # each result's length, before it


class Unavailable(Exception):
    """The child gave no result: do the work in this process."""


class Forked:
    """fn(*args), computed in a child forked now; `take()` waits for it and returns it."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.pid = 0
        self._fd = -1
        r, w = os.pipe()
        try:  # room for a thousand endpoints' namespaces (~0.4 MB) before the parent reads: _Outbox
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass  # over the system's pipe-max-size: the child keeps what does not fit
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            return  # take() says Unavailable
        if pid == 0:  # the child: never returns
            os.close(r)
            _child(fn, args, w)
        os.close(w)
        self.pid, self._fd = pid, r

    def take(self, last: bool = True) -> Any:
        """The child's result; where fn is a generator, its next item (each is written as it is
        made, so the first can be taken while the child works on the next): `last` False where
        more are to be taken."""
        if self._fd < 0:
            raise Unavailable("no child")
        try:
            head = self._read(_LEN.size)
            ok, value = marshal.loads(self._read(_LEN.unpack(head)[0]))
        except (EOFError, ValueError, TypeError):
            self._drop()
            raise Unavailable("the child died before it wrote its result") from None
        if not ok or last:
            self._drop()
        if not ok:
            raise Unavailable(value)
        return value

    def ready(self) -> bool:
        """take() has something to read now: the child has begun writing a result, or its pipe
        is closed (take then says so). False once everything was taken."""
        if self._fd < 0:
            return False
        import select  # here: a C module, for the callers that ask

        return bool(select.select([self._fd], [], [], 0)[0])

    def _read(self, n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = os.read(self._fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _drop(self) -> None:
        os.close(self._fd)
        self._fd = -1

    def close(self) -> None:
        """Stop the child if its result was not taken, and reap it. Apart from take(): the child
        closes its pipe before it exits, and its exit (the kernel tearing down a copy of vnet's
        memory) need not be waited for until then."""
        pid, self.pid = self.pid, 0
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            if pid:
                # the C module under signal.py, loaded with the interpreter: signal.py's enums cost
                # 1.2 ms, and a no-op apply stops its child here whenever vnet meets it
                from _signal import SIGKILL

                try:
                    os.kill(pid, SIGKILL)  # by the pid vnet forked
                except ProcessLookupError:
                    pass
        if pid:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # reaped already (by whoever waits for any child)

    def __enter__(self) -> Forked:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child(fn: Callable[..., Any], args: tuple, w: int) -> None:
    code = 1
    try:
        out = _Outbox(w)
        try:
            result = fn(*args)
            for item in result if isinstance(result, GeneratorType) else (result,):
                out.put(marshal.dumps((True, item)))
        except Exception as exc:  # the parent does the work again and meets it itself
            out.put(marshal.dumps((False, f"{type(exc).__name__}: {exc}")))
        out.flush()
        os.close(w)  # the parent's read ends here, not when this process's exit is done
        code = 0
    finally:
        os._exit(code)  # no atexit, no flushing of vnet's buffers: the parent owns them


class _Outbox:
    """Items on their way to the parent: each written as far as the pipe takes it now, the rest
    kept here. The parent may not read for a while (it works out the desired state), and a child
    waiting for room in the pipe would be a child not working."""

    def __init__(self, w: int) -> None:
        self.w = w
        self.pending = bytearray()
        os.set_blocking(w, False)

    def put(self, data: bytes) -> None:
        self.pending += _LEN.pack(len(data))
        self.pending += data
        try:
            while self.pending:
                del self.pending[: os.write(self.w, self.pending)]
        except BlockingIOError:
            pass

    def flush(self) -> None:
        os.set_blocking(self.w, True)
        view = memoryview(self.pending)
        while view:
            view = view[os.write(self.w, view):]
