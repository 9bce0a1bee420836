import pytest

from starcli.errors import UsageError
from starcli.selectors import parse_ids


@pytest.mark.parametrize(
    "text, ids",
    [("3", [3]), ("1-5", [1, 2, 3, 4, 5]), ("1,3,7", [1, 3, 7]), ("1-3,9", [1, 2, 3, 9]), (" 2 , 2-3 ", [2, 3])],
)
def test_selectors_expand_in_order_without_duplicates(text, ids):
    assert parse_ids(text) == ids


@pytest.mark.parametrize("text", ["", "5-1", "a", "1-", "-3", "1,,2", "1-2-3", "1.5"])
def test_malformed_or_descending_selectors_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_ids(text)
