"""The rosbag2 side of an episode, shared by the recorder, recovery and conversion.

Owns: the message typestore (Kilted standard types plus this package's ``msg/*.msg``),
the episode bag directory layout and its side files, episode outcome labels
(``outcome.yaml``, correctable later with :func:`label_episode`) and reading the
``EpisodeEvent`` messages back from a bag.

Bag directory layout (``<output_dir>/<episode_id>/``)::

    <episode_id>.mcap   rosbag2 MCAP storage (profile ros2, CDR messages)
    metadata.yaml       rosbag2 metadata; written when the episode is closed
    episode.yaml        episode id, start metadata, start time (written at start)
    outcome.yaml        the label; the authority when it disagrees with the bag's events
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PACKAGE_NAME = 'cosmos_policy_ros'
EPISODE_EVENT_TYPE = f'{PACKAGE_NAME}/msg/EpisodeEvent'
OUTCOME_FILE = 'outcome.yaml'
EPISODE_FILE = 'episode.yaml'
ROSBAG2_VERSION = 9

# Standard message types the robot graph records; all are in the Kilted typestore.
STANDARD_TYPES = (
    'sensor_msgs/msg/Image',
    'sensor_msgs/msg/CompressedImage',
    'sensor_msgs/msg/JointState',
    'std_msgs/msg/Float64MultiArray',
    'trajectory_msgs/msg/JointTrajectory',
    'rosgraph_msgs/msg/Clock',
)


class RecorderError(RuntimeError):
    """Recording failed (bad episode id, disk error, bag not readable)."""


# --------------------------------------------------------------------------- typestore


def find_msg_dir(msg_dir: str | os.PathLike[str] | None = None) -> Path:
    """Directory holding this package's ``.msg`` files.

    Looks, in order, at ``msg_dir`` (when given), every ``share/cosmos_policy_ros/msg`` on
    ``AMENT_PREFIX_PATH`` (an installed package), and ``msg/`` next to the Python package
    (a source checkout).
    """
    if msg_dir is not None:
        path = Path(msg_dir)
        if not any(path.glob('*.msg')):
            raise RecorderError(f'msg_dir {str(path)!r} holds no .msg files')
        return path
    candidates = [
        Path(prefix) / 'share' / PACKAGE_NAME / 'msg'
        for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)
        if prefix
    ]
    candidates.append(Path(__file__).resolve().parents[2] / 'msg')
    for path in candidates:
        if any(path.glob('*.msg')):
            return path
    raise RecorderError(
        f'no {PACKAGE_NAME} .msg files found; looked in: {", ".join(map(str, candidates))}; '
        'pass msg_dir explicitly'
    )


def build_typestore(
    msg_dir: str | os.PathLike[str] | None = None, store: Stores = Stores.ROS2_KILTED
) -> Typestore:
    """Typestore with the ROS 2 standard types of ``store`` and this package's messages
    parsed at run time from ``msg_dir`` (see :func:`find_msg_dir`)."""
    typestore = get_typestore(store)
    missing = [name for name in STANDARD_TYPES if name not in typestore.fielddefs]
    if missing:
        raise RecorderError(f'typestore {store.name} lacks {missing}')
    types: dict[str, Any] = {}
    for path in sorted(find_msg_dir(msg_dir).glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'{PACKAGE_NAME}/msg/{path.stem}'))
    typestore.register(types)
    return typestore


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class EpisodeOutcome:
    """An episode's label: success, an optional graded score in [0, 1], a free note."""

    success: bool
    score: float | None = None
    note: str = ''

    def __post_init__(self) -> None:
        if self.score is not None and not (0.0 <= float(self.score) <= 1.0):
            raise ValueError(f'outcome score must be in [0, 1], got {self.score}')

    @property
    def terminal_reward(self) -> float:
        """Reward at the episode's last step: the score when given, else 1/0 for success."""
        return float(self.score) if self.score is not None else float(self.success)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf8') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with suppress(Exception):
            os.unlink(tmp)
        raise


def _write_outcome(bag_dir: Path, outcome: EpisodeOutcome, source: str) -> None:
    path = bag_dir / OUTCOME_FILE
    history: list[dict[str, Any]] = []
    if path.exists():
        previous = yaml.safe_load(path.read_text()) or {}
        history = list(previous.pop('history', []) or [])
        if previous:
            history.append(previous)
    record = {
        'success': bool(outcome.success),
        'score': None if outcome.score is None else float(outcome.score),
        'note': outcome.note,
        'labeled_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
        'source': source,
    }
    if history:
        record['history'] = history
    _atomic_write_text(path, yaml.safe_dump(record, sort_keys=False))


def read_outcome(bag_dir: str | os.PathLike[str]) -> EpisodeOutcome | None:
    """The episode's current label from ``outcome.yaml``; None when unlabeled."""
    path = Path(bag_dir) / OUTCOME_FILE
    if not path.exists():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    return EpisodeOutcome(bool(data['success']), data.get('score'), data.get('note', '') or '')


def label_episode(
    bag_dir: str | os.PathLike[str], success: bool, score: float | None = None, note: str = ''
) -> EpisodeOutcome:
    """Set or correct an episode's outcome; earlier labels are kept under ``history``."""
    bag_dir = Path(bag_dir)
    if not (bag_dir / EPISODE_FILE).exists() and not any(bag_dir.glob('*.mcap')):
        raise RecorderError(f'{bag_dir} is not an episode bag directory (no .mcap, no {EPISODE_FILE})')
    outcome = EpisodeOutcome(bool(success), None if score is None else float(score), note)
    _write_outcome(bag_dir, outcome, source='label_episode')
    return outcome


def read_episode_info(bag_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Contents of ``episode.yaml`` (episode_id, metadata, started_at_ns); {} when absent."""
    path = Path(bag_dir) / EPISODE_FILE
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def read_bag_events(bag_dir: str | os.PathLike[str], typestore: Typestore | None = None) -> list[dict[str, Any]]:
    """EpisodeEvent messages recorded in a bag, as dicts (event name, stamp, outcome)."""
    typestore = typestore if typestore is not None else build_typestore()
    names = {0: 'START', 1: 'STOP', 2: 'LABEL'}
    events = []
    with Reader(Path(bag_dir)) as reader:
        conns = [c for c in reader.connections if c.msgtype == EPISODE_EVENT_TYPE]
        for _conn, stamp_ns, data in reader.messages(connections=conns):
            msg = typestore.deserialize_cdr(data, EPISODE_EVENT_TYPE)
            events.append({
                'event': names.get(msg.event, str(msg.event)),
                'stamp_ns': stamp_ns,
                'episode_id': msg.episode_id,
                'outcome': EpisodeOutcome(msg.success, _nan_to_none(msg.score), msg.note) if msg.has_outcome else None,
            })
    return events

