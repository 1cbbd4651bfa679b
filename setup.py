"""pip/venv install of the Python package (nodes, model, tools) and its console scripts.

On a real ROS 2 machine `colcon build` uses CMakeLists.txt (messages + this package);
here `make setup` runs `pip install -e .` and scripts/build_msgs.sh.
"""
from setuptools import find_packages, setup

setup(
    name="cosmos_policy_ros",
    version="0.1.0",
    description="NVIDIA Cosmos Policy on a bimanual ALOHA robot with ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["cosmos_policy_ros", "cosmos_policy_ros.*"]),
    package_data={"cosmos_policy_ros": ["checkpoints/**/*"]},
    include_package_data=True,
    install_requires=["numpy", "pyyaml", "torch", "diffusers", "safetensors", "h5py", "rosbags", "mcap", "tqdm"],
    extras_require={
        "gpu": ["onnxruntime-gpu"],
        "cpu": ["onnxruntime"],
        "sim": ["gym-aloha"],
    },
    entry_points={
        "console_scripts": [
            "cosmos-policy-ros = cosmos_policy_ros.cli:main",
        ],
    },
)
