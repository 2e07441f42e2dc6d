"""Fine-tuning: the one part of probe that trains a U-Net, entered only by `probe finetune`."""
