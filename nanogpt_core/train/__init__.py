"""Training a GPT (nanochat's base_train): settings, the step, the loop, its log and plots, data parallelism,
evaluation in bits per byte, and sampling text from the model."""
