"""Code both sides of oppu use: tasks, prompts, metrics, data formats, model loading."""
