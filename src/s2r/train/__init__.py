"""Training: the embedded task's base model (base.py); later SFT and RL."""
