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


def test_a_related_or_zone_table_the_replica_lacks_fails_only_what_shows_it(
    tmp_path, monkeypatch, capsys
):
    from darwin_notify_assets import cli
    from darwin_notify_tests.conftest import install_recording_senders, run_partition, sqlite_rows
    from darwin_notify_tests.crm.oracle import expected_sends
    from darwin_notify_tests.crm.test_crm_chain import build_crm_env

    env = build_crm_env(tmp_path / "home", monkeypatch)
    text = _crm(
        RELATED + "    crm.Sale:\n      listing: {column: ListingNo, to: crm.Listing}\n"
        "      lot: {column: ListingNo, to: crm.Lot}\n"
    )
    text = text.replace(
        "tables:\n", "tables:\n  crm.Lot:\n    key: LotNo\n    watch: [ChangedAt]\n", 1
    ).replace(
        "      via: [{column: BrokerNo, to: crm.Broker}, {column: BranchNo, to: crm.Branch}]\n",
        "      via: [{column: ClientNo, to: crm.Lot}]\n",
    )
    variant = tmp_path / "variant.model.yaml"
    variant.write_text(text, encoding="utf-8")
    monkeypatch.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(variant))
    try:
        capsys.readouterr()
        assert cli.main(["check"]) == 1
        out = capsys.readouterr().out
        assert "model relations.related.crm.Sale.lot: table crm.Lot does not exist" in out
        assert "model recipients.contact.time_zone.via.0: table crm.Lot does not exist" in out
        recorder = install_recording_senders(monkeypatch)
        for index, window in enumerate(env.world.windows):
            world.apply_window(env.source, window)
            assert run_partition(env.key(index), env.instance).success
        rows = sqlite_rows(
            env.home / "store.db",
            "SELECT c.recipient_kind, m.recipient_tz, m.status FROM message m "
            "JOIN candidate c ON c.candidate_id = m.candidate_id",
        )
    finally:
        env.source.close()
        env.instance.dispose()
    # every send the oracle expects was made: no template shows `lot`
    calls = recorder.for_home(env.home)
    expected = expected_sends(env.world, env.world.windows)
    assert sorted(m.candidate_key for m in calls["email"]) == sorted(expected.email)
    assert sorted(m.candidate_key for m in calls["sms"]) == sorted(expected.sms)
    # and the contacts, whose zones could not be read, are decided in the default zone
    contacts = [r for r in rows if r["recipient_kind"] == "contact" and r["status"] == "sent"]
    assert contacts and all(r["recipient_tz"] is None for r in contacts)
    assert any(r["recipient_tz"] for r in rows if r["recipient_kind"] == "agent")
