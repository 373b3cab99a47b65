"""An embedded server is ready only once it holds its own port: another server answering on
the port it could not bind is not it (sarafan/embedded.py `Child.wait_ready`)."""

from __future__ import annotations

import pytest

from sarafan.embedded import ChildExited, mongo_child


def test_an_nx_27017_whose_port_another_one_holds_is_never_taken_for_ready(tmp_path, mongo_server):
    port = int(mongo_server.url.rsplit(":", 1)[1])
    child = mongo_child(tmp_path, port)
    child.start()
    try:
        # The session's nx-27017 answers the ping at once, while this one is still starting.
        with pytest.raises(ChildExited):
            child.wait_ready(60)
    finally:
        child.stop()
    assert mongo_server.running
