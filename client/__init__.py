"""The user side of oppu: private adapters, local evaluation, personal inference."""
