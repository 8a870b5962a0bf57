"""The one setting for the components' container image.

``CROSSFUSE_IMAGE`` (set by ``make compile`` / ``make submit``) wins; otherwise the
image tag is the package version, as built by ``infra/docker/Dockerfile``.
"""

import os

from crossfuse import __version__

IMAGE_REPOSITORY = "ghcr.io/crossfuse/crossfuse"
BASE_IMAGE = os.environ.get("CROSSFUSE_IMAGE") or f"{IMAGE_REPOSITORY}:{__version__}"
