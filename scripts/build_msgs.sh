#!/usr/bin/env bash
# Generate and build the project's ROS 2 messages with rosidl from the ROS wheels in a
# venv (no ROS apt install). Output: build/install (libs + Python modules). The venv's
# site-packages gets a .pth pointing at the generated Python modules (after the source
# tree, so this repo's cosmos_policy_ros/__init__.py runs and extends the package path),
# and the generated libraries are linked into VENV/lib, which the ROS wheels' bootstrap
# puts on LD_LIBRARY_PATH (rmw dlopens type supports by name). Plain `python` in the
# venv then imports and uses cosmos_policy_ros.msg with no environment set-up.
# Usage: scripts/build_msgs.sh [VENV]   (default .venv)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "${1:-$repo/.venv}" && pwd)
stage="$repo/build/msgs_src"      # CMake refuses include dirs inside its source dir,
build="$repo/build/msgs_build"    # and the venv lives inside the repo: configure a copy.
install="$repo/build/install"
stamp="$install/.msgs_stamp"

inputs=$(cat "$repo/package.xml" "$repo/CMakeLists.txt" "$repo"/cmake/*.cmake "$repo"/msg/*.msg | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
  echo "messages up to date ($install)"
  exit 0
fi

rm -rf "$stage" "$build" "$install"
mkdir -p "$stage"
cp -r "$repo/package.xml" "$repo/CMakeLists.txt" "$repo/cmake" "$repo/msg" "$stage/"

export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
cmake -S "$stage" -B "$build" -Wno-dev \
  -DCOSMOS_POLICY_ROS_MSGS_ONLY=ON -DBUILD_TESTING=OFF \
  -DPython3_EXECUTABLE="$venv/bin/python" \
  -DCMAKE_INSTALL_PREFIX="$install" \
  > "$repo/build/msgs_configure.log" 2>&1 \
  || { tail -40 "$repo/build/msgs_configure.log"; echo "message configure failed: see build/msgs_configure.log" >&2; exit 1; }
cmake --build "$build" -j "$(nproc)" > "$repo/build/msgs_build.log" 2>&1 \
  || { tail -40 "$repo/build/msgs_build.log"; echo "message build failed: see build/msgs_build.log" >&2; exit 1; }
cmake --install "$build" > /dev/null

site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
gen_site=$(ls -d "$install"/lib/python3*/site-packages)
printf '%s\n%s\n' "$repo" "$gen_site" > "$site/zz_cosmos_policy_ros_msgs.pth"
for lib in "$install"/lib/lib*.so; do ln -sf "$lib" "$venv/lib/$(basename "$lib")"; done
echo "$inputs" > "$stamp"
echo "messages built: $install"
