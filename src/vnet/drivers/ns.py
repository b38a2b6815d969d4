"""Network namespaces: one long-lived netlink socket per namespace, and one thread that acts
inside any of them.

That thread enters a namespace with setns(2) before each call, so sockets it opens belong there and
/proc/sys/net and /dev/net/tun act on that namespace, without forking a process (or starting a
thread per namespace: a thousand endpoints would mean a thousand threads). Commands (nft, dnsmasq)
run through nsenter.
"""

from __future__ import annotations

import ctypes
import os
import _socket  # not socket.py: ~3 ms of start-up (drivers/rtnl.py)
from pathlib import Path

from vnet.drivers.rtnl import NETLINK_NETFILTER, Nft, Rtnl
from vnet.errors import VnetError

TYPE_CHECKING = False  # as typing's, without importing typing before the head start's fork (values.py)
if TYPE_CHECKING:
    import subprocess
    from typing import Any, Callable, TypeVar

    T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _mounted(path: Path, rundir_dev: int) -> bool:
    """A namespace is a file in /run/netns with an nsfs bind mount on it: a different device than
    the directory's. A plain file there is half-made (`ip netns add` or vnet killed between
    making the file and mounting the namespace on it) and cannot be entered."""
    try:
        return path.stat().st_dev != rundir_dev
    except FileNotFoundError:
        return False


def _rundir_dev() -> int | None:
    try:
        return NETNS_DIR.stat().st_dev
    except FileNotFoundError:
        return None


def exists(name: str) -> bool:
    """True when a namespace of that name can be entered."""
    dev = _rundir_dev()
    return dev is not None and _mounted(NETNS_DIR / name, dev)


def half_made(name: str) -> bool:
    """True when /run/netns holds a file of that name with no namespace mounted on it."""
    path = NETNS_DIR / name
    return path.exists() and not exists(name)


def pids_in(name: str | None) -> list[int]:
    """The processes whose network namespace is the named one (None: the one vnet runs in)."""
    return pids_by_netns([name])[name]


def pids_by_netns(names: list[str | None]) -> dict[str | None, list[int]]:
    """The processes in each named network namespace, from one walk of /proc (a namespace that
    is not there has none)."""
    want: dict[tuple[int, int], str | None] = {}
    for name in names:
        try:
            st = os.stat(NETNS_DIR / name if name else "/proc/self/ns/net")
        except FileNotFoundError:
            continue
        want[(st.st_dev, st.st_ino)] = name
    out: dict[str | None, list[int]] = {name: [] for name in names}
    if not want:
        return out
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            s = os.stat(p / "ns" / "net")
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        name = want.get((s.st_dev, s.st_ino), False)
        if name is not False:
            out[name].append(int(p.name))
    return out


def listed() -> list[str]:
    """Namespaces that can be entered (half-made files left out)."""
    dev = _rundir_dev()
    if dev is None:
        return []
    # os.scandir, not Path.iterdir: no Path made per entry (half the time with 1,000 namespaces)
    out = []
    with os.scandir(NETNS_DIR) as entries:
        for e in entries:
            try:
                if e.stat().st_dev != dev:  # see _mounted
                    out.append(e.name)
            except FileNotFoundError:
                pass
    return sorted(out)


MS_BIND, MS_REC, MS_SHARED = 4096, 16384, 1 << 20
MNT_DETACH = 2
_rundir_shared = False


def _share_rundir() -> None:
    """Make /run/netns a shared mount, as `ip netns add` does, so bind mounts in it propagate."""
    global _rundir_shared
    if _rundir_shared:
        return
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    d = str(NETNS_DIR).encode()
    if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
        if _libc.mount(d, d, b"none", MS_BIND | MS_REC, None) != 0 or _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot share {NETNS_DIR}: {os.strerror(err)}")
    _rundir_shared = True


_reserved = 0  # the descriptor table's size, as reserve_descriptors last made it


def reserve_descriptors(count: int) -> None:
    """Grow this process's descriptor table at once to hold `count` more. The kernel doubles it
    as descriptors are opened, and where the process has more than one thread each doubling waits
    for an RCU grace period: taking 500 namespaces made ahead (1,000 descriptors) cost 30 ms that
    way, against 5 ms with the table grown beforehand, while the hopper had not yet started."""
    global _reserved
    want = count + 128
    if want <= _reserved:
        return
    import resource  # here: ~0.3 ms, for the runs that make many namespaces

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    want = min(want, soft - 1) if soft != resource.RLIM_INFINITY else want
    try:
        fd = os.open("/", os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.close(os.dup2(fd, want, inheritable=False))
        finally:
            os.close(fd)
    except OSError:
        return  # the table grows as it always did
    _reserved = want


class _Hopper:
    """One worker thread that runs one call at a time, in the order given: what a one-worker
    ThreadPoolExecutor did, without importing concurrent.futures and logging (they cost every
    command's start-up more than this driver). Like the executor's, the thread is not a daemon:
    at exit it finishes the call it is in, then stops."""

    def __init__(self) -> None:
        import threading
        from _queue import SimpleQueue  # queue's own, without the rest of queue (heapq): ~0.6 ms of start-up

        self._jobs: SimpleQueue = SimpleQueue()
        self._event = threading.Event
        threading.Thread(target=self._serve, name="vnet-netns_0").start()
        threading._register_atexit(self._jobs.put, None)  # type: ignore[attr-defined]  # as concurrent.futures does

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, done, box = job
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # handed to the caller, as Future.result() does
                box.append((False, exc))
            done.set()
            del job, fn, args, done, box

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        done, box = self._event(), []
        self._jobs.put((fn, args, done, box))
        try:
            done.wait()
        except BaseException:  # a Ctrl-C: the call runs on, and what the caller does next (undo
            while not done.is_set():  # what it made) must not race it
                try:
                    done.wait()
                except KeyboardInterrupt:
                    continue
            raise
        ok, value = box[0]
        if ok:
            return value
        try:
            raise value
        finally:
            value = None  # no cycle through the traceback


_hopper: _Hopper | None = None
_home: int | None = None  # the namespace vnet started in, for the hopper to return to


def _hop(fn: Callable[..., T], *args: Any) -> T:
    """Run fn in the one thread that moves between namespaces (never vnet's main thread, so
    vnet itself stays where it started whatever fn enters)."""
    global _hopper, _home
    if _hopper is None:
        _home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        _hopper = _Hopper()
    return _hopper.call(fn, *args)


def _go_home() -> None:
    # a thread inside a namespace keeps it alive: leave it before it is deleted
    if _home is not None and _libc.setns(_home, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(home): {os.strerror(err)}")


def _unshare_and_bind(path: Path) -> Rtnl:
    # runs in a thread of create_many's, never vnet's main thread: unshare(CLONE_NEWNET) moves only
    # the calling thread, so vnet itself stays where it started
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    if _libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none", MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind {path}: {os.strerror(err)}")
    return Rtnl(_socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, 0))  # while we are here: its rtnetlink socket


def create(name: str) -> Rtnl:
    """A named network namespace, made in-process (a thread unshares, no child process), and an
    rtnetlink client inside it."""
    return create_many([name])[0]


def _make_each(paths: list[Path], made: list[Rtnl], then: Callable[[int, Rtnl], None] | None, first: int) -> None:
    for i, path in enumerate(paths, first):
        made.append(_unshare_and_bind(path))
        if then is not None:
            then(i, made[-1])


TWO_THREADS_FROM = 16  # namespaces made at once from which a second thread makes half of them


def _name_each(ahead: list[tuple[int, Rtnl]], paths: list[Path], named: list[Rtnl], then: Callable[[int, Rtnl], None] | None) -> None:
    """Give namespaces made ahead (drivers/spares.py) their names: a bind mount of each one's
    descriptor, as `ip netns add` mounts its own."""
    for path in paths:
        fd, nl = ahead.pop(0)
        try:
            if _libc.mount(f"/proc/self/fd/{fd}".encode(), str(path).encode(), b"none", MS_BIND, None) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"bind {path}: {os.strerror(err)}")
        except BaseException:
            nl.close()
            raise
        finally:
            os.close(fd)
        named.append(nl)
        if then is not None:
            then(len(named) - 1, nl)


# Why the mount points of many namespaces made at once are hard links to one empty file, not a file
# each as `ip netns add` makes: a mount attaches to a name (a dentry), so each name holds its own
# namespace, and `ip netns delete` unmounts and unlinks a name as it would a file of its own; but
# a new file costs the filesystem a new inode. On an ext4 /run that was 0.2–1 ms of system time a
# file (500: 100–490 ms, all of it CPU, the directory locked), against 17 µs a link. Every name
# is linked before any is mounted: a link to a name with a namespace mounted on it would reach
# the namespace's file, on another filesystem.


def create_many(names: list[str], then: Callable[[int, Rtnl], None] | None = None,
                ahead: list[tuple[int, Rtnl]] | None = None) -> list[Rtnl]:
    """Named network namespaces, each with an rtnetlink client inside it; `then(i, client)` runs
    in the thread that made the i-th one, as soon as it is made. Namespaces made `ahead`, unnamed
    (drivers/spares.py: a descriptor and a client each, owned by this call from here), get the
    first names; many more are made by two threads, half each: the hopper and one that lives for
    this call only. The kernel makes namespaces on both cores at once (500 with `lo` up: 0.24 s
    by one thread, 0.16 s by two). All or none: on failure, those made are removed again."""
    import threading

    reserve_descriptors(len(names))  # a client each
    ahead = list(ahead or ())
    named: list[Rtnl] = []
    paths: list[Path] = []
    mine: list[Rtnl] = []
    theirs: list[Rtnl] = []
    try:
        _share_rundir()
        for name in names:
            path = NETNS_DIR / name
            if paths:  # the mount point of each: a name for one empty file (see _mount_points)
                os.link(paths[0], path)
            else:
                os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
            paths.append(path)
        first = min(len(ahead), len(paths))
        _name_each(ahead, paths[:first], named, then)
        rest = len(paths) - first
        split = first + (rest - rest // 2 if rest >= TWO_THREADS_FROM else rest)
        failed: list[BaseException] = []

        def helper() -> None:
            try:
                _make_each(paths[split:], theirs, then, split)
            except BaseException as exc:  # handed to the caller below
                failed.append(exc)

        second = threading.Thread(target=helper, name="vnet-netns_1") if split < len(paths) else None
        if second is not None:
            second.start()
        try:
            if first < split:
                _hop(_make_each, paths[first:split], mine, then, first)
        finally:
            if second is not None:
                second.join()
        if failed:
            raise failed[0]
        return named + mine + theirs
    except BaseException:
        for nl in named + mine + theirs:
            nl.close()
        remove_all([path.name for path in paths])
        raise
    finally:
        for fd, nl in ahead:  # made ahead and not named: they vanish with their descriptors
            os.close(fd)
            nl.close()


def remove_all(names: list[str]) -> None:
    """Remove each of these namespaces (or half-made files) as far as it goes: cleaning up after a
    failure, which is what the caller reports."""
    for name in names:
        try:
            remove(name)
        except OSError:
            pass


def remove(name: str) -> None:
    """As `ip netns delete`: detach the bind mount, remove the file; the kernel frees the namespace
    when nothing holds it any more."""
    if _hopper is not None:
        _hop(_go_home)
    path = str(NETNS_DIR / name).encode()
    if _libc.umount2(path, MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err != 22:  # EINVAL: not a mount point (a half-made namespace file)
            raise OSError(err, f"umount {name}: {os.strerror(err)}")
    os.unlink(path)


def _enter(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Namespace:
    """A network namespace by name; None is the namespace vnet itself runs in."""

    def __init__(self, name: str | None, listed: bool = False):
        # listed: the caller has just read it in /run/netns (observing lists every namespace once
        # and opens hundreds: two stats each to check again were a twentieth of a no-op apply)
        if name is not None and not listed and not exists(name):
            raise VnetError(f"network namespace {name!r} does not exist — create it, or check --netns")
        self.name = name
        self.path = str(NETNS_DIR / name) if name else None
        self._nl: Rtnl | None = None
        self._nft: Nft | None = None
        # ifname → ifindex as this run has seen them; emptied whenever a link here is deleted
        self.indexes: dict[str, int] = {}
        self._ipr: Any = None

    @property
    def label(self) -> str:
        return self.name or "(current namespace)"

    def _socket(self, proto: int, kind: int = _socket.SOCK_RAW) -> _socket.socket:
        # opened by a thread inside the namespace, so the socket belongs there
        return self.call(_socket.socket, _socket.AF_NETLINK, kind, proto)

    def adopt(self, nl: Rtnl) -> None:
        """Use this rtnetlink client, opened inside the namespace already."""
        if self._nl is not None:
            self._nl.close()
        self._nl = nl

    @property
    def nl(self) -> Rtnl:
        """vnet's own rtnetlink client, for links, addresses, routes and qdisc dumps."""
        if self._nl is None:
            self._nl = Rtnl(self._socket(0))
        return self._nl

    @property
    def nft(self) -> Nft:
        """nfnetlink, for reading nftables state without running `nft`."""
        if self._nft is None:
            self._nft = Nft(self._socket(NETLINK_NETFILTER))
        return self._nft

    @property
    def ipr(self) -> Any:
        """pyroute2, for the rare intricate requests (tc); imported only when needed."""
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute(fileno=self._socket(0, _socket.SOCK_DGRAM).detach())  # pyroute2 wants DGRAM
        return self._ipr

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn inside the namespace."""
        if self.path is None:
            return fn(*args)
        path = self.path

        def inside() -> T:
            _enter(path)
            return fn(*args)

        return _hop(inside)

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net={NETNS_DIR / self.name}", "--", *argv] if self.name else list(argv)

    def run(self, argv: list[str], input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        import subprocess  # here: `vnet status` usually runs no command (~2 ms with signal)

        proc = subprocess.run(self.argv(argv), input=input, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise VnetError(f"{argv[0]} failed in {self.label}: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def spawn(self, argv: list[str]) -> subprocess.Popen:
        """Start a command here without waiting for it; its output in one pipe."""
        import subprocess

        return subprocess.Popen(self.argv(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def close(self) -> None:
        for sock in (self._nl, self._nft):
            if sock is not None:
                sock.close()
        self._nl = self._nft = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None


class Namespaces:
    """The target namespace plus the endpoint namespaces opened on demand."""

    def __init__(self, target: str | None):
        self.target = target
        self.host = Namespace(target)
        self._others: dict[str, Namespace] = {}
        self._spares: Any = None  # drivers/spares.Spares: namespaces being made ahead for this run

    def make_ahead(self, count: int) -> None:
        """Have up to `count` namespaces made ahead, unnamed, for the next create_many of this
        run (drivers/spares.py); nothing where so few are not worth a child."""
        if count <= 0 or self._spares is not None:
            return  # a re-apply makes none: not even the module is needed
        from vnet.drivers.spares import WORTH, Spares

        if count >= WORTH:
            reserve_descriptors(2 * count)  # each comes as two: the namespace and a socket in it
            self._spares = Spares(count)

    def take_ahead(self) -> list[tuple[int, Rtnl]]:
        """The namespaces made ahead, handed over (and their maker stopped): for create_many."""
        spares, self._spares = self._spares, None
        return spares.take() if spares is not None else []

    def get(self, ns: str, listed: bool = False) -> Namespace:
        """'' is the target namespace; anything else a named namespace (`listed`: just read in
        /run/netns, not checked again)."""
        if not ns:
            return self.host
        if ns not in self._others:
            self._others[ns] = Namespace(ns, listed)
        return self._others[ns]

    def open(self, names: list[str]) -> None:
        """Open the rtnetlink sockets of many namespaces, just listed, in one trip of the thread
        that enters them (observing reads hundreds; a trip each was a third of a no-op apply). A
        namespace that cannot be entered is left to fail when it is used, as it would have."""
        todo = []
        for name in names:
            ns = self.get(name, listed=True)
            if ns._nl is None and ns.path is not None:
                todo.append(ns)

        def inside() -> list[_socket.socket | None]:
            socks: list[_socket.socket | None] = []
            for ns in todo:
                try:
                    _enter(ns.path)  # type: ignore[arg-type]
                    socks.append(_socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, 0))
                except OSError:
                    socks.append(None)
            return socks

        if todo:
            reserve_descriptors(len(todo))
            for ns, sock in zip(todo, _hop(inside)):
                if sock is not None:
                    ns.adopt(Rtnl(sock))
                else:
                    self._others.pop(ns.name, None)  # gone since it was listed: `get` says so when used

    def forget(self, ns: str) -> None:
        if ns in self._others:
            self._others.pop(ns).close()

    def close(self) -> None:
        if self._spares is not None:
            self._spares.close()  # made ahead and never needed: nothing on the host changed
            self._spares = None
        for n in self._others.values():
            n.close()
        self._others.clear()
        self.host.close()

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
