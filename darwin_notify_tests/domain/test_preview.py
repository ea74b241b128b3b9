from darwin_notify_assets.domain.preview import (
    failures_by_reason,
    reason_class,
    safe_preview,
)

TEMPLATE = ["Welcome, {{ first }}!", "Hi {{ first }} {{ last }}, call {{ phone }} or {{ email }}."]


def test_preview_masks_names_addresses_numbers_and_keeps_template_words():
    out = safe_preview(
        "Welcome, José!",
        "Hi José Muñoz, call +1 312 555 0199 or jose@example.com.",
        TEMPLATE,
    )
    for leaked in ("José", "Muñoz", "555 0199", "jose@example.com", "example"):
        assert leaked not in out
    assert "Welcome" in out and "Hi J*** M***" in out and "+1******0199" in out


def test_preview_masks_event_values_even_where_the_template_has_the_word():
    out = safe_preview(None, "Hi Welcome", TEMPLATE, [{"Nickname": "Welcome"}])
    assert "Welcome" not in out


def test_preview_is_text_that_nothing_in_the_message_closes():
    out = safe_preview(None, "Hi ```\n<script>alert(1)</script> ````", TEMPLATE)
    fence = out.splitlines()[0].removesuffix("text")
    assert len(fence) >= 5 and out.endswith("\n" + fence)
    assert out.count(fence) == 2
    assert "<script>" not in out.replace("<s***>", "")


def test_a_number_glued_to_an_address_is_masked():
    out = safe_preview(None, "bc@krealty.com+1 312 799 9", [])
    assert "312 799" not in out


def test_reasons_group_by_class_without_personal_data():
    msgs = [
        {"status": "suppressed", "reason": "invalid email address 'x a@b.com': bad"},
        {"status": "suppressed", "reason": "invalid email address 'x c@d.org': bad"},
        {"status": "suppressed", "reason": "agent 12 is inactive"},
        {"status": "failed", "reason": None},
    ]
    rows = failures_by_reason(msgs)
    assert rows[0] == ("invalid email address '…': bad", "suppressed", 2)
    assert ("agent N is inactive", "suppressed", 1) in rows
    assert ("(no reason)", "failed", 1) in rows
    masked = reason_class("phone +1 312 555 0199 for xy@example.com")
    assert "555 0199" not in masked and "xy@example.com" not in masked
