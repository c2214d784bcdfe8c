"""The one check of people's free text: purposes, descriptions, reasons and names.

Forms, services and the XML builder all ask `free_text_problem`, so a character refused in
one place is refused everywhere, with the same sentence. No Django at import time:
`hosts.virt.domain_xml` stays Django-free, and `FreeTextValidator` imports `ValidationError` only
when it refuses.
"""

from __future__ import annotations

import re

from core.errors import PortalError

# Refused in every field: C0 controls other than the three line characters, DEL and the C1
# controls (NEL among them), surrogates (a str can hold one alone; UTF-8 and XML cannot),
# noncharacters, and the bidirectional embeddings, overrides and isolates that can show an
# approver text in another order than it is stored ("Trojan Source", CVE-2021-42574).
# The left-to-right and right-to-left marks (U+200E, U+200F) stay: RTL writing needs them.
_NONCHARACTERS = "\ufdd0-\ufdef\ufffe\uffff" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(1, 17))
_BIDI = "\u202a-\u202e\u2066-\u2069"
_ALWAYS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff" + _BIDI + _NONCHARACTERS
# A single-line field also refuses tabs and line breaks: it lands in a title, a mail
# header or one line of a file.
_LINE = "\t\n\r\u2028\u2029"
_MULTI_LINE_RE = re.compile(f"[{_ALWAYS}]")
_SINGLE_LINE_RE = re.compile(f"[{_ALWAYS}{_LINE}]")
_LINE_RE = re.compile(f"[{_LINE}]")
_BIDI_RE = re.compile(f"[{_BIDI}]")
_NONCHARACTER_RE = re.compile(f"[{_NONCHARACTERS}]")


class FreeTextError(PortalError, ValueError):
    """Free text holds a character it may not; the message says which, for people."""


def _kind(ch: str) -> str:
    if ch == "\t":
        return "a tab"
    if ch in _LINE:
        return "a line break"
    if _BIDI_RE.match(ch):
        return "a text-direction control character"
    if "\ud800" <= ch <= "\udfff":
        return "an unpaired surrogate"
    if _NONCHARACTER_RE.match(ch):
        return "a noncharacter"
    return "a control character"


def free_text_problem(value: str, *, what: str, multiline: bool = False) -> str | None:
    """Return what is wrong with the text as a sentence for people, or None when it is fine.

    `what` names the field as people know it ("purpose"); `multiline` lets tabs and line
    breaks through, for text areas.
    """
    found = (_MULTI_LINE_RE if multiline else _SINGLE_LINE_RE).search(value)
    if found is None:
        return None
    ch = found.group()
    return f"The {what} contains {_kind(ch)} (U+{ord(ch):04X}); remove it."


def free_text_check(value: object, *, what: str, multiline: bool = False) -> str:
    """Return value if it is text free of refused characters; raise FreeTextError otherwise."""
    if not isinstance(value, str):
        raise FreeTextError(f"The {what} must be text, not {type(value).__name__}.")
    problem = free_text_problem(value, what=what, multiline=multiline)
    if problem:
        raise FreeTextError(problem)
    return value


def free_text_clean(value: str, *, multiline: bool = False) -> str:
    """Return the text without the characters free text may not hold.

    Single-line text gets a space for each tab or line break. Only for text nobody typed
    into the portal (a directory's attributes, a name an admin set) that must be carried
    on rather than refused.
    """
    if not multiline:
        value = _LINE_RE.sub(" ", value)
    return _MULTI_LINE_RE.sub("", value)


class FreeTextValidator:
    """A Django validator refusing what `free_text_problem` refuses, for forms and models."""

    code = "free_text"

    def __init__(self, what: str, *, multiline: bool = False) -> None:
        self.what = what
        self.multiline = multiline

    def __call__(self, value: object) -> None:
        if not isinstance(value, str):
            return
        problem = free_text_problem(value, what=self.what, multiline=self.multiline)
        if problem:
            from django.core.exceptions import ValidationError

            raise ValidationError(problem, code=self.code)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FreeTextValidator) and other.what == self.what
                and other.multiline == self.multiline)

    def __hash__(self) -> int:
        return hash((self.what, self.multiline))

    def deconstruct(self) -> tuple[str, tuple[str], dict[str, bool]]:
        """Return how a migration writes this validator (what Django's @deconstructible does)."""
        return ("core.validators.FreeTextValidator", (self.what,),
                {"multiline": self.multiline} if self.multiline else {})
