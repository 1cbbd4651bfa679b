#!/usr/bin/env bash
# Generate and build ROS 2 messages with rosidl from the ROS wheels in a venv (no ROS apt
# install). Default: this package's msg/ into build/install, then the venv's site-packages
# gets a .pth pointing at the generated Python modules (after the source tree, so this
# repo's cosmos_policy_ros/__init__.py runs and extends the package path), and the
# generated libraries are linked into VENV/lib, which the ROS wheels' bootstrap puts on
# LD_LIBRARY_PATH (rmw dlopens type supports by name). Plain `python` in the venv then
# imports and uses cosmos_policy_ros.msg with no environment set-up.
#
# Usage: scripts/build_msgs.sh [VENV]                    (default .venv)
#   PACKAGE_DIR=dir INSTALL_DIR=dir scripts/build_msgs.sh VENV
#     builds another rosidl package (package.xml, CMakeLists.txt, msg/, srv/) into INSTALL_DIR
#     without touching the venv (the tests build a stand-in interbotix_xs_msgs this way).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "${1:-$repo/.venv}" && pwd)
package="${PACKAGE_DIR:-$repo}"
install="${INSTALL_DIR:-$repo/build/install}"
work="${install}_work"
stage="$work/src"      # CMake refuses include dirs inside its source dir, and the venv
build="$work/build"    # lives inside the repo: configure a copy of the package.
stamp="$install/.msgs_stamp"
own_package=$([ "$package" = "$repo" ] && echo 1 || echo 0)

services=$(ls "$package"/srv/*.srv 2>/dev/null || true)
inputs=$(cat "$package/package.xml" "$package/CMakeLists.txt" "$package"/msg/*.msg $services "$repo/cmake/wheel_include_fix.cmake" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
  echo "messages up to date ($install)"
  exit 0
fi

rm -rf "$work" "$install"
mkdir -p "$stage"
cp -r "$package/package.xml" "$package/CMakeLists.txt" "$package/msg" "$stage/"
if [ -n "$services" ]; then cp -r "$package/srv" "$stage/"; fi

export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
cmake -S "$stage" -B "$build" -Wno-dev \
  -DCMAKE_PROJECT_INCLUDE="$repo/cmake/wheel_include_fix.cmake" \
  -DCOSMOS_POLICY_ROS_MSGS_ONLY=ON -DBUILD_TESTING=OFF \
  -DPython3_EXECUTABLE="$venv/bin/python" \
  -DCMAKE_INSTALL_PREFIX="$install" > "$work/configure.log" 2>&1 \
  || { tail -40 "$work/configure.log"; echo "message configure failed: see $work/configure.log" >&2; exit 1; }
cmake --build "$build" -j "$(nproc)" > "$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log"; echo "message build failed: see $work/build.log" >&2; exit 1; }
cmake --install "$build" > /dev/null

if [ "$own_package" = 1 ]; then
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  gen_site=$(ls -d "$install"/lib/python3*/site-packages)
  printf '%s\n%s\n' "$repo" "$gen_site" > "$site/zz_cosmos_policy_ros_msgs.pth"
  for lib in "$install"/lib/lib*.so; do ln -sf "$lib" "$venv/lib/$(basename "$lib")"; done
fi
echo "$inputs" > "$stamp"
echo "messages built: $install"
