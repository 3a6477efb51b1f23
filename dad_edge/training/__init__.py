"""Training, distillation, evaluation, metrics, thresholds and plots."""
