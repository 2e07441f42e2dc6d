"""Generation: sampling from a U-Net, and training the demo model."""
