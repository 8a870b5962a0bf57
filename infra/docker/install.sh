#!/bin/sh
# The one install recipe of both component images (Dockerfile: CPU, Dockerfile.gpu: CUDA),
# so they cannot drift apart: same system packages, same lock, same user, same checks.
#   install.sh deps <torch wheel index>   system packages, the uid 10001 user, torch, the lock
#   install.sh app                        the crossfuse package (source in the working dir)
set -eu

case "${1:-}" in
deps)
    # git: DVC and the data-version tags read the commit.
    apt-get update
    apt-get install -y --no-install-recommends git
    rm -rf /var/lib/apt/lists/*
    useradd --create-home --uid 10001 crossfuse
    # torch from PyTorch's wheel index (CPU or CUDA build), at the lock's version;
    # everything else from the lock itself.
    torch_pin=$(grep '^torch==' requirements.lock)
    pip install "$torch_pin" --index-url "$2"
    grep -v '^torch==' requirements.lock > /tmp/constraints.txt
    pip install -r /tmp/constraints.txt
    rm /tmp/constraints.txt
    ;;
app)
    pip install --no-deps .
    python -c "import crossfuse, components, pipelines, kfp, kfp.kubernetes, mlflow, great_expectations"
    # The bundled encoders' weights are pip packages of the lock: building both proves
    # they are in the image and load offline.
    python -c "from crossfuse.encoders import build_encoder as b; b('minilm', 'text'); b('efficientnet-lite0', 'image')"
    ;;
*)
    echo "usage: install.sh deps <torch index URL> | install.sh app" >&2
    exit 2
    ;;
esac
