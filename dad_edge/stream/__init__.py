"""Camera and video streams: capture, the threaded runner, outputs and alarms (no torch)."""
