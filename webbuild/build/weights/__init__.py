"""Weight readers: each turns one on-disk format into HF-named float32 numpy tensors plus an HF config."""
