#!/bin/sh
# Which lock file `make install` installs on this machine, and why: prints "LOCK REASON...".
# GPU=1 asks for the CUDA build, GPU=0 for the CPU build; unset, an NVIDIA GPU that nvidia-smi
# lists picks the CUDA build. Kept apart from the Makefile so tests can feed it fake machines.
set -u
system=$(uname -s)
machine=$(uname -m)
gpu=${GPU-}

case $gpu in
  ''|0|1) ;;
  *) echo "choose_lock.sh: GPU=$gpu: use GPU=1 (CUDA build) or GPU=0 (CPU build)" >&2; exit 2 ;;
esac

case "$system $machine" in
  "Darwin arm64")
    if [ "$gpu" = 1 ]; then
      echo "choose_lock.sh: GPU=1: TensorFlow's CUDA build is for Linux x86_64, not macOS" >&2; exit 2
    fi
    echo "requirements-macos-arm64.lock macOS arm64: tensorflow, the one build there" ;;
  "Linux x86_64")
    if [ "$gpu" = 1 ]; then
      echo "requirements-gpu.lock GPU=1 given: tensorflow[and-cuda]"
    elif [ "$gpu" = 0 ]; then
      echo "requirements.lock GPU=0 given: tensorflow-cpu"
    elif nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
      echo "requirements-gpu.lock nvidia-smi lists an NVIDIA GPU: tensorflow[and-cuda] (GPU=0 for the CPU build)"
    else
      echo "requirements.lock no NVIDIA GPU found: tensorflow-cpu (GPU=1 for the CUDA build)"
    fi ;;
  *)
    echo "choose_lock.sh: no lock for $system $machine (there are locks for Linux x86_64 and macOS arm64)" >&2
    exit 2 ;;
esac
