"""The served model versions, re-scanned from the model directory while the service runs.

A `Reloader` holds the current `ModelRepository` snapshot. A re-scan (SIGHUP, POST
/admin/reload, or every `reload_poll_s`) builds the next snapshot beside it and swaps it
in with one assignment, so a request that took the snapshot keeps a consistent set and
the next request sees the whole new one (a new highest version becomes the default at
that instant). What a re-scan does per `<name>/<version>` directory:

- unchanged (the same files, told by a stat of each: inode, size, mtime, ctime): the
  same LoadedModel object is kept, so everything keyed by it (runner cores, metrics)
  carries on;
- new, or changed (its manifest bytes or its model file's sha256 differ from what was
  loaded): loaded on the reloader's own thread, never on the event loop;
- gone: dropped from the snapshot; requests that already hold it finish on it;
- broken: listed as a failure; if an earlier load of it serves, that one keeps serving.

One re-scan runs at a time. Load/unload of one model by name (`load`, `unload`) is the
API a repository endpoint builds on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from service.repository import (
    LoadedModel,
    LoadFailure,
    ModelLoadError,
    ModelRepository,
    VersionDir,
    file_sha256,
    load_version,
    log_failure,
    log_loaded,
    read_manifest_bytes,
    scan,
)
from service.runner import ModelRunner
from service.supervisor import on_sighup

log = logging.getLogger(__name__)

# (file name, inode, size, mtime ns, ctime ns) of each file in a version directory:
# writing, replacing or renaming any of them changes it.
Fingerprint = tuple[tuple[str, int, int, int, int], ...]


@dataclass(frozen=True)
class ReloadReport:
    """What one re-scan changed, and the set it left serving."""

    generation: int  # counts the snapshots this process has served (1: the start-up load)
    loaded: list[str]  # "<name>/<version>" now served that was not before
    reloaded: list[str]  # served before; its files changed, and it was loaded again
    unloaded: list[str]  # served before, not any more
    failures: list[LoadFailure]  # every version that does not load, as /readyz lists them
    models: list[str]  # every version served after the re-scan

    @property
    def changed(self) -> bool:
        return bool(self.loaded or self.reloaded or self.unloaded)


@dataclass(frozen=True)
class _Source:
    """What a loaded (or failed) version was read from."""

    fingerprint: Fingerprint
    manifest: bytes | None  # the manifest of the load that serves (None: none serves)
    failed: bool = False  # these files did not load


@dataclass
class _Scan:
    """The next snapshot, being built."""

    models: dict[str, dict[int, LoadedModel]] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)

    def add(self, model: LoadedModel) -> None:
        self.models.setdefault(model.name, {})[model.version] = model


class Reloader:
    """The current snapshot of the model repository, and the one way to replace it."""

    def __init__(self, model_dir: Path, providers: list[str], options: ort.SessionOptions) -> None:
        self.model_dir = model_dir
        self._providers = providers
        self._options = options
        self.repository = ModelRepository()  # replaced whole, never changed in place
        self.generation = 0
        self._sources: dict[str, _Source] = {}  # "<name>/<version>" -> what it came from
        self._unloaded: set[str] = set()  # names unloaded on request: re-scans skip them
        self._lock = threading.Lock()  # one re-scan at a time
        self._executor: ThreadPoolExecutor | None = None
        # Called with the loaded versions a swap removed or replaced by a new load, once
        # they are out of the snapshot, on the thread that re-scanned.
        self.on_unload: list[Callable[[list[LoadedModel]], None]] = []

    def get(self, name: str, version: int | None = None) -> LoadedModel | None:
        """The given version (or the default) in the current snapshot."""
        return self.repository.get(name, version)

    @property
    def unloaded_names(self) -> list[str]:
        return sorted(self._unloaded)

    # Blocking API: call on a thread (the async wrappers below do).

    def rescan(self, *, at_start: bool = False) -> ReloadReport:
        """Load what is new or changed under model_dir, drop what is gone, swap."""
        with self._lock:
            return self._rescan(None, at_start=at_start)

    def load(self, name: str) -> ReloadReport:
        """Re-scan one model's directory (and serve it again if it was unloaded)."""
        with self._lock:
            self._unloaded.discard(name)
            return self._rescan(name)

    def unload(self, name: str) -> ReloadReport:
        """Stop serving every version of `name` until `load(name)`; re-scans skip it."""
        with self._lock:
            self._unloaded.add(name)
            return self._rescan(name)

    # Async API: the work runs on the reloader's own thread, never on the event loop.

    async def arescan(self) -> ReloadReport:
        return await self._off_loop(self.rescan)

    async def aload(self, name: str) -> ReloadReport:
        return await self._off_loop(lambda: self.load(name))

    async def aunload(self, name: str) -> ReloadReport:
        return await self._off_loop(lambda: self.unload(name))

    async def _off_loop(self, work: Callable[[], ReloadReport]) -> ReloadReport:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="seqcast-reload")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # The re-scan itself.

    def _rescan(self, only: str | None, *, at_start: bool = False) -> ReloadReport:
        old = self.repository
        found, misnamed = scan(self.model_dir)
        next_ = _Scan()
        if only is not None:
            # Every other model stays exactly as it is, failures included.
            for name, versions in old.models.items():
                if name != only:
                    next_.models[name] = dict(versions)
            next_.failures = [f for f in old.failures if _name_of(f.model) != only]
            found = [v for v in found if v.name == only]
            misnamed = []
        old_failures = {f.model: f for f in old.failures}
        for failure in misnamed:
            failure = LoadFailure(failure.model, failure.reason, failure.path, at_start)
            self._record_failure(next_, failure, old_failures, serving=False)
        for version_dir in found:
            if version_dir.name in self._unloaded:
                continue
            self._visit(version_dir, old, next_, old_failures, at_start)
        new = ModelRepository(next_.models, sorted(next_.failures, key=lambda f: f.model))
        removed = [
            model
            for name, versions in old.models.items()
            for version, model in versions.items()
            if new.get(name, version) is None
        ]
        # Forget what vanished (or is unloaded on request), so it reads afresh if it returns.
        present = {v.key for v in found if v.name not in self._unloaded}
        for key in [k for k in self._sources if only in (None, _name_of(k))]:
            if key not in present:
                del self._sources[key]
        for model in removed:
            log.info("unloaded model %s version %d", model.name, model.version)
        changed = bool(next_.loaded or next_.reloaded or removed)
        if changed or new.failures != old.failures or self.generation == 0:
            self.generation += 1
            self.repository = new  # the swap: one reference, read once per request
        else:
            new = old  # nothing to swap: keep the snapshot (and what is cached on it)
        # Versions replaced by a new load of the same name/version are gone too: their
        # listeners (the runner's cores) must let go of them, or they stay in memory.
        replaced = [
            model
            for name, versions in old.models.items()
            for version, model in versions.items()
            if new.get(name, version) not in (None, model)
        ]
        if removed or replaced:
            for listener in self.on_unload:
                listener(removed + replaced)
        return ReloadReport(
            generation=self.generation,
            loaded=next_.loaded,
            reloaded=next_.reloaded,
            unloaded=sorted(f"{m.name}/{m.version}" for m in removed),
            failures=list(new.failures),
            models=served(new),
        )

    def _visit(
        self,
        version_dir: VersionDir,
        old: ModelRepository,
        next_: _Scan,
        old_failures: dict[str, LoadFailure],
        at_start: bool,
    ) -> None:
        key = version_dir.key
        previous = old.get(version_dir.name, version_dir.version)
        source = self._sources.get(key)
        try:
            fingerprint = _fingerprint(version_dir.path)
        except OSError as exc:  # the directory went away while we looked
            reason = f"cannot list {version_dir.path.name}: {exc.strerror or exc}"
            failure = LoadFailure(key, reason, str(version_dir.path), at_start)
            self._record_failure(next_, failure, old_failures, serving=previous is not None)
            if previous is not None:
                next_.add(previous)
            return
        if source is not None and source.fingerprint == fingerprint:
            # Nothing on disk changed since the last look: the same model and/or failure.
            if previous is not None:
                next_.add(previous)
            if source.failed and key in old_failures:
                next_.failures.append(old_failures[key])
            return
        try:
            manifest = read_manifest_bytes(version_dir.path)
            if previous is not None and _same_content(previous, source, manifest):
                self._sources[key] = _Source(fingerprint, manifest)
                next_.add(previous)
                return
            model = load_version(version_dir.path, self._providers, self._options, manifest)
        except Exception as exc:  # whatever breaks is this version's failure, not the scan's
            if not isinstance(exc, ModelLoadError):
                log.exception("loading %s failed unexpectedly", version_dir.path)
            served_manifest = source.manifest if source is not None and previous else None
            self._sources[key] = _Source(fingerprint, served_manifest, failed=True)
            failure = LoadFailure(key, str(exc), str(version_dir.path), at_start)
            self._record_failure(next_, failure, old_failures, serving=previous is not None)
            if previous is not None:
                next_.add(previous)  # the last good load keeps serving
            return
        self._sources[key] = _Source(fingerprint, manifest)
        next_.add(model)
        (next_.reloaded if previous is not None else next_.loaded).append(key)
        log_loaded(model)

    def _record_failure(
        self,
        next_: _Scan,
        failure: LoadFailure,
        old_failures: dict[str, LoadFailure],
        *,
        serving: bool,
    ) -> None:
        before = old_failures.get(failure.model)
        at_start = failure.at_start or _stays_at_start(failure.model, old_failures)
        failure = LoadFailure(failure.model, failure.reason, failure.path, at_start, serving)
        if before is None or before.reason != failure.reason:
            log_failure(failure)  # once per new reason, not on every poll
        next_.failures.append(failure)


def served(repository: ModelRepository) -> list[str]:
    """Every version a snapshot serves, as sorted "<name>/<version>"."""
    return sorted(
        f"{name}/{version}" for name, versions in repository.models.items() for version in versions
    )


def _name_of(key: str) -> str:
    return key.partition("/")[0]


def _stays_at_start(key: str, old_failures: dict[str, LoadFailure]) -> bool:
    """A version that failed at start-up and has not loaded since still counts as such."""
    before = old_failures.get(key)
    return before is not None and before.at_start


def _same_content(previous: LoadedModel, source: _Source | None, manifest: bytes) -> bool:
    """The files of a served version were touched or replaced, but hold the same bytes."""
    if source is None or source.manifest != manifest:
        return False
    try:
        digest = file_sha256(previous.path / previous.manifest.onnx.file)
    except OSError:
        return False
    return digest == previous.manifest.onnx.sha256


def _fingerprint(path: Path) -> Fingerprint:
    entries: list[tuple[str, int, int, int, int]] = []
    with os.scandir(path) as it:
        for entry in it:
            if entry.is_file():  # follows symlinks, as loading does
                st = entry.stat()
                entries.append((entry.name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(sorted(entries))


@asynccontextmanager
async def reloading(reloader: Reloader, runner: ModelRunner, poll_s: float) -> AsyncIterator[None]:
    """While the app runs: re-scan on SIGHUP, and every `poll_s` seconds unless 0."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def forget(models: list[LoadedModel]) -> None:
        for model in models:
            runner.forget(model)

    def start(trigger: str) -> None:
        task = loop.create_task(_rescan(reloader, trigger))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def forget_on_loop(models: list[LoadedModel]) -> None:
        loop.call_soon_threadsafe(forget, models)

    reloader.on_unload.append(forget_on_loop)
    restore = on_sighup(loop, lambda: start("SIGHUP"))
    poller = loop.create_task(_poll(reloader, poll_s)) if poll_s > 0 else None
    try:
        yield
    finally:
        restore()
        for task in [*tasks, *([poller] if poller else [])]:
            task.cancel()
        reloader.close()


async def _poll(reloader: Reloader, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        await _rescan(reloader, "poll")


async def _rescan(reloader: Reloader, trigger: str) -> None:
    try:
        report = await reloader.arescan()
    except Exception:  # a re-scan that breaks must not end the poller or the process
        log.exception("re-scan of the model repository (%s) failed", trigger)
        return
    if report.changed or trigger != "poll":
        log.info(
            "re-scan (%s), generation %d: loaded %s, reloaded %s, unloaded %s, %d failure(s)",
            trigger,
            report.generation,
            report.loaded,
            report.reloaded,
            report.unloaded,
            len(report.failures),
        )
