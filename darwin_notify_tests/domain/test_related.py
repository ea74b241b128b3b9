"""Related records: what a template shows beside the changed record, named in the source model
(``relations.related``) and validated by name."""

import pytest

from darwin_notify_assets.domain.model import check_model, load_model, parse_model
from darwin_notify_assets.errors import ConfigurationError
from darwin_notify_tests.crm import world

RELATED = """  related:
    crm.Showing:
      listing: {column: ListingNo, to: crm.Listing}
"""


def _crm(related: str) -> str:
    text = world.MODEL.read_text(encoding="utf-8")
    start = text.index("  related:\n")
    end = text.index("\ntotals:")
    return text[:start] + related + text[end:]


def test_both_models_name_their_related_records():
    sample = load_model()
    assert sample.relations.related["Deal"]["property"].to == "Property"
    crm = load_model(world.MODEL)
    assert {t: set(r) for t, r in crm.relations.related.items()} == {
        "crm.Showing": {"listing"},
        "crm.Sale": {"listing"},
    }
    assert parse_model(_crm(RELATED), "m.yaml").relations.related["crm.Showing"]


@pytest.mark.parametrize(
    ("related", "message"),
    [
        (
            RELATED.replace("listing:", "agent:"),
            r"m.yaml:\d+: relations.related.crm.Showing.agent: a related record's name is a word "
            "templates can use and none of record, records, agent",
        ),
        (
            RELATED.replace("listing:", "'the listing':"),
            "relations.related.crm.Showing.the listing: a related record's name is a word",
        ),
        (
            RELATED.replace("crm.Showing:", "crm.Viewing:"),
            "relations.related names crm.Viewing, which tables lacks",
        ),
        (
            RELATED.replace("to: crm.Listing", "to: crm.Lot"),
            r"relations.related.crm.Showing.listing names crm.Lot, which tables lacks",
        ),
        (
            "  related:\n    crm.Sale:\n      showing: {column: ListingNo, to: crm.Showing}\n",
            "crm.Showing's key is composite; a related record is named by one column",
        ),
        (RELATED.replace("column: ListingNo, ", ""), r"column: Field required"),
    ],
)
def test_a_bad_related_record_is_one_clear_error(related, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_model(_crm(related), "m.yaml")


def test_check_names_a_related_column_the_replica_lacks():
    model = load_model()
    catalog = {"Deal": ["DealID", "AgentID"], "Property": ["PropertyID"]}
    problems = [str(p) for p in check_model(model, lambda t: catalog.get(t, ["x"]))]
    assert (
        "relations.related.Deal.property: column Deal.PropertyID does not exist on the replica"
        in problems
    )
