"""`coalmine demo`: three real models, real traffic, a real rollout judged on logged data."""
