"""Task registry: LaMP tasks built in, custom tasks declared in TOML/JSON."""

from oppu.shared.tasks.spec import Example, TaskKind, TaskSpec

__all__ = ["Example", "TaskKind", "TaskSpec"]
