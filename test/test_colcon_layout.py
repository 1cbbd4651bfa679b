"""What `colcon build` does with this package (ament_cmake: CMake configure, build,
install), run with the ROS wheels: messages, Python package, executables, launch and
config files land where `ros2 run` / `ros2 launch` look for them."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("rclpy")


def test_full_ament_cmake_install(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    venv = Path(sys.executable).parents[1]
    src = tmp_path / "src"  # a copy: CMake refuses exported include dirs inside its source tree (the venv)
    src.mkdir()
    for name in ("package.xml", "CMakeLists.txt", "msg", "launch", "config", "scripts", "cosmos_policy_ros"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv))
    install = tmp_path / "install"
    steps = [
        ["cmake", "-S", str(src), "-B", str(tmp_path / "build"), "-Wno-dev", "-DBUILD_TESTING=OFF",
         f"-DCMAKE_PROJECT_INCLUDE={REPO / 'cmake' / 'wheel_include_fix.cmake'}",
         f"-DPython3_EXECUTABLE={sys.executable}", f"-DCMAKE_INSTALL_PREFIX={install}"],
        ["cmake", "--build", str(tmp_path / "build"), "-j", "2"],
        ["cmake", "--install", str(tmp_path / "build")],
    ]
    for step in steps:
        result = subprocess.run(step, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    for executable in ("policy_node", "chunk_executor_node", "sim_node", "planner_node", "recorder_node"):
        assert os.access(install / "lib" / "cosmos_policy_ros" / executable, os.X_OK)
    share = install / "share" / "cosmos_policy_ros"
    assert (share / "launch" / "aloha.launch.py").is_file() and (share / "config" / "aloha.yaml").is_file()
    assert (share / "msg" / "ActionChunk.msg").is_file()
    site = next((install / "lib").glob("python3*/site-packages")) / "cosmos_policy_ros"
    assert "extend_path" in (site / "__init__.py").read_text()  # ours, not the generated empty one
    assert (site / "msg" / "_action_chunk.py").is_file() and (site / "nodes" / "policy_node.py").is_file()
    assert (site / "checkpoints" / "tiny_cosmos" / "cosmos_policy.json").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "cosmos_policy_ros").is_file()
