"""Weight readers: each turns one on-disk format into HF-named float32 numpy tensors plus an HF config."""

from __future__ import annotations

from webbuild.errors import UnsupportedError

# The architectures the readers can map to HF names (the model definitions live in webbuild/build/arch/).
SUPPORTED_ARCHITECTURES: tuple[str, ...] = ("llama",)


def check_architecture(architecture: str, where: str) -> None:
    """UnsupportedError naming the supported architectures when ``architecture`` is not one of them."""
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedError(
            f"{where}: architecture {architecture!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
