"""Step steps: one module per calibration step."""
