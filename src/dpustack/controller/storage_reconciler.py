"""The storage reconcile: every attached volume is served by the volume backend again and again.

A storage node whose daemon restarted (kill -9 included) serves no export, and the DPUs' NBD clients
keep reconnecting to the same URIs (`reconnect-delay`); a live extend cut short may have dropped
exports too. Each pass re-reads the database (level-based, so a missed pass costs nothing): every
volume at rest on its attachment (`in-use`, or `error` with an attachment: its export was lost, see
the extend workflow) whose attachment the backend does not serve is exported again (idempotent) and
logged as repaired; a volume in `error` served again is `in-use` again. A volume an operation holds,
or whose instance is busy, is left to that operation. A pass that cannot reach the storage changes
no status (nothing in use becomes available) and is logged; the next pass, `interval` seconds later,
tries again. Exports no attachment the controller knows names (a moving instance's second attachment,
`Volume.move_attachment`, is one it knows) are reported, never removed.

An export made while a detach began would outlive it, so after each export the volume is read
again, and the export is taken back when the attachment is ending (`detaching`) or gone.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import select

from dpustack.controller.context import ControllerContext
from dpustack.controller.orchestrator import readable
from dpustack.controller.services.volume_states import VolumeStatus
from dpustack.db.models import Instance, Volume

log = logging.getLogger(__name__)

# Statuses in which an attached volume must be served, and which nothing else is changing.
SERVED = (VolumeStatus.IN_USE, VolumeStatus.ERROR)


@dataclass
class StorageReconcileResult:
    """The outcome of one pass: attachments exported again, errors, exports nobody asked for."""

    pass_id: int
    repaired: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class _Wanted:
    volume_id: str
    attachment_id: str
    lost: bool  # the volume is `error`: its export was lost


class StorageReconciler:
    """Runs a pass at start and every `interval` seconds on a thread of its own (`start`/`stop`), or
    one pass when asked (`run`)."""

    def __init__(self, context: ControllerContext, *, interval: float) -> None:
        self.context = context
        self.interval = interval
        self._passes = itertools.count(1)
        self._stop = threading.Event()
        self._one_pass = threading.Lock()  # a pass asked for while the loop runs one waits for it
        self._thread: threading.Thread | None = None
        self.last: StorageReconcileResult | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="storage-reconcile", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run()
            except Exception:  # keep the loop alive; the next pass retries
                log.exception("storage reconcile pass failed")
            self._stop.wait(self.interval)

    # -- one pass ------------------------------------------------------------
    def run(self) -> StorageReconcileResult:
        """One pass: serve every attached volume that is not served; report exports nobody wants."""
        with self._one_pass:
            return self._pass()

    def _pass(self) -> StorageReconcileResult:
        result = StorageReconcileResult(next(self._passes))
        started = time.monotonic()
        backend = self.context.volume_backend
        wanted, known = self._read()
        try:
            served = backend.served()
        except Exception as exc:  # the storage cannot be asked: change nothing, retry next pass
            result.errors.append(f"cannot ask the volume backend what it serves: {readable(exc)}")
            served = None
        if served is not None:
            for want in wanted:
                if want.lost or want.attachment_id not in served:
                    self._serve(result, want)
            result.orphans = sorted(served - known)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        self._log(result)
        self.last = result
        return result

    def _read(self) -> tuple[list[_Wanted], set[str]]:
        """The attachments that must be served now, and every attachment the database knows."""
        with self.context.transaction() as session:
            rows = session.execute(select(Volume, Instance.task_state).join(Instance, Volume.instance_id == Instance.id)
                                   .where(Volume.attachment_id.is_not(None))).all()
            wanted = [_Wanted(volume.id, volume.attachment_id, volume.status == VolumeStatus.ERROR)
                      for volume, task in rows
                      if volume.status in SERVED and volume.operation_id is None and task is None]
            known = set(session.scalars(select(Volume.attachment_id).where(Volume.attachment_id.is_not(None))))
            moving = session.scalars(select(Volume.move_attachment).where(Volume.move_attachment.is_not(None)))
            known |= {moved["attachment_id"] for moved in moving if moved}  # a move's second attachment
        return wanted, known

    def _serve(self, result: StorageReconcileResult, want: _Wanted) -> None:
        backend = self.context.volume_backend
        try:
            backend.export(want.volume_id, want.attachment_id)
        except Exception as exc:  # this one stays unserved until a later pass; the others go on
            result.errors.append(f"volume {want.volume_id}: cannot serve attachment {want.attachment_id}: "
                                 f"{readable(exc)}")
            return
        with self.context.transaction() as session:
            volume = session.get(Volume, want.volume_id)
            if volume is None or volume.attachment_id != want.attachment_id or volume.status == VolumeStatus.DETACHING:
                ending = True
            else:
                ending = False
                if volume.status == VolumeStatus.ERROR and volume.operation_id is None:
                    volume.status, volume.fault = VolumeStatus.IN_USE, None
        if ending:  # a detach began meanwhile: its own unexport may have come before this export
            try:
                backend.unexport(want.attachment_id)
            except Exception as exc:
                result.errors.append(f"attachment {want.attachment_id} is ending: cannot take its export back: "
                                     f"{readable(exc)}")
            return
        result.repaired.append(f"volume {want.volume_id} served again for attachment {want.attachment_id}")

    @staticmethod
    def _log(result: StorageReconcileResult) -> None:
        for repaired in result.repaired:
            log.warning("storage reconcile pass %d: %s", result.pass_id, repaired)
        for error in result.errors:
            log.warning("storage reconcile pass %d: %s (retried next pass)", result.pass_id, error)
        if result.orphans:
            log.warning("storage reconcile pass %d: the volume backend serves attachments no volume has: %s "
                        "(left alone)", result.pass_id, ", ".join(result.orphans))
        log.debug("storage reconcile pass %d took %d ms", result.pass_id, result.duration_ms)
