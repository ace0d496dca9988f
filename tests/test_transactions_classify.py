"""What a statement does to the transaction, read from its text (guarddb.core.transactions).

No server here: the classification table, then Hypothesis over generated
statements (random case, whitespace and comments between tokens,
multi-statements, quoted text full of keywords).  tests/test_transactions.py
holds the same rules against the server.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guarddb.core import transactions
from guarddb.core.transactions import (
    AUTOCOMMIT_OFF,
    AUTOCOMMIT_ON,
    AUTOCOMMIT_SET,
    BEGIN,
    COMMIT,
    LOCK,
    READ,
    ROLLBACK,
    UNLOCK,
    USER_LOCK,
    WRITE,
    classify,
    writes,
)

# -- the table ----------------------------------------------------------------------------

TABLE = [
    # known reads
    ("SELECT 1", READ),
    ("select * from t where a = %s", READ),
    ("(SELECT 1) UNION (SELECT 2)", READ),
    ("SELECT a FROM t ORDER BY a LIMIT 1", READ),
    ("SELECT * FROM intox", READ),  # INTO only as a word
    ("SELECT 1 AS into_x", READ),
    ("SELECT update_time, for_share FROM t", READ),
    ("SELECT RELEASE_LOCK('x'), IS_FREE_LOCK('y')", READ),
    ("WITH c AS (SELECT 1) SELECT * FROM c", READ),
    ("SHOW TABLES", READ),
    ("show engine innodb status", READ),
    ("DESCRIBE t", READ),
    ("DESC t", READ),
    ("EXPLAIN SELECT 1", READ),
    ("EXPLAIN DELETE FROM t", READ),  # EXPLAIN does not run it
    ("EXPLAIN ANALYZE SELECT 1", READ),
    ("DO 1", READ),
    ("DO SLEEP(0)", READ),
    ("HELP 'select'", READ),
    ("VALUES (1), (2)", READ),
    ("TABLE t", READ),
    ("SAVEPOINT s", READ),  # neutral: the transaction is what it was
    ("RELEASE SAVEPOINT s", READ),
    ("ROLLBACK TO SAVEPOINT s", READ),
    ("ROLLBACK WORK TO s", READ),
    # leading comments and whitespace; keywords in strings, comments, backticks
    ("  \n\t select 1", READ),
    ("/* DELETE FROM t */ SELECT 1", READ),
    ("-- DELETE FROM t\nSELECT 1", READ),
    ("# DELETE FROM t\nSELECT 1", READ),
    ("SELECT 1 -- FOR UPDATE", READ),
    ("SELECT 1 --\tFOR UPDATE", READ),
    ("SELECT 1 # FOR UPDATE", READ),
    ("SELECT 1 /* FOR UPDATE */", READ),
    ("SELECT 'DELETE FROM t'", READ),
    ("SELECT 'FOR UPDATE', \"LOCK IN SHARE MODE\", 'INTO @x'", READ),
    ("SELECT `update`, `into`, `for update` FROM t", READ),
    ("SELECT 'a''; DELETE FROM t; '", READ),  # a doubled quote
    ("SELECT 'a\\'; DELETE FROM t; '", READ),  # a backslash escape
    ('SELECT "a\\"; DELETE FROM t; "', READ),
    ("SELECT `a``; DELETE FROM t; `", READ),
    ("SELECT 'GET_LOCK(1, 2)'", READ),
    ("/*!50000 SELECT 1 */", READ),  # executable comment: code, and here a read
    ("/*M!100100 SELECT 1 */", READ),
    ("SELECT 1 /*! , 2 */", READ),
    # writes, conservatively: DML, DDL, SET, CALL, anything unknown
    ("INSERT INTO t VALUES (1)", WRITE),
    ("insert into t values (%s)", WRITE),
    ("UPDATE t SET a = 1", WRITE),
    ("DELETE FROM t", WRITE),
    ("REPLACE INTO t VALUES (1)", WRITE),
    ("CREATE TABLE x (a INT)", WRITE),
    ("TRUNCATE t", WRITE),
    ("CALL p()", WRITE),
    ("SET @x = 1", WRITE),
    ("SET NAMES utf8mb4", WRITE),
    ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", WRITE),
    ("XA START 'x'", WRITE),
    ("HANDLER t READ FIRST", WRITE),
    ("ANALYZE TABLE t", WRITE),
    ("PREPARE s FROM 'SELECT 1'", WRITE),
    ("EXECUTE s", WRITE),
    ("USE test", WRITE),
    ("FLUSH TABLES", WRITE),
    ("WITH c AS (SELECT 1) DELETE FROM t", WRITE),
    ("frobnicate the database", WRITE),
    # SELECT with a locking or writing clause
    ("SELECT 1 FOR UPDATE", WRITE),
    ("select 1 for update skip locked", WRITE),
    ("SELECT 1 FOR UPDATE NOWAIT", WRITE),
    ("SELECT 1 LOCK IN SHARE MODE", WRITE),
    ("SELECT 1 FOR SHARE", WRITE),
    ("SELECT 1 FOR\n\tUPDATE", WRITE),
    ("SELECT 1 FOR/* x */UPDATE", WRITE),
    ("SELECT 1 UNION SELECT 2 FOR UPDATE", WRITE),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) x", WRITE),
    ("SELECT 1 INTO @x", WRITE),
    ("SELECT 1 INTO OUTFILE '/tmp/x'", WRITE),
    ("SELECT 1 INTO DUMPFILE '/tmp/x'", WRITE),
    ("SELECT NEXTVAL(s)", WRITE),
    ("SELECT NEXT VALUE FOR s", WRITE),
    ("SELECT SETVAL(s, 1)", WRITE),
    ("WITH c AS (SELECT 1) SELECT * FROM c FOR UPDATE", WRITE),
    ("EXPLAIN ANALYZE DELETE FROM t", WRITE),  # runs the DELETE
    ("EXPLAIN ANALYZE SELECT 1 FOR UPDATE", WRITE),
    ("ANALYZE DELETE FROM t", WRITE),  # MariaDB's: runs it too
    # "--" is a comment only when whitespace follows
    ("SELECT 1 --\nFOR UPDATE", WRITE),
    ("SELECT 1 --FOR UPDATE", WRITE),
    ("SELECT 1 -- x\nFOR UPDATE", WRITE),
    # executable comments are code
    ("/*! DELETE FROM t */", WRITE),
    ("/*M! DELETE FROM t */", WRITE),
    ("SELECT 1 /*! FOR UPDATE */", WRITE),
    ("SELECT 1 /*!40101 INTO @x */", WRITE),
    # locks that outlive a transaction: GET_LOCK() wherever it is called
    ("SELECT GET_LOCK('a', 0)", USER_LOCK),
    ("select get_lock ('a', 0)", USER_LOCK),
    ("DO GET_LOCK('a', 0)", USER_LOCK),
    ("SET @held = GET_LOCK('a', 0)", USER_LOCK),
    ("SELECT GET_LOCK('a', 0) INTO @held", USER_LOCK),
    ("INSERT INTO t SELECT GET_LOCK('a', 0)", USER_LOCK),
    ("LOCK TABLES t READ", LOCK),
    ("LOCK TABLE t WRITE", LOCK),
    ("FLUSH TABLES WITH READ LOCK", LOCK),
    ("UNLOCK TABLES", UNLOCK),
    # transaction control in SQL text, and its common spellings
    ("BEGIN", BEGIN),
    ("begin work", BEGIN),
    ("START TRANSACTION", BEGIN),
    ("START TRANSACTION READ ONLY", BEGIN),
    ("START TRANSACTION WITH CONSISTENT SNAPSHOT", BEGIN),
    ("/* tx */ start   transaction ;", BEGIN),
    ("BEGIN NOT ATOMIC SELECT 1; END", (WRITE, WRITE)),  # a compound statement
    ("COMMIT", COMMIT),
    ("commit work", COMMIT),
    ("COMMIT AND NO CHAIN", COMMIT),
    ("COMMIT AND NO CHAIN NO RELEASE", COMMIT),
    ("COMMIT AND CHAIN", BEGIN),  # ends the transaction and begins the next
    ("commit work and chain", BEGIN),
    ("ROLLBACK", ROLLBACK),
    ("ROLLBACK WORK", ROLLBACK),
    ("ROLLBACK AND NO CHAIN", ROLLBACK),
    ("ROLLBACK AND CHAIN", BEGIN),
    ("rollback work and   chain", BEGIN),
    ("SET autocommit=1", AUTOCOMMIT_ON),
    ("SET autocommit = ON", AUTOCOMMIT_ON),
    ("set autocommit:=true", AUTOCOMMIT_ON),
    ("SET @@session.autocommit = 1", AUTOCOMMIT_ON),
    ("SET @@SESSION . autocommit=on", AUTOCOMMIT_ON),
    ("SET SESSION autocommit=1", AUTOCOMMIT_ON),
    ("SET LOCAL autocommit=1", AUTOCOMMIT_ON),
    ("SET @@local.autocommit=1", AUTOCOMMIT_ON),
    ("SET @@autocommit=1", AUTOCOMMIT_ON),
    ("SET/**/autocommit/**/=/**/1", AUTOCOMMIT_ON),
    ("SET autocommit=0", AUTOCOMMIT_OFF),
    ("SET autocommit = OFF", AUTOCOMMIT_OFF),
    ("set autocommit=false", AUTOCOMMIT_OFF),
    ("SET SESSION autocommit := 0", AUTOCOMMIT_OFF),
    ("SET @@session.autocommit=FALSE", AUTOCOMMIT_OFF),
    # SET autocommit among other things, or to an expression: the driver is asked after
    ("SET autocommit=1, sql_mode=''", AUTOCOMMIT_SET),
    ("SET sql_mode='', autocommit=0", AUTOCOMMIT_SET),
    ("SET autocommit=@saved", AUTOCOMMIT_SET),
    ("SET autocommit='ON'", AUTOCOMMIT_SET),
    ("SET autocommit=DEFAULT", AUTOCOMMIT_SET),
    ("SET GLOBAL autocommit=0", AUTOCOMMIT_SET),  # not this session's: asked, not assumed
    # multi-statements: a write unless every part reads; control in order
    ("SELECT 1; SELECT 2", READ),
    ("SHOW TABLES; DO 1; SELECT 1;", READ),
    ("SELECT ';DELETE FROM t'; SELECT 2", READ),
    ("SELECT 1 -- ; DELETE FROM t", READ),
    ("SELECT 1 # ; DELETE FROM t", READ),
    ("SELECT 1 /* ; DELETE FROM t */", READ),
    ("SELECT 1;;SELECT 2", READ),
    ("SELECT 1; DELETE FROM t", (READ, WRITE)),
    ("SELECT 1 -- x\n; DELETE FROM t", (READ, WRITE)),
    ("SELECT 1 --; DELETE FROM t", (READ, WRITE)),
    ("BEGIN; INSERT INTO t VALUES (1); COMMIT", (BEGIN, WRITE, COMMIT)),
    ("COMMIT; SELECT 1", (COMMIT, READ)),
    ("START TRANSACTION; SELECT 1", (BEGIN, READ)),
    ("SET autocommit=0; SELECT GET_LOCK('a', 1)", (AUTOCOMMIT_OFF, USER_LOCK)),
    ("LOCK TABLES t READ; UNLOCK TABLES", (LOCK, UNLOCK)),
    # nothing but comments and whitespace: the server does nothing
    ("", READ),
    ("   ", READ),
    (";", READ),
    ("-- only a comment\n", READ),
    ("/* only a comment */", READ),
    ("# only a comment", READ),
]


@pytest.mark.parametrize(("sql", "kind"), TABLE, ids=[repr(sql)[:60] for sql, _ in TABLE])
def test_the_classification_table(sql, kind):
    assert classify(sql) == kind
    assert classify(sql.encode()) == kind  # bytes queries, as mysqlclient's cursors send them
    assert classify(bytearray(sql.encode())) == kind  # unhashable: classified every time


def test_bytes_outside_ascii_are_text_too():
    assert classify("SELECT 'é; DELETE FROM t'".encode()) == READ
    assert classify("DELETE FROM t WHERE a = 'é'".encode()) == WRITE
    assert classify("SELECT '\u00e9' FOR UPDATE".encode("latin-1")) == WRITE


def test_a_kind_is_cached_by_text():
    sql = "SELECT 'guarddb cache probe' FROM t WHERE a = %s"
    kind = classify(sql)
    assert transactions.KINDS[sql] is kind is READ
    assert classify(sql) is kind
    # The kinds are the module's constants: the statement path compares them with `is`.
    for sql, _kind in TABLE:
        kinds = classify(sql)
        for part in kinds if isinstance(kinds, tuple) else (kinds,):
            assert any(part is constant for constant in _KINDS)


def test_the_cache_keeps_a_bounded_amount_of_text_alive(monkeypatch):
    # Statements with their values inline are each a new text, and can be long.
    monkeypatch.setattr(transactions, "_CACHE_CHARS", 100_000)
    values = ",".join(f"({n}, 'row {n}')" for n in range(1000))
    for n in range(40):
        assert classify(f"INSERT INTO t{n} VALUES {values}") is WRITE
    assert sum(len(text) for text in transactions.KINDS) <= 100_000 + len(values) + 100


def test_writes_and_locks_of_kinds():
    assert not writes(READ) and not writes(BEGIN) and not writes(COMMIT)
    assert writes(WRITE) and writes(LOCK) and writes(USER_LOCK) and writes(AUTOCOMMIT_SET)
    assert writes((READ, WRITE)) and not writes((BEGIN, READ, COMMIT))
    assert transactions.locks((READ, LOCK)) and transactions.locks(USER_LOCK)
    assert not transactions.locks((WRITE, UNLOCK))


_KINDS = (READ, WRITE, BEGIN, COMMIT, ROLLBACK, AUTOCOMMIT_ON, AUTOCOMMIT_OFF, AUTOCOMMIT_SET)
_KINDS += (LOCK, UNLOCK, USER_LOCK)


# -- generated statements -----------------------------------------------------------------

# Statements as tokens: decoration goes between tokens, never inside one.
READS = [
    ["SELECT", "1"],
    ["SELECT", "*", "FROM", "t", "WHERE", "a", "=", "1"],
    ["SELECT", "a", ",", "b", "FROM", "t", "ORDER", "BY", "a", "LIMIT", "1"],
    ["SELECT", "COUNT(*)", "FROM", "t", "GROUP", "BY", "a", "HAVING", "COUNT(*)", ">", "1"],
    ["SELECT", "1", "UNION", "SELECT", "2"],
    ["(", "SELECT", "1", ")"],
    ["WITH", "c", "AS", "(", "SELECT", "1", ")", "SELECT", "*", "FROM", "c"],
    ["SELECT", "RELEASE_LOCK(", "'x'", ")"],
    ["SHOW", "TABLES"],
    ["SHOW", "VARIABLES", "LIKE", "'autocommit'"],
    ["SHOW", "FULL", "PROCESSLIST"],
    ["DESCRIBE", "t"],
    ["DESC", "t"],
    ["EXPLAIN", "SELECT", "*", "FROM", "t"],
    ["EXPLAIN", "DELETE", "FROM", "t"],
    ["DO", "1"],
    ["DO", "SLEEP(", "0", ")"],
    ["VALUES", "(1)"],
    ["TABLE", "t"],
    ["SAVEPOINT", "s"],
    ["ROLLBACK", "TO", "SAVEPOINT", "s"],
]
WRITES = [
    ["INSERT", "INTO", "t", "VALUES", "(", "1", ")"],
    ["INSERT", "INTO", "t", "SELECT", "*", "FROM", "u"],
    ["UPDATE", "t", "SET", "a", "=", "1"],
    ["DELETE", "FROM", "t", "WHERE", "a", "=", "'x'"],
    ["REPLACE", "INTO", "t", "VALUES", "(1)"],
    ["CREATE", "TABLE", "x", "(", "a", "INT", ")"],
    ["DROP", "TABLE", "x"],
    ["TRUNCATE", "TABLE", "t"],
    ["CALL", "p", "(", ")"],
    ["SET", "@x", "=", "1"],
    ["SELECT", "1", "FOR", "UPDATE"],
    ["SELECT", "*", "FROM", "t", "FOR", "UPDATE", "SKIP", "LOCKED"],
    ["SELECT", "1", "LOCK", "IN", "SHARE", "MODE"],
    ["SELECT", "1", "FOR", "SHARE"],
    ["SELECT", "1", "INTO", "@x"],
    ["SELECT", "NEXTVAL(", "s", ")"],
    ["EXPLAIN", "ANALYZE", "DELETE", "FROM", "t"],
    ["WITH", "c", "AS", "(", "SELECT", "1", ")", "UPDATE", "t", "SET", "a", "=", "1"],
    ["XA", "START", "'x'"],
]
CONTROL = [
    (["BEGIN"], BEGIN),
    (["BEGIN", "WORK"], BEGIN),
    (["START", "TRANSACTION"], BEGIN),
    (["START", "TRANSACTION", "READ", "ONLY"], BEGIN),
    (["START", "TRANSACTION", "WITH", "CONSISTENT", "SNAPSHOT"], BEGIN),
    (["COMMIT"], COMMIT),
    (["COMMIT", "WORK"], COMMIT),
    (["ROLLBACK"], ROLLBACK),
    (["ROLLBACK", "WORK"], ROLLBACK),
    (["SET", "autocommit", "=", "1"], AUTOCOMMIT_ON),
    (["SET", "SESSION", "autocommit", ":=", "ON"], AUTOCOMMIT_ON),
    (["SET", "@@session.autocommit", "=", "TRUE"], AUTOCOMMIT_ON),
    (["SET", "autocommit", "=", "0"], AUTOCOMMIT_OFF),
    (["SET", "@@autocommit", "=", "OFF"], AUTOCOMMIT_OFF),
    (["SET", "autocommit", "=", "1", ",", "sql_mode", "=", "''"], AUTOCOMMIT_SET),
    (["COMMIT", "AND", "CHAIN"], BEGIN),
    (["ROLLBACK", "AND", "CHAIN"], BEGIN),
    (["SELECT", "GET_LOCK(", "'x'", ",", "1", ")"], USER_LOCK),
    (["SET", "@held", "=", "GET_LOCK(", "'x'", ",", "1", ")"], USER_LOCK),
    (["LOCK", "TABLES", "t", "WRITE"], LOCK),
    (["UNLOCK", "TABLES"], UNLOCK),
]
STATEMENTS = [(tokens, READ) for tokens in READS]
STATEMENTS += [(tokens, WRITE) for tokens in WRITES]
STATEMENTS += CONTROL

# Text for comments and string literals: keywords, separators and quotes.
_NOISE = [
    "DELETE FROM t", "FOR UPDATE", "LOCK IN SHARE MODE", "INTO @x", "COMMIT", "BEGIN",
    "ROLLBACK", "SET autocommit=1", "GET_LOCK(", "UNLOCK TABLES", ";", "'", '"', "`", "\\",
    "--", "#", "/*", "*", "!", " ", "\t", "x", "é",
]  # fmt: skip
noise = st.lists(st.sampled_from(_NOISE), max_size=6).map("".join)
_SPACE = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", " \n "])


@st.composite
def comments(draw) -> str:
    """A comment the server skips: ``/* */`` (never ``/*!``), ``-- `` or ``#`` to the line end."""
    text = draw(noise)
    style = draw(st.sampled_from(["block", "dashes", "hash"]))
    if style == "block":
        text = text.replace("*/", "* /")
        if text.startswith(("!", "M!")):
            text = " " + text
        return f"/*{text}*/"
    text = text.replace("\r", " ").replace("\n", " ")
    opener = "-- " if style == "dashes" else "#"
    return f" {opener}{text}\n"


separators = st.lists(st.one_of(_SPACE, comments()), min_size=1, max_size=3).map("".join)


def _case(draw, token: str) -> str:
    if token.startswith(("'", '"', "`")):
        return token  # a literal keeps its text
    flips = draw(st.lists(st.booleans(), min_size=len(token), max_size=len(token)))
    return "".join(c.swapcase() if flip else c for c, flip in zip(token, flips))


@st.composite
def decorated(draw, tokens: list[str]) -> str:
    """``tokens`` with random case, and whitespace or comments around and between them."""
    parts = [draw(st.one_of(st.just(""), separators))]
    for n, token in enumerate(tokens):
        if n:
            parts.append(draw(separators))
        parts.append(_case(draw, token))
    parts.append(draw(st.one_of(st.just(""), separators)))
    return "".join(parts)


statements = st.sampled_from(STATEMENTS)


def plain(tokens: list[str]) -> str:
    return " ".join(tokens)


@settings(max_examples=250, deadline=None)
@given(st.data(), st.sampled_from(READS))
def test_a_read_stays_a_read_under_any_decoration(data, tokens):
    sql = data.draw(decorated(tokens))
    assert classify(sql) is READ, sql


@settings(max_examples=250, deadline=None)
@given(st.data(), st.sampled_from(WRITES))
def test_a_write_stays_a_write_under_any_decoration(data, tokens):
    sql = data.draw(decorated(tokens))
    assert classify(sql) is WRITE, sql
    assert writes(classify(sql))


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from(CONTROL))
def test_transaction_control_keeps_its_kind_under_any_decoration(data, control):
    tokens, kind = control
    sql = data.draw(decorated(tokens))
    assert classify(sql) is kind, sql


@settings(max_examples=250, deadline=None)
@given(st.data(), st.lists(statements, min_size=2, max_size=5), st.booleans())
def test_a_multi_statement_reads_only_if_every_part_reads(data, parts, trailing):
    texts = [data.draw(decorated(tokens)) for tokens, _ in parts]
    sql = ";".join(texts) + (";" if trailing else "")
    kinds = [kind for _, kind in parts]
    if all(kind is READ for kind in kinds):
        assert classify(sql) is READ, sql
    else:
        assert classify(sql) == tuple(kinds), sql
        assert writes(classify(sql)) == any(writes(kind) for kind in kinds)
    assert classify(sql.encode()) == classify(sql)


# Statements with a literal: its content never changes the kind.
LITERAL_TEMPLATES = [
    ("SELECT {} FROM t", READ),
    ("SELECT * FROM t WHERE a = {} ORDER BY 1", READ),
    ("SHOW TABLES LIKE {}", READ),
    ("DO {}", READ),
    ("INSERT INTO t VALUES ({})", WRITE),
    ("UPDATE t SET a = {} WHERE b = 1", WRITE),
    ("SELECT {} FOR UPDATE", WRITE),
    ("SELECT GET_LOCK({}, 1)", USER_LOCK),
    ("SET sql_mode = {}", WRITE),
    ("SELECT {}; SELECT 2", READ),
    ("SELECT {}; DELETE FROM t", (READ, WRITE)),
]


@st.composite
def literals(draw) -> str:
    """A string literal (or backticked name) holding ``noise``, escaped as the server wants."""
    text = draw(noise)
    quote = draw(st.sampled_from(["'", '"', "`"]))
    if quote == "`":
        return "`" + text.replace("`", "``") + "`"
    text = text.replace("\\", "\\\\")
    if draw(st.booleans()):
        return quote + text.replace(quote, quote * 2) + quote
    return quote + text.replace(quote, "\\" + quote) + quote


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LITERAL_TEMPLATES), literals())
def test_keywords_inside_quoted_text_never_change_the_kind(template, literal):
    sql, kind = template
    assert classify(sql.format(literal)) == kind, sql.format(literal)


@settings(max_examples=200, deadline=None)
@given(st.data(), statements)
def test_a_leading_comment_and_the_bytes_of_a_statement_change_nothing(data, statement):
    tokens, kind = statement
    sql = data.draw(comments()) + data.draw(decorated(tokens))
    assert classify(sql) is kind
    assert classify(sql.encode()) is kind


# -- what the kinds do to the bookkeeping -------------------------------------------------


class _State:
    def __init__(self, autocommit: bool = False) -> None:
        self.dirty = self.began = self.wrote = False
        self.locked: bool | str = False
        self.autocommit = autocommit


def _after(statements: list[str], autocommit: bool = False) -> _State:
    state = _State(autocommit)
    for sql in statements:
        kinds = classify(sql)
        transactions.starting(state, kinds)
        transactions.done(state, kinds)
    return state


def test_set_autocommit_1_ends_a_transaction_only_if_autocommit_was_off():
    state = _after(["INSERT INTO t VALUES (1)", "SET autocommit=1"])
    assert (state.dirty, state.wrote, state.autocommit) == (False, False, True)
    # On already: the server leaves the transaction BEGIN opened alone.
    state = _after(["BEGIN", "INSERT INTO t VALUES (1)", "SET autocommit=1"], autocommit=True)
    assert (state.began, state.wrote, state.autocommit) == (True, True, True)


def test_user_locks_outlive_unlock_tables_and_table_locks_do_not():
    assert _after(["LOCK TABLES t READ", "UNLOCK TABLES"]).locked is False
    assert _after(["SELECT GET_LOCK('a', 0)", "UNLOCK TABLES"]).locked is USER_LOCK
    assert _after(["SELECT GET_LOCK('a', 0)", "LOCK TABLES t READ", "UNLOCK TABLES"]).locked
    assert _after(["SET @a = GET_LOCK('a', 0)", "COMMIT", "ROLLBACK"]).locked


def test_commit_and_chain_begins_the_next_transaction():
    state = _after(["INSERT INTO t VALUES (1)", "COMMIT AND CHAIN"], autocommit=True)
    assert (state.began, state.dirty, state.wrote) == (True, False, False)
    state = _after(["BEGIN", "ROLLBACK AND CHAIN", "INSERT INTO t VALUES (1)"], autocommit=True)
    assert (state.began, state.dirty, state.wrote) == (True, True, True)
