"""Step kernels: one module per calibration step."""
