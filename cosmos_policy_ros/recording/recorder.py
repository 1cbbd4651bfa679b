"""Episode recording to rosbag2 MCAP directories; plain Python, no ROS imports.

Owns :class:`EpisodeRecorder`: one rosbag2 directory per episode (layout in
:mod:`cosmos_policy_ros.recording.bag`), fed with CDR bytes exactly as they came off the
wire (``rclpy`` subscriptions with ``raw=True``), behind a bounded queue and a writer
thread so the ROS callback thread never waits on the disk; and the signal handlers that
close it.

Kill safety: the writer thread ends an MCAP chunk and flushes it to the OS after every
batch it drains (a batch is whatever is queued, capped at ``flush_max_messages`` /
``flush_max_bytes``), so the file on disk always holds every message the writer has
taken off the queue, in complete chunks. SIGINT/SIGTERM handlers (see
:func:`install_signal_handlers`) and an ``atexit`` hook stop the episode, which drains the
queue and writes the MCAP summary and ``metadata.yaml``: nothing accepted is lost. After
SIGKILL or power loss, :func:`cosmos_policy_ros.recording.recovery.recover` rebuilds a readable bag from the complete chunks.

The bag is written by :class:`~cosmos_policy_ros.recording.bag_writer.BagWriter` (the
``mcap`` package's writer, whose public ``flush()`` ends the pending chunk): rosbags' writer
keeps up to 1 MiB in memory with no way to flush it.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import re
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

import yaml
from rosbags.typesys.store import Typestore

from cosmos_policy_ros.config import EPISODE_EVENTS_TOPIC
from cosmos_policy_ros.recording.bag import (
    EPISODE_EVENT_TYPE,
    EPISODE_FILE,
    EpisodeOutcome,
    RecorderError,
    _atomic_write_text,
    _write_outcome,
    build_typestore,
)
from cosmos_policy_ros.recording.bag_writer import BagWriter

log = logging.getLogger(__name__)

DEFAULT_EVENT_TOPIC = EPISODE_EVENTS_TOPIC
_EPISODE_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.\-]*$')


# --------------------------------------------------------------------------- recorder


@dataclass
class RecorderStats:
    """Counters since the recorder was created (messages are counted per call to write)."""

    accepted: int = 0
    written: int = 0
    bytes_written: int = 0
    dropped: int = 0  # queue full: the disk is not keeping up
    dropped_by_topic: dict[str, int] = field(default_factory=dict)
    not_recording: int = 0  # write() outside an episode
    max_queue_messages: int = 0
    max_queue_bytes: int = 0
    episodes_closed: int = 0
    flushes: int = 0


@dataclass
class _Episode:
    seq: int
    episode_id: str
    bag_dir: Path
    writer: BagWriter
    connections: dict[tuple[str, str], Any] = field(default_factory=dict)


_STOP_WAIT_S = 60.0


class EpisodeRecorder:
    """Writes one rosbag2 (MCAP) directory per episode from serialized CDR messages.

    ``write()`` is safe to call from any thread (ROS callbacks) and never blocks on I/O:
    it puts the bytes on a bounded queue and returns False when the message is dropped
    (queue full, or no episode is recording). A single writer thread owns the bag.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        *,
        typestore: Typestore | None = None,
        msg_dir: str | os.PathLike[str] | None = None,
        max_queue_messages: int = 2000,
        max_queue_bytes: int = 512 * 2**20,
        flush_max_messages: int = 64,
        flush_max_bytes: int = 8 * 2**20,
        fsync_period_s: float = 0.0,
        compression: str | None = None,
        event_topic: str = DEFAULT_EVENT_TOPIC,
    ) -> None:
        """
        Args:
            output_dir: parent of the per-episode bag directories (created if missing).
            typestore: message types; default :func:`build_typestore` (``msg_dir``).
            max_queue_messages / max_queue_bytes: bound on data accepted but not yet
                written; beyond it write() drops and counts (stats().dropped).
            flush_max_messages / flush_max_bytes: the most one MCAP chunk holds before the
                writer ends it and flushes it to the OS (smaller: less lost on SIGKILL).
            fsync_period_s: also fsync the bag this often (0: never; the OS page cache
                already survives a killed process, fsync guards against power loss).
            compression: None or 'zstd' (MCAP chunk compression; costs CPU).
            event_topic: topic the recorder's own EpisodeEvent messages go to.
        """
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.typestore = typestore if typestore is not None else build_typestore(msg_dir)
        if compression not in (None, 'zstd'):
            raise ValueError(f"compression must be None or 'zstd', got {compression!r}")
        self.compression = compression
        self.event_topic = event_topic
        self.max_queue_messages = int(max_queue_messages)
        self.max_queue_bytes = int(max_queue_bytes)
        self.flush_max_messages = max(1, int(flush_max_messages))
        self.flush_max_bytes = int(flush_max_bytes)
        self.fsync_period_s = float(fsync_period_s)

        self._known_types = self.typestore.fielddefs
        self._queue: SimpleQueue[tuple[Any, ...]] = SimpleQueue()
        # Producers serialize on this RLock (re-entrant so a signal handler that runs in
        # the middle of write() on the same thread can still stop the episode). The
        # writer thread never takes it: it owns _bytes_dequeued alone.
        self._accept_lock = threading.RLock()
        self._bytes_enqueued = 0
        self._bytes_dequeued = 0
        self._episode_seq = 0
        self._recording_seq: int | None = None
        self._bag_dir: Path | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._stats = RecorderStats()
        self._last_fsync = time.monotonic()
        self._episode: _Episode | None = None  # writer thread only

        self._thread = threading.Thread(target=self._run, name='episode-recorder', daemon=True)
        self._thread.start()
        ref = weakref.ref(self)
        self._atexit = lambda: (r := ref()) is not None and r.close()
        atexit.register(self._atexit)

    # ---------------------------------------------------------------- control (any thread)

    @property
    def recording(self) -> bool:
        return self._recording_seq is not None

    @property
    def bag_dir(self) -> Path | None:
        """Directory of the episode being recorded (None between episodes)."""
        return self._bag_dir

    def stats(self) -> RecorderStats:
        """A snapshot of the counters."""
        with self._accept_lock:
            snap = RecorderStats(**{k: v for k, v in asdict(self._stats).items()})
        snap.dropped_by_topic = dict(snap.dropped_by_topic)
        return snap

    def start_episode(
        self, episode_id: str, metadata: Mapping[str, Any] | None = None, stamp_ns: int | None = None
    ) -> Path:
        """Open ``<output_dir>/<episode_id>/`` and record into it until stop_episode().

        ``metadata`` (JSON-serializable: task, policy, checkpoint, ...) goes to
        ``episode.yaml`` and to the bag's ``custom_data``. Returns the bag directory.
        """
        if not _EPISODE_ID_RE.match(episode_id):
            raise RecorderError(
                f'episode_id {episode_id!r} must match {_EPISODE_ID_RE.pattern} (it names a directory)'
            )
        metadata = dict(metadata or {})
        json.dumps(metadata)  # fail here, not in the writer thread
        stamp_ns = time.time_ns() if stamp_ns is None else int(stamp_ns)
        bag_dir = self.output_dir / episode_id
        if bag_dir.exists():
            raise RecorderError(f'{bag_dir} exists already; episode ids must be unique')
        done = threading.Event()
        result: dict[str, Any] = {}
        with self._accept_lock:
            # A disk error of an earlier episode does not block this one: the writer thread
            # tries to open the new bag and clears the error when it can.
            if self._closed:
                raise RecorderError('recorder is closed')
            if self._recording_seq is not None:
                raise RecorderError(f'episode in {self._bag_dir} is still recording; stop it first')
            self._episode_seq += 1
            self._queue.put(('start', self._episode_seq, episode_id, bag_dir, metadata, stamp_ns, done, result))
        if not done.wait(_STOP_WAIT_S):
            raise RecorderError(f'writer thread did not open {bag_dir} within {_STOP_WAIT_S} s')
        if 'error' in result:
            raise RecorderError(f'could not open bag {bag_dir}: {result["error"]}') from result['error']
        with self._accept_lock:
            self._recording_seq = self._episode_seq
            self._bag_dir = bag_dir
        return bag_dir

    def write(self, topic: str, msgtype: str, data: bytes | memoryview, stamp_ns: int) -> bool:
        """Queue one serialized (CDR) message for the current episode.

        ``stamp_ns`` is the bag's log time (receive time, as rosbag2 records it).
        Returns True when accepted (it will be in the bag), False when dropped.
        Raises ValueError for a message type the typestore does not know.
        """
        if msgtype not in self._known_types:
            raise ValueError(f'unknown message type {msgtype!r} for topic {topic!r}; not in the typestore')
        size = len(data)
        with self._accept_lock:
            seq = self._recording_seq
            stats = self._stats
            if seq is None:
                stats.not_recording += 1
                return False
            if self._error is not None:
                stats.dropped += 1
                stats.dropped_by_topic[topic] = stats.dropped_by_topic.get(topic, 0) + 1
                return False
            pending_msgs = self._queue.qsize()
            pending_bytes = self._bytes_enqueued - self._bytes_dequeued
            if pending_msgs >= self.max_queue_messages or pending_bytes + size > self.max_queue_bytes:
                stats.dropped += 1
                stats.dropped_by_topic[topic] = stats.dropped_by_topic.get(topic, 0) + 1
                return False
            self._bytes_enqueued += size
            self._queue.put(('msg', seq, topic, msgtype, data, int(stamp_ns), size))
            stats.accepted += 1
            if pending_msgs + 1 > stats.max_queue_messages:
                stats.max_queue_messages = pending_msgs + 1
            if pending_bytes + size > stats.max_queue_bytes:
                stats.max_queue_bytes = pending_bytes + size
        return True

    def stop_episode(
        self, outcome: EpisodeOutcome | None = None, stamp_ns: int | None = None, timeout: float = _STOP_WAIT_S
    ) -> Path | None:
        """Write every accepted message, an EpisodeEvent STOP (with the outcome when given)
        and the MCAP summary + ``metadata.yaml``; returns the closed bag directory (None when
        no episode was recording). The outcome also goes to ``outcome.yaml``."""
        stamp_ns = time.time_ns() if stamp_ns is None else int(stamp_ns)
        done = threading.Event()
        result: dict[str, Any] = {}
        with self._accept_lock:
            seq, bag_dir = self._recording_seq, self._bag_dir
            if seq is None:
                return None
            self._recording_seq = None
            self._bag_dir = None
            self._queue.put(('stop', seq, outcome, stamp_ns, done, result))
        if not done.wait(timeout):
            raise RecorderError(f'writer thread did not close {bag_dir} within {timeout} s')
        if 'error' in result:
            raise RecorderError(f'could not close bag {bag_dir}: {result["error"]}') from result['error']
        return bag_dir

    def close(self, timeout: float = _STOP_WAIT_S) -> None:
        """Stop the current episode (if any) and end the writer thread. Idempotent."""
        if self._closed:
            return
        try:
            self.stop_episode(timeout=timeout)
        finally:
            with self._accept_lock:
                if not self._closed:
                    self._closed = True
                    self._queue.put(('exit',))
            self._thread.join(timeout)
            atexit.unregister(self._atexit)

    def __enter__(self) -> EpisodeRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_usable(self) -> None:
        if self._closed:
            raise RecorderError('recorder is closed')
        if self._error is not None:
            raise RecorderError(f'writer thread failed: {self._error!r}') from self._error

    # ---------------------------------------------------------------- writer thread

    def _run(self) -> None:
        queue = self._queue
        while True:
            item = queue.get()
            batch_messages = 0
            batch_bytes = 0
            while True:
                kind = item[0]
                if kind == 'msg':
                    self._bytes_dequeued += item[6]
                    self._handle_message(item)
                    batch_messages += 1
                    batch_bytes += item[6]
                elif kind == 'start':
                    self._handle_start(*item[1:])
                elif kind == 'stop':
                    self._handle_stop(*item[1:])
                elif kind == 'exit':
                    return
                if batch_messages >= self.flush_max_messages or batch_bytes >= self.flush_max_bytes:
                    break
                try:
                    item = queue.get_nowait()
                except Empty:
                    break
            if batch_messages:
                self._flush()

    def _handle_start(
        self, seq: int, episode_id: str, bag_dir: Path, metadata: dict[str, Any], stamp_ns: int,
        done: threading.Event, result: dict[str, Any],
    ) -> None:
        try:
            writer = BagWriter(bag_dir, self.typestore, compress=self.compression == 'zstd')
            writer.set_custom_data('episode_id', episode_id)
            writer.set_custom_data('episode_metadata', json.dumps(metadata, sort_keys=True))
            writer.open()
            _atomic_write_text(
                bag_dir / EPISODE_FILE,
                yaml.safe_dump(
                    {'episode_id': episode_id, 'started_at_ns': stamp_ns, 'metadata': metadata},
                    sort_keys=False,
                ),
            )
            self._episode = _Episode(seq, episode_id, bag_dir, writer)
            self._write_event('START', stamp_ns, None)
            self._flush()
            if self._error is not None:
                log.warning('episode recorder: recording again after an earlier error: %r', self._error)
                self._error = None
        except BaseException as err:  # noqa: BLE001 -- handed to the caller
            result['error'] = err
            self._episode = None
        finally:
            done.set()

    def _handle_message(self, item: tuple[Any, ...]) -> None:
        _, seq, topic, msgtype, data, stamp_ns, size = item
        episode = self._episode
        if episode is None or episode.seq != seq or self._error is not None:
            return  # raced with a stop (the caller saw the episode end), or the disk failed
        try:
            self._write_raw(episode, topic, msgtype, data, stamp_ns)
        except BaseException as err:  # noqa: BLE001
            self._fail(err)
            return
        self._stats.written += 1
        self._stats.bytes_written += size

    def _write_raw(self, episode: _Episode, topic: str, msgtype: str, data: bytes | memoryview, stamp_ns: int) -> None:
        key = (topic, msgtype)
        connection = episode.connections.get(key)
        if connection is None:
            connection = episode.writer.add_connection(topic, msgtype)
            episode.connections[key] = connection
        episode.writer.write(connection, stamp_ns, data)

    def _write_event(self, event: str, stamp_ns: int, outcome: EpisodeOutcome | None) -> None:
        episode = self._episode
        assert episode is not None
        if EPISODE_EVENT_TYPE not in self._known_types:
            return
        msg_class = self.typestore.types[EPISODE_EVENT_TYPE]
        time_class = self.typestore.types['builtin_interfaces/msg/Time']
        header_class = self.typestore.types['std_msgs/msg/Header']
        msg = msg_class(
            header=header_class(stamp=time_class(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=''),
            event=getattr(msg_class, event),
            episode_id=episode.episode_id,
            has_outcome=outcome is not None,
            success=bool(outcome.success) if outcome else False,
            score=float('nan') if outcome is None or outcome.score is None else float(outcome.score),
            note=outcome.note if outcome else '',
        )
        data = self.typestore.serialize_cdr(msg, EPISODE_EVENT_TYPE)
        self._write_raw(episode, self.event_topic, EPISODE_EVENT_TYPE, data, stamp_ns)

    def _handle_stop(
        self, seq: int, outcome: EpisodeOutcome | None, stamp_ns: int, done: threading.Event, result: dict[str, Any]
    ) -> None:
        episode = self._episode
        try:
            if episode is None or episode.seq != seq:
                raise RecorderError(f'no open bag for episode #{seq}') from self._error
            self._write_event('STOP', stamp_ns, outcome)
            episode.writer.close()
            self._stats.episodes_closed += 1
            if outcome is not None:
                _write_outcome(episode.bag_dir, outcome, source='recorder')
            if self._error is not None:
                raise RecorderError('messages after a write error were dropped') from self._error
        except BaseException as err:  # noqa: BLE001 -- handed to the caller
            result['error'] = err
            if episode is not None:
                with suppress(Exception):
                    episode.writer.abort()
        finally:
            self._episode = None
            done.set()

    def _flush(self) -> None:
        """End the pending MCAP chunk and hand it to the OS (see module docstring)."""
        episode = self._episode
        if episode is None:
            return
        try:
            fsync = self.fsync_period_s > 0 and time.monotonic() - self._last_fsync >= self.fsync_period_s
            episode.writer.flush(fsync=fsync)
            self._stats.flushes += 1
            if fsync:
                self._last_fsync = time.monotonic()
        except BaseException as err:  # noqa: BLE001
            self._fail(err)

    def _fail(self, err: BaseException) -> None:
        """A disk error: drop from now on (counted) and raise it from stop/start."""
        log.error('episode recorder: writing %s failed: %r', self._episode and self._episode.bag_dir, err)
        self._error = err


# --------------------------------------------------------------------------- signals


def install_signal_handlers(
    recorder: EpisodeRecorder,
    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
    on_signal: Callable[[int], None] | None = None,
) -> None:
    """On SIGINT/SIGTERM: close the recorder (the open bag is finalized with every accepted
    message), then hand the signal to the handler that was installed before (SIGINT:
    KeyboardInterrupt by default; SIGTERM: the default action, i.e. the process ends).

    Must be called from the main thread. For plain Python processes: Python runs signal
    handlers only between bytecodes of the main thread, so inside an rclpy node (main
    thread blocked in ``rclpy.spin``) rely on rclpy's own SIGINT/SIGTERM handling instead:
    ``try: rclpy.spin(node) except (KeyboardInterrupt, ExternalShutdownException): pass
    finally: recorder.close()``. A handler installed outside Python (``getsignal`` returns
    None) cannot be chained; then SIGINT raises KeyboardInterrupt and others SystemExit.
    """
    for signum in signals:
        previous = signal.getsignal(signum)

        def handler(num: int, frame: Any, _previous: Any = previous) -> None:
            try:
                recorder.close()
            except Exception:  # noqa: BLE001 -- still end the process as asked
                log.exception('episode recorder: closing on signal %d failed', num)
            if on_signal is not None:
                on_signal(num)
            if callable(_previous):
                _previous(num, frame)
            elif _previous is None:
                if num == signal.SIGINT:
                    raise KeyboardInterrupt
                raise SystemExit(128 + num)
            elif _previous != signal.SIG_IGN:
                signal.signal(num, signal.SIG_DFL)
                os.kill(os.getpid(), num)

        signal.signal(signum, handler)
