"""A fixed-seed fuzz of the project loader (scripts/fuzz_projects.py runs the same fuzzer for longer)."""

from scripts.fuzz_projects import AUDIT, watch, fuzz

CASES = 1000  # one to three mutations each


def test_the_audit_sees_an_access_outside_the_project(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "secret").write_text("outside")
    (tmp_path / "p" / "link").symlink_to(tmp_path / "secret")
    watch(tmp_path / "p")
    try:
        (tmp_path / "p" / "link").read_text()
        (tmp_path / "p" / "new").write_text("a write")
        outside, writes = list(AUDIT.outside), list(AUDIT.writes)
    finally:
        watch(None)
    assert len(outside) == 1 and "secret" in outside[0]
    assert len(writes) == 1 and "new" in writes[0]


def test_damaged_projects_give_project_errors_write_nothing_and_stay_inside():
    counts = fuzz(CASES, seed=20261123)
    assert counts.cases == CASES
    assert counts.ok, counts.report()
    # the mutations reach every kind of refusal, and some projects survive or are repaired
    assert {"manifest damaged", "refused: link, special file or escaping name", "repairable file damage",
            "not a project"} <= set(counts.project_errors), counts.report()
    assert counts.opened > 0 and counts.repaired > 0
