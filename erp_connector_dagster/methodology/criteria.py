"""Matching criteria shared by the mapping and category rules: account ranges, code patterns,
keyword expressions. Rules are data (YAML); these turn their strings into checks."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class AccountRange:
    """An inclusive range of GL accounts, written "6100-6199" or a single "6810"."""

    first: str
    last: str

    @classmethod
    def parse(cls, text: str) -> AccountRange:
        parts = [part.strip() for part in str(text).split("-")]
        if len(parts) == 1 and parts[0]:
            return cls(parts[0], parts[0])
        if len(parts) == 2 and all(parts):
            return cls(parts[0], parts[1])
        raise ValueError(f"account range {text!r} is not 'FROM-TO' or a single account")

    def contains(self, account: str | None) -> bool:
        if not account:
            return False
        account = account.strip()
        # Numeric accounts compare as numbers (so 6100-6199 does not take 61000); others as text.
        if account.isdigit() and self.first.isdigit() and self.last.isdigit():
            return int(self.first) <= int(account) <= int(self.last)
        return self.first <= account <= self.last

    def __str__(self) -> str:
        return self.first if self.first == self.last else f"{self.first}-{self.last}"


def code_matches(pattern: str, value: str | None) -> bool:
    """Shell-style wildcard match (* and ?), case-insensitive, on a trimmed value."""
    if value is None or not value.strip():
        return False
    return fnmatch.fnmatchcase(value.strip().upper(), pattern.strip().upper())


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A case-insensitive regular expression from a rules file, with the error made readable."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"invalid pattern {pattern!r}: {error}") from error
