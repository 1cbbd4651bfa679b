#!/usr/bin/env bash
# Fill .whl/ with the wheels scripts/gpu_embedded_model.sh installs on a GPU machine that
# has Python 3.12 + torch but no network (cp312 manylinux x86-64). dm_control's wheel is
# repacked without its locomotion, dog and blender assets (56 MB -> 6 MB), which the ALOHA
# tasks do not load. Run where pip reaches the package index:  bash scripts/gpu_wheels.sh
set -eu
dest=${1:-.whl}
mkdir -p "$dest"
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
  -d "$dest" diffusers==0.42.1 importlib_metadata==10.2.0 zipp==4.1.2 mujoco==3.8.1 dm_control==1.0.41 \
  dm-env==1.6 dm-tree==0.1.10 glfw==2.11.0 PyOpenGL==3.1.10 gym-aloha==0.1.5 gymnasium==1.4.0 \
  Farama-Notifications==0.0.6 mcap==1.6.0 rosbags==0.11.9 apsw==3.54.1.0 lz4==4.4.5 ruamel.yaml==0.19.1 \
  backports.zstd==1.8.0
wheel=$(realpath "$(ls "$dest"/dm_control-*.whl)")
tmp=$(mktemp -d)
(cd "$tmp" && python3 -m zipfile -e "$wheel" . && rm -rf dm_control/locomotion dm_control/suite/dog_assets \
  dm_control/blender && python3 -m zipfile -c repacked.whl dm_control dm_control-*.dist-info)
mv "$tmp/repacked.whl" "$wheel"
rm -rf "$tmp"
du -sh "$dest"
