"""Append-only JSON Lines audit file, hash-chained, durable before ``record`` returns, with
group commit: concurrent callers share one durable write.

Group commit is leader/follower under one lock. ``record`` chains its event (seq, time,
prev_hash, hash) and queues the line under the lock, so chain order is queue order is file
order. Then, until its line is durable, the caller either leads (takes the whole queue and
writes it with one synchronous write, lock released, then marks it durable and wakes that
batch's callers) or, while another caller leads, waits on its batch's condition variable.
A leader whose own line is durable leads a few more rounds while others queued meanwhile,
then hands over to one waiter of the next batch. One caller alone pays one write, as
before; sixteen share them, and each wakes once.

The file is opened O_DSYNC: a write returns once its data, and the file size that reaches
it, are on disk; the guarantee of write followed by fdatasync, in one system call (one
fewer wait for the GIL on the path every queued caller waits behind).

``append`` chains and queues a record without waiting for it: the record of an operation
with no effect outside the broker (a stat, a listing, a read). Its line is written by the
next group commit, led by a ``record`` or ``sync`` caller or by the sink's flusher thread,
which ``append`` wakes; since lines are written in chain order, a record made durable by
``record`` or ``sync`` has every earlier record durable with it (DESIGN.md, "Audit").

If a write fails, every queued record fails with AuditUnavailable (their callers must not
act): the chain in memory goes back to the last durable record and the file is cut back to
its last durable byte. If even that fails, or the lost records include appended ones (whose
operations were already answered), the sink refuses every later record until the broker
restarts: after a failed synchronous write the page cache cannot be trusted, and an effect
after a lost record would break the ordering rule.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import threading
from pathlib import Path

from .._proto import audit_pb2
from ..errors import AuditUnavailable
from ..security.keys import KeyFileError
from .checkpoint import (
    KEY_FILE,
    Checkpoint,
    CheckpointKey,
    checkpoint_fields,
    read_checkpoint_file,
    sidecar_path,
    write_sidecar,
)
from .sink import canonical, dumps, now_rfc3339
from .verify import Verification, verify_log

log = logging.getLogger("writ.audit")
_CHAIN_FIELDS = ("seq", "time", "prev_hash", "hash")
MAX_EXTRA_ROUNDS = 4


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _unchained(event: audit_pb2.AuditEvent) -> dict[str, object]:
    """The event's canonical body without the fields the chain sets."""
    body = canonical(event)
    for name in _CHAIN_FIELDS:
        body.pop(name, None)
    return body


class FileSink:
    """Record, then act: ``record`` returns only once the line is on disk (fdatasync)."""

    def __init__(self, path: Path, checkpoint_key: CheckpointKey | None = None,
                 checkpoint_every: int = 0) -> None:
        """Open (or create) the log and continue its chain.

        Args:
            path: the JSON Lines file.
            checkpoint_key: signs checkpoints; None writes none.
            checkpoint_every: append a signed checkpoint after this many records (0: only
                when ``checkpoint()`` is called, e.g. by the broker's timer and at close).

        Raises:
            AuditUnavailable: the log does not verify (appending would bury the evidence),
                it is shorter than or differs from its own last signed checkpoint, or
                another process holds it open for writing.
        """
        self.path = path
        self.sidecar = sidecar_path(path)
        self._key = checkpoint_key
        self._every = checkpoint_every
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: every write lands at the end of the file. O_DSYNC: each write returns
        # only once its data (and the size that reaches it) is on disk, exactly what write
        # then fdatasync gives, in one system call: one fewer GIL round trip on the path
        # every waiting caller is queued behind.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC |
                           os.O_DSYNC, 0o600)
        try:
            # One writer per log: a second broker on the same state dir would fork the chain.
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise AuditUnavailable(f"{path} is open for writing by another process") from None
        try:
            chain, recovered = self._open_chain()
        except BaseException:
            os.close(self._fd)
            raise
        self._seq, self._head, self._size = chain.last_seq, chain.head, chain.good_bytes
        self._durable, self._durable_head = self._seq, self._head
        self._lock = threading.Lock()
        # Each batch has its own condition: a finished write wakes only its own callers.
        self._open = threading.Condition(self._lock)  # waiters of the batch not yet written
        self._pending: list[bytes] = []
        self._pending_checkpoint: Checkpoint | None = None
        self._flushing = False
        self._epoch = 0                  # bumped when queued records are failed
        self._ended: dict[int, int] = {}  # epoch -> last durable seq when it ended
        self._broken: str | None = None  # set when the file can no longer be trusted
        self._last_error = ""
        self._appended = 0               # last seq queued by append() (nobody waits for it)
        self._flushed = threading.Condition(self._lock)  # every finished write: sync()
        self._wake = threading.Condition(self._lock)     # the flusher: lines wait for it
        self._flusher: threading.Thread | None = None
        self._closing = False
        # Records since the last checkpoint in the log: close() signs them.
        last_cp = chain.checkpoints[-1].record_seq if chain.checkpoints else 0
        self._since_checkpoint = self._seq - last_cp
        if recovered:
            self.record(audit_pb2.AuditEvent(actor="broker", operation="audit.recover",
                                             target=str(path), reason=recovered))

    # -- opening -------------------------------------------------------------------------
    def _open_chain(self) -> tuple[Verification, str]:
        """Verify the existing log; cut off a torn last line. Returns the verification and
        a note of what was cut ("" if nothing)."""
        anchor = None
        if self.sidecar.exists():
            try:
                anchor = read_checkpoint_file(self.sidecar)
            except ValueError as exc:
                raise AuditUnavailable(str(exc)) from None
        keys = self._key.trusted() if self._key is not None else None
        v = verify_log(self.path, keys=keys, anchor=anchor)
        note = ""
        if v.torn_tail:
            note = self._cut_torn_tail(v.good_bytes)
            v = verify_log(self.path, keys=keys, anchor=anchor)
        if v.problem is not None:
            hint = ("; if the checkpoint key was replaced on purpose, move the log aside (keep "
                    "it with the old public key) and start a new one"
                    if v.problem.kind == "signature" else "")
            raise AuditUnavailable(f"{self.path} fails verification: "
                                   f"{v.problem.located(self.path)}{hint}")
        return v, note

    def _cut_torn_tail(self, good: int) -> str:
        """An unterminated last line is a write that was interrupted (a crash): its record
        was never acknowledged, so no effect depends on it. Keep the bytes as evidence
        beside the log, cut them off, and say so in the chain itself."""
        with open(self.path, "rb") as f:
            f.seek(good)
            tail = f.read()
        keep = self.path.with_name(f"{self.path.name}.torn-{good}")
        fd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, tail)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.ftruncate(self._fd, good)
        os.fsync(self._fd)
        note = (f"removed an incomplete final line left by an interrupted write: {len(tail)} "
                f"bytes at byte {good}, sha256 {hashlib.sha256(tail).hexdigest()}, kept in "
                f"{keep.name}")
        log.warning("audit log %s: %s", self.path, note)
        return note

    # -- appending -----------------------------------------------------------------------
    def _append_locked(self, event: audit_pb2.AuditEvent, body: dict[str, object],
                       time: str) -> None:
        event.seq, event.time, event.prev_hash = self._seq + 1, time, self._head
        body["seq"], body["time"] = str(event.seq), time
        if self._head:  # MessageToDict leaves out an empty string; so does canonical()
            body["prev_hash"] = self._head
        event.hash = hashlib.sha256(dumps(body).encode()).hexdigest()
        body["hash"] = event.hash
        self._pending.append((dumps(body) + "\n").encode())
        self._seq, self._head = event.seq, event.hash

    def _checkpoint_locked(self) -> tuple[audit_pb2.AuditEvent, Checkpoint]:
        assert self._key is not None  # callers check
        time = now_rfc3339()
        cp = self._key.sign(self._seq, self._head, time)
        event = audit_pb2.AuditEvent(**checkpoint_fields(cp))
        self._append_locked(event, canonical(event), time)
        self._pending_checkpoint = cp
        self._since_checkpoint = 0
        return event, cp

    def record(self, event: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        """Chain the event, make it durable, return it.

        Raises:
            AuditUnavailable: it could not be made durable; the caller must not act.
        """
        body = _unchained(event)  # outside the lock: the costly part of serializing
        with self._lock:
            self._queue_locked(event, body)
            self._wait_durable_locked(event.seq, self._epoch, self._open)
        return event

    def append(self, event: audit_pb2.AuditEvent) -> audit_pb2.AuditEvent:
        """Chain and queue the event, return it at once (seq and hashes set) without
        waiting for the write: for an operation with no effect outside the broker. It is
        durable no later than any record chained after it that ``record`` returned, and
        than any ``sync`` that began after this call; the flusher writes it meanwhile.

        Raises:
            AuditUnavailable: the sink is broken.
        """
        body = _unchained(event)
        with self._lock:
            self._queue_locked(event, body)
            self._appended = event.seq
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever,
                                                 name="audit-flusher", daemon=True)
                self._flusher.start()
            elif not self._flushing:
                self._wake.notify()  # a running write wakes it when it ends
        return event

    def sync(self) -> None:
        """Return once every record chained so far is durable.

        Raises:
            AuditUnavailable: one of them could not be made durable.
        """
        with self._lock:
            if self._broken is not None:
                raise AuditUnavailable(self._broken)
            self._wait_durable_locked(self._seq, self._epoch, self._flushed)

    def all_durable(self) -> bool:
        """True when no chained record waits for its write (a hint, read without the lock:
        False may be stale, True is exact for records this thread chained)."""
        return self._durable >= self._seq

    def _queue_locked(self, event: audit_pb2.AuditEvent, body: dict[str, object]) -> None:
        if self._broken is not None:
            raise AuditUnavailable(self._broken)
        self._append_locked(event, body, now_rfc3339())
        self._since_checkpoint += 1
        if self._key is not None and self._every and self._since_checkpoint >= self._every:
            self._checkpoint_locked()

    def _flush_forever(self) -> None:
        """The flusher thread: writes queued lines nobody waits for."""
        with self._lock:
            while not self._closing:
                if self._pending and not self._flushing and self._broken is None:
                    self._flush_locked()
                else:
                    self._wake.wait()

    def checkpoint(self) -> Checkpoint | None:
        """Append a signed checkpoint now if any record came since the last one (the
        broker's timer and ``close`` call this). Raises AuditUnavailable."""
        with self._lock:
            if self._key is None or self._broken is not None or not self._since_checkpoint:
                return None
            event, cp = self._checkpoint_locked()
            self._wait_durable_locked(event.seq, self._epoch, self._open)
            return cp

    def _wait_durable_locked(self, mine: int, epoch: int, cond: threading.Condition) -> None:
        led = 0
        while True:
            if self._epoch != epoch:
                # A write failed since this record was queued; it stands only if it was
                # durable before that (a leader that kept leading, say).
                if mine <= self._ended[epoch]:
                    return
                raise AuditUnavailable(self._broken or self._last_error)
            if self._durable >= mine and not (self._pending and 0 < led < MAX_EXTRA_ROUNDS):
                if led and self._pending and not self._flushing:
                    self._open.notify()  # hand over: one waiter of the next batch leads
                return
            if self._flushing:
                cond.wait()
            else:
                # A leader whose own record is durable keeps leading while others queued
                # during its write (a few rounds at most): handing over to a woken follower
                # would put one more wait for the GIL on everyone's path.
                self._flush_locked()
                led += 1

    def _flush_locked(self) -> None:
        """Lead one group commit: called with the lock held, releases it for the I/O."""
        batch, self._pending = self._pending, []
        checkpoint, self._pending_checkpoint = self._pending_checkpoint, None
        last_seq, last_head = self._seq, self._head
        done, self._open = self._open, threading.Condition(self._lock)
        data = b"".join(batch)
        self._flushing = True
        self._lock.release()
        error: OSError | None = None
        try:
            _write_all(self._fd, data)  # O_DSYNC: durable when it returns
        except OSError as exc:
            error = exc
        finally:
            self._lock.acquire()
            self._flushing = False
        if error is None:
            self._durable, self._durable_head = last_seq, last_head
            self._size += len(data)
        else:
            self._fail_locked(error)
            self._open.notify_all()  # chained on the failed batch: they fail too
        done.notify_all()
        self._flushed.notify_all()
        if self._pending:
            self._wake.notify()  # appended while this write ran
        if error is None and checkpoint is not None:
            # Under the lock on purpose: sidecar writes stay in order, so an older
            # checkpoint never replaces a newer one. They are rare (every N records).
            self._publish(checkpoint)

    def _fail_locked(self, error: OSError) -> None:
        """Every queued record fails; go back to the last durable record."""
        self._last_error = f"{self.path}: {error.strerror or error}"
        # Appended records are answered before they are durable: losing one means an
        # operation happened unrecorded, so no later effect may happen (ordering rule).
        lost_answered = self._appended > self._durable
        self._ended[self._epoch] = self._durable  # records up to here stand
        self._epoch += 1
        self._pending, self._pending_checkpoint = [], None
        self._seq, self._head = self._durable, self._durable_head
        try:
            # A failed or short write may have left part of a batch: cut back to the last
            # durable byte so the file and the chain in memory agree again.
            os.ftruncate(self._fd, self._size)
            os.fdatasync(self._fd)
        except OSError as exc:
            self._broken = (f"{self.path}: a write failed ({self._last_error}) and the file "
                            f"could not be cut back ({exc.strerror or exc}); restart the broker")
        if lost_answered and self._broken is None:
            self._broken = (f"{self.path}: a write failed ({self._last_error}) after the "
                            "operations it recorded were answered; restart the broker")
        if self._broken is not None:
            log.error("audit sink broken: %s", self._broken)

    def _publish(self, cp: Checkpoint) -> None:
        try:
            write_sidecar(self.sidecar, cp)
        except OSError as exc:
            # The checkpoint is durable in the log itself; only the off-log copy is stale.
            log.error("could not write %s: %s", self.sidecar, exc)

    def close(self) -> None:
        """A last checkpoint (when keyed and anything is unsigned), every appended record
        durable, then release the file."""
        try:
            self.checkpoint()
            self.sync()
        except AuditUnavailable as err:
            log.error("no final audit checkpoint: %s", err.details)
        with self._lock:
            self._closing = True
            self._wake.notify()
        if self._flusher is not None:
            self._flusher.join()
        os.close(self._fd)



def open_broker_sink(path: Path, checkpoint_every: int) -> FileSink:
    """The broker's sink: checkpoints signed with the key kept beside the log (created on
    first use, 0600).

    Raises:
        AuditUnavailable: the key is unusable, or the log is (see FileSink).
    """
    try:
        key = CheckpointKey.load_or_create(path.parent / KEY_FILE)
    except KeyFileError as exc:
        raise AuditUnavailable(str(exc)) from None
    return FileSink(path, checkpoint_key=key, checkpoint_every=checkpoint_every)


async def checkpoint_timer(sink: object, interval_s: float) -> None:
    """Sign the head every ``interval_s`` seconds when records came since the last
    checkpoint (the count-based trigger handles busy periods). Runs until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        checkpoint = getattr(sink, "checkpoint", None)
        if checkpoint is None:
            return
        try:
            await asyncio.to_thread(checkpoint)
        except AuditUnavailable as err:
            log.error("audit checkpoint failed: %s", err.details)
