"""The source model file: loaded, validated, and its errors named by file, line and path."""

from pathlib import Path

import pytest

from darwin_notify_assets.config import Settings
from darwin_notify_assets.domain.model import SAMPLE_MODEL, load_model, parse_model
from darwin_notify_assets.errors import ConfigurationError

SAMPLE = SAMPLE_MODEL.read_text(encoding="utf-8")


def test_the_sample_model_describes_the_sample():
    model = load_model()
    assert model.key_of("Deal") == "DealID"
    assert model.agent_column("Agent") == "AgentID"
    assert model.agent_column("Deal") == "AgentID"
    assert model.contact_column("Deal") == "BuyerPeopleID"
    assert model.contact_column("Property") is None
    assert model.ledger_kind("Property") == "listing"
    assert model.tombstone is not None and model.tombstone.table == "DeletedRecord"
    assert model.contact.opt_in_column("sms") == "SmsOptIn"
    assert model.agent.opt_in_column("sms") is None


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "needle", "path", "problem"),
    [
        (
            "    key: DealID\n",
            "    kee: DealID\n",
            "kee: DealID",
            "tables.Deal.kee",
            "Extra inputs",
        ),
        ("  contact:\n", "  contakt:\n", "contakt:", "recipients.contakt", "'agent' or 'contact'"),
        ("version: 1", "version: 2", "version: 2", "version", "Input should be 1"),
        (
            "    deletions: tombstone\n",
            "    deletions: trigger\n",
            "deletions: trigger",
            "tables.Agent.deletions",
            "Input should be 'tombstone'",
        ),
    ],
)
def test_a_bad_model_names_file_line_path_and_problem(old, new, needle, path, problem):
    text = SAMPLE.replace(old, new, 1)
    with pytest.raises(ConfigurationError) as exc:
        parse_model(text, "shop.model.yaml")
    message = str(exc.value)
    assert f"shop.model.yaml:{_line(text, needle)}: {path}" in message
    assert problem in message


def test_inconsistent_sections_are_refused():
    text = SAMPLE.replace("    is_active: IsActive\n", "")
    with pytest.raises(ConfigurationError, match="schedules.columns misses is_active"):
        parse_model(text, "m.yaml")
    text = SAMPLE.replace("  Deal: BuyerPeopleID\n", "  Invoice: BuyerPeopleID\n")
    with pytest.raises(ConfigurationError, match="record_contact names Invoice"):
        parse_model(text, "m.yaml")


def test_yaml_that_does_not_parse_names_its_line():
    with pytest.raises(ConfigurationError, match=r"m.yaml:3: not valid YAML"):
        parse_model("version: 1\ntables:\n  : [\n", "m.yaml")


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigurationError, match="nope.yaml: cannot read the source model"):
        load_model(missing)


def test_the_setting_selects_another_model(tmp_path: Path):
    other = tmp_path / "other.model.yaml"
    other.write_text(SAMPLE.replace("key: DealID", "key: DealNumber"), encoding="utf-8")
    settings = Settings.from_env({"DARWIN_NOTIFY_SOURCE_MODEL": str(other)})
    assert settings.source_model == str(other)
    assert load_model(settings.source_model).key_of("Deal") == "DealNumber"
    assert load_model(Settings.from_env({}).source_model).key_of("Deal") == "DealID"


def test_a_schedule_on_a_table_the_model_does_not_describe_is_refused():
    from darwin_notify_assets.domain.schedules import build_schedule_set

    model = load_model()
    other = model.model_copy(
        update={"tables": {k: v for k, v in model.tables.items() if k != "Deal"}}
    )
    c = model.schedules.columns
    row = {
        c["schedule_id"]: 9,
        c["name"]: "Deal posted",
        c["source_table"]: "Deal",
        c["event_type"]: "update",
        c["watch_column"]: "PostDate",
        c["channel"]: "email",
        c["audience"]: "agent",
        c["template_id"]: 1,
        c["dedupe_scope"]: "change",
    }
    t = model.templates.columns
    template = {t["template_id"]: 1, t["name"]: "t", t["subject"]: "s", t["text_body"]: "b"}
    catalog = {"Deal": ("DealID", "AgentID", "PostDate")}
    assert build_schedule_set([row], [template], catalog, model).schedules
    built = build_schedule_set([row], [template], catalog, other)
    assert [r.reason for r in built.rejected] == [
        "schedule 9 (Deal posted): the source model does not describe table 'Deal'"
    ]
