"""Images in and training data out: decoding, the MVTec layout, the shared pre-processing, synthetic anomalies (no torch)."""
