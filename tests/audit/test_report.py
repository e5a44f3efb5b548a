"""Tests of moe_unlearn.audit.report on synthetic audit dicts (numbers only, as stored at forget time)."""

import json

from moe_unlearn.audit.report import summary_rows, write_report
from moe_unlearn.rundir import AUDIT_FILES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_audit() -> dict:
    """An exact forget whose before model leaks and whose after model does not."""

    def scores(offset: float) -> dict:
        loss = [offset - 0.004 * i for i in range(200)]
        return {"loss": loss, "zlib": [x / 2 for x in loss], "min_k": [x * 3 for x in loss]}

    return {
        "request": "fgt-0123abcd",
        "method": "exact",
        "exact": True,
        "versions": {"before": 1, "after": 2},
        "counts": {
            "forget": 200,
            "forget_trained": 200,
            "heldout": 200,
            "retained": 200,
            "members": 200,
            "nonmembers": 200,
        },
        "bits_per_byte": {
            "forget": {"before": 0.81, "after": 1.92},
            "retained": {"before": 0.75, "after": 0.76},
            "heldout": {"before": 1.95, "after": 1.94},
        },
        "membership": {
            "attacks": {
                "loss": {"before": {"auc": 0.71, "se": 0.03}, "after": {"auc": 0.5, "se": 0.03}},
                "zlib": {"before": {"auc": 0.66, "se": 0.03}, "after": {"auc": 0.51, "se": 0.03}},
                "min_k": {"before": {"auc": 0.69, "se": 0.03}, "after": {"auc": 0.49, "se": 0.03}},
            },
            "privleak": {
                "loss": {"before": 42.0, "after": 0.0},
                "zlib": {"before": 32.0, "after": 0.0},
                "min_k": {"before": 38.0, "after": 0.0},
            },
            "privleak_oracle": "after-model (bit-identical to retraining)",
            "nonmembers": "200 held-out records of the same sources",
            "scores": {
                "members": {"before": scores(-0.6), "after": scores(-1.7)},
                "nonmembers": {"before": scores(-1.5), "after": scores(-1.7)},
            },
        },
        "canaries": {
            "space_bits": 24.0,
            "candidates": 4096,
            "estimator": "sampled rank among 4096 candidates",
            "inserted": {"before": [10.0, 12.0] * 64, "after": [0.25, 0.75] * 64},
            "never_inserted": {"before": [0.5] * 128, "after": [0.25, 0.55] * 64},
            "tests": {
                "before": {"p_value": 1e-9, "mean_difference_bits": 10.5},
                "after": {"p_value": 0.61, "mean_difference_bits": 0.1},
            },
            "extracted": {"before": 17, "after": 0, "of": 128},
        },
        "router": {"agreement": 0.996, "prefixes": 400},
        "timings": {
            "forget_seconds": 52.1,
            "trained_seconds": 44.0,
            "full_retrain_seconds": 180.2,
            "oracle_seconds": None,
        },
        "checks": {"verify": {"equal": True, "oracle_seconds": 190.0}},
    }


def test_report_writes_every_file_and_the_json_round_trips(tmp_path):
    audit = make_audit()
    out = tmp_path / "reports" / "fgt-0123abcd"  # created, parents too
    paths = write_report(out, audit)
    assert paths == [out / name for name in AUDIT_FILES]
    for name in AUDIT_FILES:
        if name.endswith(".png"):
            data = (out / name).read_bytes()
            assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert json.loads((out / "audit.json").read_text()) == audit
    assert (out / "audit.json").read_text() == json.dumps(audit, indent=2, sort_keys=True) + "\n"


def test_markdown_gives_the_figures_and_reads_them(tmp_path):
    write_report(tmp_path, make_audit())
    md = (tmp_path / "audit.md").read_text()
    assert md.startswith("# Audit of forget request fgt-0123abcd (method: exact)\n")
    assert "| MIA AUC loss (n=200 a side) | 0.71 ± 0.03 | 0.50 ± 0.03 |" in md
    assert "| canary exposure inserted, mean bits | 11.0 | 0.5 |" in md
    assert "| canaries extracted | 17/128 | 0/128 |" in md
    assert "| router agreement |  | 99.6% |" in md
    assert "the model leaked membership, so the test has power" in md
    assert "every attack's AUC is within two standard errors of 0.5" in md
    assert "not distinguishable from never-inserted ones at p > 0.05 (Mann-Whitney p = 0.61" in md
    assert "recovered 17 of 128 inserted secrets before the forget and 0 after" in md
    assert "Verified: an independent retrain" in md and "bit-identical" in md
    assert "(3.5× as long)" in md
    for name in ("losses.png", "exposure.png", "timings.png"):
        assert f"]({name})" in md


def test_no_canaries_means_no_exposure_plot_and_the_markdown_says_so(tmp_path):
    write_report(tmp_path, make_audit())  # an earlier report's exposure.png must not survive
    audit = make_audit()
    audit["canaries"] = None
    paths = write_report(tmp_path, audit)
    assert [p.name for p in paths] == ["audit.json", "audit.md", "losses.png", "timings.png"]
    assert not (tmp_path / "exposure.png").exists()
    md = (tmp_path / "audit.md").read_text()
    assert "No canaries were inserted" in md
    assert "](exposure.png)" not in md
    assert not any("canar" in measure for measure, _, _ in summary_rows(audit))


def test_approximate_method_without_oracle_is_called_not_oracle_equal(tmp_path):
    audit = make_audit()
    audit.update(method="gradient-ascent", exact=False, checks={"verify": None})
    audit["membership"].update(privleak=None, privleak_oracle=None)
    audit["membership"]["attacks"]["loss"]["after"] = {"auc": 0.62, "se": 0.03}
    audit["canaries"]["tests"]["after"] = {"p_value": 0.003, "mean_difference_bits": 2.1}
    write_report(tmp_path, audit)
    md = (tmp_path / "audit.md").read_text()
    assert "(method: gradient-ascent)" in md
    assert "is approximate: version 2 is not oracle-equal" in md
    assert "privleak" not in md.split("## Reading")[0]  # no privleak rows in the table
    assert "privleak, the leakage relative to one, is not reported" in md
    assert "the loss attack's AUC still differs from 0.5 by more than two standard errors" in md
    assert "still distinguishable from never-inserted ones (Mann-Whitney p = 0.003" in md
    assert "not distinguishable from never-inserted ones at p > 0.05 (Mann-Whitney p = 0.003" not in md


def test_a_before_model_that_does_not_leak_is_reported_as_a_test_without_power(tmp_path):
    audit = make_audit()
    for attack in audit["membership"]["attacks"].values():
        attack["before"] = {"auc": 0.53, "se": 0.03}
    audit["canaries"]["tests"]["before"] = {"p_value": 0.2, "mean_difference_bits": 0.4}
    write_report(tmp_path, audit)
    md = (tmp_path / "audit.md").read_text()
    assert "this test has little power to show forgetting" in md
    assert "the canary test has no power here" in md
    assert "so the test has power" not in md


def test_failed_verification_is_stated(tmp_path):
    audit = make_audit()
    audit["checks"]["verify"] = {"equal": False, "oracle_seconds": 190.0}
    write_report(tmp_path, audit)
    assert "Verification failed" in (tmp_path / "audit.md").read_text()


def test_summary_rows_format_as_documented():
    assert summary_rows(make_audit()) == [
        ("bits/byte forget set", "0.81", "1.92"),
        ("bits/byte retained set", "0.75", "0.76"),
        ("bits/byte held-out set", "1.95", "1.94"),
        ("MIA AUC loss (n=200 a side)", "0.71 ± 0.03", "0.50 ± 0.03"),
        ("MIA AUC zlib (n=200 a side)", "0.66 ± 0.03", "0.51 ± 0.03"),
        ("MIA AUC Min-K% (n=200 a side)", "0.69 ± 0.03", "0.49 ± 0.03"),
        ("privleak loss", "+42.0%", "+0.0%"),
        ("privleak zlib", "+32.0%", "+0.0%"),
        ("privleak Min-K%", "+38.0%", "+0.0%"),
        ("canary exposure inserted, mean bits", "11.0", "0.5"),
        ("never-inserted exposure, mean bits", "0.5", "0.4"),
        ("inserted vs never-inserted, Mann-Whitney p", "1e-09", "0.61"),
        ("canaries extracted", "17/128", "0/128"),
        ("router agreement", "", "99.6%"),
    ]


def test_summary_rows_name_unequal_sides():
    audit = make_audit()
    audit["membership"]["scores"]["members"]["before"]["loss"] = [0.0] * 36
    assert summary_rows(audit)[3] == ("MIA AUC loss (n=36 forgotten / 200 never seen)", "0.71 ± 0.03", "0.50 ± 0.03")
