"""`sarafan up` runs nx-27017 with the WAL journal (scrubbed after erasures) unless told
otherwise, and says when its
SQLite would keep deleted rows (docs/members.md, *What stays on disk after an erasure*)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sarafan.embedded import mongo_child
from sarafan.supervisor import SECURE_DELETE_OFF, Stack, StackConfig, StackError


def _journal_option(argv: list[str]) -> str:
    return argv[argv.index("--journal-mode") + 1]


def test_sarafan_up_runs_nx_27017_with_the_wal_journal_by_default(tmp_path):
    config = StackConfig.from_env({"SARAFAN_HOME": str(tmp_path)})
    assert config.mongo_journal == "wal"
    assert _journal_option(mongo_child(tmp_path, 1, config.mongo_journal).argv) == "WAL"
    assert _journal_option(mongo_child(tmp_path, 1).argv) == "WAL"


def test_the_truncate_journal_is_a_choice_and_anything_else_is_refused(tmp_path):
    env = {"SARAFAN_HOME": str(tmp_path), "SARAFAN_MONGO_JOURNAL": "truncate"}
    config = StackConfig.from_env(env)
    assert _journal_option(mongo_child(tmp_path, 1, config.mongo_journal).argv) == "TRUNCATE"
    with pytest.raises(StackError, match="SARAFAN_MONGO_JOURNAL='delete' is not one of"):
        StackConfig.from_env({**env, "SARAFAN_MONGO_JOURNAL": "delete"})


@pytest.mark.parametrize(("secure_delete", "warned"), [(True, False), (None, False), (False, True)])
def test_the_summary_warns_when_sqlite_keeps_deleted_rows(tmp_path: Path, secure_delete, warned):
    out = io.StringIO()
    stack = Stack(StackConfig.with_free_ports(tmp_path), out=out, environ={})
    stack.secure_delete = secure_delete
    stack._print_summary(token_created=False)
    assert (SECURE_DELETE_OFF in out.getvalue()) is warned
    assert "(SQLite journal wal)" in out.getvalue()
