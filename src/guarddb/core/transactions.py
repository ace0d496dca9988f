"""What a statement does to the session's transaction, read from its text (no round trip).

:func:`classify` sorts SQL into a few kinds:

- :data:`READ`: known reads that hold nothing a rollback would lose: ``SELECT``
  without a locking or writing clause (``FOR UPDATE``, ``LOCK IN SHARE MODE``,
  ``FOR SHARE``, ``INTO``) or a lock function, ``SHOW``, ``DESCRIBE``/``DESC``,
  ``EXPLAIN`` (not ``EXPLAIN ANALYZE`` of a write), ``DO``, ``HELP``, ``VALUES``,
  ``TABLE``, ``WITH ... SELECT``; transaction-neutral ``SAVEPOINT`` statements;
- :data:`BEGIN`, :data:`COMMIT`, :data:`ROLLBACK`, :data:`AUTOCOMMIT_ON`,
  :data:`AUTOCOMMIT_OFF`: transaction control written as SQL, which changes the
  state exactly as the API calls do (``COMMIT AND CHAIN`` and ``ROLLBACK AND
  CHAIN`` are a :data:`BEGIN`: the transaction ends and the next one begins);
- :data:`LOCK`: takes locks that outlive a transaction (``LOCK TABLES``,
  ``FLUSH TABLES ... WITH READ LOCK``); :data:`UNLOCK` (``UNLOCK TABLES``);
  :data:`USER_LOCK`: any statement that calls ``GET_LOCK()`` (its lock is held
  until ``RELEASE_LOCK()`` or the session's end, whatever else happens);
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
from typing import Any, Protocol, Union

READ = "read"
WRITE = "write"
BEGIN = "begin"
COMMIT = "commit"
ROLLBACK = "rollback"
AUTOCOMMIT_ON = "autocommit on"
AUTOCOMMIT_OFF = "autocommit off"
LOCK = "lock"
UNLOCK = "unlock"
#: ``GET_LOCK()``: ``UNLOCK TABLES`` does not release it, and guarddb does not
#: follow ``RELEASE_LOCK()``: the session counts as locked until it ends.
USER_LOCK = "user lock"
#: ``SET`` of autocommit among other things: the driver is asked afterwards.
AUTOCOMMIT_SET = "autocommit set"

#: One kind, or the kinds of a multi-statement's parts in order.
Kinds = Union[str, tuple[str, ...]]

#: Kinds by statement text (str or bytes), filled by :func:`classify`.
KINDS: dict[object, Kinds] = {}
#: The cache is emptied when it grows past this (texts built without parameters).
_CACHE_LIMIT = 4096
#: ... or when the texts it keeps alive pass this many characters (a statement
#: with its values written inline can be megabytes long).
_CACHE_CHARS = 1 << 22
_cached_chars = 0

_READ_WORDS = frozenset({"SHOW", "DESCRIBE", "DESC", "EXPLAIN", "DO", "HELP", "VALUES", "TABLE"})
_SELECT_WRITES = re.compile(
    r"\bFOR\s+UPDATE\b|\bLOCK\s+IN\s+SHARE\s+MODE\b|\bFOR\s+SHARE\b|\bINTO\b"
    r"|\b(?:NEXTVAL|SETVAL|LASTVAL|NEXT\s+VALUE\s+FOR|PREVIOUS\s+VALUE\s+FOR)\b"
)
_LOCK_FUNCTIONS = re.compile(r"\bGET_LOCK\s*\(")
_CHAIN = re.compile(r"\bAND\s+CHAIN\b")  # COMMIT/ROLLBACK AND CHAIN: a new one begins
_DML_WORDS = re.compile(r"\b(?:INSERT|UPDATE|DELETE|REPLACE|CALL|LOAD)\b")
_AUTOCOMMIT = re.compile(
    r"^SET\s+(?:SESSION\s+|LOCAL\s+|@@SESSION\s*\.\s*|@@LOCAL\s*\.\s*|@@)?AUTOCOMMIT\s*(?:=|:=)\s*"
    r"(\S+)$"
)
_ON = frozenset({"1", "ON", "TRUE", "'ON'", "'1'"})
_OFF = frozenset({"0", "OFF", "FALSE", "'OFF'", "'0'"})


def classify(sql: str | bytes | bytearray) -> Kinds:
    """The kind of ``sql`` (a tuple of kinds for a multi-statement); cached by text."""
    global _cached_chars
    if not isinstance(sql, (str, bytes, bytearray)):
        return WRITE  # not SQL text: the driver refuses it, with its own error
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
            if len(KINDS) >= _CACHE_LIMIT or _cached_chars > _CACHE_CHARS:
                KINDS.clear()
                _cached_chars = 0
            KINDS[sql] = kinds
            _cached_chars += len(sql)
    return kinds


def writes(kinds: Kinds) -> bool:
    """Whether a statement of these kinds may leave something a rollback would lose."""
    if isinstance(kinds, tuple):
        return any(writes(kind) for kind in kinds)
    return kinds is WRITE or kinds is LOCK or kinds is USER_LOCK or kinds is AUTOCOMMIT_SET


def plain(kinds: Kinds) -> bool:
    """Whether these kinds are a plain read or write (nothing to do once they succeed)."""
    return kinds is READ or kinds is WRITE


def locks(kinds: Kinds) -> bool:
    """Whether a statement of these kinds takes locks that outlive its transaction."""
    if isinstance(kinds, tuple):
        return LOCK in kinds or USER_LOCK in kinds
    return kinds is LOCK or kinds is USER_LOCK


class State(Protocol):
    """The transaction bookkeeping a guard keeps (see ConnectionGuard)."""

    dirty: bool
    began: bool
    autocommit: bool
    wrote: bool
    #: False, True (table locks, until UNLOCK TABLES) or USER_LOCK (until the session ends).
    locked: bool | str


def starting(state: State, kinds: Kinds) -> None:
    """Before a statement of these kinds runs: what it may do counts already.

    A write counts even if the statement then fails (a multi-statement may
    have written part of it): guarddb errs on the side of keeping.
    """
    state.dirty = True
    if writes(kinds):
        state.wrote = True
    if locks(kinds) and state.locked is not USER_LOCK:
        user = USER_LOCK in kinds if isinstance(kinds, tuple) else kinds is USER_LOCK
        state.locked = USER_LOCK if user else True


def done(state: State, kinds: Kinds) -> None:
    """After a statement of these kinds succeeded: transaction control takes effect, in order.

    Exactly as the API calls do: ``BEGIN`` as ``begin()`` (the server commits
    what was open), ``COMMIT``/``ROLLBACK`` as ``commit()``/``rollback()``,
    ``SET autocommit`` as ``autocommit()`` (turning it on commits only if it was
    off, and turning it off opens nothing: a transaction ``BEGIN`` opened stays).
    """
    for kind in kinds if isinstance(kinds, tuple) else (kinds,):
        if kind is BEGIN:
            state.began, state.dirty, state.wrote = True, False, False
        elif kind is COMMIT or kind is ROLLBACK:
            state.dirty = state.began = state.wrote = False
        elif kind is AUTOCOMMIT_ON:
            if not state.autocommit:
                state.dirty = state.began = state.wrote = False
            state.autocommit = True
        elif kind is AUTOCOMMIT_OFF:
            if state.autocommit and not state.began:  # nothing open: statements autocommitted
                state.dirty = state.wrote = False
            state.autocommit = False
        elif kind is UNLOCK:
            if state.locked is not USER_LOCK:  # GET_LOCK()'s lock stays
                state.locked = False
        else:
            starting(state, kind)


#: What split() must look at: quoted text, comments, executable comments, ends of
#: statements.  Regular expressions (the scan runs in C: a text classified for the
#: first time costs a few microseconds, not a Python loop over its characters).
_SPECIAL_TEXT = (
    # 'quoted', with \' and '' inside; unterminated: to the end.  Unrolled (a run of
    # plain characters at a time, not one alternation per character): a 16 MB value
    # in a statement took 1.6 s to pass, now 0.09 s.
    r"""'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'?"""
    r"""|"[^"\\]*(?:(?:\\.|"")[^"\\]*)*"?"""
    r"""|`[^`]*(?:``[^`]*)*`?"""
    r"|#[^\n]*|--(?:[ \t\r][^\n]*|(?=\n)|\Z)"  # to the end of the line ("--" needs whitespace)
    r"|/\*M?!\d*"  # /*! or /*M! and the version: what follows is code for the server
    r"|/\*.*?(?:\*/|\Z)"  # a comment (unterminated: to the end)
    r"|;"
)
_SPECIAL = re.compile(_SPECIAL_TEXT, re.DOTALL)
#: The same inside /*! ... */, whose */ ends it.
_SPECIAL_IN_CODE = re.compile(_SPECIAL_TEXT + r"|\*/", re.DOTALL)


def split(sql: str) -> list[str]:
    """The statements of ``sql``, upper-cased, comments dropped, quoted text blanked."""
    statements: list[str] = []
    current: list[str] = []
    position = 0
    special = _SPECIAL  # _SPECIAL_IN_CODE inside /*! ... */: code for the server
    while True:
        match = special.search(sql, position)
        if match is None:
            break
        token = match.group()
        current.append(sql[position : match.start()])
        position = match.end()
        first = token[0]
        if first == ";":
            statements.append("".join(current))
            current = []
        elif first in "'\"":
            current.append(" '' ")
        elif first == "`":
            current.append(" `` ")
        elif token.startswith(("/*!", "/*M!")):
            special = _SPECIAL_IN_CODE
            current.append(" ")
        elif token == "*/":  # the end of an executable comment
            special = _SPECIAL
            current.append(" ")
        else:
            current.append(" ")  # a comment
    current.append(sql[position:])
    statements.append("".join(current))
    return [" ".join(s.upper().split()) for s in statements if s.strip()]


def _kind(statement: str) -> str:
    words = statement.lstrip("( ").split(" ", 2)
    first = words[0] if words else ""
    second = words[1] if len(words) > 1 else ""
    if _LOCK_FUNCTIONS.search(statement):  # in a SELECT, a DO, a SET @x = ..., anywhere
        return USER_LOCK
    if first == "SELECT" or (first == "WITH" and not _DML_WORDS.search(statement)):
        return WRITE if _SELECT_WRITES.search(statement) else READ
    if first in _READ_WORDS:
        if first in ("EXPLAIN", "DESCRIBE", "DESC") and second == "ANALYZE":
            return _kind(statement.split(" ", 2)[2] if len(words) > 2 else "")
        return READ
    if first == "BEGIN" or (first == "START" and second == "TRANSACTION"):
        return BEGIN if statement in ("BEGIN", "BEGIN WORK") or first == "START" else WRITE
    if first == "COMMIT":
        return BEGIN if _CHAIN.search(statement) else COMMIT  # AND CHAIN: the next one begins
    if first == "ROLLBACK":
        if " TO " in f" {statement} ":
            return READ  # TO SAVEPOINT: still open
        return BEGIN if _CHAIN.search(statement) else ROLLBACK
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


# The server's word on a transaction guarddb takes for read-only (the reaper asks it
# before a rollback loses anything): what InnoDB knows of the session's transaction.
# It needs the PROCESS privilege.
FOOTPRINT_SQL = (
    b"SELECT trx_rows_modified, trx_rows_locked, trx_lock_structs"
    b" FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = CONNECTION_ID()"
)
#: ER_SPECIFIC_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR.
ACCESS_DENIED = (1227, 1044, 1142)


def footprint(rows: Any) -> str:
    """Empty if the INNODB_TRX row (if any) shows nothing modified or locked, else what it does."""
    if not rows:
        return ""  # no InnoDB transaction is open
    modified, locked, lock_structs = (int(value or 0) for value in rows[0])
    if modified or locked or lock_structs:
        return f"{modified} rows modified, {locked} rows locked, {lock_structs} lock structures"
    return ""
