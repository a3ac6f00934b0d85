"""Simulations and benchmarks that run oppu end to end on LaMP data."""
