# Two commands do all set-up on a fresh machine (Python 3.11 + package registries):
#   make demo   simulated ALOHA closed loop through the ROS graph, headless
#   make test   the whole test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps_stamp
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export ROS_LOCALHOST_ONLY ?= 1

.PHONY: setup demo eval embedded-model embedded-model-finetune embedded-planning-model test bench msgs sysdeps clean

setup: $(STAMP) msgs

# Headless MuJoCo rendering needs EGL + Mesa's software driver (Debian package names).
sysdeps:
	@scripts/install_sysdeps.sh

$(STAMP): requirements.txt requirements-python.txt setup.py | sysdeps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	@touch $(STAMP)

msgs: $(STAMP)
	@scripts/build_msgs.sh $(VENV)

# The scripted expert solves transfer-cube through the graph; then the embedded Cosmos Policy
# trained by `make embedded-model`, fine-tuned on a GPU and then on the CPU (README) drives the same loop in eval mode on two held-out seeds (it
# completes the transfer on 10 of 20 held-out seeds since session 11's CPU fine-tune; 100006 and 100007 are two of them).
EMBEDDED_CHECKPOINT := cosmos_policy_ros/checkpoints/aloha_sim_transfer_cube
demo: setup
	$(VENV)/bin/cosmos-policy-ros demo --config config/aloha.yaml $(DEMO_ARGS)
	@if [ -z "$(DEMO_ARGS)" ]; then \
	  $(VENV)/bin/cosmos-policy-ros demo --config config/aloha.yaml --policy cosmos --checkpoint $(EMBEDDED_CHECKPOINT) \
	    --eval-mode --seed 100006 --episodes 2 --out out/demo_cosmos; fi

# Success rate over K held-out seeds (from 100000; demos use lower seeds) through the ROS
# graph in eval mode; table with a 95 % interval, out/eval/eval.json and eval.png. EVAL_ARGS e.g.
# "--checkpoint DIR", "--checkpoint DIR --planning" (best-of-8 with DIR_planning beside it when
# there, as for the shipped model, else DIR's own world model + value) or "--checkpoint DIR
# --planning --planning-checkpoint PLANNING_DIR --out out/eval_planning".
eval: setup
	$(VENV)/bin/cosmos-policy-ros eval --config config/aloha.yaml --out out/eval $(EVAL_ARGS)

# Rebuild the embedded default checkpoint's CPU stage from nothing: 60 scripted-expert demonstrations ->
# small Wan VAE -> small Cosmos Policy (the shipped weights are this fine-tuned on a GPU:
# scripts/gpu_finetune_embedded.sh) (measured: 73 minutes alone on 2 CPU cores, see
# docs/training.md; stages resume). Demonstrations render in 2 processes (same files as 1).
embedded-model: setup
	$(VENV)/bin/cosmos-policy-ros embedded-model --work out/embedded_model --workers 2 \
	  --out cosmos_policy_ros/checkpoints/aloha_sim_transfer_cube $(EMBEDDED_ARGS)

# The shipped weights' GPU stage, after `make embedded-model`: 140 more demonstrations, packs and
# wheels into .gpu/; with CUDA here it fine-tunes and averages (scripts/gpu_finetune_embedded.sh,
# ~12 min on one H100) and installs the result, else it says what to run on a GPU host.
embedded-model-finetune: setup
	VENV=$(VENV) bash scripts/embedded_finetune.sh

# Rebuild the embedded planning checkpoint from the embedded policy (issue 11): demonstrations
# (reused from `make embedded-model`'s work folder when there, else generated) + 50 rollouts of
# the policy through the ROS graph (seeds 200000-200049, eval mode, recorder on) -> planning
# fine-tune (world model + value, official mix). Stages resume. The shipped one (session 9) used
# PLANNING_ARGS="--episodes 40" (seeds 200000-200039) and the recipe's 60 demonstrations. PLANNING_ARGS e.g.
# "--episodes 100 --action-noise 0.05" or "--rollouts DIR" (an existing collect-rollouts dataset).
PLANNING_CHECKPOINT := cosmos_policy_ros/checkpoints/aloha_sim_transfer_cube_planning
EMBEDDED_DEMOS := out/embedded_model/demos
embedded-planning-model: setup
	$(VENV)/bin/cosmos-policy-ros embedded-planning-model --policy $(EMBEDDED_CHECKPOINT) \
	  --work out/embedded_planning_model --out $(PLANNING_CHECKPOINT) \
	  $$(test -f $(EMBEDDED_DEMOS)/dataset_info.json && echo --demos $(EMBEDDED_DEMOS)) $(PLANNING_ARGS)

test: setup
	$(PY) -m pytest -q test $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf build $(VENV)
