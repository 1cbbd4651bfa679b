"""Make the bag of a recorder that died without closing (SIGKILL, power loss) readable.

The recorder hands every batch to the OS as complete MCAP chunks, so a killed recorder
leaves a file with no summary, no footer and no ``metadata.yaml``, which rosbag2 readers
refuse. :func:`recover` reads the complete records with the ``mcap`` package's stream
reader (which stops at the first torn record), and rewrites them as a closed bag with
the recorder's own ``BagWriter``.
Command line: ``cosmos-policy-ros recover BAG [BAG ...]``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mcap.exceptions import McapError
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from rosbags.rosbag2 import Reader
from rosbags.typesys import get_types_from_msg
from rosbags.typesys.store import Typestore

from cosmos_policy_ros.recording.bag import (
    RecorderError,
    build_typestore,
    read_episode_info,
)
from cosmos_policy_ros.recording.bag_writer import BagWriter

log = logging.getLogger(__name__)

_MCAP_MAGIC = b'\x89MCAP0\r\n'


@dataclass(frozen=True)
class RecoveryResult:
    bag_dir: Path
    already_closed: bool
    messages: int
    dropped_tail_bytes: int  # bytes after the last complete record (lost in the crash)


def _mcap_paths(bag_dir: Path) -> list[Path]:
    paths = sorted(bag_dir.glob('*.mcap'))
    if not paths:
        raise RecorderError(f'{bag_dir} holds no .mcap file')
    return paths


def is_bag_closed(bag_dir: str | os.PathLike[str]) -> bool:
    """True when the bag has ``metadata.yaml`` and every MCAP file ends with the footer magic."""
    bag_dir = Path(bag_dir)
    if not (bag_dir / 'metadata.yaml').exists():
        return False
    for path in _mcap_paths(bag_dir):
        with path.open('rb') as handle:
            if handle.seek(0, 2) < 2 * len(_MCAP_MAGIC):
                return False
            handle.seek(-len(_MCAP_MAGIC), 2)
            if handle.read() != _MCAP_MAGIC:
                return False
    return True


def _complete_records(path: Path) -> tuple[dict[int, Schema], dict[int, Channel], list[Message], int]:
    """Schemas, channels and messages of every complete record, and the torn tail's size."""
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    messages: list[Message] = []
    size = path.stat().st_size
    with path.open('rb') as handle:
        if handle.read(len(_MCAP_MAGIC)) != _MCAP_MAGIC:
            raise RecorderError(f'{path} is not an MCAP file')
        handle.seek(0)
        good_end = len(_MCAP_MAGIC)
        records = StreamReader(handle, record_size_limit=size).records
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except (McapError, EOFError, ValueError, struct.error, MemoryError):
                break  # a torn or damaged record ends what can be salvaged
            except Exception as err:  # noqa: BLE001 -- a decompressor's own error on a torn chunk
                log.debug('recovery of %s stops at a damaged record: %r', path, err)
                break
            if isinstance(record, Schema):
                schemas[record.id] = record
            elif isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, Message):
                messages.append(record)
            good_end = handle.tell()
    return schemas, channels, messages, size - good_end


def recover(bag_dir: str | os.PathLike[str], typestore: Typestore | None = None) -> RecoveryResult:
    """Rewrite an unclosed episode bag as a closed one; a closed bag is left untouched.

    Every message in a complete MCAP record is kept; a torn record at the end is dropped.
    The bag gets an index/summary and ``metadata.yaml``; ``episode.yaml`` and
    ``outcome.yaml`` are left as they are.
    """
    bag_dir = Path(bag_dir)
    if not bag_dir.is_dir():
        raise RecorderError(f'{bag_dir} is not a directory (expected an episode bag folder)')
    if is_bag_closed(bag_dir):
        with Reader(bag_dir) as reader:
            return RecoveryResult(bag_dir, True, reader.message_count, 0)
    paths = _mcap_paths(bag_dir)
    if len(paths) != 1:
        raise RecorderError(f'{bag_dir}: expected one .mcap file to recover, found {len(paths)}')
    source = paths[0]
    schemas, channels, messages, tail = _complete_records(source)
    typestore = typestore if typestore is not None else build_typestore()

    info = read_episode_info(bag_dir)
    staging_root = Path(tempfile.mkdtemp(prefix='.recover-', dir=bag_dir.parent))
    try:
        staging = staging_root / source.stem  # Writer names the file <dir name>.mcap
        writer = BagWriter(staging, typestore)
        if info:
            writer.set_custom_data('episode_id', str(info.get('episode_id', '')))
            writer.set_custom_data('episode_metadata', json.dumps(info.get('metadata') or {}, sort_keys=True))
        writer.set_custom_data('recovered', 'true')
        writer.open()
        connections = {}
        for cid, channel in sorted(channels.items()):
            schema = schemas[channel.schema_id]
            if schema.name not in typestore.fielddefs:
                types = get_types_from_msg(schema.data.decode(), schema.name)
                typestore.register({k: v for k, v in types.items() if k not in typestore.fielddefs})
            connections[cid] = writer.add_connection(channel.topic, schema.name)
        for message in messages:
            writer.write(connections[message.channel_id], message.log_time, message.data)
        writer.close()
        backup = source.with_suffix('.mcap.unclosed')
        os.replace(source, backup)
        os.replace(staging / f'{source.stem}.mcap', bag_dir / f'{source.stem}.mcap')
        os.replace(staging / 'metadata.yaml', bag_dir / 'metadata.yaml')
        with Reader(bag_dir) as reader:
            if reader.message_count != len(messages):
                raise RecorderError(f'recovered bag {bag_dir} reads {reader.message_count} of {len(messages)} messages')
        backup.unlink()
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    log.info('recovered %s: %d messages, %d torn bytes dropped', bag_dir, len(messages), tail)
    return RecoveryResult(bag_dir, False, len(messages), tail)
