"""The training loop and what it is built from: losses, optimizers, fine-tuning, the train log."""
