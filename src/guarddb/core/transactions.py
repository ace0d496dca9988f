"""What a statement does to the session's transaction, read from its text (no round trip).

:func:`classify` sorts SQL into a few kinds:

- :data:`READ`: known reads that hold nothing a rollback would lose: ``SELECT``
  without a locking or writing clause (``FOR UPDATE``, ``LOCK IN SHARE MODE``,
  ``FOR SHARE``, ``INTO``) or a lock function, ``SHOW``, ``DESCRIBE``/``DESC``,
  ``EXPLAIN`` (not ``EXPLAIN ANALYZE`` of a write), ``DO``, ``HELP``, ``VALUES``,
  ``TABLE``, ``WITH ... SELECT``; transaction-neutral ``SAVEPOINT`` statements;
- :data:`BEGIN`, :data:`COMMIT`, :data:`ROLLBACK`, :data:`AUTOCOMMIT_ON`,
  :data:`AUTOCOMMIT_OFF`: transaction control written as SQL, which changes the
  state exactly as the API calls do;
- :data:`LOCK`: takes locks that outlive a transaction (``LOCK TABLES``,
  ``FLUSH TABLES ... WITH READ LOCK``, ``GET_LOCK()``); :data:`UNLOCK` (``UNLOCK TABLES``);
- :data:`WRITE`: everything else, conservatively (DML, DDL, ``SET``, ``CALL``,
  ``XA``, executable comments, anything not recognised); :data:`AUTOCOMMIT_SET`
  is a ``SET`` that changes autocommit among other things (a write too; the
  driver is asked afterwards what autocommit is).

A multi-statement text is the sequence of its parts' kinds (a tuple), applied
in order: it writes unless every part reads.  Comments (``-- ``, ``#``,
``/* */``) and whitespace are skipped and quoted text is blanked, so a keyword
inside a string or a comment is never taken for one; ``/*! ... */`` and
``/*M! ... */`` are code to the server, so they are read as code.

Kinds are cached by statement text: an application's statements are a few
templates (``execute(template, params)``), so the classification of a round
trip is one dictionary look-up.
"""

from __future__ import annotations

import re
from typing import Protocol, Union

READ = "read"
WRITE = "write"
BEGIN = "begin"
COMMIT = "commit"
ROLLBACK = "rollback"
AUTOCOMMIT_ON = "autocommit on"
AUTOCOMMIT_OFF = "autocommit off"
LOCK = "lock"
UNLOCK = "unlock"
#: ``SET`` of autocommit among other things: the driver is asked afterwards.
AUTOCOMMIT_SET = "autocommit set"

#: One kind, or the kinds of a multi-statement's parts in order.
Kinds = Union[str, tuple[str, ...]]

#: Kinds by statement text (str or bytes), filled by :func:`classify`.
KINDS: dict[object, Kinds] = {}
#: The cache is emptied when it grows past this (texts built without parameters).
_CACHE_LIMIT = 4096

_READ_WORDS = frozenset({"SHOW", "DESCRIBE", "DESC", "EXPLAIN", "DO", "HELP", "VALUES", "TABLE"})
_SELECT_WRITES = re.compile(
    r"\bFOR\s+UPDATE\b|\bLOCK\s+IN\s+SHARE\s+MODE\b|\bFOR\s+SHARE\b|\bINTO\b"
    r"|\b(?:NEXTVAL|SETVAL|LASTVAL|NEXT\s+VALUE\s+FOR|PREVIOUS\s+VALUE\s+FOR)\b"
)
_LOCK_FUNCTIONS = re.compile(r"\bGET_LOCK\s*\(")
_DML_WORDS = re.compile(r"\b(?:INSERT|UPDATE|DELETE|REPLACE|CALL|LOAD)\b")
_AUTOCOMMIT = re.compile(
    r"^SET\s+(?:SESSION\s+|LOCAL\s+|@@SESSION\s*\.\s*|@@LOCAL\s*\.\s*|@@)?AUTOCOMMIT\s*(?:=|:=)\s*"
    r"(\S+)$"
)
_ON = frozenset({"1", "ON", "TRUE", "'ON'", "'1'"})
_OFF = frozenset({"0", "OFF", "FALSE", "'OFF'", "'0'"})


def classify(sql: str | bytes | bytearray) -> Kinds:
    """The kind of ``sql`` (a tuple of kinds for a multi-statement); cached by text."""
    kinds = KINDS.get(sql) if not isinstance(sql, bytearray) else None
    if kinds is None:
        text = sql.decode("latin-1") if isinstance(sql, (bytes, bytearray)) else str(sql)
        parts = tuple(_kind(statement) for statement in split(text))
        if not parts:
            kinds = READ  # only comments and whitespace: the server does nothing
        elif len(parts) == 1 or all(part is READ for part in parts):
            kinds = parts[0] if len(parts) == 1 else READ
        else:
            kinds = parts
        if not isinstance(sql, bytearray):
            if len(KINDS) >= _CACHE_LIMIT:
                KINDS.clear()
            KINDS[sql] = kinds
    return kinds


def writes(kinds: Kinds) -> bool:
    """Whether a statement of these kinds may leave something a rollback would lose."""
    if isinstance(kinds, tuple):
        return any(writes(kind) for kind in kinds)
    return kinds is WRITE or kinds is LOCK or kinds is AUTOCOMMIT_SET


def plain(kinds: Kinds) -> bool:
    """Whether these kinds are a plain read or write (nothing to do once they succeed)."""
    return kinds is READ or kinds is WRITE


def locks(kinds: Kinds) -> bool:
    """Whether a statement of these kinds takes locks that outlive its transaction."""
    if isinstance(kinds, tuple):
        return LOCK in kinds
    return kinds is LOCK


class State(Protocol):
    """The transaction bookkeeping a guard keeps (see ConnectionGuard)."""

    dirty: bool
    began: bool
    autocommit: bool
    wrote: bool
    locked: bool


def starting(state: State, kinds: Kinds) -> None:
    """Before a statement of these kinds runs: what it may do counts already.

    A write counts even if the statement then fails (a multi-statement may
    have written part of it): guarddb errs on the side of keeping.
    """
    state.dirty = True
    if writes(kinds):
        state.wrote = True
    if locks(kinds):
        state.locked = True


def done(state: State, kinds: Kinds) -> None:
    """After a statement of these kinds succeeded: transaction control takes effect, in order.

    Exactly as the API calls do: ``BEGIN`` as ``begin()`` (the server commits
    what was open), ``COMMIT``/``ROLLBACK`` as ``commit()``/``rollback()``,
    ``SET autocommit`` as ``autocommit()``.
    """
    for kind in kinds if isinstance(kinds, tuple) else (kinds,):
        if kind is BEGIN:
            state.began, state.dirty, state.wrote = True, False, False
        elif kind is COMMIT or kind is ROLLBACK:
            state.dirty = state.began = state.wrote = False
        elif kind is AUTOCOMMIT_ON:
            state.autocommit = True
            state.dirty = state.began = state.wrote = False
        elif kind is AUTOCOMMIT_OFF:
            state.autocommit = False
        elif kind is UNLOCK:
            state.locked = False
        else:
            starting(state, kind)


def ends_transaction(kinds: Kinds) -> bool:
    """Whether the last transaction control among these kinds ends the transaction."""
    for kind in reversed(kinds if isinstance(kinds, tuple) else (kinds,)):
        if kind is COMMIT or kind is ROLLBACK or kind is AUTOCOMMIT_ON:
            return True
        if kind is BEGIN or kind is AUTOCOMMIT_OFF:
            return False
    return False


def split(sql: str) -> list[str]:
    """The statements of ``sql``, upper-cased, comments dropped, quoted text blanked."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    in_code_comment = False  # inside /*! ... */: code for the server
    while i < n:
        c = sql[i]
        if c in "'\"`":
            end = _closing_quote(sql, i)
            current.append(" '' " if c != "`" else " `` ")
            i = end + 1
        elif c == "#" or (sql.startswith("--", i) and (i + 2 >= n or sql[i + 2] in " \t\r\n")):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            current.append(" ")
        elif sql.startswith("/*", i):
            if sql.startswith(("/*!", "/*M!"), i):
                i += 4 if sql[i + 2] == "M" else 3
                while i < n and sql[i].isdigit():
                    i += 1  # the version the code needs
                in_code_comment = True
                current.append(" ")
            else:
                end = sql.find("*/", i + 2)
                i = n if end < 0 else end + 2
                current.append(" ")
        elif in_code_comment and sql.startswith("*/", i):
            in_code_comment = False
            i += 2
            current.append(" ")
        elif c == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(c)
            i += 1
    statements.append("".join(current))
    return [" ".join(s.upper().split()) for s in statements if s.strip()]


def _closing_quote(sql: str, start: int) -> int:
    quote, i, n = sql[start], start + 1, len(sql)
    while i < n:
        c = sql[i]
        if c == "\\" and quote != "`":
            i += 2
            continue
        if c == quote:
            if i + 1 < n and sql[i + 1] == quote:  # a doubled quote stands for itself
                i += 2
                continue
            return i
        i += 1
    return n


def _kind(statement: str) -> str:
    words = statement.lstrip("( ").split(" ", 2)
    first = words[0] if words else ""
    second = words[1] if len(words) > 1 else ""
    if first == "SELECT" or (first == "WITH" and not _DML_WORDS.search(statement)):
        if _LOCK_FUNCTIONS.search(statement):
            return LOCK
        return WRITE if _SELECT_WRITES.search(statement) else READ
    if first in _READ_WORDS:
        if first in ("EXPLAIN", "DESCRIBE", "DESC") and second == "ANALYZE":
            return _kind(statement.split(" ", 2)[2] if len(words) > 2 else "")
        if first == "DO" and _LOCK_FUNCTIONS.search(statement):
            return LOCK
        return READ
    if first == "BEGIN" or (first == "START" and second == "TRANSACTION"):
        return BEGIN if statement in ("BEGIN", "BEGIN WORK") or first == "START" else WRITE
    if first == "COMMIT":
        return COMMIT
    if first == "ROLLBACK":
        return READ if " TO " in f" {statement} " else ROLLBACK  # TO SAVEPOINT: still open
    if first == "SAVEPOINT" or (first == "RELEASE" and second == "SAVEPOINT"):
        return READ
    if first == "SET":
        match = _AUTOCOMMIT.match(statement)
        if match:
            value = match.group(1)
            if value in _ON:
                return AUTOCOMMIT_ON
            if value in _OFF:
                return AUTOCOMMIT_OFF
        return AUTOCOMMIT_SET if "AUTOCOMMIT" in statement else WRITE
    if first == "LOCK" or (first == "FLUSH" and "READ LOCK" in statement):
        return LOCK
    if first == "UNLOCK":
        return UNLOCK
    return WRITE
