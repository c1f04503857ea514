"""`writ caps lint | diff | explain`: risk rules name field and line; a diff lists every
widening and narrowing and exits non-zero on widening; a manifest that does not parse is
reported with its location."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from writ import cli
from writ.security import review

REPO = Path(__file__).resolve().parents[2]
CAPS = REPO / "capabilities"

BASE = """\
name: fetcher
image: writ-tool/fetcher:latest
description: fetch reports
files:
  - id: reports
    paths: ["reports/**"]
    ops: [READ, LIST]
net:
  - id: api
    schemes: [https]
    host: api.example.com
    methods: [GET]
    path_prefixes: ["/v1/"]
pay:
  - id: acme
    payees: [acme]
    currency: EUR
    max_per_payment: 4000
    budget: 10000
    max_count: 5
limits: {memory_mb: 128, cpus: 0.5, pids: 32, timeout_s: 30, tmp_mb: 8}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- lint ----------------------------------------------------------------------------------
def test_shipped_manifests_lint_clean(capsys: pytest.CaptureFixture[str]) -> None:
    paths = sorted(str(p) for p in CAPS.glob("*.yaml"))
    code, out, _ = run(capsys, "caps", "lint", *paths)
    assert code == 0, out
    assert all("ok (manifest, no risk found)" in line for line in out.splitlines())


RISKY = BASE.replace('paths: ["reports/**"]\n    ops: [READ, LIST]',
                     'paths: ["**"]\n    ops: [READ, WRITE, DELETE]') \
    .replace("host: api.example.com", "host: '*.example.com'") \
    .replace("methods: [GET]", "methods: [GET, POST]") \
    .replace('path_prefixes: ["/v1/"]', 'path_prefixes: ["/"]') \
    .replace("    max_count: 5\n", "") \
    .replace("limits: {memory_mb: 128, cpus: 0.5, pids: 32, timeout_s: 30, tmp_mb: 8}",
             "limits: {memory_mb: 128}")


def test_risk_rules_name_field_and_line(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "risky.yaml", RISKY)
    doc = review.load(path)
    found = {(f.rule, f.field, f.line, f.severity) for f in review.lint(doc)}
    assert found == {
        ("workspace-write", "files[0].paths", 6, "high"),
        ("wildcard-host", "net[0].host", 11, "medium"),
        ("net-write-everywhere", "net[0].path_prefixes", 13, "medium"),
        ("payment-uncapped", "pay[0]", 15, "high"),
        ("default-limits", "limits", 20, "low"),
    }
    code, out, _ = run(capsys, "caps", "lint", str(path))
    assert code == 1
    assert f"{path}:6: high: files[0].paths: DELETE/WRITE on '**': writes anywhere in the " \
        "whole workspace" in out
    assert f"{path}:15: high: pay[0]: payments to acme without a count cap or an approval " \
        "threshold" in out
    code, out, _ = run(capsys, "--json", "caps", "lint", "--fail-on", "high", str(path))
    assert code == 1
    assert {f["rule"] for f in json.loads(out)[0]["findings"]} >= {"payment-uncapped"}


def test_low_findings_do_not_fail_by_default(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "m.yaml", BASE.replace(
        "limits: {memory_mb: 128, cpus: 0.5, pids: 32, timeout_s: 30, tmp_mb: 8}",
        "limits: {memory_mb: 128}"))
    code, out, _ = run(capsys, "caps", "lint", str(path))
    assert code == 0 and "low: limits: cpus, pids, timeout_s, tmp_mb not set" in out
    assert run(capsys, "caps", "lint", "--fail-on", "low", str(path))[0] == 1


def test_grant_without_expiry(tmp_path: Path) -> None:
    path = write(tmp_path, "g.yaml", """\
        tools: [{name: fetcher}]
        files:
          - {workspace: demo, paths: ["reports/**"], ops: [READ]}
        """)
    findings = review.lint(review.load(path))
    assert [(f.rule, f.field, f.line) for f in findings] == [("no-expiry", "expires_at", 1)]
    path.write_text(path.read_text() + "expires_at: 4102444800\n")
    assert review.lint(review.load(path)) == []


@pytest.mark.parametrize("host, prefixes, secret_prefix, found", [
    ("api.example.com", '["/"]', "/", "every path"),
    ("api.example.com", '["/"]', "/v1/", None),
    ("api.example.com", '["/v1/"]', "/", None),       # the rule already narrows the paths
    ("'*.example.com'", '["/v1/"]', "/v1/", "every matching host"),
], ids=["every-path", "scoped-secret", "scoped-rule", "wildcard"])
def test_secret_on_a_broad_prefix(tmp_path: Path, host: str, prefixes: str,
                                  secret_prefix: str, found: str | None) -> None:
    path = write(tmp_path, "g.yaml", f"""\
        tools: [{{name: fetcher}}]
        expires_at: 4102444800
        net:
          - host: {host}
            schemes: [https]
            methods: [GET]
            path_prefixes: {prefixes}
            secrets: [{{secret: api-key, header: Authorization, path_prefix: "{secret_prefix}"}}]
        """)
    findings = [(f.rule, f.field, f.severity, f.message) for f in review.lint(review.load(path))
                if f.rule == "secret-broad-prefix"]
    if found is None:
        assert findings == []
    else:
        host_name = host.strip("'")
        assert findings == [("secret-broad-prefix", "net[0].secrets[0]", "high",
                             (f"credential 'api-key' is added to requests to {host_name} on "
                             f"{found}; scope it to the exact host and path prefix that "
                             "needs it"))]


BAD = [
    ("not-yaml", "name: [unclosed\n", "not valid YAML"),
    ("unknown-key", BASE + "evil: 1\n",
     'Message type "writ.v1.Manifest" has no field named "evil"'),
    ("wildcard-public-suffix", BASE.replace("host: api.example.com", "host: '*.com'"),
     ".net[0].host: wildcard '*.com' covers a public suffix"),
    ("dotdot", BASE.replace('"reports/**"', '"../etc"'),
     ".files[0].paths[0]: '../etc' contains an empty, '.' or '..' segment"),
    ("yes-op", BASE.replace("ops: [READ, LIST]", "ops: [yes]"),
     ".files[0].ops[0]: True is not an operation name"),
]


@pytest.mark.parametrize(("text", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_manifest_that_does_not_parse_is_reported_with_its_location(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    code, out, _ = run(capsys, "caps", "lint", str(path))
    assert code == 2
    assert out.startswith(str(path)) and expected in out, out
    code, out, _ = run(capsys, "--json", "caps", "lint", str(path))
    assert code == 2 and json.loads(out)[0]["valid"] is False


def test_yaml_error_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bad.yaml", BASE.replace("    currency: EUR", "    currency: [EUR"))
    code, out, _ = run(capsys, "caps", "lint", str(path))
    assert code == 2 and "line 18" in out, out


# -- diff ----------------------------------------------------------------------------------
def diff_of(tmp_path: Path, capsys: pytest.CaptureFixture[str], new: str) -> tuple[int, Any]:
    old_p, new_p = write(tmp_path, "old.yaml", BASE), write(tmp_path, "new.yaml", new)
    code, out, _ = run(capsys, "--json", "caps", "diff", str(old_p), str(new_p))
    return code, json.loads(out)


CHANGES = [
    ("same", BASE, []),
    ("add-op", BASE.replace("ops: [READ, LIST]", "ops: [READ, LIST, WRITE]"),
     [("widening", "files[0] (reports)", "adds operation WRITE")]),
    ("drop-op", BASE.replace("ops: [READ, LIST]", "ops: [READ]"),
     [("narrowing", "files[0] (reports)", "reports/** READ,LIST; now ")]),
    ("wider-path", BASE.replace('"reports/**"', '"**"'),
     [("widening", "files[0] (reports)", "path '**' is not within ['reports/**']")]),
    ("narrower-path", BASE.replace('"reports/**"', '"reports/q3/**"'),
     [("narrowing", "files[0] (reports)", "reports/q3/** READ,LIST")]),
    ("new-host", BASE.replace("host: api.example.com", "host: api.evil.com"),
     [("widening", "net[0] (api)", "another host: was "),
      ("narrowing", "net[0] (api)", "https://api.example.com")]),
    ("add-method", BASE.replace("methods: [GET]", "methods: [GET, POST]"),
     [("widening", "net[0] (api)", "adds method POST")]),
    ("raise-budget", BASE.replace("budget: 10000", "budget: 20000"),
     [("widening", "pay[0] (acme)", "budget 20000 exceeds 10000")]),
    ("drop-count-cap", BASE.replace("    max_count: 5\n", ""),
     [("widening", "pay[0] (acme)", "max_count exceeds the parent's")]),
    ("remove-pay", BASE[: BASE.index("pay:")] + BASE[BASE.index("limits:"):],
     [("narrowing", "pay[0] (acme)", "rule removed: ")]),
    ("new-rule", BASE.replace("net:\n", "net:\n  - {schemes: [https], host: b.example.com, "
                              "methods: [GET], path_prefixes: [/]}\n"),
     [("widening", "net[0]", "new rule, within no old one")]),
    ("limits", BASE.replace("memory_mb: 128", "memory_mb: 512").replace("pids: 32", "pids: 16"),
     [("widening", "limits.memory_mb", "128 -> 512"), ("narrowing", "limits.pids", "32 -> 16")]),
    ("limit-to-default", BASE.replace("timeout_s: 30, ", ""),
     [("widening", "limits.timeout_s", "30 -> 60")]),
    ("image", BASE.replace("fetcher:latest", "fetcher:v2"),
     [("widening", "image", "other code runs with this authority")]),
    ("description", BASE.replace("fetch reports", "fetch"), [("changed", "description", "")]),
]


@pytest.mark.parametrize(("new", "expected"), [c[1:] for c in CHANGES],
                         ids=[c[0] for c in CHANGES])
def test_diff_lists_every_widening_and_narrowing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], new: str,
        expected: list[tuple[str, str, str]]) -> None:
    code, data = diff_of(tmp_path, capsys, new)
    got = [(c["kind"], c["field"], c["message"]) for c in data["changes"]]
    assert [(k, f) for k, f, _ in got] == [(k, f) for k, f, _ in expected], got
    for (_, _, message), (_, _, part) in zip(got, expected):
        assert part in message
    widening = any(k == "widening" for k, _, _ in expected)
    assert data["widening"] is widening
    assert code == (1 if widening else 0)


def test_diff_human_output_and_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old_p = write(tmp_path, "old.yaml", BASE)
    new_p = write(tmp_path, "new.yaml", BASE.replace("ops: [READ, LIST]", "ops: [READ]")
                  .replace("methods: [GET]", "methods: [GET, DELETE]"))
    code, out, _ = run(capsys, "caps", "diff", str(old_p), str(new_p))
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("+ WIDENS  net[0] (api): adds method DELETE: was ")
    assert "GET,DELETE https://api.example.com" in lines[0]
    assert lines[1].startswith("- narrows files[0] (reports): was ")
    assert lines[2] == "1 widening(s): needs a security review"
    code, out, _ = run(capsys, "caps", "diff", str(new_p), str(new_p))
    assert (code, out) == (0, "no authority change\nno widening\n")


def test_diff_of_an_invalid_manifest_exits_2(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    old_p = write(tmp_path, "old.yaml", BASE)
    new_p = write(tmp_path, "new.yaml", BASE.replace("EUR", "euro"))
    code, out, _ = run(capsys, "caps", "diff", str(old_p), str(new_p))
    assert code == 2 and f"{new_p}.pay[0].currency: 'euro' is not an ISO 4217 code" in out


def test_diff_of_shipped_manifests_against_themselves(capsys: pytest.CaptureFixture[str]) -> None:
    for path in CAPS.glob("*.yaml"):
        assert run(capsys, "caps", "diff", str(path), str(path))[0] == 0


# -- explain -------------------------------------------------------------------------------
def test_explain_in_plain_language(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(CAPS / "read-file.yaml", tmp_path / "read-file.yaml")
    code, out, _ = run(capsys, "caps", "explain", "read-file", "--dir", str(tmp_path))
    assert code == 0
    assert "Files: it may read files and see file details anywhere in whichever workspace " \
        "the user's grant names." in out
    assert "It may never list folders, overwrite files, create files, delete files, create " \
        "folders or move or rename entries." in out
    assert "Network: none; it cannot reach any host." in out
    assert "Money: it cannot make payments." in out
    assert "Each run is limited to 128 MB of memory, 0.5 CPU, 32 processes, 30 s of wall " \
        "time, 8 MB of /tmp." in out


def test_explain_names_net_pay_and_risks(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "fetcher.yaml", RISKY)
    code, out, _ = run(capsys, "caps", "explain", str(path))
    assert code == 0
    assert "Network: GET and POST requests to https://*.example.com (the default port) " \
        "under /." in out
    assert "Money: it may pay acme in EUR: at most 4000 minor units each, 10000 in total; " \
        "no payment waits for approval." in out
    assert "Review notes:" in out and "high: pay[0]: payments to acme" in out


def test_explain_unknown_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "caps", "explain", "nope", "--dir", str(tmp_path))
    assert code == 2 and f"no manifest 'nope': not a file, and no nope.yaml in {tmp_path}/" \
        in err
