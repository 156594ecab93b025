"""With the fast path off, which it always is on the CPU, every method gives the bits it gave before the
fast path existed: the fingerprints in tests/data/eager-fingerprints.json were recorded on main without
the fast path (at 3e432c7, the last main merged into it, in MKL's strict mode as the tests run;
tests/fingerprints.py says how, and why a canary goes with them). A change to main that moves the
eager numbers on purpose records them again."""

import json

import pytest

from tests.fingerprints import RECORDED, canary, method_fingerprints


def test_every_method_gives_the_recorded_bits_on_the_cpu(demo_bundle):
    recorded = json.loads(RECORDED.read_text())
    if canary(demo_bundle) != recorded["canary"]:
        pytest.skip("this machine's CPU kernels give other bits than the recording machine's for a plain UNet "
                    "and VAE call (the canary), so the fingerprints cannot be compared here")
    found = method_fingerprints(demo_bundle)
    changed = sorted(name for name in recorded["methods"] if found.get(name) != recorded["methods"][name])
    assert not changed, f"the eager path's results changed for: {', '.join(changed)}"
    assert found == recorded["methods"]
