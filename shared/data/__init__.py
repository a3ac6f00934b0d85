"""Data formats: official LaMP directories, users' own JSONL histories, time-based splits."""

from oppu.shared.data.history import HistoryReport, check_history, read_history, validate_history
from oppu.shared.data.items import MAX_ITEM_WORDS
from oppu.shared.data.lamp import LampDataset, LampQuery, LampSplit, load_lamp
from oppu.shared.data.split import base_users, select_test_users, split_history, user_history

__all__ = [
    "MAX_ITEM_WORDS",
    "HistoryReport",
    "LampDataset",
    "LampQuery",
    "LampSplit",
    "base_users",
    "check_history",
    "load_lamp",
    "read_history",
    "select_test_users",
    "split_history",
    "user_history",
    "validate_history",
]
