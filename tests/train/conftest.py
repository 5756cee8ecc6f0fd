"""Fixtures of the trainer's tests."""
import pytest

from tests.train.cli_helpers import make_records


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """(train.rec, val.rec) of tiny class-coloured images, with their stats beside them."""
    return make_records(str(tmp_path_factory.mktemp("records")))
