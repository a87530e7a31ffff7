"""The standalone export checker: an honest export verifies; every tampering is caught and named."""

from __future__ import annotations

import ast
import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import check
from services.audit.check import ExportEntry, check_export, write_export
from services.audit.heads import sign_tree_head
from services.audit.merkle import MemoryTree, consistency_proof, entry_leaf_hash, inclusion_proof

AUDIT = Path(check.__file__).parent
CASE = "case-7"


def _log(count: int) -> list[tuple[str, int, int, bytes]]:
    """A log where every third entry is about CASE, on one partition, the others about other cases."""
    entries = []
    for index in range(count):
        subject = CASE if index % 3 == 1 else f"case-{index}"
        event = json.dumps({"id": f"e{index}", "subject": subject, "type": "rj.consent.given"}, sort_keys=True)
        entries.append(("rj.consent", index % 2, index, b"J" + event.encode()))
    return entries


def _export(key: Ed25519PrivateKey, count: int = 40, earlier_sizes: tuple[int, ...] = (5, 17)) -> dict:
    log = _log(count)
    tree = MemoryTree([entry_leaf_hash(*entry) for entry in log])
    head = sign_tree_head(key, count, tree.root(), 1_700_000_000_000)
    entries = [
        ExportEntry(index, *log[index], inclusion_proof(tree, index, count)) for index in range(count) if index % 3 == 1
    ]
    earlier = [
        (sign_tree_head(key, size, tree.root(size), 1_600_000_000_000 + size), consistency_proof(tree, size, count))
        for size in earlier_sizes
    ]
    return write_export(key, head, CASE, entries, earlier)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def export(key) -> dict:
    return json.loads(json.dumps(_export(key)))  # a deep copy each test may change


def test_an_honest_export_verifies(export, key):
    result = check_export(export)
    assert result.ok, result.problem
    assert (result.entries, result.tree_size, result.earlier_heads, result.subject) == (13, 40, 2, CASE)


def test_an_export_checks_against_the_log_id_the_auditor_expects(export):
    assert check_export(export, expected_log_id=export["log_id"]).ok
    result = check_export(export, expected_log_id="ab" * 32)
    assert not result.ok and "not the log" in result.problem


def test_a_changed_byte_in_an_entry_is_named(export):
    canonical = bytearray(base64.b64decode(export["entries"][4]["canonical"]))
    canonical[10] ^= 1
    export["entries"][4]["canonical"] = base64.b64encode(bytes(canonical)).decode()
    result = check_export(export)
    assert not result.ok
    assert result.problem.startswith("entry 4 (log index 13, rj.consent/1@13)")
    assert "bytes" in result.problem


@pytest.mark.parametrize("field", ["topic", "partition", "offset"])
def test_an_entry_moved_to_another_place_in_the_stream_is_named(export, field):
    export["entries"][2][field] = "rj.referral" if field == "topic" else export["entries"][2][field] + 1
    result = check_export(export)
    assert not result.ok and result.problem.startswith("entry 2 ")


def test_a_deleted_entry_is_named(export):
    del export["entries"][5]
    result = check_export(export)
    assert not result.ok
    assert "entry 5 (log index 19," in result.problem and "log index 16" in result.problem


def test_a_deleted_last_entry_is_named(export):
    export["entries"].pop()
    result = check_export(export)
    assert not result.ok and "log index 37" in result.problem and "missing" in result.problem


def test_a_deleted_entry_with_its_listing_line_breaks_the_listing_signature(export):
    del export["entries"][5]
    del export["listing"][5]
    result = check_export(export)
    assert not result.ok and "listing" in result.problem


def test_two_swapped_entries_are_named(export):
    entries = export["entries"]
    entries[3], entries[6] = entries[6], entries[3]
    result = check_export(export)
    assert not result.ok
    assert result.problem.startswith("entry 3 (log index 19,") and "listing has log index 10 here" in result.problem


def test_entries_out_of_index_order_are_named_even_when_listed_so(key):
    export = _export(key)
    export["entries"][3], export["entries"][6] = export["entries"][6], export["entries"][3]
    export["listing"][3], export["listing"][6] = export["listing"][6], export["listing"][3]
    result = check_export(export)
    assert not result.ok and "listing" in result.problem  # the listing's signature no longer holds


def test_two_entries_swapped_bytes_are_named(export):
    entries = export["entries"]
    entries[3]["canonical"], entries[6]["canonical"] = entries[6]["canonical"], entries[3]["canonical"]
    result = check_export(export)
    assert not result.ok and result.problem.startswith("entry 3 ")


def test_a_forged_head_signature_is_caught(export):
    signature = bytearray(base64.b64decode(export["signed_head"]["signature"]))
    signature[0] ^= 1
    export["signed_head"]["signature"] = base64.b64encode(bytes(signature)).decode()
    result = check_export(export)
    assert not result.ok and "signature" in result.problem


def test_a_head_with_a_changed_root_or_size_is_caught(export):
    export["signed_head"]["tree_size"] = 39
    result = check_export(export)
    assert not result.ok and "valid signature" in result.problem


def test_a_head_of_another_log_is_caught(export):
    other = _export(Ed25519PrivateKey.generate())
    export["signed_head"] = other["signed_head"]
    result = check_export(export)
    assert not result.ok and "another log" in result.problem


def test_an_export_re_signed_by_another_key_is_caught_by_the_expected_log_id(export):
    forged = _export(Ed25519PrivateKey.generate())
    assert check_export(forged).ok  # consistent with itself...
    result = check_export(forged, expected_log_id=export["log_id"])
    assert not result.ok and "not the log" in result.problem  # ...but not the log the witness named


def test_an_earlier_head_the_log_was_rewritten_since_is_caught(key):
    honest = _export(key)
    rewritten_log = _log(40)
    rewritten_log[2] = ("rj.consent", 0, 2, b"J{}")
    tree = MemoryTree([entry_leaf_hash(*entry) for entry in rewritten_log])
    # The operator signs a new head over the rewritten log with the real key, and proofs against it.
    head = sign_tree_head(key, 40, tree.root(), 1_800_000_000_000)
    entries = [ExportEntry(i, *rewritten_log[i], inclusion_proof(tree, i, 40)) for i in range(40) if i % 3 == 1]
    earlier_head = honest["earlier_heads"][1]  # size 17, held by the witness since before the rewrite
    forged = write_export(key, head, CASE, entries)
    forged["earlier_heads"] = [
        {
            "signed_head": earlier_head["signed_head"],
            "consistency_proof": [p.hex() for p in consistency_proof(tree, 17, 40)],
        }
    ]
    result = check_export(forged)
    assert not result.ok
    assert result.problem.startswith("earlier head 0 (size 17,") and "not consistent" in result.problem


def test_an_earlier_head_larger_than_the_head_means_truncation(key):
    export = _export(key, count=40, earlier_sizes=())
    bigger = _export(key, count=50, earlier_sizes=())
    export["earlier_heads"] = [{"signed_head": bigger["signed_head"], "consistency_proof": []}]
    result = check_export(export)
    assert not result.ok and "truncated" in result.problem


@pytest.mark.parametrize(
    "document",
    [[], {"format_version": 2}, {"format_version": 1}, {"format_version": 1, "public_key": "nope"}],
)
def test_a_malformed_export_is_a_failure_with_a_reason_not_an_exception(document):
    result = check_export(document)
    assert not result.ok and result.problem


def test_malformed_entries_are_failures_with_a_reason(export):
    export["entries"][0]["inclusion_proof"] = ["zz"]
    assert "not hex" in check_export(export).problem
    export["entries"][0]["index"] = -1
    assert "non-negative" in check_export(export).problem


def test_the_command_line_exits_0_on_a_good_file_and_1_on_a_bad_one(tmp_path, export, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(export))
    assert check.main([str(good)]) == 0
    assert capsys.readouterr().out.startswith("OK: 13 entries")
    export["entries"].pop(0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(export))
    assert check.main([str(bad)]) == 1
    assert capsys.readouterr().out.startswith("FAILED: entry 0 ")
    assert check.main([str(tmp_path / "missing.json")]) == 1
    assert "cannot read" in capsys.readouterr().out


def test_the_checker_and_what_it_imports_use_nothing_of_the_project_but_each_other():
    allowed = {"services.audit", "services.audit.merkle", "services.audit.heads"}
    for name in ("check.py", "merkle.py", "heads.py"):
        tree = ast.parse((AUDIT / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = (
                    {node.module}
                    if node.module != "services.audit"
                    else {f"services.audit.{alias.name}" for alias in node.names}
                )
            elif isinstance(node, ast.Import):
                modules = {alias.name for alias in node.names}
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top not in {"schemas", "services", "demo", "tests"} or module in allowed, (name, module)
                assert top in sys.stdlib_module_names or top in {"cryptography", "services", "__future__"}, (
                    name,
                    module,
                )


def test_the_three_files_alone_verify_an_export(tmp_path, export):
    """What an auditor is handed: merkle.py, heads.py and check.py in a services/audit folder, nothing else."""
    package = tmp_path / "handed" / "services" / "audit"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    for name in ("merkle.py", "heads.py", "check.py"):
        shutil.copy(AUDIT / name, package / name)
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    probe = (
        "import sys, runpy; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_module('services.audit.check', run_name='__main__')\n"
        "finally:\n"
        "    extra = sorted(m for m in sys.modules if m.split('.')[0] in ('services', 'schemas'))\n"
        "    print('MODULES', extra, sys.modules['services'].__file__)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(tmp_path / "handed"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.startswith("OK: 13 entries")
    modules_line = completed.stdout.splitlines()[-1]
    assert str(tmp_path / "handed") in modules_line
    assert modules_line.startswith(
        "MODULES ['services', 'services.audit', 'services.audit.heads', 'services.audit.merkle']"
    )
