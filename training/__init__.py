"""Training and evaluation: rewards, trajectory datasets, evaluation (GRPO and SFT next)."""
