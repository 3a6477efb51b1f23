"""Inputs shared by the kernel tests: odd sizes, every colour layout, batches > 1, ties."""
import numpy as np

# (frame shapes of one batch, model channels, colour order, output size); frames (H, W) are gray.
PREPROCESS_CASES = [
    ([(37, 53, 3), (20, 19, 3), (20, 19, 3)], 3, "BGR", 32),  # mixed sizes, down- and up-scaling
    ([(37, 53, 3), (64, 17, 3)], 3, "RGB", 24),
    ([(45, 61, 3), (33, 33, 3)], 1, "BGR", 32),  # colour -> gray (BT.601)
    ([(45, 61, 3)], 1, "RGB", 16),
    ([(29, 31), (29, 31, 1)], 3, "BGR", 32),  # gray frames -> RGB model
    ([(29, 31)], 1, "BGR", 16),
    ([(30, 41, 4), (7, 5, 4)], 3, "BGR", 32),  # BGRA, alpha dropped
    ([(200, 150, 3)], 3, "BGR", 16),  # strong downscale
    ([(1, 1, 3), (1, 9, 3)], 3, "RGB", 8),  # degenerate frames: edge clamp only
]

COEFS = (0.82, 0.57, 0.53, 0.85)  # (sqrt(abar_s), sqrt(1 - abar_s), sqrt(abar_l), sqrt(1 - abar_l)), any values


def frames(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]


def noise(channels, size, seed=1):
    return np.random.default_rng(seed).standard_normal((2, channels, size, size), dtype=np.float32)


def combine_inputs(b=3, c=3, s=17, seed=2):
    """x in [-1, 1], eps wide enough that both clamps of the combine are hit."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (b, c, s, s)).astype(np.float32)
    eps = (rng.standard_normal((2 * b, c, s, s)) * 1.5).astype(np.float32)
    return x, eps, noise(c, s, seed + 1)


def maps(b=3, h=31, w=29, seed=3):
    """Probability maps with a block of ties and a clear maximum."""
    m = np.random.default_rng(seed).random((b, 1, h, w), dtype=np.float32)
    m[0, 0, :4, :4] = 0.75
    m[-1, 0, -1, -1] = 1.0
    return m


# (top_k, sigma, image threshold, pixel threshold)
SCORE_CASES = [(7, 0.0, None, None), (4, 1.0, 0.3, 0.6), (50, 2.0, 0.9, 0.1), (1, 0.0, 0.5, None),
               (31 * 29, 0.5, None, 0.5)]  # the last: k = every pixel
