"""The provider sinks: importable with the standard library alone (``infra/services.sh``
starts them with a bare ``python3``), and counting SMS segments as rendering does."""

import base64
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from darwin_notify_assets.domain.sms import sms_segments
from darwin_notify_assets.testing.sinks import start_sink

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_SID = "AC" + "0" * 32


def test_the_sinks_import_with_the_standard_library_only():
    # -S: no site-packages, so any import outside the standard library fails.
    probe = (
        "import sys; import darwin_notify_assets.testing.sinks; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names"
        " and m.split('.')[0] != 'darwin_notify_assets' and m != '__main__'))"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("body", ["a" * 161, "€" * 81, "伟" * 71, "😀" * 36, "Zoë: price drop"])
def test_the_sms_sink_counts_segments_as_rendering_does(tmp_path, body):
    server, thread = start_sink("sms", "127.0.0.1", 0, tmp_path / "sms.jsonl")
    try:
        request = urllib.request.Request(
            f"{server.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
            data=urllib.parse.urlencode(
                {"To": "+13127365000", "From": "+13125550100", "Body": body}
            ).encode(),
            headers={
                "Authorization": "Basic "
                + base64.b64encode(f"{ACCOUNT_SID}:token".encode()).decode(),
                "Content-Type": "application/x-www-form-urlencoded",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            resource = json.loads(response.read())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert int(resource["num_segments"]) == sms_segments(body)[1]
