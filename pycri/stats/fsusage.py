"""Disk usage kept current in the background, so that no stats call walks a tree.

**Writable layers** (:class:`WritableLayers`). Each container's overlay upper dir is
scanned once, when it is first tracked (empty at CreateContainer; a recovered
container's in the background after a restart), with an inotify watch on each of its
directories. From then on the kernel says what changed: an event names a directory
and an entry, and that one entry is ``lstat``-ed again (a new directory is scanned
and watched, a vanished one forgotten). Events are reconciled against the file system
rather than interpreted, so their order and coalescing do not matter. Hard links
count once (bytes and inodes by inode, as ``du`` does). A stats call first takes in
the events already queued (a non-blocking read): what a container wrote before the
call is in its answer.

Overlayfs reports writes made through it on the upper dir's files on recent kernels
(6.x: events of the backing file); older ones report creations, deletions, renames and
attribute changes there, but not the writes (:func:`overlay_reports_writes` finds out
at start). On those, a regular file stays *hot* for ``HOT_SECONDS`` after its last event
and after its last change in size, and is looked at again at every reconciliation
meanwhile (a file created and then written is right at the next call); at most
``HOT_MAX`` files at once. A background pass also re-verifies every tracked directory once per
``VERIFY_INTERVAL``, at most ``VERIFY_RATE`` entries a second, which catches what no
event announced (writes through ``mmap``, a lost event queue): the bounded cost of
exactness. A tree whose watches cannot be set (``fs.inotify.max_user_watches``) is
walked whole by that pass instead, and reported from its last walk.

**The image store** (:class:`StoreUsage`). It changes only when pycri pulls, imports
or deletes: the image service says so, and the store is measured again, reusing the
size of every unpacked layer seen before (they never change once in place). So a
measurement is a listing of the blob and layer directories plus a walk of new layers.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import re
import select
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator, KeysView, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pycri.host import mounts
from pycri.stats import inotify
from pycri.stats.inotify import Inotify

log = logging.getLogger("pycri.stats")

WATCH_MASK = (
    inotify.IN_CREATE
    | inotify.IN_DELETE
    | inotify.IN_MODIFY
    | inotify.IN_CLOSE_WRITE
    | inotify.IN_ATTRIB
    | inotify.IN_MOVED_FROM
    | inotify.IN_MOVED_TO
    | inotify.IN_DELETE_SELF
    | inotify.IN_ONLYDIR
    | inotify.IN_DONT_FOLLOW
    | inotify.IN_EXCL_UNLINK
)
HOT_SECONDS = 30.0
HOT_MAX = 1000  # files watched closely at once, all trees together (the most recently changed)
VERIFY_INTERVAL = 60.0
VERIFY_RATE = 5000  # entries re-examined per second by the verification pass
COALESCE = 0.1  # seconds the background waits after an event, so that a burst is read at once


def disk_usage(path: Path | str) -> tuple[int, int]:
    """Bytes allocated and inodes used below ``path`` (hard links counted once), like ``du``."""
    seen: set[tuple[int, int]] = set()
    used = 0
    stack = [str(path)]
    while stack:
        current = stack.pop()
        try:
            entries = os.scandir(current)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                used += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return used, len(seen)


# -- one tracked tree ---------------------------------------------------------------------------------


class _Dir:
    """A watched directory of a tree: its entries by name, as (inode, bytes)."""

    __slots__ = ("alive", "entries", "ino", "name", "parent", "path", "subdirs", "wd")

    def __init__(self, path: str, ino: int, parent: _Dir | None, name: str) -> None:
        self.path = path
        self.ino = ino
        self.parent = parent
        self.name = name
        self.wd = -1
        self.entries: dict[str, tuple[int, int]] = {}
        self.subdirs: dict[str, _Dir] = {}
        self.alive = True


class Tree:
    """The usage of everything below one directory (not the directory itself), as ``du`` counts it."""

    def __init__(self, key: str, path: str) -> None:
        self.key = key
        self.path = path
        self.root: _Dir | None = None
        self.bytes = 0
        self._inodes: dict[int, list[int]] = {}  # inode -> [bytes, names referring to it]
        self.polled = False  # no watches: measured by walking it whole
        self.polled_usage = (0, 0)

    @property
    def inodes(self) -> int:
        return len(self._inodes)

    def usage(self) -> tuple[int, int]:
        return self.polled_usage if self.polled else (self.bytes, self.inodes)

    def ref(self, ino: int, nbytes: int) -> None:
        known = self._inodes.get(ino)
        if known is None:
            self._inodes[ino] = [nbytes, 1]
            self.bytes += nbytes
        else:
            known[1] += 1
            self.bytes += nbytes - known[0]
            known[0] = nbytes

    def resize(self, ino: int, nbytes: int) -> None:
        known = self._inodes.get(ino)
        if known is not None:
            self.bytes += nbytes - known[0]
            known[0] = nbytes

    def unref(self, ino: int) -> None:
        known = self._inodes.get(ino)
        if known is None:
            return
        known[1] -= 1
        if known[1] <= 0:
            self.bytes -= known[0]
            del self._inodes[ino]

    def dirs(self) -> Iterator[_Dir]:
        stack = [self.root] if self.root is not None else []
        while stack:
            d = stack.pop()
            yield d
            stack.extend(d.subdirs.values())


class WatchLimit(Exception):
    """No more inotify watches may be added."""


class WritableLayers:
    """Bytes and inodes of each tracked directory (containers' upper dirs), kept current by inotify.

    Every method takes the lock: they run in worker threads (stats calls) and in this
    object's background thread.
    """

    def __init__(
        self,
        *,
        hot_seconds: float = HOT_SECONDS,
        verify_interval: float = VERIFY_INTERVAL,
        verify_rate: int = VERIFY_RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = threading.RLock()
        self.trees: dict[str, Tree] = {}
        self._wds: dict[int, tuple[Tree, _Dir]] = {}
        self._hot: dict[tuple[int, str], tuple[Tree, _Dir, float]] = {}  # (id of dir, name) -> (tree, dir, since)
        self.hot_seconds = hot_seconds
        self.verify_interval = verify_interval
        self.verify_rate = verify_rate
        self.clock = clock
        self._verify_due = clock() + verify_interval
        self._verify_queue: list[tuple[Tree, _Dir | None]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.overflows = 0
        try:
            self._inotify: Inotify | None = Inotify()
        except OSError as exc:
            log.warning("stats: no inotify (%s): writable layers are measured by walking them every %.0fs", exc, verify_interval)
            self._inotify = None

    # -- tracking ---------------------------------------------------------------------------------

    def track(self, key: str, path: str) -> None:
        """Start accounting for ``path`` under ``key`` (a scan of it: quick for a new, empty upper dir)."""
        with self.lock:
            if key in self.trees:
                return
            tree = Tree(key, path)
            self.trees[key] = tree
            self._start(tree)

    def _start(self, tree: Tree) -> None:
        try:
            st = os.lstat(tree.path)
        except OSError:
            st = None
        if self._inotify is None or tree.polled or st is None or not stat.S_ISDIR(st.st_mode):
            tree.polled = True
            tree.polled_usage = disk_usage(tree.path)
            return
        tree.root = _Dir(tree.path, st.st_ino, None, "")
        try:
            self._scan(tree, tree.root)
        except WatchLimit:
            self._to_polled(tree)

    def _to_polled(self, tree: Tree) -> None:
        log.warning(
            "stats: inotify watch limit reached (fs.inotify.max_user_watches); %s is measured by walking it every %.0fs",
            tree.path,
            self.verify_interval,
        )
        if tree.root is not None:
            self._drop(tree, tree.root)
        tree.root = None
        tree.polled = True
        tree.polled_usage = disk_usage(tree.path)

    def untrack(self, key: str) -> None:
        with self.lock:
            tree = self.trees.pop(key, None)
            if tree is not None and tree.root is not None:
                self._drop(tree, tree.root)
                tree.root = None

    def sync(self, live: Mapping[str, str]) -> None:
        """Track exactly ``live`` (key -> directory): new ones are scanned, gone ones forgotten."""
        with self.lock:
            for key in [k for k in self.trees if k not in live]:
                self.untrack(key)
            for key, path in live.items():
                if key not in self.trees:
                    self.track(key, path)

    def usage(self, key: str) -> tuple[int, int] | None:
        with self.lock:
            tree = self.trees.get(key)
            return tree.usage() if tree is not None else None

    def totals(self) -> tuple[int, int]:
        with self.lock:
            return self._totals()

    def _totals(self) -> tuple[int, int]:
        used = inodes = 0
        for tree in self.trees.values():
            b, i = tree.usage()
            used += b
            inodes += i
        return used, inodes

    def settled_totals(self, live: KeysView[str]) -> tuple[int, int] | None:
        """The totals when there is nothing to take in (exactly ``live`` tracked, no event queued, no hot
        file) and the lock is free now; None otherwise. Cheap enough for the event loop."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            if self._hot or self.trees.keys() != live or self._queued():
                return None
            return self._totals()
        finally:
            self.lock.release()

    def _queued(self) -> bool:
        if self._inotify is None:
            return False
        return bool(select.select([self._inotify.fd], [], [], 0)[0])

    # -- scanning -----------------------------------------------------------------------------------

    def _watch(self, tree: Tree, d: _Dir) -> bool:
        """Watch ``d``; False when it is gone already."""
        assert self._inotify is not None
        try:
            wd = self._inotify.add_watch(d.path, WATCH_MASK)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                raise WatchLimit(d.path) from exc
            return False
        other = self._wds.get(wd)
        if other is not None and other[1] is not d:  # this directory was watched under another name
            self._drop(other[0], other[1], keep_watch=True)
        d.wd = wd
        self._wds[wd] = (tree, d)
        return True

    def _scan(self, tree: Tree, top: _Dir) -> None:
        """Watch ``top`` and everything below it, and account for their entries."""
        stack = [top]
        while stack:
            d = stack.pop()
            if not self._watch(tree, d):
                continue  # vanished meanwhile; its parent's event says so
            try:
                listing = os.scandir(d.path)
            except OSError:
                continue
            with listing:
                for entry in listing:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    self._set(tree, d, entry.name, st.st_ino, st.st_blocks * 512)
                    if stat.S_ISDIR(st.st_mode):
                        sub = _Dir(entry.path, st.st_ino, d, entry.name)
                        d.subdirs[entry.name] = sub
                        stack.append(sub)

    def _set(self, tree: Tree, d: _Dir, name: str, ino: int, nbytes: int) -> None:
        old = d.entries.get(name)
        if old is not None and old[0] == ino:
            if old[1] != nbytes:
                tree.resize(ino, nbytes)
                d.entries[name] = (ino, nbytes)
            return
        if old is not None:
            tree.unref(old[0])
        tree.ref(ino, nbytes)
        d.entries[name] = (ino, nbytes)

    def _remove(self, tree: Tree, d: _Dir, name: str) -> None:
        old = d.entries.pop(name, None)
        if old is not None:
            tree.unref(old[0])
        sub = d.subdirs.pop(name, None)
        if sub is not None:
            self._drop(tree, sub)

    def _drop(self, tree: Tree, top: _Dir, *, keep_watch: bool = False) -> None:
        """Forget ``top`` and everything below it (their entries leave the totals), and their watches."""
        stack = [top]
        while stack:
            d = stack.pop()
            if not d.alive:
                continue
            d.alive = False
            for ino, _ in d.entries.values():
                tree.unref(ino)
            d.entries.clear()
            stack.extend(d.subdirs.values())
            d.subdirs.clear()
            if d.wd >= 0 and self._wds.get(d.wd, (None, None))[1] is d:
                del self._wds[d.wd]
                if self._inotify is not None and not (keep_watch and d is top):
                    self._inotify.rm_watch(d.wd)
        if top.parent is not None and top.parent.subdirs.get(top.name) is top:
            del top.parent.subdirs[top.name]

    def _reconcile(self, tree: Tree, d: _Dir, name: str, *, hot: bool = True) -> int:
        """Make ``d``'s entry ``name`` what the file system has now; the bytes it changed by."""
        path = posixpath.join(d.path, name)
        try:
            st = os.lstat(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                before = tree.bytes
                self._remove(tree, d, name)
                return tree.bytes - before
            return 0
        before = tree.bytes
        nbytes = st.st_blocks * 512
        sub = d.subdirs.get(name)
        if stat.S_ISDIR(st.st_mode):
            if sub is not None and sub.ino == st.st_ino and sub.alive:
                self._set(tree, d, name, st.st_ino, nbytes)
                return tree.bytes - before
            if sub is not None:
                self._drop(tree, sub)
            self._set(tree, d, name, st.st_ino, nbytes)
            new = _Dir(path, st.st_ino, d, name)
            d.subdirs[name] = new
            self._scan(tree, new)
            return tree.bytes - before
        if sub is not None:
            self._drop(tree, sub)
        self._set(tree, d, name, st.st_ino, nbytes)
        if hot and stat.S_ISREG(st.st_mode):
            self._heat(tree, d, name)
        return tree.bytes - before

    def _heat(self, tree: Tree, d: _Dir, name: str) -> None:
        if self.hot_seconds <= 0:  # this kernel reports writes through overlayfs
            return
        key = (id(d), name)
        self._hot.pop(key, None)
        self._hot[key] = (tree, d, self.clock())
        if len(self._hot) > HOT_MAX:
            del self._hot[next(iter(self._hot))]

    # -- events -------------------------------------------------------------------------------------

    def drain(self) -> None:
        """Take in every event queued, then look again at the hot files."""
        with self.lock:
            if self._inotify is not None:
                events = self._inotify.read()
                if events:
                    try:
                        self._apply(events)
                    except WatchLimit:
                        self._watch_limit_hit()
            self._cool()

    def _watch_limit_hit(self) -> None:
        for tree in list(self.trees.values()):
            if tree.root is not None and any(d.wd < 0 for d in tree.dirs()):
                self._to_polled(tree)

    def _apply(self, events: list[inotify.Event]) -> None:
        gone: list[tuple[Tree, _Dir]] = []
        named: dict[tuple[int, str], tuple[Tree, _Dir]] = {}
        touched: dict[int, tuple[Tree, _Dir]] = {}
        for event in events:
            if event.mask & inotify.IN_Q_OVERFLOW:
                self.overflows += 1
                log.warning("stats: inotify queue overflowed; verifying every writable layer now")
                self._verify_due = self.clock()
                continue
            found = self._wds.get(event.wd)
            if found is None:
                continue
            if event.mask & (inotify.IN_IGNORED | inotify.IN_DELETE_SELF):
                gone.append(found)
            elif event.name:
                named[(id(found[1]), event.name)] = found
                touched[id(found[1])] = found
        for tree, d in gone:
            if d.alive:
                parent = d.parent
                self._drop(tree, d)
                if parent is not None and parent.alive:
                    named[(id(parent), d.name)] = (tree, parent)
        for (_, name), (tree, d) in named.items():
            if d.alive:
                self._reconcile(tree, d, name)
        for tree, d in touched.values():  # a directory's own size changes with its entries
            if d.alive and d.parent is not None and d.parent.alive:
                self._reconcile(tree, d.parent, d.name, hot=False)

    def _cool(self) -> None:
        if not self._hot:
            return
        now = self.clock()
        for key, (tree, d, since) in list(self._hot.items()):
            if not d.alive or key[1] not in d.entries:
                del self._hot[key]
                continue
            if self._reconcile(tree, d, key[1], hot=False):
                self._hot[key] = (tree, d, now)  # still changing
            elif now - since > self.hot_seconds:
                del self._hot[key]

    # -- verification -------------------------------------------------------------------------------

    def verify_step(self, budget: int) -> int:
        """Re-examine directories, up to about ``budget`` entries; the number examined (0: nothing due)."""
        done = 0
        with self.lock:
            if not self._verify_queue:
                if self.clock() < self._verify_due:
                    return 0
                self._verify_due = self.clock() + self.verify_interval
                self._verify_queue = [(t, None) for t in self.trees.values()]
            while self._verify_queue and done < budget:
                tree, d = self._verify_queue.pop()
                if self.trees.get(tree.key) is not tree:
                    continue
                if d is None:  # a tree's turn: a polled one is walked, a watched one queues its directories
                    if tree.polled:
                        tree.polled_usage = disk_usage(tree.path)
                        done += tree.polled_usage[1] + 1
                    else:
                        self._verify_queue.extend((tree, sub) for sub in tree.dirs())
                    continue
                if d.alive:
                    try:
                        done += self._verify_dir(tree, d) + 1
                    except WatchLimit:
                        self._to_polled(tree)
        return done

    def _verify_dir(self, tree: Tree, d: _Dir) -> int:
        try:
            names = os.listdir(d.path)
        except OSError:
            return 0
        present = set(names)
        for name in [n for n in d.entries if n not in present]:
            self._remove(tree, d, name)
        for name in names:
            if d.alive:
                self._reconcile(tree, d, name, hot=False)
        return len(names)

    # -- background ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pycri-fs-accounting", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        if self._inotify is not None:
            poller.register(self._inotify.fileno(), select.POLLIN)
        while not self._stop.is_set():
            try:
                ready = poller.poll(1000 if not self._verify_queue else 0)
                if (ready and not self._stop.wait(COALESCE)) or self._hot:
                    self.drain()
                done = self.verify_step(max(self.verify_rate // 10, 1))
                if done:
                    self._stop.wait(done / self.verify_rate)
            except Exception:  # the accounting must outlive a surprise; the next pass starts afresh
                log.exception("stats: writable layer accounting failed; going on")
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self.lock:
            for key in list(self.trees):
                self.untrack(key)
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None


def overlay_reports_writes(workdir: Path) -> bool:
    """Whether a write through an overlay mount raises IN_MODIFY on the upper dir's file (a throw-away
    overlay under ``workdir``, as root). False when it cannot be found out."""
    lower, upper, work, merged = (workdir / n for n in ("lower", "upper", "work", "merged"))
    notify: Inotify | None = None
    mounted = False
    try:
        shutil.rmtree(workdir, ignore_errors=True)
        for d in (lower, upper, work, merged):
            d.mkdir(parents=True)
        mounts.mount("overlay", str(merged), "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")
        mounted = True
        with open(merged / "probe", "wb") as f:
            notify = Inotify()
            notify.add_watch(str(upper), inotify.IN_MODIFY)
            f.write(b"x")
            f.flush()
        return any(e.mask & inotify.IN_MODIFY and e.name == "probe" for e in notify.read())
    except OSError as exc:
        log.debug("stats: cannot find out whether overlayfs reports writes: %s", exc)
        return False
    finally:
        if notify is not None:
            notify.close()
        if mounted:
            with contextlib.suppress(OSError):
                mounts.unmount(str(merged))
        shutil.rmtree(workdir, ignore_errors=True)


# -- the image store ------------------------------------------------------------------------------------


@dataclass
class StoreUsage:
    """Bytes and inodes below ``root``, each directory directly in one of ``units`` measured once
    (unpacked layers: they never change once in place; ``.``-prefixed ones are work in progress)."""

    root: Path
    units: tuple[Path, ...]
    _cache: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    def measure(self) -> tuple[int, int]:
        units = {str(u) for u in self.units}
        seen: set[tuple[int, int]] = set()
        used = inodes = 0
        cache: dict[tuple[str, int], tuple[int, int]] = {}
        stack = [str(self.root)]
        while stack:
            current = stack.pop()
            try:
                listing = os.scandir(current)
            except OSError:
                continue
            is_units = current in units
            with listing:
                for entry in listing:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if is_units and stat.S_ISDIR(st.st_mode) and not entry.name.startswith("."):
                        key = (entry.name, st.st_ino)
                        unit = self._cache.get(key)
                        if unit is None:
                            inner_bytes, inner_inodes = disk_usage(entry.path)
                            unit = (inner_bytes + st.st_blocks * 512, inner_inodes + 1)
                        cache[key] = unit
                        used += unit[0]
                        inodes += unit[1]
                        continue
                    key2 = (st.st_dev, st.st_ino)
                    if key2 in seen:
                        continue
                    seen.add(key2)
                    used += st.st_blocks * 512
                    inodes += 1
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
        self._cache = cache
        return used, inodes


# -- mount points -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    source: str
    fstype: str
    major: int
    minor: int


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text) if "\\" in text else text


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        major, _, minor = fields[2].partition(":")
        with contextlib.suppress(ValueError):
            mounts.append(Mount(_unescape(fields[4]), _unescape(tail[1]), tail[0], int(major), int(minor)))
    return mounts


def mount_of(path: str | Path, mountinfo: str | None = None) -> Mount | None:
    """The mount holding ``path``: the deepest mount point above it (the last mounted, when stacked)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best: Mount | None = None
    for mount in parse_mountinfo(mountinfo):
        mp = mount.mountpoint
        inside = target == mp or target.startswith(mp.rstrip("/") + "/")
        if inside and (best is None or len(mp) >= len(best.mountpoint)):
            best = mount
    return best
