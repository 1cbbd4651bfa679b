"""From action chunks to one safe joint position command per control tick.

This module owns chunk execution, without ROS, threads or clocks (time comes in as ns):

- ``ChunkExecutor``: which chunk runs (acceptance rules for incoming chunks), where in it
  the robot is (time alignment to the chunk's observation stamp), the seam between two
  chunks (a bounded linear crossfade), and holding (start-up, starvation, e-stop). Every
  command passes through ``safety.SafetyFilter``.
- ``InferenceTrigger``: when the policy node should ask for the next chunk so that it is
  computed while the current one still runs (or, for comparison, only once it ran out).

Time alignment: ``positions[k]`` of a chunk is the target for ``stamp_ns + k * period``
(``types.ActionChunk``); the stamp is the time of the observation the chunk was computed
from, so when a chunk arrives after the robot kept moving, the steps already in the past
are skipped. One exception keeps blocking execution meaningful: if the executor has held
still since the observation, nothing the chunk planned has been missed, so the chunk is
re-based to start at step 0 on the tick it takes over.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cosmos_policy_ros.config import ExecutionSettings, RobotConfig
from cosmos_policy_ros.control.safety import JointLimits, SafetyFilter, SafetyFlags
from cosmos_policy_ros.types import ActionChunk

TickSource = Literal["chunk", "hold", "disabled"]
TriggerMode = Literal["overlapped", "blocking", "adaptive"]

#: Why ``ChunkExecutor.submit`` refuses a chunk (``SubmitResult.reason``).
REJECT_REASONS = (
    "disabled",  # e-stop active
    "joint_names",  # names/order differ from the executor's joint_names
    "shape",  # positions not [horizon >= 1, dof]
    "nonfinite",  # NaN/inf in positions
    "period",  # control_period_s not a positive finite number
    "duplicate",  # same chunk_id as the newest accepted chunk
    "out_of_order",  # older chunk_id or older observation stamp than the newest accepted chunk
    "before_enable",  # observation taken before the last re-enable (world may have changed)
    "stale",  # observation older than max_chunk_age_s
    "future_stamp",  # observation stamp more than max_future_s ahead of now (clock skew)
    "expired",  # every step already lies in the past
)

_COUNTERS = (
    "ticks", "chunk_ticks", "hold_ticks", "idle_ticks", "starved_ticks", "disabled_ticks",
    "no_state_ticks", "blend_ticks", "switches", "rebased", "superseded", "dropped_on_disable",
    "accepted", "rejected", "clamped_ticks", "rate_limited_ticks", "refused_ticks",
    "clock_resets", "implausible_measurements",
)


@dataclass(frozen=True)
class SubmitResult:
    """Outcome of ``ChunkExecutor.submit``; ``reason`` is 'accepted' or one of REJECT_REASONS."""

    accepted: bool
    reason: str

    def __bool__(self) -> bool:
        return self.accepted


@dataclass(frozen=True)
class TickResult:
    """One control tick.

    command: ``[dof]`` joint position command to send, or None when no position is known yet
    (no valid measured positions before the first command): send nothing.
    source: 'chunk' (from a chunk, maybe blended), 'hold' (no usable chunk: start-up or
    starvation) or 'disabled' (e-stop).
    chunk_id, step_index: the chunk and step the target came from ('chunk' only).
    blend_weight: weight of the new chunk in a seam crossfade; 1.0 outside seams.
    starved: holding because the running chunk ran out before a new one arrived.
    flags: what the safety filter changed. target: the (blended) target before the safety
    filter ('chunk' only), for diagnostics.
    """

    command: np.ndarray | None
    source: TickSource
    chunk_id: int | None = None
    step_index: int | None = None
    blend_weight: float = 1.0
    starved: bool = False
    flags: SafetyFlags = field(default_factory=SafetyFlags)
    target: np.ndarray | None = None


def _step_at(now_ns: int, start_ns: int, period_ns: int) -> int:
    """Index of the step whose time is nearest to now: round((now - start) / period)."""
    return (2 * (now_ns - start_ns) + period_ns) // (2 * period_ns)


@dataclass
class _RunningChunk:
    chunk: ActionChunk
    start_ns: int | None  # time of positions[0]; None = re-based, starts on its first tick

    def step_at(self, now_ns: int) -> int:
        if self.start_ns is None:
            self.start_ns = now_ns
        return _step_at(now_ns, self.start_ns, self.chunk.period_ns)

    def target(self, step: int) -> np.ndarray:
        """Target at ``step``; after the last step, the last target (used only while blending)."""
        return self.chunk.positions[min(max(step, 0), self.chunk.horizon - 1)]

    def until_ns(self, now_ns: int) -> int:
        """Time after which no step of the chunk is current any more."""
        start = now_ns if self.start_ns is None else self.start_ns
        return start + self.chunk.horizon * self.chunk.period_ns - self.chunk.period_ns // 2


@dataclass
class _Blend:
    old: _RunningChunk | None  # trajectory we are leaving (None: a held position)
    held: np.ndarray  # position to leave from when old is None
    ticks_done: int = 0


class ChunkExecutor:
    """Streams accepted chunks as per-tick commands; holds when it has nothing valid to run.

    Rules:
    - ``submit`` accepts a chunk only if it is newer (chunk_id and stamp) than every chunk
      accepted before, matches ``joint_names``/dof, is finite, is not stale and still has a
      step in the future. A newer chunk takes over on the first tick at or after its stamp.
    - At a seam the target is crossfaded from the old trajectory to the new one over
      ``blend_ticks`` ticks; the safety filter bounds every step by ``max_step_per_tick``.
    - The first command (and the first after re-enable) is the measured position.
    - Disabled (e-stop): chunks are dropped and the last command is held; chunks from
      observations taken before re-enable are refused.
    """

    # How far outside the limits (rad / normalized) a measured position may be and still be
    # trusted as the position to hold; beyond it the sensor is presumed wrong.
    MEASURED_MARGIN = 0.1

    def __init__(
        self,
        joint_names: Sequence[str],
        safety: SafetyFilter,
        blend_ticks: int = ExecutionSettings.blend_ticks,
        max_chunk_age_s: float = ExecutionSettings.max_chunk_age_s,
        max_future_s: float = ExecutionSettings.max_future_s,
        start_enabled: bool = ExecutionSettings.start_enabled,
        keep_command_on_resync: Sequence[str] = ExecutionSettings.keep_command_on_resync,
    ) -> None:
        self.joint_names = tuple(joint_names)
        if safety.limits.joint_names != self.joint_names:
            raise ValueError(
                f"safety limits are for joints {safety.limits.joint_names}, executor for "
                f"{self.joint_names}"
            )
        if blend_ticks < 0 or max_chunk_age_s <= 0 or max_future_s < 0:
            raise ValueError("blend_ticks >= 0, max_chunk_age_s > 0 and max_future_s >= 0 required")
        self.safety = safety
        self.blend_ticks = int(blend_ticks)
        self.max_chunk_age_ns = int(round(max_chunk_age_s * 1e9))
        self.max_future_ns = int(round(max_future_s * 1e9))

        self._enabled = start_enabled
        unknown = sorted(set(keep_command_on_resync) - set(self.joint_names))
        if unknown:
            raise ValueError(f"keep_command_on_resync names joints {unknown} not in joint_names")
        # Grippers squeezing an object measure open while commanded closed: resyncing them to
        # the measurement after an e-stop would release the object.
        self._sticky = np.array([n in set(keep_command_on_resync) for n in self.joint_names])
        self._enabled_since_ns: int | None = None
        self._last_tick_ns: int | None = None
        self._resync = True  # next tick takes the measured position as the last command
        self._last_command: np.ndarray | None = None
        self._last_motion_ns: int | None = None  # last tick a chunk drove the command
        self._active: _RunningChunk | None = None
        self._pending: _RunningChunk | None = None
        self._blend: _Blend | None = None
        self._newest: tuple[int, int] | None = None  # (chunk_id, stamp_ns) of newest accepted
        self._starved = False
        self._stats = dict.fromkeys(_COUNTERS, 0)
        self._stats.update({f"rejected_{r}": 0 for r in REJECT_REASONS})

    @classmethod
    def from_config(cls, config: RobotConfig) -> "ChunkExecutor":
        """Build from a robot config: its ``joint_names``, ``limits`` (see
        ``JointLimits.from_config``) and ``execution`` settings."""
        limits = JointLimits.from_robot_config(config)
        settings = config.execution
        return cls(config.joint_names, SafetyFilter(limits), blend_ticks=settings.blend_ticks,
                   max_chunk_age_s=settings.max_chunk_age_s, max_future_s=settings.max_future_s,
                   start_enabled=settings.start_enabled, keep_command_on_resync=settings.keep_command_on_resync)

    # ------------------------------------------------------------------ state
    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def last_command(self) -> np.ndarray | None:
        return None if self._last_command is None else self._last_command.copy()

    @property
    def active_chunk_id(self) -> int | None:
        return None if self._active is None else self._active.chunk.chunk_id

    def active_until_ns(self, now_ns: int) -> int | None:
        """When the executor runs out of targets (None: it has none), for ``InferenceTrigger``."""
        running = self._pending or self._active
        return None if running is None else running.until_ns(now_ns)

    def stats(self) -> dict[str, int]:
        """Counters since construction: ticks by source, accepted/rejected by reason, clamps."""
        return dict(self._stats)

    # ---------------------------------------------------------------- control
    def set_enabled(self, enabled: bool, now_ns: int) -> None:
        """E-stop (False) drops all chunks and holds; re-enable (True) restarts from the
        measured position given to the next tick."""
        if enabled == self._enabled:
            return
        self._enabled = enabled
        if not enabled:
            dropped = (self._active is not None) + (self._pending is not None)
            self._stats["dropped_on_disable"] += dropped
            self._active = self._pending = self._blend = None
            self._starved = False
        else:
            self._enabled_since_ns = now_ns
            self._resync = True
            self._last_motion_ns = None

    def restart(self, now_ns: int) -> None:
        """A new episode: the robot was reset. Forget chunks, ids and the last command; the
        next tick holds the measured position of every joint (as at start-up). Chunks from
        observations before ``now_ns`` are refused. An e-stop stays in force, and so does
        its held command (re-enable resyncs)."""
        self._active = self._pending = self._blend = None
        self._newest = None
        self._last_motion_ns = None
        self._starved = False
        self._enabled_since_ns = now_ns
        if self._enabled:  # while e-stopped the held command stays exactly as it is
            self._last_command = None
            self._resync = True

    def reset_sequence(self) -> None:
        """Forget chunk ids/stamps seen, e.g. after the policy node restarted (ids start over)."""
        self._newest = None

    def submit(self, chunk: ActionChunk, now_ns: int) -> SubmitResult:
        """Accept ``chunk`` to run from its time on, or refuse it with a reason (counted)."""
        reason, start_ns = self._check(chunk, now_ns)
        if reason:
            self._stats["rejected"] += 1
            self._stats[f"rejected_{reason}"] += 1
            return SubmitResult(False, reason)
        if self._pending is not None:
            self._stats["superseded"] += 1
        self._pending = _RunningChunk(chunk, start_ns)
        self._newest = (chunk.chunk_id, chunk.stamp_ns)
        self._stats["accepted"] += 1
        self._stats["rebased"] += start_ns is None
        return SubmitResult(True, "accepted")

    def _check(self, chunk: ActionChunk, now_ns: int) -> tuple[str, int | None]:
        if not self._enabled:
            return "disabled", None
        if tuple(chunk.joint_names) != self.joint_names:
            return "joint_names", None
        positions = np.asarray(chunk.positions)
        if positions.ndim != 2 or positions.shape[0] < 1 or positions.shape[1] != len(self.joint_names):
            return "shape", None
        if not np.issubdtype(positions.dtype, np.number) or not np.all(np.isfinite(positions)):
            return "nonfinite", None
        if not np.isfinite(chunk.control_period_s) or chunk.period_ns <= 0:
            return "period", None
        if self._newest is not None:
            newest_id, newest_stamp = self._newest
            if chunk.chunk_id == newest_id:
                return "duplicate", None
            if chunk.chunk_id < newest_id or chunk.stamp_ns < newest_stamp:
                return "out_of_order", None
        if self._enabled_since_ns is not None and chunk.stamp_ns < self._enabled_since_ns:
            return "before_enable", None
        if now_ns - chunk.stamp_ns > self.max_chunk_age_ns:
            return "stale", None
        if chunk.stamp_ns - now_ns > self.max_future_ns:
            return "future_stamp", None
        held_since_observation = self._last_motion_ns is None or self._last_motion_ns < chunk.stamp_ns
        if held_since_observation and chunk.stamp_ns <= now_ns:
            return "", None  # re-based: starts at step 0 on its first tick
        if _step_at(now_ns, chunk.stamp_ns, chunk.period_ns) >= chunk.horizon:
            return "expired", None
        return "", chunk.stamp_ns

    # ------------------------------------------------------------------- tick
    def tick(self, now_ns: int, measured_positions: np.ndarray | None = None) -> TickResult:
        """Command for the control tick at ``now_ns``. ``measured_positions`` ([dof]) is used
        for the first command and after re-enable; it may be None otherwise."""
        self._stats["ticks"] += 1
        if self._last_tick_ns is not None and now_ns < self._last_tick_ns:
            self._clock_jumped_back()
        self._last_tick_ns = now_ns
        if self._resync:
            measured = self._valid_positions(measured_positions)
            if measured is not None:
                if self._last_command is not None:
                    measured = np.where(self._sticky, self._last_command, measured)
                self._last_command = measured
                self._resync = False
            elif self._last_command is not None:
                # No trustworthy measurement yet: hold what was last sent, run nothing, so
                # the command cannot jump when the measurement arrives.
                self._stats["no_state_ticks"] += 1
                return TickResult(self._last_command.copy(), "hold" if self._enabled else "disabled")
        if self._last_command is None:
            self._stats["no_state_ticks"] += 1
            return TickResult(None, "hold" if self._enabled else "disabled")
        if not self._enabled:
            self._stats["disabled_ticks"] += 1
            return TickResult(self._last_command.copy(), "disabled")

        if self._pending is not None and (
            self._pending.start_ns is None or now_ns >= self._pending.start_ns - self._pending.chunk.period_ns // 2
        ):
            self._take_over_pending()

        step = None if self._active is None else self._active.step_at(now_ns)
        if self._active is not None and step is not None and step >= self._active.chunk.horizon:
            self._active = None
            self._starved = True
        if self._active is None or step is None or step < 0:
            return self._hold()

        self._starved = False
        target = self._active.target(step)
        weight = 1.0
        if self._blend is not None:
            blend = self._blend
            weight = (blend.ticks_done + 1) / (self.blend_ticks + 1)
            old_target = blend.held if blend.old is None else blend.old.target(blend.old.step_at(now_ns))
            target = (1.0 - weight) * old_target + weight * target
            blend.ticks_done += 1
            self._stats["blend_ticks"] += 1
            if blend.ticks_done >= self.blend_ticks:
                self._blend = None

        command, flags = self.safety.apply(target, self._last_command)
        self._stats["chunk_ticks"] += 1
        self._stats["clamped_ticks"] += flags.clamped_joints > 0
        self._stats["rate_limited_ticks"] += flags.rate_limited_joints > 0
        self._stats["refused_ticks"] += bool(flags.refused)
        self._last_command = command
        self._last_motion_ns = now_ns
        return TickResult(
            command.copy(), "chunk", self._active.chunk.chunk_id, int(step), weight, False, flags,
            np.array(target, dtype=np.float64),
        )

    def _take_over_pending(self) -> None:
        assert self._pending is not None and self._last_command is not None
        if self.blend_ticks > 0:
            self._blend = _Blend(old=self._active, held=self._last_command.copy())
        self._active, self._pending = self._pending, None
        self._stats["switches"] += 1

    def _hold(self) -> TickResult:
        assert self._last_command is not None
        self._stats["hold_ticks"] += 1
        self._stats["starved_ticks" if self._starved else "idle_ticks"] += 1
        self._blend = None
        return TickResult(self._last_command.copy(), "hold", starved=self._starved)

    def _clock_jumped_back(self) -> None:
        """Time went backwards (sim reset, bag replay loop): every chunk and stamp seen is
        from another timeline. Drop them and restart from the measured position."""
        self._stats["clock_resets"] += 1
        self._active = self._pending = self._blend = None
        self._newest = None
        self._last_motion_ns = None
        self._enabled_since_ns = None
        self._starved = False
        self._resync = True

    def _valid_positions(self, positions: np.ndarray | None) -> np.ndarray | None:
        """A measurement to resync from: finite, right size, and within the limits (plus
        MEASURED_MARGIN); anything else is treated as no measurement (an encoder glitch must
        not become the command)."""
        if positions is None:
            return None
        try:
            values = np.asarray(positions, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if values.shape != (len(self.joint_names),) or not np.all(np.isfinite(values)):
            return None
        lim = self.safety.limits
        if np.any(values < lim.lower - self.MEASURED_MARGIN) or np.any(values > lim.upper + self.MEASURED_MARGIN):
            self._stats["implausible_measurements"] += 1
            return None
        return values.copy()


def executing_status(source: str, chunk_id: int | None, step_index: int | None, last_chunk_id: int) -> str:
    """The executor's per-tick status text (eval mode, ``executor/executing`` frame_id):
    ``chunk K step I`` for a tick commanded from chunk K, else ``hold after chunk K`` with
    K the newest chunk it has run (-1: none yet)."""
    if source == "chunk":
        return f"chunk {chunk_id} step {step_index}"
    return f"hold after chunk {last_chunk_id}"


def status_is_chunk(frame_id: str) -> bool:
    """The status says the tick was commanded from a chunk (the sim may step on)."""
    return frame_id.startswith("chunk ")


def status_ran_out(frame_id: str, newest_chunk_id: int) -> bool:
    """The status says the executor holds after running chunk ``newest_chunk_id`` (or a newer
    one): it has nothing left to run and the policy should ask for a chunk now, whatever its
    own estimate of the chunk's end says. A hold before that chunk started (it is still on
    its way) does not count."""
    prefix = "hold after chunk "
    if not frame_id.startswith(prefix):
        return False
    try:
        return int(frame_id[len(prefix):]) >= newest_chunk_id
    except ValueError:
        return False


class InferenceTrigger:
    """Decides when the policy node asks for the next chunk; one request in flight at most.

    Modes:
    - 'overlapped': request once the time left in the running chunk drops below the
      expected latency (EMA of reported durations) plus ``margin_s``, so the next chunk is
      computed while the current one runs.
    - 'blocking': request only once the chunk ran out; the robot holds meanwhile (what the
      official client does).
    - 'adaptive': overlapped while it keeps the robot busier than blocking, else blocking.
      With latency L and chunk duration D and one request in flight, overlapping moves the
      robot a fraction min(1, (D - L) / L) of the time (each chunk loses the L it spent in
      inference), blocking D / (D + L); they cross at L ~ 0.62 D.
    """

    def __init__(
        self,
        mode: TriggerMode = "overlapped",
        margin_s: float = 0.1,
        initial_latency_s: float = 0.5,
        latency_ema_alpha: float = 0.3,
    ) -> None:
        if mode not in ("overlapped", "blocking", "adaptive"):
            raise ValueError(f"mode: expected 'overlapped', 'blocking' or 'adaptive', got {mode!r}")
        if margin_s < 0 or initial_latency_s < 0 or not 0 < latency_ema_alpha <= 1:
            raise ValueError("margin_s >= 0, initial_latency_s >= 0, 0 < latency_ema_alpha <= 1 required")
        self.mode: TriggerMode = mode
        self.margin_s = margin_s
        self.latency_ema_alpha = latency_ema_alpha
        self._latency_s = initial_latency_s
        self._latency_samples = 0
        self._request_ns: int | None = None
        self._requested_while_holding = False
        self._active_until_ns: int | None = None
        self._chunk_duration_s: float | None = None

    @property
    def latency_s(self) -> float:
        """Expected request-to-chunk latency (EMA; the initial guess until one is reported)."""
        return self._latency_s

    @property
    def in_flight(self) -> bool:
        return self._request_ns is not None

    def report_latency(self, duration_s: float) -> None:
        """Fold one measured inference duration into the EMA (the first one replaces the guess)."""
        if not np.isfinite(duration_s) or duration_s < 0:
            return
        a = 1.0 if self._latency_samples == 0 else self.latency_ema_alpha
        self._latency_s = (1.0 - a) * self._latency_s + a * duration_s
        self._latency_samples += 1

    def remaining_s(self, now_ns: int) -> float:
        """Time left in the running chunk (0 when none runs)."""
        if self._active_until_ns is None:
            return 0.0
        return max(0.0, (self._active_until_ns - now_ns) * 1e-9)

    def overlapping(self) -> bool:
        """Whether the request policy in force now is overlapped (always for 'overlapped')."""
        if self.mode != "adaptive":
            return self.mode == "overlapped"
        if self._chunk_duration_s is None:
            return True
        duration, latency = self._chunk_duration_s, max(self._latency_s, 1e-9)
        moving_overlapped = min(1.0, (duration - latency) / latency) if latency < duration else 0.0
        return moving_overlapped >= duration / (duration + latency)

    def should_request(self, now_ns: int) -> bool:
        """True when a request should start now (call ``request_started`` when it does)."""
        if self.in_flight:
            return False
        remaining = self.remaining_s(now_ns)
        if self.overlapping():
            return remaining < self._latency_s + self.margin_s
        return remaining <= 0.0

    def request_started(self, now_ns: int) -> None:
        self._request_ns = now_ns
        self._requested_while_holding = self.remaining_s(now_ns) <= 0.0

    def request_finished(self, now_ns: int, chunk: ActionChunk | None) -> None:
        """The request ended with ``chunk`` (None: it failed; its duration is not a latency
        sample). Estimates when the chunk runs out, mirroring ``ChunkExecutor``'s rules;
        ``set_active_until`` overrides that with the executor's own answer when available."""
        started = self._request_ns
        self._request_ns = None
        if chunk is None or started is None:
            return
        self.report_latency((now_ns - started) * 1e-9)
        self._chunk_duration_s = chunk.horizon * chunk.control_period_s
        start_ns = now_ns if self._requested_while_holding else chunk.stamp_ns
        self._active_until_ns = start_ns + chunk.horizon * chunk.period_ns - chunk.period_ns // 2

    def set_active_until(self, until_ns: int | None) -> None:
        """The executor's ``active_until_ns``: when it runs out of targets (None: no chunk)."""
        self._active_until_ns = until_ns
