"""The base LLM: loading, inference, the training loop and its CPU kernels."""
