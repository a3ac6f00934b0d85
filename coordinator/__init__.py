"""The coordinator: task-adapted base, round configuration, cohort metrics."""
