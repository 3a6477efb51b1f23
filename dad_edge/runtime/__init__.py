"""The Detector and what it runs on: inputs, results, the operator seam, one backend per runtime (no torch outside the torch backend)."""
