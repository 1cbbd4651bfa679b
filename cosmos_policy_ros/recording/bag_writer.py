"""A rosbag2 (MCAP storage, ROS 2 profile) bag writer built on the ``mcap`` package's public
``Writer``, whose ``flush()`` ends the chunk in progress and hands it to the OS.

Why not rosbags' writer: it keeps the pending chunk in memory and offers no flush, so a
recorder killed mid-episode would lose it, and reaching into its storage object to close a
chunk ties the package to one rosbags version. This writer produces what ``ros2 bag`` and
rosbags read: an MCAP file with profile ``ros2``, one ``ros2msg`` schema per message type
(full message definition with dependencies, from the typestore), one ``cdr`` channel per
topic with its ``offered_qos_profiles`` metadata, the ``rosbag2`` metadata record, and
``metadata.yaml`` (rosbag2 bag format version 9) written atomically on close.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import yaml
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter
from rosbags.typesys.store import Typestore

from cosmos_policy_ros.recording.bag import ROSBAG2_VERSION

LIBRARY = "cosmos_policy_ros"


class BagWriter:
    """One episode bag directory ``<bag_dir>/<bag_dir name>.mcap`` + ``metadata.yaml``."""

    def __init__(self, bag_dir: str | os.PathLike[str], typestore: Typestore, compress: bool = False) -> None:
        self.bag_dir = Path(bag_dir)
        self.path = self.bag_dir / f"{self.bag_dir.name}.mcap"
        self.typestore = typestore
        self.compress = compress
        self.custom_data: dict[str, str] = {}
        self._file: io.BufferedWriter | None = None
        self._mcap: McapWriter | None = None
        self._schemas: dict[str, int] = {}
        self._channels: dict[tuple[str, str], int] = {}
        self._topics: list[dict] = []  # per channel id - 1: topic metadata and count
        self._start_ns: int | None = None
        self._end_ns = 0
        self._count = 0

    def set_custom_data(self, key: str, value: str) -> None:
        self.custom_data[str(key)] = str(value)

    def open(self) -> None:
        self.bag_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "xb")  # noqa: SIM115 - closed in close() / abort()
        self._mcap = McapWriter(self._file, compression=CompressionType.ZSTD if self.compress else CompressionType.NONE)
        self._mcap.start(profile="ros2", library=LIBRARY)

    def add_connection(self, topic: str, msgtype: str) -> int:
        """The channel id of ``topic`` with ``msgtype`` (registered on first use)."""
        key = (topic, msgtype)
        if key in self._channels:
            return self._channels[key]
        assert self._mcap is not None, "BagWriter.open() first"
        if msgtype not in self._schemas:
            msgdef, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
            self._schemas[msgtype] = self._mcap.register_schema(msgtype, "ros2msg", msgdef.encode())
        qos = ""  # rosbag2 v9 stores a YAML list; none offered here (play uses its defaults)
        channel = self._mcap.register_channel(topic, "cdr", self._schemas[msgtype],
                                              metadata={"offered_qos_profiles": qos})
        self._channels[key] = channel
        self._topics.append({"topic_metadata": {"name": topic, "type": msgtype, "serialization_format": "cdr",
                                                "offered_qos_profiles": [],
                                                "type_description_hash": self.typestore.hash_rihs01(msgtype)},
                             "message_count": 0})
        return channel

    def write(self, channel: int, stamp_ns: int, data: bytes | memoryview) -> None:
        assert self._mcap is not None, "BagWriter.open() first"
        stamp_ns = int(stamp_ns)
        self._mcap.add_message(channel, log_time=stamp_ns, data=bytes(data), publish_time=stamp_ns)
        self._topics[channel - 1]["message_count"] += 1  # mcap numbers channels from 1
        self._start_ns = stamp_ns if self._start_ns is None else min(self._start_ns, stamp_ns)
        self._end_ns = max(self._end_ns, stamp_ns)
        self._count += 1

    def flush(self, fsync: bool = False) -> None:
        """End the chunk in progress and hand everything written to the OS (optionally to disk)."""
        assert self._mcap is not None and self._file is not None
        self._mcap.flush()
        if fsync:
            os.fsync(self._file.fileno())

    def metadata(self) -> dict:
        start = self._start_ns or 0
        duration = max(0, self._end_ns - start) if self._count else 0
        return {"rosbag2_bagfile_information": {
            "version": ROSBAG2_VERSION, "storage_identifier": "mcap", "relative_file_paths": [self.path.name],
            "duration": {"nanoseconds": duration}, "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": self._count, "topics_with_message_count": self._topics,
            "compression_format": "", "compression_mode": "",
            "files": [{"path": self.path.name, "starting_time": {"nanoseconds_since_epoch": start},
                       "duration": {"nanoseconds": duration}, "message_count": self._count}],
            "custom_data": self.custom_data or None, "ros_distro": LIBRARY,
        }}

    def close(self) -> None:
        """Finish the MCAP file (summary, footer) and write ``metadata.yaml`` atomically."""
        assert self._mcap is not None and self._file is not None
        info = self.metadata()
        self._mcap.add_metadata("rosbag2", {"serialized_metadata": yaml.safe_dump(info["rosbag2_bagfile_information"])})
        self._mcap.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._mcap = self._file = None
        tmp = self.bag_dir / "metadata.yaml.tmp"
        tmp.write_text(yaml.safe_dump(info, sort_keys=False))
        os.replace(tmp, self.bag_dir / "metadata.yaml")

    def abort(self) -> None:
        """Close the file as it is (no summary, no metadata.yaml: ``recover`` can rebuild it)."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._mcap = self._file = None
