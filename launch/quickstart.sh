#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install what is missing, build (release),
# prepare Fashion-MNIST into HDF5, train W1 (784-256-128-10 MLP, Adam) on 2 MPI ranks and
# print test accuracy after every epoch. Works from any directory; safe to run again
# (each run trains from scratch into runs/fashion-mnist-mlp).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/launch/setup.sh" release
cd "$root"
launch/prepare-data.sh
rm -rf runs/fashion-mnist-mlp
exec "$root/launch/cohort-mpirun" -n 2 train configs/fashion-mnist-mlp.yaml "$@"
