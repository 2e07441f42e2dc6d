"""diffprobe probe stage: heads trained on cached features (to come)."""
