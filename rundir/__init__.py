"""What a run directory holds: metrics, config, checkpoints, plots. Imports nothing of ours."""
